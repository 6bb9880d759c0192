package chat

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// globals are the functions a template can call: raise_exception (as
// transformers provides it), namespace and range. strftime_now is left
// undefined on purpose, so templates that date their prompt fall back to
// their fixed date and prompts stay reproducible.
func globals(template string) map[string]any {
	return map[string]any{
		"raise_exception": callable(func(args []any, kw map[string]any) (any, error) {
			msg := ""
			if len(args) > 0 {
				msg = toStr(args[0])
			}
			return nil, &RaiseError{Template: template, Message: msg}
		}),
		"namespace": callable(func(args []any, kw map[string]any) (any, error) {
			d := NewDict()
			for _, a := range args {
				src, ok := a.(*Dict)
				if !ok {
					return nil, fmt.Errorf("namespace() takes keyword arguments or dicts, not %s", typeName(a))
				}
				for _, k := range src.keys {
					d.Set(k, src.m[k])
				}
			}
			for _, k := range sortedKeys(kw) {
				d.Set(k, kw[k])
			}
			return &namespace{d}, nil
		}),
		"range": callable(func(args []any, kw map[string]any) (any, error) {
			b := make([]int, len(args))
			for i, a := range args {
				n, ok := a.(int)
				if !ok {
					return nil, fmt.Errorf("range() takes integers, not %s", typeName(a))
				}
				b[i] = n
			}
			start, stop, step := 0, 0, 1
			switch len(b) {
			case 1:
				stop = b[0]
			case 2:
				start, stop = b[0], b[1]
			case 3:
				start, stop, step = b[0], b[1], b[2]
			default:
				return nil, fmt.Errorf("range() takes 1 to 3 arguments, got %d", len(b))
			}
			if step == 0 {
				return nil, fmt.Errorf("range() step must not be zero")
			}
			var out []any
			for i := start; (step > 0 && i < stop) || (step < 0 && i > stop); i += step {
				if len(out) > 1<<20 {
					return nil, fmt.Errorf("range() of more than 2^20 items")
				}
				out = append(out, i)
			}
			return out, nil
		}),
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys) // Python keeps call order; Go maps do not, so sort
	return keys
}

type filterFn func(x any, args []any, kw map[string]any) (any, error)

var filters map[string]filterFn

func init() {
	filters = map[string]filterFn{
		"trim": func(x any, args []any, _ map[string]any) (any, error) {
			s, err := strArg(x, "trim")
			if err != nil {
				return nil, err
			}
			if len(args) > 0 {
				return strings.Trim(s, toStr(args[0])), nil
			}
			return strings.TrimFunc(s, unicode.IsSpace), nil
		},
		"length": lengthFilter,
		"count":  lengthFilter,
		"upper": func(x any, _ []any, _ map[string]any) (any, error) {
			s, err := strArg(x, "upper")
			return strings.ToUpper(s), err
		},
		"lower": func(x any, _ []any, _ map[string]any) (any, error) {
			s, err := strArg(x, "lower")
			return strings.ToLower(s), err
		},
		"capitalize": func(x any, _ []any, _ map[string]any) (any, error) {
			s, err := strArg(x, "capitalize")
			return capitalize(s), err
		},
		"title": func(x any, _ []any, _ map[string]any) (any, error) {
			s, err := strArg(x, "title")
			return title(s), err
		},
		"string":  func(x any, _ []any, _ map[string]any) (any, error) { return toStr(x), nil },
		"default": defaultFilter,
		"d":       defaultFilter,
		"tojson": func(x any, args []any, kw map[string]any) (any, error) {
			indent := -1
			if v, ok := kw["indent"]; ok {
				n, isInt := v.(int)
				if !isInt && v != nil {
					return nil, fmt.Errorf("tojson: indent must be an integer")
				}
				if v != nil {
					indent = n
				}
			}
			if len(args) > 0 {
				n, isInt := args[0].(int)
				if !isInt {
					return nil, fmt.Errorf("tojson: indent must be an integer")
				}
				indent = n
			}
			var b strings.Builder
			if err := writeJSON(&b, x, indent, 0); err != nil {
				return nil, fmt.Errorf("tojson: %w", err)
			}
			return b.String(), nil
		},
		"list": func(x any, _ []any, _ map[string]any) (any, error) {
			items, err := iterate(x)
			return append([]any{}, items...), err
		},
		"first": func(x any, _ []any, _ map[string]any) (any, error) {
			items, err := iterate(x)
			if err != nil || len(items) == 0 {
				return undefined{"first of an empty sequence"}, err
			}
			return items[0], nil
		},
		"last": func(x any, _ []any, _ map[string]any) (any, error) {
			items, err := iterate(x)
			if err != nil || len(items) == 0 {
				return undefined{"last of an empty sequence"}, err
			}
			return items[len(items)-1], nil
		},
		"join": func(x any, args []any, kw map[string]any) (any, error) {
			items, err := iterate(x)
			if err != nil {
				return nil, err
			}
			sep := ""
			if len(args) > 0 {
				sep = toStr(args[0])
			}
			parts := make([]string, len(items))
			for i, it := range items {
				if a, ok := kw["attribute"]; ok {
					if it, err = getItem(it, a); err != nil {
						return nil, err
					}
				}
				parts[i] = toStr(it)
			}
			return strings.Join(parts, sep), nil
		},
		"items": func(x any, _ []any, _ map[string]any) (any, error) {
			switch d := x.(type) {
			case undefined:
				return []any{}, nil
			case *Dict:
				return dictItems(d), nil
			}
			return nil, fmt.Errorf("items: a %s is not a mapping", typeName(x))
		},
		"replace": func(x any, args []any, _ map[string]any) (any, error) {
			s, err := strArg(x, "replace")
			if err != nil {
				return nil, err
			}
			if len(args) < 2 {
				return nil, fmt.Errorf("replace takes (old, new[, count])")
			}
			n := -1
			if len(args) > 2 {
				n, _ = args[2].(int)
			}
			return strings.Replace(s, toStr(args[0]), toStr(args[1]), n), nil
		},
		"int": func(x any, _ []any, _ map[string]any) (any, error) {
			switch v := x.(type) {
			case int:
				return v, nil
			case float64:
				return int(v), nil
			case bool:
				if v {
					return 1, nil
				}
				return 0, nil
			case string:
				if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
					return n, nil
				}
			}
			return 0, nil
		},
		"abs": func(x any, _ []any, _ map[string]any) (any, error) {
			switch v := x.(type) {
			case int:
				return max(v, -v), nil
			case float64:
				return math.Abs(v), nil
			}
			return nil, fmt.Errorf("abs: a %s is not a number", typeName(x))
		},
		"selectattr": func(x any, args []any, _ map[string]any) (any, error) { return selectFilter(x, args, true, true) },
		"rejectattr": func(x any, args []any, _ map[string]any) (any, error) { return selectFilter(x, args, true, false) },
		"select":     func(x any, args []any, _ map[string]any) (any, error) { return selectFilter(x, args, false, true) },
		"reject":     func(x any, args []any, _ map[string]any) (any, error) { return selectFilter(x, args, false, false) },
		"map": func(x any, args []any, kw map[string]any) (any, error) {
			items, err := iterate(x)
			if err != nil {
				return nil, err
			}
			out := make([]any, len(items))
			for i, it := range items {
				switch {
				case kw["attribute"] != nil:
					v, err := getItem(it, kw["attribute"])
					if err != nil {
						return nil, err
					}
					if _, u := v.(undefined); u && kw["default"] != nil {
						v = kw["default"]
					}
					out[i] = v
				case len(args) > 0:
					f, ok := filters[toStr(args[0])]
					if !ok {
						return nil, fmt.Errorf("map: unknown filter %q", toStr(args[0]))
					}
					if out[i], err = f(it, args[1:], nil); err != nil {
						return nil, err
					}
				default:
					return nil, fmt.Errorf("map needs a filter name or attribute=")
				}
			}
			return out, nil
		},
	}
}

func lengthFilter(x any, _ []any, _ map[string]any) (any, error) {
	switch v := x.(type) {
	case undefined:
		return 0, nil
	case string:
		return len([]rune(v)), nil
	case []any:
		return len(v), nil
	case *Dict:
		return len(v.keys), nil
	}
	return nil, fmt.Errorf("length: a %s has no length", typeName(x))
}

func defaultFilter(x any, args []any, _ map[string]any) (any, error) {
	def := any("")
	if len(args) > 0 {
		def = args[0]
	}
	_, isUndef := x.(undefined)
	if isUndef || (len(args) > 1 && truthy(args[1]) && !truthy(x)) {
		return def, nil
	}
	return x, nil
}

func strArg(x any, filter string) (string, error) {
	switch v := x.(type) {
	case string:
		return v, nil
	case undefined:
		return "", nil
	}
	return toStr(x), nil
}

func dictItems(d *Dict) []any {
	out := make([]any, len(d.keys))
	for i, k := range d.keys {
		out[i] = []any{k, d.m[k]}
	}
	return out
}

// selectFilter is select/reject (attr false) and selectattr/rejectattr.
func selectFilter(x any, args []any, attr, keep bool) (any, error) {
	items, err := iterate(x)
	if err != nil {
		return nil, err
	}
	if attr && len(args) == 0 {
		return nil, fmt.Errorf("selectattr/rejectattr need an attribute name")
	}
	var out []any
	for _, it := range items {
		v := it
		rest := args
		if attr {
			if v, err = getAttrPath(it, toStr(args[0])); err != nil {
				return nil, err
			}
			rest = args[1:]
		}
		ok := truthy(v)
		if len(rest) > 0 {
			t, found := tests[toStr(rest[0])]
			if !found {
				return nil, fmt.Errorf("unknown test %q", toStr(rest[0]))
			}
			if ok, err = t(v, rest[1:]); err != nil {
				return nil, err
			}
		}
		if ok == keep {
			out = append(out, it)
		}
	}
	if out == nil {
		out = []any{}
	}
	return out, nil
}

// getAttrPath looks up a dotted attribute path as Jinja's attribute filters do.
func getAttrPath(x any, path string) (any, error) {
	for _, part := range strings.Split(path, ".") {
		if _, u := x.(undefined); u {
			return x, nil
		}
		var err error
		if x, err = getItem(x, part); err != nil {
			return nil, err
		}
	}
	return x, nil
}

type testFn func(x any, args []any) (bool, error)

var tests map[string]testFn

func init() {
	isType := func(f func(any) bool) testFn { return func(x any, _ []any) (bool, error) { return f(x), nil } }
	eq := func(x any, args []any) (bool, error) {
		if len(args) != 1 {
			return false, fmt.Errorf("test equalto takes one argument")
		}
		return equal(x, args[0]), nil
	}
	cmp := func(op string) testFn {
		return func(x any, args []any) (bool, error) {
			if len(args) != 1 {
				return false, fmt.Errorf("test %s takes one argument", op)
			}
			v, err := binaryOp(op, x, args[0])
			if err != nil {
				return false, err
			}
			return v.(bool), nil
		}
	}
	tests = map[string]testFn{
		"defined":   isType(func(x any) bool { _, u := x.(undefined); return !u }),
		"undefined": isType(func(x any) bool { _, u := x.(undefined); return u }),
		"none":      isType(func(x any) bool { return x == nil }),
		"string":    isType(func(x any) bool { _, ok := x.(string); return ok }),
		"boolean":   isType(func(x any) bool { _, ok := x.(bool); return ok }),
		"true":      isType(func(x any) bool { b, ok := x.(bool); return ok && b }),
		"false":     isType(func(x any) bool { b, ok := x.(bool); return ok && !b }),
		"integer":   isType(func(x any) bool { _, ok := x.(int); return ok }),
		"float":     isType(func(x any) bool { _, ok := x.(float64); return ok }),
		"number":    isType(func(x any) bool { _, ok := number(x); return ok }),
		"mapping":   isType(func(x any) bool { _, ok := x.(*Dict); return ok }),
		"callable":  isType(func(x any) bool { _, ok := x.(callable); return ok }),
		"sequence": isType(func(x any) bool {
			switch x.(type) {
			case string, []any, *Dict:
				return true
			}
			return false
		}),
		"iterable": isType(func(x any) bool {
			switch x.(type) {
			case string, []any, *Dict:
				return true
			}
			return false
		}),
		"equalto": eq, "eq": eq, "==": eq, "sameas": eq,
		"ne": cmp("!="), "!=": cmp("!="),
		"gt": cmp(">"), ">": cmp(">"), "ge": cmp(">="), ">=": cmp(">="),
		"lt": cmp("<"), "<": cmp("<"), "le": cmp("<="), "<=": cmp("<="),
		"in": func(x any, args []any) (bool, error) {
			if len(args) != 1 {
				return false, fmt.Errorf("test in takes one argument")
			}
			return contains(args[0], x)
		},
		"divisibleby": func(x any, args []any) (bool, error) {
			a, ok1 := x.(int)
			if len(args) != 1 {
				return false, fmt.Errorf("test divisibleby takes one argument")
			}
			b, ok2 := args[0].(int)
			if !ok1 || !ok2 || b == 0 {
				return false, fmt.Errorf("test divisibleby takes non-zero integers")
			}
			return a%b == 0, nil
		},
		"even": isType(func(x any) bool { n, ok := x.(int); return ok && n%2 == 0 }),
		"odd":  isType(func(x any) bool { n, ok := x.(int); return ok && n%2 != 0 }),
		"lower": isType(func(x any) bool {
			s, ok := x.(string)
			return ok && s == strings.ToLower(s)
		}),
		"upper": isType(func(x any) bool {
			s, ok := x.(string)
			return ok && s == strings.ToUpper(s)
		}),
	}
}

// method returns the bound method name of x (str and dict methods), or nil.
func method(x any, name string) callable {
	switch v := x.(type) {
	case string:
		return strMethod(v, name)
	case *Dict:
		switch name {
		case "items":
			return func(args []any, _ map[string]any) (any, error) { return dictItems(v), nil }
		case "keys":
			return func(args []any, _ map[string]any) (any, error) { return iterate(v) }
		case "values":
			return func(args []any, _ map[string]any) (any, error) {
				out := make([]any, len(v.keys))
				for i, k := range v.keys {
					out[i] = v.m[k]
				}
				return out, nil
			}
		case "get":
			return func(args []any, _ map[string]any) (any, error) {
				if len(args) < 1 || len(args) > 2 {
					return nil, fmt.Errorf("dict.get takes 1 or 2 arguments")
				}
				if k, ok := args[0].(string); ok {
					if val, ok := v.m[k]; ok {
						return val, nil
					}
				}
				if len(args) == 2 {
					return args[1], nil
				}
				return nil, nil
			}
		}
	}
	return nil
}

func strMethod(s, name string) callable {
	chars := func(args []any) (string, bool) {
		if len(args) > 0 && args[0] != nil {
			return toStr(args[0]), true
		}
		return "", false
	}
	switch name {
	case "strip", "lstrip", "rstrip":
		return func(args []any, _ map[string]any) (any, error) {
			c, has := chars(args)
			trim := map[string]func(string, func(rune) bool) string{"strip": strings.TrimFunc, "lstrip": strings.TrimLeftFunc, "rstrip": strings.TrimRightFunc}[name]
			if has {
				return trim(s, func(r rune) bool { return strings.ContainsRune(c, r) }), nil
			}
			return trim(s, unicode.IsSpace), nil
		}
	case "upper":
		return func([]any, map[string]any) (any, error) { return strings.ToUpper(s), nil }
	case "lower":
		return func([]any, map[string]any) (any, error) { return strings.ToLower(s), nil }
	case "title":
		return func([]any, map[string]any) (any, error) { return title(s), nil }
	case "capitalize":
		return func([]any, map[string]any) (any, error) { return capitalize(s), nil }
	case "startswith", "endswith":
		return func(args []any, _ map[string]any) (any, error) {
			if len(args) != 1 {
				return nil, fmt.Errorf("str.%s takes one argument", name)
			}
			cands := []any{args[0]}
			if l, ok := args[0].([]any); ok {
				cands = l
			}
			for _, c := range cands {
				p := toStr(c)
				if (name == "startswith" && strings.HasPrefix(s, p)) || (name == "endswith" && strings.HasSuffix(s, p)) {
					return true, nil
				}
			}
			return false, nil
		}
	case "split":
		return func(args []any, _ map[string]any) (any, error) {
			var parts []string
			if sep, has := chars(args); has {
				if sep == "" {
					return nil, fmt.Errorf("str.split: empty separator")
				}
				parts = strings.Split(s, sep)
			} else {
				parts = strings.Fields(s)
			}
			out := make([]any, len(parts))
			for i, p := range parts {
				out[i] = p
			}
			return out, nil
		}
	case "replace":
		return func(args []any, _ map[string]any) (any, error) {
			if len(args) < 2 {
				return nil, fmt.Errorf("str.replace takes (old, new[, count])")
			}
			n := -1
			if len(args) > 2 {
				n, _ = args[2].(int)
			}
			return strings.Replace(s, toStr(args[0]), toStr(args[1]), n), nil
		}
	case "find":
		return func(args []any, _ map[string]any) (any, error) {
			if len(args) != 1 {
				return nil, fmt.Errorf("str.find takes one argument")
			}
			i := strings.Index(s, toStr(args[0]))
			if i < 0 {
				return -1, nil
			}
			return len([]rune(s[:i])), nil
		}
	case "count":
		return func(args []any, _ map[string]any) (any, error) {
			if len(args) != 1 {
				return nil, fmt.Errorf("str.count takes one argument")
			}
			return strings.Count(s, toStr(args[0])), nil
		}
	case "join":
		return func(args []any, _ map[string]any) (any, error) {
			if len(args) != 1 {
				return nil, fmt.Errorf("str.join takes one argument")
			}
			items, err := iterate(args[0])
			if err != nil {
				return nil, err
			}
			parts := make([]string, len(items))
			for i, it := range items {
				parts[i] = toStr(it)
			}
			return strings.Join(parts, s), nil
		}
	}
	return nil
}

func capitalize(s string) string {
	rs := []rune(strings.ToLower(s))
	if len(rs) > 0 {
		rs[0] = unicode.ToUpper(rs[0])
	}
	return string(rs)
}

func title(s string) string {
	rs := []rune(s)
	prev := false
	for i, r := range rs {
		if unicode.IsLetter(r) {
			if prev {
				rs[i] = unicode.ToLower(r)
			} else {
				rs[i] = unicode.ToUpper(r)
			}
			prev = true
		} else {
			prev = false
		}
	}
	return string(rs)
}

// writeJSON writes v as Python's json.dumps(v, ensure_ascii=False) does,
// with indent >= 0 as json.dumps(indent=n) (separators "," and ": ").
func writeJSON(b *strings.Builder, v any, indent, depth int) error {
	nl := func(d int) {
		if indent >= 0 {
			b.WriteByte('\n')
			b.WriteString(strings.Repeat(" ", indent*d))
		}
	}
	sep := ", "
	if indent >= 0 {
		sep = ","
	}
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		if x {
			b.WriteString("true")
		} else {
			b.WriteString("false")
		}
	case int:
		b.WriteString(strconv.Itoa(x))
	case float64:
		switch {
		case math.IsNaN(x):
			b.WriteString("NaN")
		case math.IsInf(x, 1):
			b.WriteString("Infinity")
		case math.IsInf(x, -1):
			b.WriteString("-Infinity")
		default:
			b.WriteString(pyFloat(x))
		}
	case string:
		writeJSONString(b, x)
	case []any:
		if len(x) == 0 {
			b.WriteString("[]")
			return nil
		}
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteString(sep)
			}
			nl(depth + 1)
			if err := writeJSON(b, e, indent, depth+1); err != nil {
				return err
			}
		}
		nl(depth)
		b.WriteByte(']')
	case *Dict:
		if len(x.keys) == 0 {
			b.WriteString("{}")
			return nil
		}
		b.WriteByte('{')
		for i, k := range x.keys {
			if i > 0 {
				b.WriteString(sep)
			}
			nl(depth + 1)
			writeJSONString(b, k)
			b.WriteString(": ")
			if err := writeJSON(b, x.m[k], indent, depth+1); err != nil {
				return err
			}
		}
		nl(depth)
		b.WriteByte('}')
	case *namespace:
		return writeJSON(b, x.d, indent, depth)
	default:
		return fmt.Errorf("a %s is not JSON serializable", typeName(v))
	}
	return nil
}

func writeJSONString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			if r < 0x20 {
				fmt.Fprintf(b, `\u%04x`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
}
