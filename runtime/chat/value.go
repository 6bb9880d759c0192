package chat

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Values a template computes with are nil (None), undefined, bool, int,
// float64, string, []any (lists and tuples), *Dict, *namespace, *loopInfo,
// and callables.

// undefined is a name or attribute that does not exist: it prints as "",
// is false, iterates as empty, and is an error when used further.
type undefined struct{ what string }

// Dict is a mapping that keeps its keys in insertion order (as Python's
// dict, which tojson and items follow).
type Dict struct {
	keys []string
	m    map[string]any
}

// NewDict returns a dict of the given key, value pairs (k1, v1, k2, v2...).
func NewDict(kv ...any) *Dict {
	d := &Dict{m: map[string]any{}}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Set(kv[i].(string), kv[i+1])
	}
	return d
}

// Set stores v under k, appending k when it is new.
func (d *Dict) Set(k string, v any) {
	if _, ok := d.m[k]; !ok {
		d.keys = append(d.keys, k)
	}
	d.m[k] = v
}

// Get returns the value under k.
func (d *Dict) Get(k string) (any, bool) {
	v, ok := d.m[k]
	return v, ok
}

// namespace is the mutable object namespace() returns.
type namespace struct{ d *Dict }

// loopInfo is the loop variable of a for loop.
type loopInfo struct {
	index0, length int
}

// callable is a function or a bound method.
type callable func(args []any, kw map[string]any) (any, error)

// truthy is Python's truth value of v.
func truthy(v any) bool {
	switch x := v.(type) {
	case nil, undefined:
		return false
	case bool:
		return x
	case int:
		return x != 0
	case float64:
		return x != 0
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case *Dict:
		return len(x.keys) > 0
	}
	return true
}

// typeName names v's type as Python would, for errors.
func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "NoneType"
	case undefined:
		return "undefined"
	case bool:
		return "bool"
	case int:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case []any:
		return "list"
	case *Dict:
		return "dict"
	case *namespace:
		return "namespace"
	case *loopInfo:
		return "loop"
	case callable:
		return "function"
	}
	return fmt.Sprintf("%T", v)
}

// toStr is Python's str(v) (as Jinja prints a value).
func toStr(v any) string {
	switch x := v.(type) {
	case undefined:
		return ""
	case string:
		return x
	}
	return repr(v)
}

// repr is Python's repr(v).
func repr(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case undefined:
		return ""
	case bool:
		if x {
			return "True"
		}
		return "False"
	case int:
		return strconv.Itoa(x)
	case float64:
		return pyFloat(x)
	case string:
		return pyQuote(x)
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = repr(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case *Dict:
		parts := make([]string, len(x.keys))
		for i, k := range x.keys {
			parts[i] = pyQuote(k) + ": " + repr(x.m[k])
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case *namespace:
		return "<Namespace " + repr(x.d) + ">"
	}
	return "<" + typeName(v) + ">"
}

// pyFloat formats f as Python's repr does.
func pyFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case math.IsNaN(f):
		return "nan"
	}
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if strings.ContainsAny(s, "e") {
		// Python writes 1e+20 as 1e+20 and 1e-05 with two exponent digits.
		mant, exp, _ := strings.Cut(s, "e")
		sign := exp[0]
		digits := strings.TrimLeft(exp[1:], "0")
		if len(digits) < 2 {
			digits = strings.Repeat("0", 2-len(digits)) + digits
		}
		if math.Abs(f) >= 1e16 || math.Abs(f) < 1e-4 {
			return mant + "e" + string(sign) + digits
		}
		s = strconv.FormatFloat(f, 'f', -1, 64)
	}
	if !strings.ContainsAny(s, ".") {
		s += ".0"
	}
	return s
}

// pyQuote quotes s as Python's repr of a str does.
func pyQuote(s string) string {
	q := byte('\'')
	if strings.ContainsRune(s, '\'') && !strings.ContainsRune(s, '"') {
		q = '"'
	}
	var b strings.Builder
	b.WriteByte(q)
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == rune(q):
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte(q)
	return b.String()
}

// equal is Python's == on template values.
func equal(a, b any) bool {
	if af, bf, ok := numbers(a, b); ok {
		return af == bf
	}
	switch x := a.(type) {
	case nil:
		return b == nil
	case undefined:
		_, ok := b.(undefined)
		return ok
	case string:
		y, ok := b.(string)
		return ok && x == y
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equal(x[i], y[i]) {
				return false
			}
		}
		return true
	case *Dict:
		y, ok := b.(*Dict)
		if !ok || len(x.keys) != len(y.keys) {
			return false
		}
		for _, k := range x.keys {
			yv, ok := y.m[k]
			if !ok || !equal(x.m[k], yv) {
				return false
			}
		}
		return true
	}
	return a == b
}

// numbers returns a and b as floats when both are numbers (bools count,
// as in Python).
func numbers(a, b any) (float64, float64, bool) {
	af, ok1 := number(a)
	bf, ok2 := number(b)
	return af, bf, ok1 && ok2
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case bool:
		if x {
			return 1, true
		}
		return 0, true
	case int:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

// iterate returns the items a for loop visits: a list's elements, a
// string's characters, a dict's keys; undefined is empty.
func iterate(v any) ([]any, error) {
	switch x := v.(type) {
	case undefined:
		return nil, nil
	case []any:
		return x, nil
	case string:
		out := make([]any, 0, len(x))
		for _, r := range x {
			out = append(out, string(r))
		}
		return out, nil
	case *Dict:
		out := make([]any, len(x.keys))
		for i, k := range x.keys {
			out[i] = k
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s is not iterable", typeName(v))
}
