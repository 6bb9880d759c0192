package hub

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeRepo is a repository of the fake Hub: branches and tags name commits,
// each commit a set of files.
type fakeRepo struct {
	refs    map[string]string            // branch or tag -> commit
	commits map[string]map[string][]byte // commit -> file -> bytes
	token   string                       // non-empty: gated, this token required
}

// fakeHub answers like the Hub's resolve endpoint: HEAD and GET of
// /ORG/NAME/resolve/REV/FILE with X-Repo-Commit; small files served with a
// git ETag, .safetensors files (LFS) redirected to /cdn/<sha256> with
// X-Linked-Etag and X-Linked-Size; the CDN honours Range. It counts the
// requests and the body bytes it serves.
type fakeHub struct {
	t     *testing.T
	srv   *httptest.Server // the Hub
	cdn   *httptest.Server // another host serving the LFS blobs
	repos map[string]*fakeRepo
	moved map[string]string // old repository id -> new: a relative redirect

	mu        sync.Mutex
	log       []string // "HEAD /path" per request
	served    int64    // body bytes written
	ranges    []string // Range headers the CDN saw
	auth      []string // Authorization headers of resolve requests
	cdnAuth   []string // Authorization headers of CDN requests
	noRange   bool     // the CDN ignores Range
	corrupt   bool     // the CDN flips a byte of what it serves
	sizeDelta int64    // added to the size the HEAD answers give for LFS files
}

func newFakeHub(t *testing.T) *fakeHub {
	h := &fakeHub{t: t, repos: map[string]*fakeRepo{}, moved: map[string]string{}}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	h.cdn = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.cdn.Close)
	return h
}

// client is a client of the fake Hub caching in a new folder.
func (h *fakeHub) client() *Client {
	return &Client{Endpoint: h.srv.URL, Cache: h.t.TempDir()}
}

// requests returns and clears the request log.
func (h *fakeHub) requests() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.log
	h.log = nil
	return l
}

func (h *fakeHub) servedBytes() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.served
}

func (h *fakeHub) count(method string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, l := range h.log {
		if strings.HasPrefix(l, method+" ") {
			n++
		}
	}
	return n
}

func isLFS(file string) bool { return strings.HasSuffix(file, ".safetensors") }

func sha256Hex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// gitOID is the git blob hash the Hub uses as the ETag of a small file.
func gitOID(b []byte) string {
	s := sha1.Sum(append([]byte(fmt.Sprintf("blob %d\x00", len(b))), b...))
	return hex.EncodeToString(s[:])
}

func (h *fakeHub) serve(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.log = append(h.log, r.Method+" "+r.URL.EscapedPath())
	h.mu.Unlock()
	segs := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	for i, s := range segs {
		u, err := url.PathUnescape(s)
		if err != nil {
			http.Error(w, "bad path", http.StatusBadRequest)
			return
		}
		segs[i] = u
	}
	if len(segs) == 2 && segs[0] == "cdn" {
		h.serveCDN(w, r, segs[1])
		return
	}
	h.mu.Lock()
	h.auth = append(h.auth, r.Header.Get("Authorization"))
	h.mu.Unlock()
	if len(segs) < 5 || segs[2] != "resolve" {
		http.NotFound(w, r)
		return
	}
	repo, rev, file := segs[0]+"/"+segs[1], segs[3], strings.Join(segs[4:], "/")
	if to, ok := h.moved[repo]; ok {
		http.Redirect(w, r, "/"+to+strings.TrimPrefix(r.URL.EscapedPath(), "/"+repo), http.StatusTemporaryRedirect)
		return
	}
	fr, ok := h.repos[repo]
	if !ok {
		w.Header().Set("X-Error-Code", "RepoNotFound")
		http.Error(w, "Repository not found", http.StatusNotFound)
		return
	}
	if fr.token != "" && r.Header.Get("Authorization") != "Bearer "+fr.token {
		w.Header().Set("X-Error-Code", "GatedRepo")
		http.Error(w, "Access to this repository is restricted", http.StatusUnauthorized)
		return
	}
	commit, ok := fr.refs[rev]
	if !ok {
		commit = rev
	}
	files, ok := fr.commits[commit]
	if !ok {
		w.Header().Set("X-Error-Code", "RevisionNotFound")
		http.Error(w, "Invalid rev id", http.StatusNotFound)
		return
	}
	w.Header().Set("X-Repo-Commit", commit)
	data, ok := files[file]
	if !ok {
		w.Header().Set("X-Error-Code", "EntryNotFound")
		http.Error(w, "Entry not found", http.StatusNotFound)
		return
	}
	if isLFS(file) {
		sum := sha256Hex(data)
		w.Header().Set("X-Linked-Etag", `"`+sum+`"`)
		w.Header().Set("X-Linked-Size", strconv.FormatInt(int64(len(data))+h.sizeDelta, 10))
		w.Header().Set("ETag", `W/"not-the-blob"`)
		http.Redirect(w, r, h.cdn.URL+"/cdn/"+sum, http.StatusFound)
		return
	}
	w.Header().Set("ETag", `"`+gitOID(data)+`"`)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	if r.Method == http.MethodHead {
		return
	}
	h.mu.Lock()
	h.served += int64(len(data))
	h.mu.Unlock()
	w.Write(data)
}

// serveCDN serves an LFS blob by its sha256, with Range unless noRange.
func (h *fakeHub) serveCDN(w http.ResponseWriter, r *http.Request, sum string) {
	h.mu.Lock()
	h.cdnAuth = append(h.cdnAuth, r.Header.Get("Authorization"))
	h.ranges = append(h.ranges, r.Header.Get("Range"))
	noRange, corrupt := h.noRange, h.corrupt
	h.mu.Unlock()
	var data []byte
	for _, fr := range h.repos {
		for _, files := range fr.commits {
			for f, b := range files {
				if isLFS(f) && sha256Hex(b) == sum {
					data = b
				}
			}
		}
	}
	if data == nil {
		http.NotFound(w, r)
		return
	}
	if corrupt {
		data = bytes.Clone(data)
		data[len(data)/2] ^= 0xff
	}
	if noRange {
		r.Header.Del("Range")
	}
	http.ServeContent(&countingWriter{ResponseWriter: w, h: h}, r, sum, time.Time{}, bytes.NewReader(data))
}

// countingWriter adds the body bytes it writes to the hub's count as it
// writes them (before the client can have read them).
type countingWriter struct {
	http.ResponseWriter
	h *fakeHub
}

func (c *countingWriter) Write(b []byte) (int, error) {
	c.h.mu.Lock()
	c.h.served += int64(len(b))
	c.h.mu.Unlock()
	return c.ResponseWriter.Write(b)
}
