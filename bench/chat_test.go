package bench

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/results"
	"github.com/kvbench/kvbench/runtime/chat"
	"github.com/stretchr/testify/require"
)

// A Llama-3-shaped template for the byte tokenizer of synthetic models.
const fakeTokenizerConfig = `{"bos_token": "<s>", "eos_token": "</s>",
 "chat_template": "{{- bos_token }}{%- for m in messages %}{{- '<|' + m['role'] + '|>\\n' + m['content'] | trim + '<|end|>' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- endif %}"}`

// TestPasskeyChatEndToEnd runs passkey on synthetic:tiny with a chat
// template given in the suite, chat auto and off: the record says which was
// used and shows the wrapped prompt, whose BOS is the tokenizer's id once.
func TestPasskeyChatEndToEnd(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(fakeTokenizerConfig), 0o644))
	suite := `name: chat
backend: cpu
models:
  - {name: tiny, path: "synthetic:tiny", chat_template: tokenizer_config.json}
  - {name: base, path: "synthetic:tiny"}
policies: [full]
tasks:
  - {name: passkey, lengths: [400], trials: 2, decode_tail: 30}
  - {name: passkey, lengths: [420], trials: 1, decode_tail: 30, chat: "off"}
`
	path := filepath.Join(dir, "suite.yaml")
	require.NoError(t, os.WriteFile(path, []byte(suite), 0o644))
	s, err := LoadSuite(path)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(dir, "tokenizer_config.json"), s.Models[0].ChatTemplate)
	out := filepath.Join(dir, "out")
	_, err = Run(context.Background(), s, runOpts(out))
	require.NoError(t, err)
	data, err := os.ReadFile(filepath.Join(out, results.FileName))
	require.NoError(t, err)
	seen := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var rec results.Record
		require.NoError(t, json.Unmarshal([]byte(line), &rec))
		require.Equal(t, "ok", rec.Status, rec.Error)
		mode, _ := rec.Detail["chat"].(string)
		length := rec.TaskParams["lengths"]
		key := rec.Model + "/" + strings.TrimSpace(strings.ReplaceAll(jsonString(t, length), " ", ""))
		seen[key] = mode
		if rec.Model == "tiny" && mode == "on" {
			prompt, _ := rec.Detail["chat_prompt"].(string)
			require.True(t, strings.HasPrefix(prompt, "<s><|user|>\nThere is an important info"), prompt)
			require.True(t, strings.HasSuffix(prompt, "What is the pass key?<|end|><|assistant|>\nThe pass key is"), prompt)
			require.Equal(t, filepath.Join(dir, "tokenizer_config.json"), rec.Detail["chat_template"])
		}
	}
	// auto with a template wraps, chat: off does not, a model without one does not.
	require.Equal(t, map[string]string{"tiny/400": "on", "tiny/420": "off", "base/400": "off", "base/420": "off"}, seen)
}

func jsonString(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// TestOpenChatTemplate finds the template beside a model folder or its
// tokenizer, takes a suite's override first, and finds none for synthetic
// models.
func TestOpenChatTemplate(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(fakeTokenizerConfig), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "other.jinja"), []byte("X{{ messages[0].content }}"), 0o644))
	tm, err := OpenChatTemplate("synthetic:tiny", "", "")
	require.NoError(t, err)
	require.Nil(t, tm)
	tm, err = OpenChatTemplate(dir, "", "")
	require.NoError(t, err)
	require.NotNil(t, tm)
	require.Equal(t, "<s>", tm.BOSToken)
	tm, err = OpenChatTemplate("synthetic:tiny", filepath.Join(dir, "tokenizer.json"), "")
	require.NoError(t, err)
	require.NotNil(t, tm)
	tm, err = OpenChatTemplate(dir, "", filepath.Join(dir, "other.jinja"))
	require.NoError(t, err)
	got, err := tm.Apply([]chat.Message{{Role: "user", Content: "hi"}}, true)
	require.NoError(t, err)
	require.Equal(t, "Xhi", got)
	require.Equal(t, "<s>", tm.BOSToken) // the tokenizer_config.json beside the .jinja
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(`{"chat_template": "{% macro x() %}{% endmacro %}"}`), 0o644))
	_, err = OpenChatTemplate(dir, "", "")
	require.ErrorContains(t, err, "tokenizer_config.json: line 1 col 4: unsupported statement {% macro %}")
}
