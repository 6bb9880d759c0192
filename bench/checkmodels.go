package bench

import (
	"fmt"
	"os"
	"strings"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/hub"
	"github.com/kvbench/kvbench/runtime/tokenizer"
)

// CheckModels checks that every model of the suite can be opened, without
// loading its weights: the path is a known synthetic:NAME, a Hugging Face
// folder with a supported config.json and its weight files, or a llama2.c
// .bin whose header and size agree (runtime.InspectModel); the tokenizer
// named, or else the one beside the model, loads. Errors name the file, line
// and field of the path or tokenizer. An hf:ORG/NAME[@REV] model is checked
// in its cached snapshot when the Hugging Face cache holds it, and not at
// all otherwise (nothing is downloaded; HubStatus tells which). LoadSuite
// does not check this: a suite is valid to write before its models are
// downloaded.
func (s *Suite) CheckModels() error {
	var errs Errors
	for _, m := range s.models {
		name, spec := m.spec.Name, m.spec
		path := spec.Path
		if hub.IsRef(path) {
			dir, err := hubCached(path)
			if err != nil {
				continue // downloaded when run; HubStatus says so
			}
			path = dir
		}
		tok, err := runtime.InspectModel(path)
		if err != nil {
			errs = append(errs, &Error{Pos: m.pathAt, Msg: fmt.Sprintf("model %s: path: %v", name, err)})
			continue
		}
		at, field := m.pathAt, "path"
		if spec.Tokenizer != "" {
			tok, at, field = spec.Tokenizer, m.tokAt, "tokenizer"
		}
		if tok == "" {
			if strings.HasPrefix(spec.Path, "synthetic:") {
				continue // the byte tokenizer
			}
			errs = append(errs, &Error{Pos: at, Msg: fmt.Sprintf("model %s: no tokenizer beside %s (tokenizer.json, tokenizer.model, tokenizer.bin or tok512.bin); name one with tokenizer:", name, path)})
			continue
		}
		if st, err := os.Stat(tok); err != nil || st.IsDir() {
			why := "is a folder"
			if err != nil {
				why = unwrapPath(err).Error()
			}
			errs = append(errs, &Error{Pos: at, Msg: fmt.Sprintf("model %s: %s: tokenizer %s: %s", name, field, tok, why)})
			continue
		}
		if _, err := tokenizer.Load(tok); err != nil {
			errs = append(errs, &Error{Pos: at, Msg: fmt.Sprintf("model %s: %s: %v", name, field, err)})
		}
	}
	if len(errs) > 0 {
		return finish(errs)
	}
	return nil
}

// hubCached is the cached snapshot folder of an hf: model, found without
// any request, or an error saying why the cache cannot serve it.
func hubCached(path string) (string, error) {
	r, err := hub.ParseRef(path)
	if err != nil {
		return "", err
	}
	c, err := hub.FromEnv()
	if err != nil {
		return "", err
	}
	return c.Cached(r)
}

// HubStatus says, for each hf:ORG/NAME[@REV] model of the suite, whether
// the Hugging Face cache holds it (and where) or a run will download it;
// it makes no request.
func (s *Suite) HubStatus() []string {
	var out []string
	for _, m := range s.Models {
		if !hub.IsRef(m.Path) {
			continue
		}
		if dir, err := hubCached(m.Path); err == nil {
			out = append(out, fmt.Sprintf("model %s: %s is cached in %s", m.Name, m.Path, dir))
		} else {
			out = append(out, fmt.Sprintf("model %s: %s is not cached (%v); kvbench run downloads it", m.Name, m.Path, err))
		}
	}
	return out
}
