package chat

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// The conversations the model templates are checked on; bench/golden_chat.py
// renders the same ones with transformers' apply_chat_template.
var modelCases = []struct {
	name string
	msgs []Message
	gen  bool
}{
	{"system_user", []Message{{"system", "You are a helpful assistant."}, {"user", "What is the pass key?"}}, true},
	{"user", []Message{{"user", "Hello, world."}}, true},
	{"multi_turn", []Message{{"system", "Be brief. "}, {"user", " Hi"}, {"assistant", "Hello! "}, {"user", "Bye"}}, false},
}

// modelTemplates are the shipped templates in testdata: file, then the
// expected rendering of each case, derived by hand from the template text.
var modelTemplates = []struct {
	file string
	want map[string]string
}{
	{"llama-3.1-8b-instruct.tokenizer_config.json", map[string]string{
		// bos_token, the system header with the fixed dates (no
		// strftime_now), the trimmed system message, each turn trimmed,
		// then the assistant header for the generation prompt.
		"system_user": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" +
			"Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" +
			"You are a helpful assistant.<|eot_id|>" +
			"<|start_header_id|>user<|end_header_id|>\n\nWhat is the pass key?<|eot_id|>" +
			"<|start_header_id|>assistant<|end_header_id|>\n\n",
		"user": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" +
			"Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>" +
			"<|start_header_id|>user<|end_header_id|>\n\nHello, world.<|eot_id|>" +
			"<|start_header_id|>assistant<|end_header_id|>\n\n",
		"multi_turn": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" +
			"Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" +
			"Be brief.<|eot_id|>" +
			"<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
			"<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>" +
			"<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>",
	}},
	{"qwen2.5-7b-instruct.tokenizer_config.json", map[string]string{
		// The given system message, or Qwen's default one; contents untrimmed.
		"system_user": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" +
			"<|im_start|>user\nWhat is the pass key?<|im_end|>\n<|im_start|>assistant\n",
		"user": "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n" +
			"<|im_start|>user\nHello, world.<|im_end|>\n<|im_start|>assistant\n",
		"multi_turn": "<|im_start|>system\nBe brief. <|im_end|>\n<|im_start|>user\n Hi<|im_end|>\n" +
			"<|im_start|>assistant\nHello! <|im_end|>\n<|im_start|>user\nBye<|im_end|>\n",
	}},
	{"mistral-7b-instruct-v0.3.tokenizer_config.json", map[string]string{
		// bos_token once; the system message goes into the last user turn;
		// no generation prompt (the template ignores add_generation_prompt).
		"system_user": "<s>[INST] You are a helpful assistant.\n\nWhat is the pass key?[/INST]",
		"user":        "<s>[INST] Hello, world.[/INST]",
		"multi_turn":  "<s>[INST]  Hi[/INST] Hello!</s>[INST] Be brief. \n\nBye[/INST]",
	}},
}

func loadModelTemplate(t *testing.T, file string) *Template {
	t.Helper()
	tm, err := Load(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func TestModelTemplates(t *testing.T) {
	for _, mt := range modelTemplates {
		tm := loadModelTemplate(t, mt.file)
		for _, c := range modelCases {
			got, err := tm.Apply(c.msgs, c.gen)
			if err != nil {
				t.Errorf("%s %s: %v", mt.file, c.name, err)
				continue
			}
			if want := mt.want[c.name]; got != want {
				t.Errorf("%s %s:\n got %q\nwant %q", mt.file, c.name, got, want)
			}
		}
	}
}

// TestModelTemplateErrors checks the templates' own checks surface as
// errors: Mistral's alternation rule.
func TestModelTemplateErrors(t *testing.T) {
	tm := loadModelTemplate(t, "mistral-7b-instruct-v0.3.tokenizer_config.json")
	_, err := tm.Apply([]Message{{"user", "a"}, {"user", "b"}}, true)
	if re, ok := err.(*RaiseError); !ok || re.Message != "After the optional system message, conversation roles must alternate user/assistant/user/assistant/..." {
		t.Errorf("two user turns gave %v, want the template's raise_exception", err)
	}
}

// TestModelTemplatesGolden compares with transformers' apply_chat_template
// output written by bench/golden_chat.py (one JSON object per line: file,
// case, text): testdata/transformers_golden.jsonl, written on the GPU
// machine by transformers 5.17 (regenerate it there with
// `python3 bench/golden_chat.py > runtime/chat/testdata/transformers_golden.jsonl`,
// never by hand), or the file KVBENCH_CHAT_GOLDEN names.
func TestModelTemplatesGolden(t *testing.T) {
	path := os.Getenv("KVBENCH_CHAT_GOLDEN")
	if path == "" {
		path = filepath.Join("testdata", "transformers_golden.jsonl")
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	templates := map[string]*Template{}
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var g struct{ File, Case, Text string }
		if err := json.Unmarshal(sc.Bytes(), &g); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		tm := templates[g.File]
		if tm == nil {
			tm = loadModelTemplate(t, g.File)
			templates[g.File] = tm
		}
		found := false
		for _, c := range modelCases {
			if c.name != g.Case {
				continue
			}
			found = true
			got, err := tm.Apply(c.msgs, c.gen)
			if err != nil {
				t.Errorf("%s %s: %v", g.File, g.Case, err)
			} else if got != g.Text {
				t.Errorf("%s %s: kvbench differs from transformers:\n got %q\nwant %q", g.File, g.Case, got, g.Text)
			}
			n++
		}
		if !found {
			t.Errorf("%s: unknown case %q", path, g.Case)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n != len(modelCases)*len(modelTemplates) {
		t.Errorf("%s holds %d renderings, want %d", path, n, len(modelCases)*len(modelTemplates))
	}
}
