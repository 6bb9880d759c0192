package tasks_test

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/runtime/tokenizer"
	"github.com/kvbench/kvbench/tasks"
)

var updateChatOff = flag.Bool("update", false, "rewrite testdata/chat_off_prompts.golden")

// chatOffDigest is the SHA-256 of a prompt's text and its ids.
func chatOffDigest(prompt string, ids []int) string {
	h := sha256.New()
	fmt.Fprintf(h, "%q %v", prompt, ids)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// chatOffPrompts lists the digests of the raw needle and RULER prompts of a
// tokenizer, one line per prompt.
func chatOffPrompts(t *testing.T, name string, tok tokenizer.Tokenizer) []string {
	t.Helper()
	var lines []string
	hay := make([]int32, 0, len(rulerHaystack))
	for _, id := range tok.Encode(rulerHaystack) {
		hay = append(hay, int32(id))
	}
	for _, length := range []int{300, 1500} {
		for _, depth := range []float64{0, 0.5, 1} {
			inst := tasks.BuildNeedle(tok, hay, tasks.DefaultNeedle, tasks.DefaultNeedleQuestion, length, depth)
			lines = append(lines, fmt.Sprintf("%s needle %d %v: %d tokens, needle at byte %d, %s", name, length, depth, len(inst.IDs), inst.InsertAt, chatOffDigest(inst.Prompt, inst.IDs)))
		}
	}
	for _, task := range tasks.RulerTaskNames() {
		for _, length := range []int{2000, 3000} {
			o := tasks.RulerOptions{Length: length, Depth: -1, Seed: 1, Trial: 1, Haystack: rulerHaystack}
			if strings.HasPrefix(task, "niah_") {
				o.Depth = 0.3
			}
			s, err := tasks.BuildRuler(tok, task, o)
			if err != nil {
				t.Fatalf("%s %s %d: %v", name, task, length, err)
			}
			lines = append(lines, fmt.Sprintf("%s %s %d: %d tokens, question %d tokens, needles %v, %s", name, task, length, len(s.IDs), s.QuestionTokens, s.Needles, chatOffDigest(s.Prompt, s.IDs)))
		}
	}
	return lines
}

// TestChatOffPromptsUnchanged holds the raw (chat: off) prompts of needle
// and the RULER tasks byte for byte, as they were before chat templates
// came to those tasks: a change here changes every earlier result and needs
// a task version bump. Regenerate with -update only then.
func TestChatOffPromptsUnchanged(t *testing.T) {
	lines := chatOffPrompts(t, "bytes", tokenizer.Bytes{})
	if dir, ok := fixtures.Find(); ok {
		tok, err := tokenizer.Load(filepath.Join(dir, "tokenizers/llama2/tokenizer.model"))
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, chatOffPrompts(t, "llama2", tok)...)
	} else {
		t.Log("no fixtures: the llama2 tokenizer's prompts are not checked")
	}
	got := strings.Join(lines, "\n") + "\n"
	path := filepath.Join("testdata", "chat_off_prompts.golden")
	if *updateChatOff {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	// Without fixtures only the byte tokenizer's lines (the first) are compared.
	if len(lines) > len(want) || (len(lines) < len(want) && !strings.HasPrefix(want[len(lines)], "llama2 ")) {
		t.Fatalf("%d prompts, the golden file has %d", len(lines), len(want))
	}
	for i, l := range lines {
		if want[i] != l {
			t.Errorf("prompt changed:\n got %s\nwant %s", l, want[i])
		}
	}
}
