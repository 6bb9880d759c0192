// Package chat renders the chat templates of instruct models: the Jinja
// template in a model's tokenizer_config.json (or chat_template.jinja), as
// transformers' apply_chat_template renders it, with a renderer for the
// subset of Jinja that chat templates use. Anything outside that subset is
// an error naming the template and the line and column, never a silent
// wrong prompt.
package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Template is a parsed chat template with the special tokens its model's
// tokenizer_config.json names.
type Template struct {
	Name     string // where the template came from, for errors
	Source   string // the Jinja source
	BOSToken string // bos_token ("" when the model has none)
	EOSToken string // eos_token
	body     []node
}

// Parse parses a template's source; name is used in errors.
func Parse(name, src string) (*Template, error) {
	segs, err := lex(name, src)
	if err != nil {
		return nil, err
	}
	body, err := parseTemplate(name, segs)
	if err != nil {
		return nil, err
	}
	return &Template{Name: name, Source: src, body: body}, nil
}

// Render renders the template with the given variables (Go strings, ints,
// float64s, bools, nil, []any, *Dict, or []Message for messages).
func (t *Template) Render(vars map[string]any) (string, error) {
	r := &renderer{name: t.Name}
	s := &scope{vars: map[string]any{}}
	for k, v := range vars {
		s.vars[k] = convert(v)
	}
	if err := r.exec(t.body, s); err != nil {
		var ctl errLoopCtl
		if errors.As(err, &ctl) {
			return "", fmt.Errorf("chat template %s: break or continue outside a loop", t.Name)
		}
		return "", err
	}
	return r.out.String(), nil
}

// Message is one turn of a conversation.
type Message struct {
	Role    string // system, user or assistant
	Content string
}

// Apply renders messages as transformers' apply_chat_template(messages,
// tokenize=False, add_generation_prompt=gen) does: the variables messages,
// add_generation_prompt, bos_token and eos_token.
func (t *Template) Apply(messages []Message, gen bool) (string, error) {
	return t.Render(map[string]any{
		"messages":              messages,
		"add_generation_prompt": gen,
		"bos_token":             t.BOSToken,
		"eos_token":             t.EOSToken,
	})
}

// convert turns Go values into template values.
func convert(v any) any {
	switch x := v.(type) {
	case []Message:
		out := make([]any, len(x))
		for i, m := range x {
			out[i] = NewDict("role", m.Role, "content", m.Content)
		}
		return out
	case []string:
		out := make([]any, len(x))
		for i, s := range x {
			out[i] = s
		}
		return out
	case int64:
		return int(x)
	case float32:
		return float64(x)
	}
	return v
}

// Find returns the chat template beside a model or tokenizer: dir's
// chat_template.jinja, else the chat_template of its tokenizer_config.json;
// nil (and no error) when there is neither. Special tokens come from
// tokenizer_config.json when it is there.
func Find(dir string) (*Template, error) {
	cfgPath := filepath.Join(dir, "tokenizer_config.json")
	cfg, err := readConfig(cfgPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	jinja := filepath.Join(dir, "chat_template.jinja")
	if src, err := os.ReadFile(jinja); err == nil {
		t, err := Parse(jinja, string(src))
		if err != nil {
			return nil, err
		}
		if cfg != nil {
			t.BOSToken, t.EOSToken = cfg.bos, cfg.eos
		}
		return t, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("chat template %s: %w", jinja, err)
	}
	if cfg == nil || cfg.template == "" {
		return nil, nil
	}
	t, err := Parse(cfg.name, cfg.template)
	if err != nil {
		return nil, err
	}
	t.BOSToken, t.EOSToken = cfg.bos, cfg.eos
	return t, nil
}

// Load reads the chat template of a file: a tokenizer_config.json (a .json
// file; an error when it has no chat_template) or a Jinja source (any other
// name, with no special tokens unless a tokenizer_config.json sits beside it).
func Load(path string) (*Template, error) {
	if strings.EqualFold(filepath.Ext(path), ".json") {
		cfg, err := readConfig(path)
		if err != nil {
			return nil, err
		}
		if cfg.template == "" {
			return nil, fmt.Errorf("chat template %s: no chat_template field", path)
		}
		t, err := Parse(cfg.name, cfg.template)
		if err != nil {
			return nil, err
		}
		t.BOSToken, t.EOSToken = cfg.bos, cfg.eos
		return t, nil
	}
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("chat template %s: %w", path, err)
	}
	t, err := Parse(path, string(src))
	if err != nil {
		return nil, err
	}
	cfg, err := readConfig(filepath.Join(filepath.Dir(path), "tokenizer_config.json"))
	if err == nil {
		t.BOSToken, t.EOSToken = cfg.bos, cfg.eos
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return t, nil
}

// config is what kvbench reads of a tokenizer_config.json.
type config struct {
	name     string // the file, or file#name for one of named templates
	template string
	bos, eos string
}

func readConfig(path string) (*config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("chat template %s: %w", path, err)
	}
	var raw struct {
		ChatTemplate json.RawMessage `json:"chat_template"`
		BOS          json.RawMessage `json:"bos_token"`
		EOS          json.RawMessage `json:"eos_token"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("chat template %s: %w", path, err)
	}
	c := &config{name: path}
	if c.bos, err = specialToken(raw.BOS); err != nil {
		return nil, fmt.Errorf("chat template %s: bos_token: %w", path, err)
	}
	if c.eos, err = specialToken(raw.EOS); err != nil {
		return nil, fmt.Errorf("chat template %s: eos_token: %w", path, err)
	}
	if len(raw.ChatTemplate) == 0 || string(raw.ChatTemplate) == "null" {
		return c, nil
	}
	if err := json.Unmarshal(raw.ChatTemplate, &c.template); err == nil {
		return c, nil
	}
	// A list of named templates: transformers uses the one named default.
	var named []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if err := json.Unmarshal(raw.ChatTemplate, &named); err != nil {
		return nil, fmt.Errorf("chat template %s: chat_template is neither a string nor a list of {name, template}", path)
	}
	var names []string
	for _, n := range named {
		if n.Name == "default" {
			c.template, c.name = n.Template, path+"#default"
			return c, nil
		}
		names = append(names, n.Name)
	}
	return nil, fmt.Errorf("chat template %s: chat_template lists templates %s but none named default", path, strings.Join(names, ", "))
}

// specialToken reads a bos_token or eos_token: a string, an added-token
// object with a content field, or null.
func specialToken(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var obj struct {
		Content *string `json:"content"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil || obj.Content == nil {
		return "", fmt.Errorf("want a string or an object with content, got %s", string(raw))
	}
	return *obj.Content, nil
}
