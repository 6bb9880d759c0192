package bench

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/results"
	"github.com/stretchr/testify/require"
)

// TestNeedleRulerChatEndToEnd runs needle, niah_single_2 and vt on
// synthetic:tiny with a chat template given in the suite and without one:
// auto wraps where there is a template, chat: off never does, the records
// say which, show the wrapped prompt and stay within the length; chat-off
// prompts of the model with a template are those of the model without.
func TestNeedleRulerChatEndToEnd(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(fakeTokenizerConfig), 0o644))
	hay := strings.Repeat("The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. ", 40)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "hay.txt"), []byte(hay), 0o644))
	suite := `name: chat
backend: cpu
models:
  - {name: tiny, path: "synthetic:tiny", chat_template: tokenizer_config.json}
  - {name: base, path: "synthetic:tiny"}
policies: [full]
tasks:
  - {name: needle, haystack: hay.txt, lengths: [500], depths: [0.5], max_new: 4}
  - {name: needle, haystack: hay.txt, lengths: [501], depths: [0.5], max_new: 4, chat: "off"}
  - {name: niah_single_2, haystack: hay.txt, lengths: [700], depths: [0.5], trials: 1, max_new: 4}
  - {name: vt, lengths: [1300], trials: 1, max_new: 4, chat: "off"}
`
	path := filepath.Join(dir, "suite.yaml")
	require.NoError(t, os.WriteFile(path, []byte(suite), 0o644))
	s, err := LoadSuite(path)
	require.NoError(t, err)
	out := filepath.Join(dir, "out")
	_, err = Run(context.Background(), s, runOpts(out))
	require.NoError(t, err)
	data, err := os.ReadFile(filepath.Join(out, results.FileName))
	require.NoError(t, err)
	seen := map[string]string{}
	tokens := map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var rec results.Record
		require.NoError(t, json.Unmarshal([]byte(line), &rec))
		require.Equal(t, "ok", rec.Status, rec.Error)
		mode, _ := rec.Detail["chat"].(string)
		length := int(rec.TaskParams["lengths"].(float64))
		key := rec.Model + "/" + rec.Task + "/" + jsonString(t, length)
		seen[key] = mode
		prompt, _ := rec.Detail["chat_prompt"].(string)
		require.Equal(t, mode == "on", prompt != "", key)
		switch rec.Task {
		case "needle":
			n := int(rec.Detail["prompt_tokens"].(float64))
			require.LessOrEqual(t, n, length, key)
			require.Greater(t, n, length-4, key)
			tokens[key] = []any{rec.Detail["prompt_tokens"], rec.Detail["insert_token"], rec.Detail["insert_byte"]}
			if mode == "on" {
				require.True(t, strings.HasPrefix(prompt, "<s><|user|>\nThe best thing to do in San Francisco"), prompt)
				require.True(t, strings.HasSuffix(prompt, "What is the best thing to do in San Francisco?<|end|><|assistant|>\nAnswer:"), prompt)
				require.Equal(t, filepath.Join(dir, "tokenizer_config.json"), rec.Detail["chat_template"])
			}
		default:
			trials := rec.Detail["trials"].([]any)
			tr := trials[0].(map[string]any)
			require.LessOrEqual(t, int(tr["tokens"].(float64))+4, length, key)
			tokens[key] = []any{tr["tokens"], tr["question_tokens"], tr["haystack"]}
			if mode == "on" {
				require.True(t, strings.HasPrefix(prompt, "<s><|user|>\nA special magic number is hidden"), prompt)
				require.Contains(t, prompt, "[...]\nWhat is the special magic number for ")
				require.Contains(t, prompt, " mentioned in the provided text?<|end|><|assistant|>\nThe special magic number for ")
				require.True(t, strings.HasSuffix(prompt, " mentioned in the provided text is"), prompt)
			}
		}
	}
	require.Equal(t, map[string]string{
		"tiny/needle/500": "on", "tiny/needle/501": "off", "tiny/niah_single_2/700": "on", "tiny/vt/1300": "off",
		"base/needle/500": "off", "base/needle/501": "off", "base/niah_single_2/700": "off", "base/vt/1300": "off",
	}, seen)
	// chat: off on the model with a template is the model without one.
	require.Equal(t, tokens["base/needle/501"], tokens["tiny/needle/501"])
	require.Equal(t, tokens["base/vt/1300"], tokens["tiny/vt/1300"])
	require.NotEqual(t, tokens["base/needle/500"], tokens["tiny/needle/500"])
	require.NotEqual(t, tokens["base/niah_single_2/700"], tokens["tiny/niah_single_2/700"])
}
