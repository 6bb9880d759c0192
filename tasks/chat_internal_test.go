package tasks

import (
	"slices"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime/chat"
	"github.com/kvbench/kvbench/runtime/tokenizer"
)

// chatModel is a Model with only a tokenizer and a chat template.
type chatModel struct {
	Model
	tmpl *chat.Template
}

func (chatModel) Tokenizer() tokenizer.Tokenizer { return tokenizer.Bytes{} }
func (m chatModel) ChatTemplate() *chat.Template { return m.tmpl }

func TestPrompterBOS(t *testing.T) {
	withBos, err := chat.Parse("t", "{{ bos_token }}[U]{{ messages[0].content }}[A]")
	if err != nil {
		t.Fatal(err)
	}
	withBos.BOSToken = "<s>"
	noBos, err := chat.Parse("t", "[U]{{ messages[0].content }}[A]")
	if err != nil {
		t.Fatal(err)
	}
	tok := tokenizer.Bytes{}
	// The template's BOS text becomes the BOS id, once.
	p, err := newPrompter("passkey", chatModel{tmpl: withBos}, ChatAuto)
	if err != nil {
		t.Fatal(err)
	}
	text, ids, err := p.encode("Q? The pass key is", "The pass key is")
	if err != nil {
		t.Fatal(err)
	}
	if text != "<s>[U]Q?[A]The pass key is" {
		t.Errorf("text %q", text)
	}
	if want := append([]int{tok.BOS()}, tok.Encode("[U]Q?[A]The pass key is")...); !slices.Equal(ids, want) {
		t.Errorf("ids %v, want %v", ids, want)
	}
	// A template without BOS gets none (as apply_chat_template(tokenize=True)).
	p, _ = newPrompter("passkey", chatModel{tmpl: noBos}, ChatOn)
	if _, ids, _ = p.encode("Q? The pass key is", "The pass key is"); slices.Contains(ids, tok.BOS()) {
		t.Errorf("BOS added to a template without one: %v", ids)
	}
	// off, or no template: the raw prompt with BOS.
	for _, m := range []Model{chatModel{tmpl: withBos}, chatModel{}} {
		p, _ = newPrompter("passkey", m, map[bool]string{true: ChatOff, false: ChatAuto}[m.(chatModel).tmpl != nil])
		text, ids, _ = p.encode("Q? The pass key is", "The pass key is")
		if p.chat() || text != "Q? The pass key is" || ids[0] != tok.BOS() || ids[1] == tok.BOS() {
			t.Errorf("raw prompt: chat %v text %q ids %v", p.chat(), text, ids[:2])
		}
	}
	if _, err := newPrompter("passkey", chatModel{}, ChatOn); err == nil || !strings.Contains(err.Error(), "parameter chat: on, but the model has no chat template") {
		t.Errorf("chat on without a template: %v", err)
	}
	if _, _, err := p.encode("no prefix here", "The pass key is"); err != nil {
		t.Errorf("raw prompts need no prefix: %v", err)
	}
	p, _ = newPrompter("passkey", chatModel{tmpl: withBos}, ChatOn)
	if _, _, err := p.encode("no prefix here", "The pass key is"); err == nil {
		t.Error("a prompt without its answer prefix was wrapped")
	}
}
