package tasks

import (
	"fmt"
	"strings"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime/chat"
	"github.com/kvbench/kvbench/runtime/tokenizer"
)

// ChatTemplater is a Model whose tokenizer comes with a chat template (an
// instruct model's tokenizer_config.json). ChatTemplate returns nil when
// the model has none.
type ChatTemplater interface {
	ChatTemplate() *chat.Template
}

// The values of a task's chat parameter.
const (
	ChatAuto = "auto" // wrap when the model has a chat template (instruct models), else not
	ChatOn   = "on"   // wrap; an error when the model has no template
	ChatOff  = "off"  // raw prompts
)

// chatParamDoc documents the chat parameter of the tasks that take it.
var chatParamDoc = policies.ParamDoc{Name: "chat", Default: ChatAuto,
	Doc: "wrap the prompt in the model's chat template: auto (when its tokenizer_config.json has one), on, off; the prompt is one user message with the generation prompt, the task's answer prefix follows it"}

// readChat reads the chat parameter.
func readChat(r *paramReader) string {
	mode := r.String("chat", ChatAuto, false)
	switch mode {
	case ChatAuto, ChatOn, ChatOff:
	default:
		r.fail("chat", "%q is not auto, on or off", mode)
	}
	return mode
}

// prompter turns a task's prompt into token ids, raw or wrapped in the
// model's chat template.
type prompter struct {
	tok  tokenizer.Tokenizer
	tmpl *chat.Template // nil: raw prompts
}

// newPrompter resolves mode against the model: the template to wrap with,
// or none.
func newPrompter(task string, m Model, mode string) (prompter, error) {
	p := prompter{tok: m.Tokenizer()}
	var tmpl *chat.Template
	if ct, ok := m.(ChatTemplater); ok {
		tmpl = ct.ChatTemplate()
	}
	switch mode {
	case ChatOff:
	case ChatOn:
		if tmpl == nil {
			return p, fmt.Errorf("task %s: parameter chat: on, but the model has no chat template (no chat_template in its tokenizer_config.json, no chat_template.jinja)", task)
		}
		p.tmpl = tmpl
	default:
		p.tmpl = tmpl
	}
	return p, nil
}

// chat reports whether prompts are wrapped.
func (p prompter) chat() bool { return p.tmpl != nil }

// mode is what records say: "on" or "off".
func (p prompter) mode() string {
	if p.chat() {
		return ChatOn
	}
	return ChatOff
}

// encode returns the text fed to the model and its ids for a raw prompt
// that ends with the task's answer prefix (passkey's "The pass key is").
//
// Raw: the prompt itself, with the tokenizer's BOS in front when it has one.
//
// Chat: the prompt without the answer prefix (and the spaces before it) is
// the one user message, rendered with add_generation_prompt; the answer
// prefix follows the generation prompt, as the start of the assistant's
// reply, so the model continues it and scoring is unchanged. The template
// decides BOS: when the rendering starts with the template's bos_token, that
// text becomes the tokenizer's BOS id (once); otherwise no BOS is added,
// as transformers' apply_chat_template(tokenize=True) does.
func (p prompter) encode(prompt, answerPrefix string) (string, []int, error) {
	text, ids, _, err := p.wrap(prompt, answerPrefix)
	return text, ids, err
}

// wrap is encode that also says where the prompt's text went: a byte
// offset o of the raw prompt before its answer prefix is at o+shift in the
// returned text (0 for raw prompts). A template that does not keep the
// user message verbatim (beyond trimming its surrounding space) is an error
// naming the template, as offsets could not be placed.
func (p prompter) wrap(prompt, answerPrefix string) (text string, ids []int, shift int, err error) {
	if !p.chat() {
		return prompt, withBOS(p.tok, p.tok.Encode(prompt)), 0, nil
	}
	user, ok := strings.CutSuffix(prompt, answerPrefix)
	if !ok {
		return "", nil, 0, fmt.Errorf("chat: the prompt does not end with its answer prefix %q", answerPrefix)
	}
	user = strings.TrimRight(user, " ")
	text, err = p.tmpl.Apply([]chat.Message{{Role: "user", Content: user}}, true)
	if err != nil {
		return "", nil, 0, err
	}
	if shift = strings.Index(text, user); shift < 0 {
		trimmed := strings.TrimSpace(user)
		at := strings.Index(text, trimmed)
		if trimmed == "" || at < 0 {
			return "", nil, 0, fmt.Errorf("chat template %s: the rendering does not hold the user message verbatim", p.tmpl.Name)
		}
		shift = at - strings.Index(user, trimmed)
	}
	text += answerPrefix
	return text, p.ids(text), shift, nil
}

// ids tokenizes text fed from the start of a prompt: raw, with the
// tokenizer's BOS in front when it has one; wrapped, with the template's
// bos_token text at its start turned into the BOS id, as encode does. A
// prefix of a prompt counts the tokens before a point in it.
func (p prompter) ids(text string) []int {
	if !p.chat() {
		return withBOS(p.tok, p.tok.Encode(text))
	}
	bos := p.tmpl.BOSToken
	if bos != "" && p.tok.BOS() >= 0 && strings.HasPrefix(text, bos) {
		return append([]int{p.tok.BOS()}, p.tok.Encode(text[len(bos):])...)
	}
	return p.tok.Encode(text)
}
