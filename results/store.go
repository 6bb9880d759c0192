package results

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// FileName is the name of the results file inside a results directory.
const FileName = "results.jsonl"

// LockName is the name of the lock file inside a results directory.
const LockName = ".lock"

// ErrLocked is returned (wrapped) by Open when another live process holds
// the directory's lock.
var ErrLocked = errors.New("results directory is locked")

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("results store is closed")

// Store appends records to DIR/results.jsonl, one JSON object per line.
//
// Each Append is a single write(2) of the whole line (the file is opened with
// O_APPEND) followed by fsync, so a crash at any moment leaves the file with
// either the whole line or a torn final line without its newline, never a
// damaged earlier line. Open removes a torn final line. A Store holds
// DIR/.lock (the owner's PID and host) for its lifetime, so two runs cannot
// write into one directory.
type Store struct {
	dir  string
	path string

	mu       sync.Mutex
	f        *os.File
	lock     *dirLock
	warnings []string
}

// Open opens (creating it if needed) the results store in dir, takes the
// directory's lock and removes a torn final line left by a crash.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("results: %w", err)
	}
	lk, err := acquireLock(dir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, FileName)
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		lk.release()
		return nil, fmt.Errorf("results: %w", err)
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		syncDir(dir) // make the new file's directory entry durable
	}
	s := &Store{dir: dir, path: path, f: f, lock: lk}
	w, err := repairTail(f, path)
	if err != nil {
		f.Close()
		lk.release()
		return nil, err
	}
	if w != "" {
		s.warnings = append(s.warnings, w)
	}
	return s, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// Path is the results file's path.
func (s *Store) Path() string { return s.path }

// Warnings lists what Open repaired (a torn final line removed, a final line
// missing its newline completed).
func (s *Store) Warnings() []string { return append([]string(nil), s.warnings...) }

// Append writes r as one line and syncs it to disk. It is safe for concurrent
// use. A record needs a Cell key and a Status of "ok" or "failed".
func (s *Store) Append(r *Record) error {
	if r == nil {
		return errors.New("results: Append(nil)")
	}
	if r.Cell == "" {
		return errors.New("results: record without a cell key")
	}
	if r.Status != "ok" && r.Status != "failed" {
		return fmt.Errorf("results: cell %s: status %q, want \"ok\" or \"failed\"", r.Cell, r.Status)
	}
	line, err := json.Marshal(r)
	if err != nil {
		if bad := nonFinite(r); bad != "" {
			return fmt.Errorf("results: cell %s: %s is not finite (JSON cannot hold NaN or Inf): %w", r.Cell, bad, err)
		}
		return fmt.Errorf("results: cell %s: encoding record: %w", r.Cell, err)
	}
	line = append(line, '\n')

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return ErrClosed
	}
	st, err := s.f.Stat()
	if err != nil {
		return fmt.Errorf("results: %w", err)
	}
	size := st.Size()
	// One write(2) of the whole line: os.File.Write issues a single system
	// call unless the kernel writes short (disk full), in which case the
	// partial line is cut away again so that the file stays line-aligned.
	n, err := s.f.Write(line)
	if err != nil || n != len(line) {
		if err == nil {
			err = io.ErrShortWrite
		}
		if terr := s.f.Truncate(size); terr != nil {
			err = errors.Join(err, fmt.Errorf("removing the partial line: %w", terr))
		}
		return fmt.Errorf("results: appending cell %s to %s: %w", r.Cell, s.path, err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("results: syncing %s: %w", s.path, err)
	}
	return nil
}

// Close closes the file and releases the directory's lock.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	if lerr := s.lock.release(); err == nil {
		err = lerr
	}
	return err
}

// nonFinite names the first NaN or infinite number of r, or "".
func nonFinite(r *Record) string {
	bad := func(v float64) bool { return math.IsNaN(v) || math.IsInf(v, 0) }
	keys := make([]string, 0, len(r.Metrics))
	for k := range r.Metrics {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if bad(r.Metrics[k]) {
			return fmt.Sprintf("metric %s (%v)", k, r.Metrics[k])
		}
	}
	for k, c := range r.Curves {
		for i, p := range c {
			if bad(p.X) || bad(p.Y) {
				return fmt.Sprintf("curve %s point %d", k, i)
			}
		}
	}
	for i, v := range r.Latency.Samples {
		if bad(v) {
			return fmt.Sprintf("latency sample %d", i)
		}
	}
	switch {
	case bad(r.Latency.P50), bad(r.Latency.P90), bad(r.Latency.Mean):
		return "latency summary"
	case bad(r.KV.BytesRead), bad(r.KV.Recall):
		return "kv accounting"
	case bad(r.Throughput):
		return "tokens_per_s"
	}
	return ""
}

// parseRecord decodes one line; a record needs a cell key.
func parseRecord(line []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
		return r, err
	}
	if r.Cell == "" {
		return r, errors.New("record without a cell key")
	}
	return r, nil
}

// repairTail inspects the last non-blank line of f: one that is not a valid
// record (torn by a crash) is cut away; a valid one without its newline gets
// one, so that the next append starts on a fresh line. It returns a warning
// describing the repair, or "".
func repairTail(f *os.File, path string) (string, error) {
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("results: %w", err)
	}
	size := st.Size()
	end, err := trimTrailingSpace(f, size)
	if err != nil {
		return "", fmt.Errorf("results: reading %s: %w", path, err)
	}
	if end == 0 {
		if size > 0 {
			if err := truncateSync(f, 0); err != nil {
				return "", fmt.Errorf("results: repairing %s: %w", path, err)
			}
		}
		return "", nil
	}
	start, err := lineStart(f, end)
	if err != nil {
		return "", fmt.Errorf("results: reading %s: %w", path, err)
	}
	line := make([]byte, end-start)
	if _, err := f.ReadAt(line, start); err != nil {
		return "", fmt.Errorf("results: reading %s: %w", path, err)
	}
	if _, perr := parseRecord(line); perr != nil {
		if err := truncateSync(f, start); err != nil {
			return "", fmt.Errorf("results: repairing %s: %w", path, err)
		}
		return fmt.Sprintf("%s: removed a torn final line (%d bytes: %v), left by an interrupted run", path, end-start, perr), nil
	}
	if size == end+1 {
		var nl [1]byte
		if _, err := f.ReadAt(nl[:], end); err != nil {
			return "", fmt.Errorf("results: reading %s: %w", path, err)
		}
		if nl[0] == '\n' {
			return "", nil // the normal case
		}
	}
	if err := f.Truncate(end); err != nil {
		return "", fmt.Errorf("results: repairing %s: %w", path, err)
	}
	if _, err := f.Write([]byte{'\n'}); err != nil {
		return "", fmt.Errorf("results: repairing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("results: repairing %s: %w", path, err)
	}
	return fmt.Sprintf("%s: the final record was not ended by exactly one newline (%d trailing bytes); fixed", path, size-end), nil
}

// trimTrailingSpace returns the offset just after the last non-space byte
// before size.
func trimTrailingSpace(f *os.File, size int64) (int64, error) {
	const chunk = 4 << 10
	buf := make([]byte, chunk)
	pos := size
	for pos > 0 {
		n := int64(chunk)
		if pos < n {
			n = pos
		}
		b := buf[:n]
		if _, err := f.ReadAt(b, pos-n); err != nil {
			return 0, err
		}
		for i := len(b) - 1; i >= 0; i-- {
			switch b[i] {
			case ' ', '\t', '\r', '\n':
			default:
				return pos - n + int64(i) + 1, nil
			}
		}
		pos -= n
	}
	return 0, nil
}

func truncateSync(f *os.File, size int64) error {
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Sync()
}

// lineStart returns the offset just after the last '\n' before end, or 0.
func lineStart(f *os.File, end int64) (int64, error) {
	const chunk = 64 << 10
	buf := make([]byte, chunk)
	pos := end
	for pos > 0 {
		n := int64(chunk)
		if pos < n {
			n = pos
		}
		b := buf[:n]
		if _, err := f.ReadAt(b, pos-n); err != nil {
			return 0, err
		}
		if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
			return pos - n + int64(i) + 1, nil
		}
		pos -= n
	}
	return 0, nil
}

// Load reads all records of dir (a results directory, or a results file).
// Use LoadWarn to also get the warnings (a torn final line ignored,
// duplicate cells).
func Load(dir string) ([]Record, error) {
	recs, _, err := LoadWarn(dir)
	return recs, err
}

// LoadWarn reads all records of dir (a results directory, or a results file
// itself) in file order. A final line that is not a valid record (torn by a
// crash) is ignored and reported in the warnings; an invalid line elsewhere
// is an error naming the file and the line. When a cell appears more than
// once, the last record wins and the repeat is reported.
func LoadWarn(dir string) ([]Record, []string, error) {
	path := dir
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		path = filepath.Join(dir, FileName)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("results: %w", err)
	}
	lines := bytes.Split(data, []byte{'\n'})
	// bytes.Split leaves an empty element after a final newline.
	complete := len(data) > 0 && data[len(data)-1] == '\n'
	if complete {
		lines = lines[:len(lines)-1]
	}
	lastNonBlank := -1
	for i := len(lines) - 1; i >= 0; i-- {
		if len(bytes.TrimSpace(lines[i])) > 0 {
			lastNonBlank = i
			break
		}
	}
	var (
		recs  []Record
		warns []string
		where = map[string]int{} // cell -> index in recs
		lineN = map[string]int{} // cell -> line number
	)
	for i, line := range lines {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		n := i + 1
		r, err := parseRecord(line)
		if err != nil {
			if i == lastNonBlank {
				warns = append(warns, fmt.Sprintf("%s:%d: ignored a torn final line (%d bytes): %v", path, n, len(line), err))
				continue
			}
			return nil, warns, fmt.Errorf("results: %s:%d: invalid record: %v", path, n, err)
		}
		if i == lastNonBlank && !complete {
			warns = append(warns, fmt.Sprintf("%s:%d: final record has no trailing newline", path, n))
		}
		if j, dup := where[r.Cell]; dup {
			warns = append(warns, fmt.Sprintf("%s:%d: cell %s repeats line %d; keeping the later record", path, n, r.Cell, lineN[r.Cell]))
			recs = append(recs[:j], recs[j+1:]...)
			for c, k := range where {
				if k > j {
					where[c] = k - 1
				}
			}
		}
		where[r.Cell] = len(recs)
		lineN[r.Cell] = n
		recs = append(recs, r)
	}
	return recs, warns, nil
}

// Done returns the cell keys of the finished records of dir: status "ok" and
// "failed" both count (a failed cell is not retried unless asked; see
// DoneOK). A directory without results has none.
func Done(dir string) (map[string]bool, error) { return done(dir, false) }

// DoneOK returns the cell keys of the successful records of dir, for runs
// that retry failed cells.
func DoneOK(dir string) (map[string]bool, error) { return done(dir, true) }

func done(dir string, okOnly bool) (map[string]bool, error) {
	recs, _, err := LoadWarn(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, err
	}
	m := make(map[string]bool, len(recs))
	for i := range recs {
		if !okOnly || recs[i].OK() {
			m[recs[i].Cell] = true
		}
	}
	return m, nil
}

// syncDir fsyncs a directory (best effort; not possible everywhere).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// dirLock is DIR/.lock, holding "PID\nHOST\n" of its owner.
type dirLock struct {
	path    string
	content []byte
}

// acquireLock creates DIR/.lock exclusively. A lock whose process is gone
// (same host, PID not alive), or that stayed empty (its creator died before
// writing it), is stale and taken over.
func acquireLock(dir string) (*dirLock, error) {
	path := filepath.Join(dir, LockName)
	host, _ := os.Hostname()
	mine := []byte(fmt.Sprintf("%d\n%s\n", os.Getpid(), host))
	var emptySince time.Time
	for attempt := 0; attempt < 100; attempt++ {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			_, werr := f.Write(mine)
			if werr == nil {
				werr = f.Sync()
			}
			if cerr := f.Close(); werr == nil {
				werr = cerr
			}
			if werr != nil {
				os.Remove(path)
				return nil, fmt.Errorf("results: writing %s: %w", path, werr)
			}
			return &dirLock{path: path, content: mine}, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("results: creating %s: %w", path, err)
		}
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // released meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("results: reading %s: %w", path, err)
		}
		pid, lockHost, ok := parseLock(data)
		if !ok {
			// Being written by its creator right now, or left empty by a
			// creator that died: wait a little before calling it stale.
			if emptySince.IsZero() {
				emptySince = time.Now()
			}
			if time.Since(emptySince) < time.Second {
				time.Sleep(20 * time.Millisecond)
				continue
			}
		} else {
			if lockHost != "" && host != "" && lockHost != host {
				return nil, fmt.Errorf("%w: %s is held by pid %d on host %s (remove %s if no run is active there)", ErrLocked, dir, pid, lockHost, path)
			}
			if pidAlive(pid) {
				return nil, fmt.Errorf("%w: %s is in use by pid %d (lock %s)", ErrLocked, dir, pid, path)
			}
		}
		if err := takeOver(path, data); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%w: could not take %s (contention)", ErrLocked, path)
}

// takeOver removes the stale lock whose content is stale, unless it was
// replaced meanwhile: the lock is first renamed away, so that only one
// contender removes it, and put back if it turns out to be a new one.
func takeOver(path string, stale []byte) error {
	tmp := fmt.Sprintf("%s.stale.%d", path, os.Getpid())
	os.Remove(tmp)
	if err := os.Rename(path, tmp); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("results: taking over stale lock %s: %w", path, err)
	}
	got, err := os.ReadFile(tmp)
	if err == nil && !bytes.Equal(got, stale) {
		// A live owner replaced the stale lock between our read and the
		// rename: give it back.
		if lerr := os.Link(tmp, path); lerr != nil {
			os.Remove(tmp)
			return fmt.Errorf("%w: lost a race on %s", ErrLocked, path)
		}
	}
	os.Remove(tmp)
	return nil
}

func parseLock(data []byte) (pid int, host string, ok bool) {
	fields := strings.SplitN(strings.TrimRight(string(data), "\n"), "\n", 2)
	pid, err := strconv.Atoi(strings.TrimSpace(fields[0]))
	if err != nil || pid <= 0 {
		return 0, "", false
	}
	if len(fields) > 1 {
		host = strings.TrimSpace(fields[1])
	}
	return pid, host, true
}

// pidAlive reports whether a process with that PID exists.
func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	defer p.Release()
	if runtime.GOOS == "windows" {
		return true // FindProcess opened it
	}
	err = p.Signal(syscall.Signal(0))
	return err == nil || errors.Is(err, syscall.EPERM)
}

// release removes the lock if it is still ours.
func (l *dirLock) release() error {
	if l == nil {
		return nil
	}
	data, err := os.ReadFile(l.path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("results: %w", err)
	}
	if !bytes.Equal(data, l.content) {
		return nil // not ours any more
	}
	if err := os.Remove(l.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("results: %w", err)
	}
	return nil
}
