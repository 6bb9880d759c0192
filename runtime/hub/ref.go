// Package hub downloads models from the Hugging Face Hub into the cache
// layout that huggingface_hub uses, so that kvbench and Python tools share one
// copy of each model:
//
//	$HF_HUB_CACHE/models--ORG--NAME/
//	  blobs/<etag>                    the files' bytes, named by their git or sha256 hash
//	  snapshots/<commit>/<file>       symlinks to the blobs (copies where symlinks fail)
//	  refs/<revision>                 the commit a branch or tag pointed to
//	  .no_exist/<commit>/<file>       optional files the Hub said do not exist
//
// A model is named hf:ORG/NAME[@REVISION] (ParseRef). Client.Download fetches
// config.json, the tokenizer files the repository has, and model.safetensors
// or model.safetensors.index.json with every shard it lists, through the
// Hub's resolve endpoint; downloads resume from blobs/<etag>.incomplete.
// Offline (HF_HUB_OFFLINE=1, or when the Hub cannot be reached) the cached
// snapshot of the revision is used.
package hub

import (
	"fmt"
	"regexp"
	"strings"
)

// Prefix starts a model path that names a Hub repository.
const Prefix = "hf:"

// DefaultRevision is the revision of a reference that names none.
const DefaultRevision = "main"

// Ref is a parsed hf:ORG/NAME[@REVISION] model reference.
type Ref struct {
	Repo     string // ORG/NAME (or a bare NAME of the Hub's canonical models)
	Revision string // a branch, tag or commit hash; DefaultRevision when not given
}

// IsRef reports whether path names a Hub repository (starts with Prefix).
func IsRef(path string) bool { return strings.HasPrefix(path, Prefix) }

var (
	repoPart   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	commitHash = regexp.MustCompile(`^[0-9a-f]{40}$`)
)

// ParseRef parses hf:ORG/NAME[@REVISION]. The repository id follows the
// Hub's rules (letters, digits, '-', '_', '.'; no "--" or ".."; at most 96
// characters); the revision may hold '/' (refs/pr/1) but no "..", spaces or
// empty parts.
func ParseRef(s string) (Ref, error) {
	rest, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return Ref{}, fmt.Errorf("%q is not a Hub reference (want %sORG/NAME[@REVISION])", s, Prefix)
	}
	repo, rev, hasRev := strings.Cut(rest, "@")
	bad := func(format string, args ...any) (Ref, error) {
		return Ref{}, fmt.Errorf("%q: %s (want %sORG/NAME[@REVISION])", s, fmt.Sprintf(format, args...), Prefix)
	}
	if repo == "" {
		return bad("no repository")
	}
	if len(repo) > 96 {
		return bad("repository id longer than 96 characters")
	}
	parts := strings.Split(repo, "/")
	if len(parts) > 2 {
		return bad("repository id %q has more than one '/'", repo)
	}
	for _, p := range parts {
		if !repoPart.MatchString(p) || strings.Contains(p, "--") || strings.Contains(p, "..") ||
			strings.HasSuffix(p, ".") || strings.HasSuffix(p, "-") {
			return bad("repository id %q: %q is not a valid name (letters, digits, '-', '_', '.'; no \"--\" or \"..\")", repo, p)
		}
	}
	if hasRev {
		if rev == "" {
			return bad("empty revision after '@'")
		}
		for _, p := range strings.Split(rev, "/") {
			if p == "" || p == "." || p == ".." {
				return bad("revision %q has an empty, '.' or '..' part", rev)
			}
		}
		if strings.ContainsAny(rev, " \t\r\n\\:?*~^[") {
			return bad("revision %q holds a character a git ref cannot", rev)
		}
	} else {
		rev = DefaultRevision
	}
	return Ref{Repo: repo, Revision: rev}, nil
}

// String is the reference as ParseRef reads it.
func (r Ref) String() string {
	if r.Revision == DefaultRevision || r.Revision == "" {
		return Prefix + r.Repo
	}
	return Prefix + r.Repo + "@" + r.Revision
}

// Name is the repository's name without its organization.
func (r Ref) Name() string {
	if _, name, ok := strings.Cut(r.Repo, "/"); ok {
		return name
	}
	return r.Repo
}

// folder is the repository's folder in the cache: models--ORG--NAME.
func (r Ref) folder() string {
	return "models--" + strings.ReplaceAll(r.Repo, "/", "--")
}

// pinned reports whether the revision is a full commit hash.
func (r Ref) pinned() bool { return commitHash.MatchString(r.Revision) }
