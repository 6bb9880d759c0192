package bench

// The suite's entries: models (a path or hub reference, a tokenizer, a chat
// template), policies and tasks, each entry's parameters resolved and
// checked against what its policy or task takes.

import (
	"fmt"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/hub"
	"github.com/kvbench/kvbench/tasks"
)

var modelFields = []string{"name", "path", "tokenizer", "chat_template"}

func (p *parser) models(v *yaml.Node) []modelEntry {
	items, ok := p.list(v, "models")
	if !ok {
		return nil
	}
	var out []modelEntry
	for _, it := range items {
		m := ModelSpec{}
		good := true
		pathAt, tokAt, chatAt := it, it, it // the nodes errors about the path, tokenizer and chat template name
		if it.Kind == yaml.ScalarNode {
			// A bare path: the name is the file's (or synthetic model's).
			path, ok := p.str(it, "model")
			if !ok {
				continue
			}
			m.Path = path
			m.Name = strings.TrimSuffix(filepath.Base(strings.TrimPrefix(path, "synthetic:")), filepath.Ext(path))
			if r, err := hub.ParseRef(path); err == nil {
				m.Name = r.Name() // hf:ORG/NAME@REV: NAME, dots and all
			}
		} else {
			var hasName, hasPath bool
			for _, f := range p.fields(it, "model", modelFields) {
				str, ok := p.str(f.val, f.name)
				if !ok {
					good = false
					continue
				}
				switch f.name {
				case "name":
					m.Name, hasName = str, true
				case "path":
					m.Path, hasPath, pathAt = str, true, f.val
				case "tokenizer":
					m.Tokenizer, tokAt = str, f.val
				case "chat_template":
					m.ChatTemplate, chatAt = str, f.val
				}
			}
			if it.Kind != yaml.MappingNode {
				continue
			}
			if !hasName {
				p.errorf(it, "model: missing required field name")
				good = false
			}
			if !hasPath {
				p.errorf(it, "model: missing required field path")
				good = false
			}
		}
		if !good {
			continue
		}
		if strings.TrimSpace(m.Name) == "" || strings.ContainsAny(m.Name, "/()") {
			p.errorf(it, "model name %q: want a non-empty name without / ( )", m.Name)
			continue
		}
		if m.Path == "" {
			p.errorf(it, "model %s: empty path", m.Name)
			continue
		}
		if syn, ok := strings.CutPrefix(m.Path, "synthetic:"); ok {
			syn, _, _ = strings.Cut(syn, "@")
			if !contains(runtime.SyntheticNames(), syn) {
				msg := fmt.Sprintf("model %s: unknown synthetic model %q (have %s)", m.Name, syn, strings.Join(runtime.SyntheticNames(), ", "))
				if c := policies.Closest(syn, runtime.SyntheticNames()); c != "" {
					msg += fmt.Sprintf("; did you mean synthetic:%s?", c)
				}
				p.errorf(it, "%s", msg)
				continue
			}
		} else if hub.IsRef(m.Path) {
			// Downloaded when the model is opened; only the syntax here.
			if _, err := hub.ParseRef(m.Path); err != nil {
				p.errorf(pathAt, "model %s: path: %v", m.Name, err)
				continue
			}
		} else if m.Path, ok = p.resolve(p.pos(pathAt), "model "+m.Name+": path", m.Path); !ok {
			continue
		}
		if m.Tokenizer != "" {
			if m.Tokenizer, ok = p.resolve(p.pos(tokAt), "model "+m.Name+": tokenizer", m.Tokenizer); !ok {
				continue
			}
		}
		if m.ChatTemplate != "" {
			if m.ChatTemplate, ok = p.resolve(p.pos(chatAt), "model "+m.Name+": chat_template", m.ChatTemplate); !ok {
				continue
			}
		}
		out = append(out, modelEntry{spec: m, pos: p.pos(it), pathAt: p.pos(pathAt), tokAt: p.pos(tokAt)})
	}
	return out
}

// resolve expands the environment variables of a path (see expandVars) and
// makes a relative path relative to the file's folder. An unset variable is
// reported at pos, with what the path is for; ok is false then.
func (p *parser) resolve(pos Pos, what, path string) (string, bool) {
	if path == "" || strings.HasPrefix(path, "synthetic:") {
		return path, true
	}
	path, err := expandVars(path)
	if err != nil {
		p.errorAt(pos, "%s %v", what, err)
		return "", false
	}
	if filepath.IsAbs(path) {
		return path, true
	}
	return filepath.Join(p.dir, path), true
}

// entry is a policy or task entry's name and parameter nodes.
type entry struct {
	node   *yaml.Node
	name   string
	nameAt *yaml.Node
	params []field
}

// entry reads a bare name or a mapping with name and parameters.
func (p *parser) entry(it *yaml.Node, what string) (entry, bool) {
	e := entry{node: it}
	switch it.Kind {
	case yaml.ScalarNode:
		name, ok := p.str(it, what)
		if !ok {
			return e, false
		}
		e.name, e.nameAt = name, it
		return e, true
	case yaml.MappingNode:
		for _, f := range p.fields(it, what, nil) {
			if f.name == "name" {
				name, ok := p.str(f.val, what+" name")
				if !ok {
					return e, false
				}
				e.name, e.nameAt = name, f.val
				continue
			}
			e.params = append(e.params, f)
		}
		if e.nameAt == nil {
			hint := ""
			if len(e.params) == 1 && deref(e.params[0].val).Kind == yaml.MappingNode {
				hint = fmt.Sprintf(" (write {name: %s, ...})", e.params[0].name)
			}
			p.errorf(it, "%s: missing required field name%s", what, hint)
			return e, false
		}
		return e, true
	}
	p.errorf(it, "%s: want a name or a mapping with name and parameters, got %s", what, describe(it))
	return e, false
}

// params decodes an entry's parameter values, keeping positions.
func (p *parser) params(e entry, what string) (map[string]any, []string, map[string]Pos, map[string][]Pos, bool) {
	vals := map[string]any{}
	pos := map[string]Pos{}
	elemAt := map[string][]Pos{}
	var order []string
	ok := true
	for _, f := range e.params {
		v := deref(f.val)
		if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null" {
			p.errorf(f.val, "%s %s: parameter %s has no value", what, e.name, f.name)
			ok = false
			continue
		}
		x, good := p.value(f.val)
		if !good {
			ok = false
			continue
		}
		vals[f.name] = x
		order = append(order, f.name)
		pos[f.name] = p.pos(f.val)
		if v.Kind == yaml.SequenceNode {
			for _, c := range v.Content {
				elemAt[f.name] = append(elemAt[f.name], p.pos(c))
			}
		}
	}
	return vals, order, pos, elemAt, ok
}

func (p *parser) policies(v *yaml.Node) []PolicyEntry {
	items, ok := p.list(v, "policies")
	if !ok {
		return nil
	}
	var out []PolicyEntry
	for _, it := range items {
		e, ok := p.entry(it, "policy")
		if !ok {
			continue
		}
		if _, err := policies.Lookup(e.name); err != nil {
			p.errorf(e.nameAt, "%v", err)
			continue
		}
		vals, order, pos, elemAt, ok := p.params(e, "policy")
		if !ok {
			continue
		}
		// Unknown parameters, by the policy's own reading of them.
		for _, f := range e.params {
			x, has := vals[f.name]
			if !has {
				continue
			}
			if l, isList := x.([]any); isList && len(l) > 0 {
				x = l[0]
			}
			if _, err := safeNew(e.name, policies.Params{f.name: x}); err != nil &&
				strings.Contains(err.Error(), "unknown parameter "+f.name+" ") {
				p.errorf(f.key, "%v", err)
				ok = false
			}
		}
		if !ok {
			continue
		}
		out = append(out, PolicyEntry{Name: e.name, Params: vals, Pos: p.pos(it), order: order, pos: pos, elemAt: elemAt})
	}
	return out
}

func (p *parser) tasks(v *yaml.Node) []TaskEntry {
	items, ok := p.list(v, "tasks")
	if !ok {
		return nil
	}
	var out []TaskEntry
	for _, it := range items {
		e, ok := p.entry(it, "task")
		if !ok {
			continue
		}
		only, onlyAt, ok := p.taskPolicies(&e)
		if !ok {
			continue
		}
		t, err := tasks.Lookup(e.name)
		if err != nil {
			p.errorf(e.nameAt, "%v", err)
			continue
		}
		vals, order, pos, elemAt, ok := p.params(e, "task")
		if !ok {
			continue
		}
		var known []string
		for _, d := range t.Params() {
			known = append(known, d.Name)
		}
		if len(known) > 0 {
			for _, f := range e.params {
				if contains(known, f.name) {
					continue
				}
				msg := fmt.Sprintf("task %s: unknown parameter %s (known: %s)", e.name, f.name, strings.Join(known, ", "))
				if c := policies.Closest(f.name, known); c != "" {
					msg += fmt.Sprintf("; did you mean %s?", c)
				}
				p.errorf(f.key, "%s", msg)
				ok = false
			}
		}
		if !ok {
			continue
		}
		// Resolve path parameters, keeping what was written for keys.
		raw := map[string]any{}
		good := true
		for _, name := range taskPathParams(t) {
			x, has := vals[name]
			if !has {
				continue
			}
			what := fmt.Sprintf("task %s: parameter %s:", e.name, name)
			switch y := x.(type) {
			case string:
				raw[name] = y
				if vals[name], ok = p.resolve(pos[name], what, y); !ok {
					good = false
				}
			case []any:
				raw[name] = y
				r := make([]any, len(y))
				for i, z := range y {
					s, isStr := z.(string)
					if !isStr {
						r[i] = z
						continue
					}
					at := pos[name]
					if i < len(elemAt[name]) {
						at = elemAt[name][i]
					}
					if r[i], ok = p.resolve(at, what, s); !ok {
						good = false
					}
				}
				vals[name] = r
			}
		}
		if !good {
			continue
		}
		out = append(out, TaskEntry{Name: e.name, Params: vals, Pos: p.pos(it), Policies: only, policiesAt: onlyAt,
			order: order, pos: pos, elemAt: elemAt, raw: raw})
	}
	return out
}

// taskPolicies takes a task entry's `policies` key (a policy name or a list
// of them) out of its parameters.
func (p *parser) taskPolicies(e *entry) (names []string, at Pos, ok bool) {
	kept := make([]field, 0, len(e.params))
	ok = true
	for _, f := range e.params {
		if f.name != "policies" {
			kept = append(kept, f)
			continue
		}
		at = p.pos(f.key)
		what := "task " + e.name + ": policies"
		items := []*yaml.Node{deref(f.val)}
		if items[0].Kind == yaml.SequenceNode {
			items = items[0].Content
			if len(items) == 0 {
				p.errorf(f.val, "%s: needs at least one policy name (or leave the key out: every policy)", what)
				ok = false
			}
		}
		for _, it := range items {
			name, good := p.str(it, what)
			if !good {
				ok = false
				continue
			}
			names = append(names, name)
		}
	}
	e.params = kept
	return names, at, ok
}

// checkTaskPolicies reports task `policies` names that no policy of the
// suite has.
func (p *parser) checkTaskPolicies(s *Suite) {
	var have []string
	for _, e := range s.Policies {
		if !contains(have, e.Name) {
			have = append(have, e.Name)
		}
	}
	for _, t := range s.Tasks {
		for _, name := range t.Policies {
			if contains(have, name) {
				continue
			}
			msg := fmt.Sprintf("task %s: policies: the suite has no policy %q (it has %s)", t.Name, name, strings.Join(have, ", "))
			if c := policies.Closest(name, have); c != "" {
				msg += fmt.Sprintf("; did you mean %s?", c)
			}
			p.errorAt(t.policiesAt, "%s", msg)
		}
	}
}

// safeCheck runs t.Check, turning a panic into an error.
func safeCheck(t tasks.Task, p tasks.Params) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("task %s: check panicked: %v", t.Name(), r)
		}
	}()
	return t.Check(p)
}

func taskPathParams(t tasks.Task) []string {
	names := append([]string(nil), pathParams...)
	if pl, ok := t.(PathLister); ok {
		names = append(names, pl.PathParams()...)
	}
	return names
}
