package tasks

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime/chat"
	"github.com/kvbench/kvbench/runtime/tokenizer"
)

// chatTestTemplate is a Llama-3-shaped template with a BOS text.
func chatTestTemplate(t *testing.T) *chat.Template {
	t.Helper()
	tm, err := chat.Parse("fake", "{{ bos_token }}<|user|>\n{{ messages[0].content | trim }}<|end|>{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
	if err != nil {
		t.Fatal(err)
	}
	tm.BOSToken = "<s>"
	return tm
}

const chatTestHay = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. " +
	"How vexingly quick daft zebras jump. Sphinx of black quartz, judge my vow. "

func TestNeedleChat(t *testing.T) {
	tok := tokenizer.Bytes{}
	var hay []int32
	for _, id := range tok.Encode(chatTestHay) {
		hay = append(hay, int32(id))
	}
	pr := prompter{tok: tok, tmpl: chatTestTemplate(t)}
	for _, length := range []int{300, 1200} {
		for _, depth := range []float64{0, 0.5, 1} {
			inst, err := buildNeedle(pr, hay, DefaultNeedle, DefaultNeedleQuestion, length, depth)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(inst.IDs); n > length || n < length-3 {
				t.Errorf("length %d depth %v: %d tokens", length, depth, n)
			}
			if !strings.HasPrefix(inst.Prompt, "<s><|user|>\n") || !strings.HasSuffix(inst.Prompt, "\n\n"+DefaultNeedleQuestion+"<|end|><|assistant|>\nAnswer:") {
				t.Errorf("length %d depth %v: prompt %q", length, depth, inst.Prompt)
			}
			if inst.IDs[0] != tok.BOS() || slices.Contains(inst.IDs[1:], tok.BOS()) || tok.Decode(inst.IDs[1:]) != inst.Prompt[len("<s>"):] {
				t.Errorf("length %d depth %v: BOS once, then the text: %v", length, depth, inst.IDs[:3])
			}
			if inst.ContextStart != len("<s><|user|>\n") || !strings.HasPrefix(inst.Prompt[inst.InsertAt:], DefaultNeedle) {
				t.Errorf("length %d depth %v: context at %d, needle at %d: %q", length, depth, inst.ContextStart, inst.InsertAt, inst.Prompt[inst.InsertAt:][:20])
			}
			// The template's tokens take haystack; the needle sits where InsertNeedle puts it.
			raw := BuildNeedle(tok, hay, DefaultNeedle, DefaultNeedleQuestion, length, depth)
			ctx := inst.Prompt[inst.ContextStart : inst.ContextStart+inst.Context]
			if raw.Context <= inst.Context || depth == 0 && inst.InsertAt != inst.ContextStart || depth == 1 && !strings.HasSuffix(ctx, DefaultNeedle) {
				t.Errorf("length %d depth %v: needle at %d of a context of %d bytes from %d (raw %d)", length, depth, inst.InsertAt, inst.Context, inst.ContextStart, raw.Context)
			}
		}
	}
}

func TestRulerChat(t *testing.T) {
	tok := tokenizer.Bytes{}
	pr := prompter{tok: tok, tmpl: chatTestTemplate(t)}
	prefixes := map[string]string{
		"niah_single_1": "The special magic number for ",
		"vt":            "Answer: According to the chain(s) of variable assignment in the text above, 5 variables are assigned the value ",
		"cwe":           "Answer: The top 10 words that appear most often in the list are:",
		"fwe":           "Answer: According to the coded text above, the three most frequently appeared words are:",
	}
	for _, name := range RulerTaskNames() {
		spec, _ := rulerSpecOf(name)
		o := RulerOptions{Length: 3000, Depth: -1, Seed: 1, Haystack: strings.Repeat(chatTestHay, 20)}
		if spec.kind == rulerNIAH {
			o.Depth = 0.5
		}
		s, err := buildRuler(pr, spec, o, -1)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		raw, err := buildRuler(prompter{tok: tok}, spec, o, -1)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(s.IDs) + spec.maxNew; n > o.Length || n < o.Length-60 {
			t.Errorf("%s: %d tokens with the answer, for %d", name, n, o.Length)
		}
		if s.Size > raw.Size {
			t.Errorf("%s: the template's tokens take no haystack: %d, raw %d", name, s.Size, raw.Size)
		}
		prefix := RulerAnswerPrefix(raw.Prompt[raw.Question:])
		want := strings.TrimSpace(strings.TrimSuffix(raw.Prompt[raw.Question:], prefix))
		if p, ok := prefixes[spec.name]; ok && !strings.HasPrefix(prefix, p) {
			t.Errorf("%s: answer prefix %q", name, prefix)
		}
		if !strings.HasPrefix(s.Prompt, "<s><|user|>\n") || !strings.HasSuffix(s.Prompt, want+"<|end|><|assistant|>\n"+prefix) {
			t.Errorf("%s: prompt ends %q", name, s.Prompt[max(0, len(s.Prompt)-300):])
		}
		if s.IDs[0] != tok.BOS() || slices.Contains(s.IDs[1:], tok.BOS()) {
			t.Errorf("%s: BOS not once", name)
		}
		// The offsets point into the wrapped prompt as into the raw one.
		question := strings.TrimRight(strings.TrimSuffix(raw.Prompt[raw.Question:], prefix), " ")
		if !strings.HasPrefix(s.Prompt[s.Question:], question+"<|end|>") || !strings.HasSuffix(s.Prompt[:s.ContextStart], raw.Prompt[:raw.ContextStart]) {
			t.Errorf("%s: question at %q, context at %q", name, s.Prompt[s.Question:][:20], s.Prompt[s.ContextStart:][:10])
		}
		for i, at := range s.Needles {
			if s.Prompt[at:][:12] != raw.Prompt[raw.Needles[i]:][:12] {
				t.Errorf("%s: needle %d at %q, raw %q", name, i, s.Prompt[at:][:12], raw.Prompt[raw.Needles[i]:][:12])
			}
		}
		if want := len(s.Prompt[s.Question:]); s.QuestionTokens != want { // bytes are tokens here
			t.Errorf("%s: %d question tokens, want %d", name, s.QuestionTokens, want)
		}
	}
}

// A template that rewrites the message cannot place offsets: an error.
func TestChatNotVerbatim(t *testing.T) {
	tm, err := chat.Parse("upper", "[U]{{ messages[0].content | upper }}[A]")
	if err != nil {
		t.Fatal(err)
	}
	pr := prompter{tok: tokenizer.Bytes{}, tmpl: tm}
	_, err = buildNeedle(pr, []int32{'a', '.', ' '}, DefaultNeedle, DefaultNeedleQuestion, 400, 0.5)
	if err == nil || !strings.Contains(err.Error(), "chat template upper: the rendering does not hold the user message verbatim") {
		t.Errorf("needle: %v", err)
	}
	spec, _ := rulerSpecOf("niah_single_1")
	_, err = buildRuler(pr, spec, RulerOptions{Length: 2000, Depth: 0.5, Seed: 1}, -1)
	if err == nil || !strings.Contains(err.Error(), "task niah_single_1: chat template upper") {
		t.Errorf("ruler: %v", err)
	}
}

// chat: on for a model without a template is an error naming the parameter,
// for every task that takes it; chat: maybe is refused by Check.
func TestChatOnWithoutTemplate(t *testing.T) {
	hay := t.TempDir() + "/hay.txt"
	if err := os.WriteFile(hay, []byte(chatTestHay), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range append([]string{"needle", "passkey"}, RulerTaskNames()...) {
		task, err := Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		p := Params{"lengths": 2000, "haystack": hay, "chat": ChatOn}
		if name == "passkey" {
			delete(p, "haystack")
		}
		if spec, ok := rulerSpecOf(name); ok && !spec.usesEssay() {
			delete(p, "haystack")
		}
		if err := task.Check(p); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_, err = task.Run(context.Background(), chatModel{}, p)
		if err == nil || !strings.Contains(err.Error(), "task "+name+": parameter chat: on, but the model has no chat template") {
			t.Errorf("%s: %v", name, err)
		}
		p["chat"] = "maybe"
		if err := task.Check(p); err == nil || !strings.Contains(err.Error(), `"maybe" is not auto, on or off`) {
			t.Errorf("%s: chat: maybe: %v", name, err)
		}
	}
}
