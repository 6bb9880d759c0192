package results

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// storeRecord is a small record for store tests.
func storeRecord(i int, status string) *Record {
	r := &Record{
		Suite:        "smoke",
		Cell:         fmt.Sprintf("ref25m/quest(budget=%d)/passkey(length=2048)", 64*(i+1)),
		Model:        "ref25m",
		Policy:       "quest",
		PolicyParams: map[string]any{"budget": float64(64 * (i + 1))},
		Budget:       64 * (i + 1),
		Task:         "passkey",
		TaskVersion:  1,
		TaskParams:   map[string]any{"length": float64(2048)},
		Status:       status,
		Metrics:      map[string]float64{"accuracy": 0.5 + 0.01*float64(i)},
		Latency:      Latency{P50: 100, P90: 120, Mean: 105, N: 3, Samples: []float64{99, 100, 121}},
		KV:           KV{MaxResident: 1 << 20, BytesRead: 4096, Recall: 0.9, MaxAttended: 64},
		Tokens:       2100,
		Throughput:   321.5,
		Meta:         Meta{Backend: "cpu", Seed: 1, Start: time.Unix(1700000000, 0).UTC()},
	}
	if status == "failed" {
		r.Error = "out of memory | twice\nsecond line"
		r.Metrics = nil
	}
	return r
}

func TestStoreAppendLoadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	require.NoError(t, err)
	want := []*Record{storeRecord(0, "ok"), storeRecord(1, "failed"), storeRecord(2, "ok")}
	for _, r := range want {
		require.NoError(t, s.Append(r))
	}
	require.NoError(t, s.Close())
	assert.ErrorIs(t, s.Append(want[0]), ErrClosed)
	_, err = os.Stat(filepath.Join(dir, LockName))
	assert.True(t, errors.Is(err, os.ErrNotExist), "lock released on Close")

	data, err := os.ReadFile(filepath.Join(dir, FileName))
	require.NoError(t, err)
	assert.Equal(t, 3, bytes.Count(data, []byte{'\n'}))
	assert.True(t, bytes.HasSuffix(data, []byte{'\n'}))

	got, warns, err := LoadWarn(dir)
	require.NoError(t, err)
	assert.Empty(t, warns)
	require.Len(t, got, 3)
	for i := range want {
		assert.Equal(t, *want[i], got[i])
	}
	// Load also takes the file itself.
	got2, err := Load(filepath.Join(dir, FileName))
	require.NoError(t, err)
	assert.Equal(t, got, got2)

	done, err := Done(dir)
	require.NoError(t, err)
	assert.Equal(t, map[string]bool{want[0].Cell: true, want[1].Cell: true, want[2].Cell: true}, done)
	ok, err := DoneOK(dir)
	require.NoError(t, err)
	assert.Equal(t, map[string]bool{want[0].Cell: true, want[2].Cell: true}, ok)

	// Reopening appends after the existing lines.
	s, err = Open(dir)
	require.NoError(t, err)
	assert.Empty(t, s.Warnings())
	require.NoError(t, s.Append(storeRecord(3, "ok")))
	require.NoError(t, s.Close())
	got, err = Load(dir)
	require.NoError(t, err)
	assert.Len(t, got, 4)
}

func TestStoreAppendValidates(t *testing.T) {
	s, err := Open(t.TempDir())
	require.NoError(t, err)
	defer s.Close()
	r := storeRecord(0, "ok")
	r.Cell = ""
	assert.Error(t, s.Append(r))
	r = storeRecord(0, "running")
	assert.ErrorContains(t, s.Append(r), "status")
	r = storeRecord(0, "ok")
	r.Metrics["ppl"] = posInf()
	err = s.Append(r)
	assert.ErrorContains(t, err, "metric ppl")
	recs, err := Load(s.Dir())
	require.NoError(t, err)
	assert.Empty(t, recs, "nothing written by failed appends")
}

func posInf() float64 { f, _ := strconv.ParseFloat("+Inf", 64); return f }

func TestDoneWithoutResults(t *testing.T) {
	done, err := Done(t.TempDir())
	require.NoError(t, err)
	assert.Empty(t, done)
	_, err = Load(t.TempDir())
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func writeRecords(t *testing.T, dir string, n int) []byte {
	t.Helper()
	s, err := Open(dir)
	require.NoError(t, err)
	for i := 0; i < n; i++ {
		require.NoError(t, s.Append(storeRecord(i, "ok")))
	}
	require.NoError(t, s.Close())
	data, err := os.ReadFile(filepath.Join(dir, FileName))
	require.NoError(t, err)
	return data
}

func TestTornFinalLineIgnoredAndTruncated(t *testing.T) {
	dir := t.TempDir()
	good := writeRecords(t, dir, 2)
	path := filepath.Join(dir, FileName)
	// A crash in the middle of the third line.
	third := storeRecord(2, "ok")
	line := string(mustJSON(t, third))
	torn := append(append([]byte(nil), good...), line[:len(line)/2]...)
	require.NoError(t, os.WriteFile(path, torn, 0o644))

	recs, warns, err := LoadWarn(dir)
	require.NoError(t, err)
	assert.Len(t, recs, 2)
	require.Len(t, warns, 1)
	assert.Contains(t, warns[0], ":3: ignored a torn final line")

	s, err := Open(dir)
	require.NoError(t, err)
	require.Len(t, s.Warnings(), 1)
	assert.Contains(t, s.Warnings()[0], "removed a torn final line")
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, good, data, "torn line cut away")
	require.NoError(t, s.Append(third))
	require.NoError(t, s.Close())
	recs, warns, err = LoadWarn(dir)
	require.NoError(t, err)
	assert.Empty(t, warns)
	assert.Len(t, recs, 3)
	assert.Equal(t, third.Cell, recs[2].Cell)
}

func TestTornFinalLineVariants(t *testing.T) {
	for name, tc := range map[string]struct {
		tail     string
		wantRecs int
		wantWarn bool
	}{
		"just an opening brace":   {tail: "{", wantRecs: 2, wantWarn: true},
		"zeros after power loss":  {tail: "\x00\x00\x00\x00", wantRecs: 2, wantWarn: true},
		"garbage with newline":    {tail: "{\"cell\": 1\n", wantRecs: 2, wantWarn: true},
		"blank lines only":        {tail: "\n\n", wantRecs: 2},
		"valid record no newline": {tail: "VALID", wantRecs: 3, wantWarn: true},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			good := writeRecords(t, dir, 2)
			tail := tc.tail
			if tail == "VALID" {
				tail = string(mustJSON(t, storeRecord(5, "ok")))
			}
			path := filepath.Join(dir, FileName)
			require.NoError(t, os.WriteFile(path, append(append([]byte(nil), good...), tail...), 0o644))
			recs, warns, err := LoadWarn(dir)
			require.NoError(t, err)
			assert.Len(t, recs, tc.wantRecs)
			assert.Equal(t, tc.wantWarn, len(warns) > 0, "warnings %q", warns)

			s, err := Open(dir)
			require.NoError(t, err)
			require.NoError(t, s.Append(storeRecord(7, "ok")))
			require.NoError(t, s.Close())
			recs, warns, err = LoadWarn(dir)
			require.NoError(t, err, "after reopening and appending")
			assert.Empty(t, warns)
			assert.Len(t, recs, tc.wantRecs+1)
		})
	}
}

func mustJSON(t *testing.T, r *Record) []byte {
	t.Helper()
	data, err := json.Marshal(r)
	require.NoError(t, err)
	return data
}

func TestCorruptMiddleLineErrors(t *testing.T) {
	dir := t.TempDir()
	good := writeRecords(t, dir, 3)
	lines := bytes.SplitAfter(good, []byte{'\n'})
	lines[1] = []byte("{\"cell\": \"x\", oops}\n")
	path := filepath.Join(dir, FileName)
	require.NoError(t, os.WriteFile(path, bytes.Join(lines, nil), 0o644))
	_, err := Load(dir)
	require.Error(t, err)
	assert.Contains(t, err.Error(), path+":2:")

	// A record without a cell key in the middle is an error too.
	lines[1] = []byte("{\"status\": \"ok\"}\n")
	require.NoError(t, os.WriteFile(path, bytes.Join(lines, nil), 0o644))
	_, err = Load(dir)
	assert.ErrorContains(t, err, ":2:")
	assert.ErrorContains(t, err, "cell key")
	_, err = Done(dir)
	assert.Error(t, err)
}

func TestDuplicateCellsKeepLast(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	require.NoError(t, err)
	first := storeRecord(0, "failed")
	second := storeRecord(1, "ok")
	retry := storeRecord(0, "ok")
	retry.Metrics["accuracy"] = 0.99
	for _, r := range []*Record{first, second, retry} {
		require.NoError(t, s.Append(r))
	}
	require.NoError(t, s.Close())
	recs, warns, err := LoadWarn(dir)
	require.NoError(t, err)
	require.Len(t, recs, 2)
	assert.Equal(t, second.Cell, recs[0].Cell)
	assert.Equal(t, retry.Cell, recs[1].Cell)
	assert.Equal(t, 0.99, recs[1].Metrics["accuracy"])
	require.Len(t, warns, 1)
	assert.Contains(t, warns[0], ":3: cell "+first.Cell+" repeats line 1")
	ok, err := DoneOK(dir)
	require.NoError(t, err)
	assert.True(t, ok[first.Cell], "the retried cell counts as ok")
}

func TestLockRefusesSecondOpen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	require.NoError(t, err)
	_, err = Open(dir)
	require.ErrorIs(t, err, ErrLocked)
	assert.Contains(t, err.Error(), strconv.Itoa(os.Getpid()))

	// Concurrent openers: exactly one wins.
	require.NoError(t, s.Close())
	const n = 8
	errs := make(chan error, n)
	stores := make(chan *Store, n)
	for i := 0; i < n; i++ {
		go func() {
			s, err := Open(dir)
			if err == nil {
				stores <- s
			}
			errs <- err
		}()
	}
	wins := 0
	for i := 0; i < n; i++ {
		if err := <-errs; err == nil {
			wins++
		} else {
			assert.ErrorIs(t, err, ErrLocked)
		}
	}
	assert.Equal(t, 1, wins)
	close(stores)
	for s := range stores {
		require.NoError(t, s.Close())
	}
	s, err = Open(dir)
	require.NoError(t, err, "free again after Close")
	require.NoError(t, s.Close())
}

func TestLockStaleIsTakenOver(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("process liveness by signal 0")
	}
	dir := t.TempDir()
	host, _ := os.Hostname()
	// A PID that is no longer alive: a finished child.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	require.NoError(t, cmd.Run())
	dead := cmd.Process.Pid
	lock := filepath.Join(dir, LockName)
	require.NoError(t, os.WriteFile(lock, []byte(fmt.Sprintf("%d\n%s\n", dead, host)), 0o644))
	s, err := Open(dir)
	require.NoError(t, err, "stale lock of dead pid %d taken over", dead)
	data, err := os.ReadFile(lock)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(data), strconv.Itoa(os.Getpid())+"\n"))
	require.NoError(t, s.Close())

	// A lock held on another host is not taken over.
	require.NoError(t, os.WriteFile(lock, []byte("12345\nsome-other-host.invalid\n"), 0o644))
	_, err = Open(dir)
	assert.ErrorIs(t, err, ErrLocked)
	assert.ErrorContains(t, err, "some-other-host.invalid")
	require.NoError(t, os.Remove(lock))

	// A lock left empty (creator died before writing it) goes stale.
	require.NoError(t, os.WriteFile(lock, nil, 0o644))
	s, err = Open(dir)
	require.NoError(t, err)
	require.NoError(t, s.Close())
}

// TestCrashWhileAppending kills a child process (SIGKILL) while it appends
// records as fast as it can, then checks that every line but possibly a torn
// last one is intact, that Open repairs the file and takes the dead child's
// lock over.
func TestCrashWhileAppending(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("kill -9")
	}
	if testing.Short() {
		t.Skip("spawns a child")
	}
	if dir := os.Getenv("KVBENCH_RESULTS_CRASH_DIR"); dir != "" {
		crashChild(dir)
		return
	}
	dir := t.TempDir()
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashWhileAppending$")
		cmd.Env = append(os.Environ(), "KVBENCH_RESULTS_CRASH_DIR="+dir)
		require.NoError(t, cmd.Start())
		path := filepath.Join(dir, FileName)
		deadline := time.Now().Add(20 * time.Second)
		before := 0
		if data, err := os.ReadFile(path); err == nil {
			before = bytes.Count(data, []byte{'\n'})
		}
		for time.Now().Before(deadline) {
			data, _ := os.ReadFile(path)
			if bytes.Count(data, []byte{'\n'}) >= before+20 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		require.NoError(t, cmd.Process.Kill())
		_ = cmd.Wait() // reap, so that the PID is gone

		recs, _, err := LoadWarn(dir)
		require.NoError(t, err, "round %d", round)
		require.GreaterOrEqual(t, len(recs), before+20)
		s, err := Open(dir)
		require.NoError(t, err, "round %d: reopen after kill -9", round)
		require.NoError(t, s.Close())
		recs2, warns, err := LoadWarn(dir)
		require.NoError(t, err)
		assert.Empty(t, warns)
		assert.Len(t, recs2, len(recs))
	}
}

func crashChild(dir string) {
	s, err := Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for i := 0; ; i++ {
		r := storeRecord(i, "ok")
		r.Cell = fmt.Sprintf("%s#%d-%d", r.Cell, os.Getpid(), i)
		r.Detail = map[string]any{"pad": strings.Repeat("x", 1000+i%5000)}
		if err := s.Append(r); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
}
