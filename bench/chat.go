package bench

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/kvbench/kvbench/runtime/chat"
)

// OpenChatTemplate returns the chat template of a model: the file override
// when given (a tokenizer_config.json or a Jinja file), else the one beside
// the tokenizer file tokPath, else the one in the model's folder (or beside
// its file); nil when there is none (a base model, a synthetic model).
func OpenChatTemplate(modelPath, tokPath, override string) (*chat.Template, error) {
	if override != "" {
		return chat.Load(override)
	}
	var dirs []string
	if tokPath != "" {
		dirs = append(dirs, filepath.Dir(tokPath))
	}
	if !strings.HasPrefix(modelPath, "synthetic:") {
		if st, err := os.Stat(modelPath); err == nil && st.IsDir() {
			dirs = append(dirs, modelPath)
		} else if err == nil {
			dirs = append(dirs, filepath.Dir(modelPath))
		}
	}
	for _, d := range dirs {
		t, err := chat.Find(d)
		if err != nil || t != nil {
			return t, err
		}
	}
	return nil, nil
}
