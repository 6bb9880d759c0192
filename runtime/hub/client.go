package hub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// DefaultEndpoint is the Hub's address when HF_ENDPOINT is unset.
const DefaultEndpoint = "https://huggingface.co"

// Client downloads repositories from a Hub endpoint into a cache folder.
// FromEnv makes one configured the way huggingface_hub reads its
// environment.
type Client struct {
	Endpoint string       // e.g. https://huggingface.co, without a trailing slash
	Token    string       // sent as "Authorization: Bearer" to the endpoint's host; "" for none
	Cache    string       // the hub folder holding models--ORG--NAME
	Offline  bool         // use the cache only, make no request
	HTTP     *http.Client // nil for a client with sensible timeouts
	Progress io.Writer    // where download progress bars go; nil for none
}

// FromEnv configures a client from the environment: HF_ENDPOINT (default
// https://huggingface.co); HF_TOKEN, else the token file HF_TOKEN_PATH or
// $HF_HOME/token; HF_HUB_CACHE, else $HF_HOME/hub, with HF_HOME defaulting to
// $XDG_CACHE_HOME/huggingface or ~/.cache/huggingface; HF_HUB_OFFLINE (1,
// true, yes or on). Progress goes to stderr when it is a terminal.
func FromEnv() (*Client, error) {
	home := os.Getenv("HF_HOME")
	if home == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			h, err := os.UserHomeDir()
			if err != nil {
				return nil, fmt.Errorf("hub: no HF_HOME and no home folder: %w", err)
			}
			base = filepath.Join(h, ".cache")
		}
		home = filepath.Join(base, "huggingface")
	}
	c := &Client{Endpoint: strings.TrimRight(os.Getenv("HF_ENDPOINT"), "/"), Cache: os.Getenv("HF_HUB_CACHE")}
	if c.Endpoint == "" {
		c.Endpoint = DefaultEndpoint
	}
	if c.Cache == "" {
		c.Cache = filepath.Join(home, "hub")
	}
	c.Token = strings.TrimSpace(os.Getenv("HF_TOKEN"))
	if c.Token == "" {
		tp := os.Getenv("HF_TOKEN_PATH")
		if tp == "" {
			tp = filepath.Join(home, "token")
		}
		if b, err := os.ReadFile(tp); err == nil {
			c.Token = strings.TrimSpace(string(b))
		}
	}
	switch strings.ToLower(strings.TrimSpace(os.Getenv("HF_HUB_OFFLINE"))) {
	case "1", "true", "yes", "on":
		c.Offline = true
	}
	if term.IsTerminal(int(os.Stderr.Fd())) {
		c.Progress = os.Stderr
	}
	return c, nil
}

// Resolve returns path unchanged unless it is an hf: reference; then it
// downloads the repository (or finds it in the cache) with a client from
// FromEnv and returns its snapshot folder.
func Resolve(ctx context.Context, path string) (string, error) {
	if !IsRef(path) {
		return path, nil
	}
	r, err := ParseRef(path)
	if err != nil {
		return "", err
	}
	c, err := FromEnv()
	if err != nil {
		return "", err
	}
	return c.Download(ctx, r)
}

// StatusError is an HTTP answer of the Hub that is not a success.
type StatusError struct {
	Ref    Ref
	File   string
	Code   int
	Reason string // the Hub's X-Error-Code, if any (GatedRepo, RepoNotFound, RevisionNotFound, EntryNotFound)
	Msg    string
}

func (e *StatusError) Error() string { return e.Msg }

// fileMissing reports whether the Hub said the file does not exist at the
// revision (as opposed to the repository or the revision).
func (e *StatusError) fileMissing() bool {
	return e.Code == http.StatusNotFound && (e.Reason == "" || e.Reason == "EntryNotFound")
}

// netError is a failure to reach the Hub at all.
type netError struct{ err error }

func (e *netError) Error() string { return e.err.Error() }
func (e *netError) Unwrap() error { return e.err }

// fileMeta is what a HEAD request tells of a file.
type fileMeta struct {
	commit   string
	etag     string
	size     int64  // -1 when unknown
	location string // where to GET the bytes (the redirect target for LFS files)
}

// Download fetches config.json, the tokenizer files the repository has, and
// the weights (model.safetensors, or model.safetensors.index.json and every
// shard) of the reference into the cache and returns the snapshot folder.
// A commit-hash revision whose snapshot is complete makes no request; a
// branch or tag makes one HEAD request (config.json, to learn the commit)
// and no more when that commit's snapshot is complete. Offline, or when the
// Hub cannot be reached, the cached snapshot of the revision is used.
func (c *Client) Download(ctx context.Context, r Ref) (string, error) {
	if c.Offline {
		dir, err := c.Cached(r)
		if err != nil {
			return "", fmt.Errorf("HF_HUB_OFFLINE is set and the cache %s cannot serve it: %w", c.Cache, err)
		}
		return dir, nil
	}
	if r.pinned() {
		if dir, err := c.Cached(r); err == nil {
			return dir, nil
		}
	}
	cfg, err := c.head(ctx, r, r.Revision, "config.json")
	if err != nil {
		var ne *netError
		if errors.As(err, &ne) {
			dir, cerr := c.Cached(r)
			if cerr != nil {
				return "", fmt.Errorf("%s: cannot reach the Hub (%v), and the cache cannot serve it: %w", r, err, cerr)
			}
			c.note("%s: cannot reach the Hub (%v); using the cached snapshot %s\n", r, err, dir)
			return dir, nil
		}
		return "", err
	}
	commit := cfg.commit
	if !r.pinned() {
		if err := writeFileAtomic(filepath.Join(c.repoDir(r), "refs", filepath.FromSlash(r.Revision)), []byte(commit)); err != nil {
			return "", fmt.Errorf("%s: record the revision: %w", r, err)
		}
	}
	snap := filepath.Join(c.repoDir(r), "snapshots", commit)
	if c.complete(r, commit) == nil {
		return snap, nil
	}
	// Everything else at the commit config.json came from, so that the
	// files agree even if the branch moves meanwhile.
	if err := c.fetch(ctx, r, commit, "config.json", cfg); err != nil {
		return "", err
	}
	for _, f := range optionalFiles {
		if _, err := c.fetchFile(ctx, r, commit, f, true); err != nil {
			return "", err
		}
	}
	ok, err := c.fetchFile(ctx, r, commit, weightsFile, true)
	if err != nil {
		return "", err
	}
	if !ok {
		ok, err = c.fetchFile(ctx, r, commit, indexFile, true)
		if err != nil {
			return "", err
		}
		if !ok {
			return "", fmt.Errorf("%s: the repository has neither %s nor %s at revision %s (commit %s); kvbench reads safetensors weights",
				r, weightsFile, indexFile, r.Revision, commit)
		}
		shards, err := readShards(filepath.Join(snap, indexFile))
		if err != nil {
			return "", fmt.Errorf("%s: %w", r, err)
		}
		for _, s := range shards {
			if _, err := c.fetchFile(ctx, r, commit, s, false); err != nil {
				return "", err
			}
		}
	}
	return snap, nil
}

// fetchFile makes snapshots/<commit>/<file> present: nothing when it is
// already, else a HEAD request and a download of the blob when the cache
// lacks it. An optional file the Hub does not have is recorded under
// .no_exist and reported with ok false.
func (c *Client) fetchFile(ctx context.Context, r Ref, commit, file string, optional bool) (ok bool, err error) {
	if err := checkFileName(file); err != nil {
		return false, fmt.Errorf("%s: %w", r, err)
	}
	if present(filepath.Join(c.repoDir(r), "snapshots", commit, filepath.FromSlash(file))) {
		return true, nil
	}
	meta, err := c.head(ctx, r, commit, file)
	if err != nil {
		var se *StatusError
		if optional && errors.As(err, &se) && se.fileMissing() {
			marker := filepath.Join(c.repoDir(r), ".no_exist", commit, filepath.FromSlash(file))
			if werr := writeFileAtomic(marker, nil); werr != nil {
				return false, fmt.Errorf("%s: %w", r, werr)
			}
			return false, nil
		}
		return false, err
	}
	return true, c.fetch(ctx, r, commit, file, meta)
}

var safeBlob = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z._-]*$`)

// fetch downloads the blob meta describes (unless the cache has it with
// the right size) and links the snapshot file to it.
func (c *Client) fetch(ctx context.Context, r Ref, commit, file string, meta fileMeta) error {
	if !safeBlob.MatchString(meta.etag) || strings.HasSuffix(meta.etag, ".incomplete") {
		return fmt.Errorf("%s: %s: the Hub's ETag %q is not a blob name", r, file, meta.etag)
	}
	blob := filepath.Join(c.repoDir(r), "blobs", meta.etag)
	st, err := os.Stat(blob)
	if err != nil || (meta.size >= 0 && st.Size() != meta.size) {
		if err := c.download(ctx, r, file, meta, blob); err != nil {
			return err
		}
	}
	if err := link(blob, filepath.Join(c.repoDir(r), "snapshots", commit, filepath.FromSlash(file))); err != nil {
		return fmt.Errorf("%s: %s: %w", r, file, err)
	}
	return nil
}

// fileURL is the resolve URL of a file at a revision.
func (c *Client) fileURL(r Ref, rev, file string) string {
	segs := strings.Split(file, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return c.Endpoint + "/" + r.Repo + "/resolve/" + url.PathEscape(rev) + "/" + strings.Join(segs, "/")
}

// httpClient is the client's HTTP client, or one with timeouts on
// connecting and on the response headers (not on the whole body).
func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 60 * time.Second
	return &http.Client{Transport: t}
}

// request builds a request with the token for the endpoint's host only.
func (c *Client) request(ctx context.Context, method, u string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "kvbench-hub/1")
	req.Header.Set("Accept-Encoding", "identity")
	if c.Token != "" {
		if e, err := url.Parse(c.Endpoint); err == nil && e.Host == req.URL.Host {
			req.Header.Set("Authorization", "Bearer "+c.Token)
		}
	}
	return req, nil
}

// head asks the Hub about a file at a revision: the commit, the blob name
// (X-Linked-Etag, else ETag), the size (X-Linked-Size, else Content-Length)
// and where the bytes are. Relative redirects (a renamed repository) are
// followed; an absolute one (to a CDN) says where the bytes are and is not
// followed.
func (c *Client) head(ctx context.Context, r Ref, rev, file string) (fileMeta, error) {
	u := c.fileURL(r, rev, file)
	req, err := c.request(ctx, http.MethodHead, u)
	if err != nil {
		return fileMeta{}, fmt.Errorf("%s: %s: %w", r, file, err)
	}
	hc := *c.httpClient()
	hc.CheckRedirect = func(next *http.Request, via []*http.Request) error {
		if len(via) >= 10 || next.Response == nil {
			return http.ErrUseLastResponse
		}
		loc, err := url.Parse(next.Response.Header.Get("Location"))
		if err != nil || loc.IsAbs() || loc.Host != "" {
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fileMeta{}, &netError{fmt.Errorf("HEAD %s: %w", u, err)}
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return fileMeta{}, c.statusError(r, rev, file, resp)
	}
	h := resp.Header
	meta := fileMeta{commit: h.Get("X-Repo-Commit"), etag: normalizeETag(h.Get("X-Linked-Etag")), size: -1,
		location: resp.Request.URL.String()}
	if meta.etag == "" {
		meta.etag = normalizeETag(h.Get("ETag"))
	}
	for _, k := range []string{"X-Linked-Size", "Content-Length"} {
		if v := h.Get(k); v != "" {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
				meta.size = n
				break
			}
		}
	}
	if resp.StatusCode < 300 && rev != meta.commit {
		// Served by the Hub itself: fetch the bytes at the commit, not at a
		// branch that may move meanwhile.
		at := "/resolve/" + url.PathEscape(rev) + "/"
		if p := resp.Request.URL.EscapedPath(); strings.Contains(p, at) {
			if u, err := url.Parse(strings.Replace(resp.Request.URL.String(), at, "/resolve/"+meta.commit+"/", 1)); err == nil {
				meta.location = u.String()
			}
		}
	}
	if resp.StatusCode >= 300 {
		loc, err := resp.Location()
		if err != nil {
			return fileMeta{}, fmt.Errorf("%s: %s: HTTP %d without a usable Location: %w", r, file, resp.StatusCode, err)
		}
		meta.location = loc.String()
	}
	if meta.commit == "" || !commitHash.MatchString(meta.commit) {
		return fileMeta{}, fmt.Errorf("%s: %s: the Hub's answer (HEAD %s) has no commit hash in X-Repo-Commit (got %q); is %s a Hub endpoint?",
			r, file, u, meta.commit, c.Endpoint)
	}
	if rev != r.Revision && meta.commit != rev {
		return fileMeta{}, fmt.Errorf("%s: %s: asked for commit %s, the Hub answered for %s", r, file, rev, meta.commit)
	}
	if meta.etag == "" {
		return fileMeta{}, fmt.Errorf("%s: %s: the Hub's answer (HEAD %s) has no ETag", r, file, u)
	}
	return meta, nil
}

// normalizeETag strips a weak marker and the quotes.
func normalizeETag(s string) string {
	s = strings.TrimPrefix(strings.TrimSpace(s), "W/")
	return strings.Trim(s, `"`)
}

// statusError explains a failed answer.
func (c *Client) statusError(r Ref, rev, file string, resp *http.Response) error {
	e := &StatusError{Ref: r, File: file, Code: resp.StatusCode, Reason: resp.Header.Get("X-Error-Code")}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		hint := "set HF_TOKEN (or log in so that $HF_HOME/token exists) to a token with access"
		if c.Token != "" {
			hint = "the token sent (HF_TOKEN or $HF_HOME/token) has no access: accept the repository's terms on the Hub or use another token"
		}
		what := "gated or private (or does not exist)"
		if e.Reason == "GatedRepo" {
			what = "gated"
		}
		e.Msg = fmt.Sprintf("%s: HTTP %d for %s: the repository %s is %s; %s", r, resp.StatusCode, file, r.Repo, what, hint)
	case resp.StatusCode == http.StatusNotFound:
		switch e.Reason {
		case "RepoNotFound":
			e.Msg = fmt.Sprintf("%s: repository %s not found on %s (HTTP 404)", r, r.Repo, c.Endpoint)
		case "RevisionNotFound":
			e.Msg = fmt.Sprintf("%s: revision %s not found in %s (HTTP 404)", r, rev, r.Repo)
		default:
			e.Msg = fmt.Sprintf("%s: file %s not found at revision %s (HTTP 404)", r, file, rev)
		}
	default:
		e.Msg = fmt.Sprintf("%s: %s at revision %s: HTTP %s", r, file, rev, resp.Status)
	}
	return e
}

// download writes the blob through blob.incomplete, resuming a partial
// file with a Range request, and checks its size and, when the ETag is a
// sha256 (LFS files), its hash.
func (c *Client) download(ctx context.Context, r Ref, file string, meta fileMeta, blob string) error {
	fail := func(err error) error { return fmt.Errorf("%s: download %s: %w", r, file, err) }
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		return fail(err)
	}
	part := blob + ".incomplete"
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	var h hash.Hash
	if len(meta.etag) == 64 && isHex(meta.etag) {
		h = sha256.New()
	}
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return fail(err)
	}
	if meta.size >= 0 && have > meta.size {
		have = 0 // not a prefix of this file
	}
	if have > 0 && h != nil {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return fail(err)
		}
		if _, err := io.CopyN(h, f, have); err != nil {
			return fail(err)
		}
	}
	if meta.size < 0 || have < meta.size {
		if have, err = c.get(ctx, f, meta, have, h, file); err != nil {
			return fail(err)
		}
	}
	if err := f.Truncate(have); err != nil {
		return fail(err)
	}
	if meta.size >= 0 && have > meta.size {
		f.Close()
		os.Remove(part)
		return fail(fmt.Errorf("size mismatch: got more than the %d bytes the Hub said (the partial file was removed)", meta.size))
	}
	if meta.size >= 0 && have < meta.size {
		return fail(fmt.Errorf("size mismatch: got %d bytes, the Hub said %d (kept in %s; run again to resume)", have, meta.size, part))
	}
	if h != nil {
		if got := hex.EncodeToString(h.Sum(nil)); got != meta.etag {
			f.Close()
			os.Remove(part)
			return fail(fmt.Errorf("sha256 mismatch: got %s, the Hub's ETag says %s (the partial file was removed)", got, meta.etag))
		}
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(part, blob); err != nil {
		return fail(err)
	}
	return nil
}

// get fetches the bytes from offset have on (the whole file when the server
// ignores the Range) into f, feeding h, and returns the file's length.
func (c *Client) get(ctx context.Context, f *os.File, meta fileMeta, have int64, h hash.Hash, file string) (int64, error) {
	req, err := c.request(ctx, http.MethodGet, meta.location)
	if err != nil {
		return have, err
	}
	if have > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", have))
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return have, fmt.Errorf("GET %s: %w", meta.location, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent && have > 0:
		start, ok := rangeStart(resp.Header.Get("Content-Range"))
		if !ok || start != have {
			return have, fmt.Errorf("GET %s: asked for bytes from %d, got Content-Range %q", meta.location, have, resp.Header.Get("Content-Range"))
		}
	case resp.StatusCode == http.StatusOK:
		have = 0 // the whole file
		if h != nil {
			h.Reset()
		}
	default:
		return have, fmt.Errorf("GET %s: HTTP %s", meta.location, resp.Status)
	}
	if _, err := f.Seek(have, io.SeekStart); err != nil {
		return have, err
	}
	if err := f.Truncate(have); err != nil {
		return have, err
	}
	w := io.Writer(f)
	if h != nil {
		w = io.MultiWriter(f, h)
	}
	if c.Progress != nil {
		bar := progressbar.NewOptions64(meta.size, progressbar.OptionSetWriter(c.Progress),
			progressbar.OptionSetDescription(file), progressbar.OptionShowBytes(true),
			progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
		_ = bar.Set64(have)
		defer bar.Finish()
		w = io.MultiWriter(w, bar)
	}
	var src io.Reader = resp.Body
	if meta.size >= 0 {
		src = io.LimitReader(resp.Body, meta.size-have+1) // one byte over shows a too-long body
	}
	n, err := io.Copy(w, src)
	have += n
	if err != nil {
		return have, fmt.Errorf("GET %s: after %d bytes: %w (run again to resume)", meta.location, have, err)
	}
	return have, nil
}

// rangeStart reads the first byte of "bytes START-END/SIZE".
func rangeStart(s string) (int64, bool) {
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, false
	}
	start, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(start, 10, 64)
	return n, err == nil
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// note prints a message where progress goes.
func (c *Client) note(format string, args ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, format, args...)
	}
}
