package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Files fetched besides the weights: config.json is required, the others
// are fetched when the repository has them.
var (
	requiredFiles = []string{"config.json"}
	optionalFiles = []string{"tokenizer.json", "tokenizer.model", "tokenizer_config.json",
		"generation_config.json", "special_tokens_map.json"}
)

const (
	weightsFile = "model.safetensors"
	indexFile   = "model.safetensors.index.json"
)

// repoDir is the repository's folder in the cache.
func (c *Client) repoDir(r Ref) string { return filepath.Join(c.Cache, r.folder()) }

// cachedCommit is the commit the cache holds for the reference's revision:
// the revision itself when it is a commit hash, else refs/<revision>.
func (c *Client) cachedCommit(r Ref) (string, error) {
	if r.pinned() {
		return r.Revision, nil
	}
	p := filepath.Join(c.repoDir(r), "refs", filepath.FromSlash(r.Revision))
	b, err := os.ReadFile(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%s: revision %s is not in the cache (no %s)", r, r.Revision, p)
		}
		return "", fmt.Errorf("%s: %w", r, err)
	}
	commit := strings.TrimSpace(string(b))
	if !commitHash.MatchString(commit) {
		return "", fmt.Errorf("%s: %s holds %q, not a commit hash", r, p, commit)
	}
	return commit, nil
}

// Cached returns the snapshot folder of the reference if the cache holds
// every file Download would fetch for it, without any request; else an
// error saying what is missing.
func (c *Client) Cached(r Ref) (string, error) {
	commit, err := c.cachedCommit(r)
	if err != nil {
		return "", err
	}
	snap := filepath.Join(c.repoDir(r), "snapshots", commit)
	if err := c.complete(r, commit); err != nil {
		return "", err
	}
	return snap, nil
}

// present reports whether a snapshot file exists and can be read (a symlink
// to a missing blob is absent).
func present(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// complete checks that the snapshot of commit holds every file of a
// download: the required files, each optional file or its .no_exist marker,
// and model.safetensors or the index with every shard.
func (c *Client) complete(r Ref, commit string) error {
	snap := filepath.Join(c.repoDir(r), "snapshots", commit)
	noExist := filepath.Join(c.repoDir(r), ".no_exist", commit)
	missing := func(f string) error {
		return fmt.Errorf("%s: the cached snapshot %s lacks %s", r, snap, f)
	}
	for _, f := range requiredFiles {
		if !present(filepath.Join(snap, f)) {
			return missing(f)
		}
	}
	for _, f := range optionalFiles {
		if !present(filepath.Join(snap, f)) && !present(filepath.Join(noExist, f)) {
			return missing(f)
		}
	}
	if present(filepath.Join(snap, weightsFile)) {
		return nil
	}
	if !present(filepath.Join(snap, indexFile)) {
		return missing(weightsFile + " or " + indexFile)
	}
	shards, err := readShards(filepath.Join(snap, indexFile))
	if err != nil {
		return err
	}
	for _, s := range shards {
		if !present(filepath.Join(snap, filepath.FromSlash(s))) {
			return missing(s)
		}
	}
	return nil
}

// readShards lists the files an index's weight_map names, sorted, each
// checked to be a relative path inside the snapshot.
func readShards(p string) ([]string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("%s: weight_map is missing or empty", p)
	}
	seen := map[string]bool{}
	var out []string
	for tensor, f := range idx.WeightMap {
		if err := checkFileName(f); err != nil {
			return nil, fmt.Errorf("%s: weight_map[%q]: %w", p, tensor, err)
		}
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out, nil
}

// checkFileName refuses a repository file name that could leave the
// snapshot folder.
func checkFileName(f string) error {
	if f == "" || strings.HasPrefix(f, "/") || strings.Contains(f, "\\") || path.Clean(f) != f ||
		f == ".." || strings.HasPrefix(f, "../") {
		return fmt.Errorf("file name %q is not a plain relative path", f)
	}
	return nil
}

// link makes snapshot file p point at blob: a relative symlink as
// huggingface_hub makes, or a copy where symlinks cannot be made.
func link(blob, p string) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(p), blob)
	if err == nil && os.Symlink(rel, p) == nil {
		return nil
	}
	return copyFile(blob, p)
}

// copyFile copies src to dst through a temporary file beside dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}

// writeFileAtomic writes data to p through a temporary file.
func writeFileAtomic(p string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}
