package bench

// The suite parser's YAML helpers: a mapping's fields, lists, strings,
// integers and free values, each reporting a bad node with its line.

import (
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/kvbench/kvbench/policies"
)

// field is one key of a mapping.
type field struct {
	name     string
	key, val *yaml.Node
}

// fields returns a mapping's keys in order, reporting duplicates and (when
// known is not nil) unknown keys with the closest known one.
func (p *parser) fields(n *yaml.Node, what string, known []string) []field {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		p.errorf(n, "%s: want a mapping, got %s", what, describe(n))
		return nil
	}
	var out []field
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		if !p.spend() {
			return out
		}
		if k.Kind != yaml.ScalarNode {
			p.errorf(k, "%s: a key must be a name, got %s", what, describe(k))
			continue
		}
		name := k.Value
		if k.ShortTag() == "!!merge" {
			p.errorf(k, "%s: merge keys (<<) are not supported", what)
			continue
		}
		if first, dup := seen[name]; dup {
			p.errorf(k, "%s: duplicate field %s (first at line %d)", what, name, first.Line)
			continue
		}
		seen[name] = k
		if known != nil && !contains(known, name) {
			msg := fmt.Sprintf("unknown field %q in %s", name, what)
			if c := policies.Closest(name, known); c != "" {
				msg += fmt.Sprintf("; did you mean %s?", c)
			} else {
				msg += fmt.Sprintf(" (known: %s)", strings.Join(known, ", "))
			}
			p.errorf(k, "%s", msg)
			continue
		}
		out = append(out, field{name: name, key: k, val: v})
	}
	return out
}

// list returns a sequence's items (aliases followed).
func (p *parser) list(n *yaml.Node, what string) ([]*yaml.Node, bool) {
	n = deref(n)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil, true // reported as empty by the caller
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, "%s: want a list, got %s", what, describe(n))
		return nil, false
	}
	out := make([]*yaml.Node, 0, len(n.Content))
	for _, c := range n.Content {
		out = append(out, deref(c))
	}
	return out, true
}

// spend counts one decoded node against the budget.
func (p *parser) spend() bool {
	*p.nodes++
	if *p.nodes == maxNodes+1 {
		p.errorf(nil, "suite too large (more than %d values, aliases expanded)", maxNodes)
	}
	return *p.nodes <= maxNodes
}

// str reads a scalar as a string.
func (p *parser) str(n *yaml.Node, what string) (string, bool) {
	n = deref(n)
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" {
		p.errorf(n, "%s: want a string, got %s", what, describe(n))
		return "", false
	}
	return n.Value, true
}

// integer reads an integer in [lo, hi].
func (p *parser) integer(n *yaml.Node, what string, lo, hi int64) (int64, bool) {
	n = deref(n)
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		p.errorf(n, "%s: want an integer, got %s", what, describe(n))
		return 0, false
	}
	var i int64
	if err := n.Decode(&i); err != nil {
		p.errorf(n, "%s: integer %s out of range", what, n.Value)
		return 0, false
	}
	if i < lo || i > hi {
		p.errorf(n, "%s: %d is out of range [%d, %d]", what, i, lo, hi)
		return 0, false
	}
	return i, true
}

// value decodes a parameter value: int, float64, bool, string, nil, []any
// or map[string]any.
func (p *parser) value(n *yaml.Node) (any, bool) {
	return p.valueAt(n, 0)
}

func (p *parser) valueAt(n *yaml.Node, depth int) (any, bool) {
	if !p.spend() {
		return nil, false
	}
	if depth > maxDepth {
		if !p.deep {
			p.errorf(n, "value nested too deep (more than %d levels)", maxDepth)
		}
		p.deep = true
		return nil, false
	}
	n = deref(n)
	switch n.Kind {
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return nil, true
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				p.errorf(n, "bad boolean %q", n.Value)
				return nil, false
			}
			return b, true
		case "!!int":
			var i int64
			if err := n.Decode(&i); err != nil {
				p.errorf(n, "integer %s out of range", n.Value)
				return nil, false
			}
			return int(i), true
		case "!!float":
			var f float64
			if err := n.Decode(&f); err != nil {
				p.errorf(n, "bad number %q", n.Value)
				return nil, false
			}
			return f, true
		case "!!str", "!!timestamp", "!!binary":
			return n.Value, true
		}
		p.errorf(n, "unsupported tag %s", n.Tag)
		return nil, false
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		ok := true
		for _, c := range n.Content {
			x, good := p.valueAt(c, depth+1)
			if !good {
				ok = false
				if *p.nodes > maxNodes {
					return nil, false
				}
			}
			out = append(out, x)
		}
		return out, ok
	case yaml.MappingNode:
		out := map[string]any{}
		ok := true
		for _, f := range p.fields(n, "value", nil) {
			x, good := p.valueAt(f.val, depth+1)
			if !good {
				ok = false
				if *p.nodes > maxNodes {
					return nil, false
				}
			}
			out[f.name] = x
		}
		return out, ok
	}
	p.errorf(n, "unsupported YAML value")
	return nil, false
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	if n == nil || n.Kind == yaml.AliasNode {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
	}
	return n
}

// describe names a node's type and value for errors.
func describe(n *yaml.Node) string {
	n = deref(n)
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.ScalarNode:
		v := n.Value
		if len(v) > 40 {
			v = v[:40] + "..."
		}
		switch n.ShortTag() {
		case "!!null":
			return "nothing (null)"
		case "!!int", "!!float":
			return "number " + v
		case "!!bool":
			return "boolean " + v
		}
		return "string " + strconv.Quote(v)
	}
	return "an unsupported value"
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
