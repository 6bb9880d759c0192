package bench

import (
	"context"
	"fmt"
	"strings"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/hub"
	"github.com/kvbench/kvbench/runtime/tokenizer"
)

// OpenModel loads a model and its tokenizer: tokPath when given, else the
// tokenizer file beside the model, else the byte tokenizer of synthetic models.
// A path hf:ORG/NAME[@REV] is downloaded from the Hugging Face Hub into its
// cache (or found there; see package hub) and loaded from the snapshot folder.
func OpenModel(path, tokPath string) (*runtime.Model, tokenizer.Tokenizer, error) {
	if path == "" {
		return nil, nil, fmt.Errorf("--model is required (a Hugging Face directory, hf:ORG/NAME[@REV] from the Hub, a GGUF file, a llama2.c .bin, or synthetic:%s)",
			strings.Join(runtime.SyntheticNames(), "|synthetic:"))
	}
	dir, err := hub.Resolve(context.Background(), path)
	if err != nil {
		return nil, nil, err
	}
	m, err := runtime.Load(dir)
	if err != nil {
		return nil, nil, err
	}
	if tokPath == "" {
		tokPath = m.Tokenizer
	}
	var tok tokenizer.Tokenizer
	switch {
	case tokPath != "":
		if tok, err = tokenizer.Load(tokPath); err != nil {
			return nil, nil, err
		}
	case strings.HasPrefix(path, "synthetic:"):
		tok = tokenizer.Bytes{}
	default:
		return nil, nil, fmt.Errorf("model %s: no tokenizer beside it; give one with --tokenizer", path)
	}
	if tok.VocabSize() > m.Config.Vocab {
		return nil, nil, fmt.Errorf("tokenizer %s has %d tokens, more than model %s's vocabulary of %d",
			tokPath, tok.VocabSize(), path, m.Config.Vocab)
	}
	return m, tok, nil
}
