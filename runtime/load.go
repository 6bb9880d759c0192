package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Load reads a model from path: "synthetic:NAME" for a built-in seeded
// model, a directory in Hugging Face layout (config.json + safetensors), a
// llama.cpp GGUF file (.gguf, or any file starting with the GGUF magic), or a
// llama2.c checkpoint file (.bin). Errors name the file and what is wrong.
func Load(path string) (*Model, error) {
	if name, ok := strings.CutPrefix(path, "synthetic:"); ok {
		return Synthetic(name)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	var m *Model
	switch {
	case st.IsDir():
		m, err = LoadHF(path)
	case isGGUFFile(path):
		m, err = LoadGGUF(path)
	default:
		m, err = LoadLlama2C(path)
	}
	if err != nil {
		return nil, err
	}
	if err := m.Check(); err != nil {
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	if m.Tokenizer == "" {
		m.Tokenizer = findTokenizer(path, st.IsDir())
	}
	return m, nil
}

// findTokenizer returns the tokenizer file that sits beside a model, or "".
func findTokenizer(path string, isDir bool) string {
	dir := path
	if !isDir {
		dir = filepath.Dir(path)
	}
	for _, name := range []string{"tokenizer.json", "tokenizer.model", "tokenizer.bin", "tok512.bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return ""
}
