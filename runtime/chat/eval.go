package chat

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// errLoopCtl carries break and continue out of a loop body.
type errLoopCtl struct{ brk bool }

func (e errLoopCtl) Error() string { return "break or continue outside a loop" }

// RaiseError is the error of a template's raise_exception(message).
type RaiseError struct {
	Template string
	Message  string
}

func (e *RaiseError) Error() string {
	return fmt.Sprintf("chat template %s: raise_exception: %s", e.Template, e.Message)
}

// scope is one frame of variables; a for loop body gets its own.
type scope struct {
	vars   map[string]any
	parent *scope
}

func (s *scope) lookup(n string) (any, bool) {
	for f := s; f != nil; f = f.parent {
		if v, ok := f.vars[n]; ok {
			return v, true
		}
	}
	return nil, false
}

// renderer evaluates a template's statements.
type renderer struct {
	name string
	out  strings.Builder
}

func (r *renderer) errorf(at pos, format string, args ...any) error {
	return fmt.Errorf("chat template %s: %s: %s", r.name, at, fmt.Sprintf(format, args...))
}

// wrap names the place of an error from a builtin, unless it already has one.
func (r *renderer) wrap(at pos, err error) error {
	var re *RaiseError
	if err == nil || errors.As(err, &re) || strings.HasPrefix(err.Error(), "chat template ") {
		return err
	}
	return r.errorf(at, "%v", err)
}

func (r *renderer) exec(nodes []node, s *scope) error {
	for _, n := range nodes {
		if err := r.execOne(n, s); err != nil {
			return err
		}
	}
	return nil
}

func (r *renderer) execOne(n node, s *scope) error {
	switch n := n.(type) {
	case textNode:
		r.out.WriteString(n.s)
	case outputNode:
		v, err := r.eval(n.e, s)
		if err != nil {
			return err
		}
		r.out.WriteString(toStr(v))
	case ifNode:
		for i, c := range n.conds {
			v, err := r.eval(c, s)
			if err != nil {
				return err
			}
			if truthy(v) {
				return r.exec(n.bodies[i], s)
			}
		}
		return r.exec(n.els, s)
	case setNode:
		v, err := r.eval(n.e, s)
		if err != nil {
			return err
		}
		if n.attr == "" {
			s.vars[n.target] = v
			return nil
		}
		obj, _ := s.lookup(n.target)
		ns, ok := obj.(*namespace)
		if !ok {
			return r.errorf(n.at, "set %s.%s: %s is a %s, not a namespace", n.target, n.attr, n.target, typeName(obj))
		}
		ns.d.Set(n.attr, v)
	case forNode:
		return r.execFor(n, s)
	case loopCtlNode:
		return errLoopCtl{n.brk}
	case generationNode:
		return r.exec(n.body, s)
	default:
		return fmt.Errorf("chat template %s: unknown statement %T", r.name, n)
	}
	return nil
}

func (r *renderer) execFor(n forNode, s *scope) error {
	it, err := r.eval(n.iter, s)
	if err != nil {
		return err
	}
	items, err := iterate(it)
	if err != nil {
		return r.errorf(n.at, "for: %v", err)
	}
	inner := &scope{vars: map[string]any{}, parent: s}
	bind := func(item any) error {
		if len(n.vars) == 1 {
			inner.vars[n.vars[0]] = item
			return nil
		}
		parts, ok := item.([]any)
		if !ok || len(parts) != len(n.vars) {
			return r.errorf(n.at, "for: cannot unpack %s into %d names", repr(item), len(n.vars))
		}
		for i, v := range parts {
			inner.vars[n.vars[i]] = v
		}
		return nil
	}
	if n.cond != nil { // the loop filter runs before loop is known
		var kept []any
		for _, item := range items {
			if err := bind(item); err != nil {
				return err
			}
			c, err := r.eval(n.cond, inner)
			if err != nil {
				return err
			}
			if truthy(c) {
				kept = append(kept, item)
			}
		}
		items = kept
	}
	if len(items) == 0 {
		return r.exec(n.els, s)
	}
	for i, item := range items {
		inner.vars = map[string]any{"loop": &loopInfo{index0: i, length: len(items)}}
		if err := bind(item); err != nil {
			return err
		}
		err := r.exec(n.body, inner)
		var ctl errLoopCtl
		if errors.As(err, &ctl) {
			if ctl.brk {
				break
			}
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *renderer) eval(e expr, s *scope) (any, error) {
	switch e := e.(type) {
	case litExpr:
		return e.v, nil
	case nameExpr:
		if v, ok := s.lookup(e.n); ok {
			return v, nil
		}
		if f, ok := globals(r.name)[e.n]; ok {
			return f, nil
		}
		return undefined{e.n}, nil
	case listExpr:
		out := make([]any, len(e.items))
		for i, it := range e.items {
			v, err := r.eval(it, s)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	case dictExpr:
		d := NewDict()
		for i := range e.keys {
			k, err := r.eval(e.keys[i], s)
			if err != nil {
				return nil, err
			}
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("chat template %s: dict keys must be strings, not %s", r.name, typeName(k))
			}
			v, err := r.eval(e.vals[i], s)
			if err != nil {
				return nil, err
			}
			d.Set(ks, v)
		}
		return d, nil
	case attrExpr:
		x, err := r.eval(e.x, s)
		if err != nil {
			return nil, err
		}
		v, err := getAttr(x, e.name)
		return v, r.wrap(e.at, err)
	case indexExpr:
		x, err := r.eval(e.x, s)
		if err != nil {
			return nil, err
		}
		k, err := r.eval(e.idx, s)
		if err != nil {
			return nil, err
		}
		v, err := getItem(x, k)
		return v, r.wrap(e.at, err)
	case sliceExpr:
		x, err := r.eval(e.x, s)
		if err != nil {
			return nil, err
		}
		var b [3]any
		for i, p := range []expr{e.lo, e.hi, e.step} {
			if p == nil {
				b[i] = nil
				continue
			}
			if b[i], err = r.eval(p, s); err != nil {
				return nil, err
			}
		}
		v, err := slice(x, b[0], b[1], b[2])
		return v, r.wrap(e.at, err)
	case callExpr:
		f, err := r.eval(e.fn, s)
		if err != nil {
			return nil, err
		}
		args, kw, err := r.evalArgs(e.args, e.kwargs, s)
		if err != nil {
			return nil, err
		}
		fn, ok := f.(callable)
		if !ok {
			if u, isU := f.(undefined); isU {
				return nil, r.errorf(e.at, "%s is undefined, not a function", u.what)
			}
			return nil, r.errorf(e.at, "a %s is not callable", typeName(f))
		}
		v, err := fn(args, kw)
		return v, r.wrap(e.at, err)
	case filterExpr:
		x, err := r.eval(e.x, s)
		if err != nil {
			return nil, err
		}
		args, kw, err := r.evalArgs(e.args, e.kwargs, s)
		if err != nil {
			return nil, err
		}
		f, ok := filters[e.name]
		if !ok {
			return nil, r.errorf(e.at, "unknown filter %q", e.name)
		}
		v, err := f(x, args, kw)
		return v, r.wrap(e.at, err)
	case testExpr:
		x, err := r.eval(e.x, s)
		if err != nil {
			return nil, err
		}
		args, _, err := r.evalArgs(e.args, nil, s)
		if err != nil {
			return nil, err
		}
		t, ok := tests[e.name]
		if !ok {
			return nil, r.errorf(e.at, "unknown test %q", e.name)
		}
		v, err := t(x, args)
		if err != nil {
			return nil, r.wrap(e.at, err)
		}
		return v != e.negate, nil
	case unaryExpr:
		x, err := r.eval(e.x, s)
		if err != nil {
			return nil, err
		}
		switch e.op {
		case "not":
			return !truthy(x), nil
		case "-":
			switch n := x.(type) {
			case int:
				return -n, nil
			case float64:
				return -n, nil
			}
			return nil, r.errorf(e.at, "bad operand for unary -: %s", typeName(x))
		case "+":
			if _, ok := number(x); ok {
				return x, nil
			}
			return nil, r.errorf(e.at, "bad operand for unary +: %s", typeName(x))
		}
	case condExpr:
		c, err := r.eval(e.cond, s)
		if err != nil {
			return nil, err
		}
		if truthy(c) {
			return r.eval(e.then, s)
		}
		return r.eval(e.els, s)
	case binExpr:
		return r.binary(e, s)
	}
	return nil, fmt.Errorf("chat template %s: unknown expression %T", r.name, e)
}

func (r *renderer) evalArgs(args []expr, kws []kwarg, s *scope) ([]any, map[string]any, error) {
	out := make([]any, len(args))
	for i, a := range args {
		v, err := r.eval(a, s)
		if err != nil {
			return nil, nil, err
		}
		out[i] = v
	}
	var kw map[string]any
	for _, k := range kws {
		v, err := r.eval(k.e, s)
		if err != nil {
			return nil, nil, err
		}
		if kw == nil {
			kw = map[string]any{}
		}
		kw[k.name] = v
	}
	return out, kw, nil
}

func (r *renderer) binary(e binExpr, s *scope) (any, error) {
	l, err := r.eval(e.l, s)
	if err != nil {
		return nil, err
	}
	switch e.op { // short-circuit, returning an operand as Python does
	case "and":
		if !truthy(l) {
			return l, nil
		}
		return r.eval(e.r, s)
	case "or":
		if truthy(l) {
			return l, nil
		}
		return r.eval(e.r, s)
	}
	rv, err := r.eval(e.r, s)
	if err != nil {
		return nil, err
	}
	v, err := binaryOp(e.op, l, rv)
	return v, r.wrap(e.at, err)
}

// binaryOp applies a non-short-circuit operator with Python's semantics.
func binaryOp(op string, l, r any) (any, error) {
	if _, ok := l.(undefined); ok && op != "==" && op != "!=" && op != "~" && op != "in" && op != "not in" {
		return nil, fmt.Errorf("%s is undefined", l.(undefined).what)
	}
	if _, ok := r.(undefined); ok && op != "==" && op != "!=" && op != "~" {
		return nil, fmt.Errorf("%s is undefined", r.(undefined).what)
	}
	switch op {
	case "==":
		return equal(l, r), nil
	case "!=":
		return !equal(l, r), nil
	case "~":
		return toStr(l) + toStr(r), nil
	case "in", "not in":
		in, err := contains(r, l)
		if err != nil {
			return nil, err
		}
		return in == (op == "in"), nil
	case "+":
		switch x := l.(type) {
		case string:
			if y, ok := r.(string); ok {
				return x + y, nil
			}
		case []any:
			if y, ok := r.([]any); ok {
				return append(append([]any{}, x...), y...), nil
			}
		}
	case "*":
		if s, ok := l.(string); ok {
			if n, ok := r.(int); ok {
				return strings.Repeat(s, max(n, 0)), nil
			}
		}
	case "<", ">", "<=", ">=":
		if a, b, ok := numbers(l, r); ok {
			return compareF(op, a, b), nil
		}
		if a, ok := l.(string); ok {
			if b, ok := r.(string); ok {
				return compareF(op, float64(strings.Compare(a, b)), 0), nil
			}
		}
		return nil, fmt.Errorf("'%s' not supported between %s and %s", op, typeName(l), typeName(r))
	}
	// Arithmetic on numbers.
	li, lInt := l.(int)
	ri, rInt := r.(int)
	a, b, ok := numbers(l, r)
	if !ok {
		return nil, fmt.Errorf("unsupported operand types for %s: %s and %s", op, typeName(l), typeName(r))
	}
	_, lb := l.(bool)
	_, rb := r.(bool)
	if lb {
		li, lInt = int(a), true
	}
	if rb {
		ri, rInt = int(b), true
	}
	ints := lInt && rInt
	switch op {
	case "+":
		if ints {
			return li + ri, nil
		}
		return a + b, nil
	case "-":
		if ints {
			return li - ri, nil
		}
		return a - b, nil
	case "*":
		if ints {
			return li * ri, nil
		}
		return a * b, nil
	case "/":
		if b == 0 {
			return nil, fmt.Errorf("division by zero")
		}
		return a / b, nil
	case "//", "%":
		if b == 0 {
			return nil, fmt.Errorf("integer division or modulo by zero")
		}
		if ints {
			q := li / ri
			if (li%ri != 0) && ((li < 0) != (ri < 0)) {
				q--
			}
			if op == "//" {
				return q, nil
			}
			return li - q*ri, nil
		}
		q := math.Floor(a / b)
		if op == "//" {
			return q, nil
		}
		return a - q*b, nil
	case "**":
		if ints && ri >= 0 {
			p := 1
			for range ri {
				p *= li
			}
			return p, nil
		}
		return math.Pow(a, b), nil
	}
	return nil, fmt.Errorf("unknown operator %s", op)
}

func compareF(op string, a, b float64) bool {
	switch op {
	case "<":
		return a < b
	case ">":
		return a > b
	case "<=":
		return a <= b
	}
	return a >= b
}

// contains is Python's `item in container`.
func contains(container, item any) (bool, error) {
	switch c := container.(type) {
	case string:
		s, ok := item.(string)
		if !ok {
			return false, fmt.Errorf("'in <string>' requires a string, not %s", typeName(item))
		}
		return strings.Contains(c, s), nil
	case []any:
		for _, e := range c {
			if equal(e, item) {
				return true, nil
			}
		}
		return false, nil
	case *Dict:
		s, ok := item.(string)
		if !ok {
			return false, nil
		}
		_, has := c.m[s]
		return has, nil
	case *namespace:
		s, _ := item.(string)
		_, has := c.d.m[s]
		return has, nil
	case undefined:
		return false, fmt.Errorf("%s is undefined", c.what)
	}
	return false, fmt.Errorf("argument of type %s is not iterable", typeName(container))
}

// getAttr is Jinja's x.name: a method or attribute first, then an item.
func getAttr(x any, name string) (any, error) {
	switch v := x.(type) {
	case undefined:
		return nil, fmt.Errorf("%s is undefined, so it has no attribute %q", v.what, name)
	case nil:
		return nil, fmt.Errorf("None has no attribute %q", name)
	case *loopInfo:
		switch name {
		case "index0":
			return v.index0, nil
		case "index":
			return v.index0 + 1, nil
		case "revindex":
			return v.length - v.index0, nil
		case "revindex0":
			return v.length - v.index0 - 1, nil
		case "first":
			return v.index0 == 0, nil
		case "last":
			return v.index0 == v.length-1, nil
		case "length":
			return v.length, nil
		}
		return nil, fmt.Errorf("loop.%s is not supported (have index, index0, revindex, revindex0, first, last, length)", name)
	case *namespace:
		if val, ok := v.d.m[name]; ok {
			return val, nil
		}
		return undefined{"namespace attribute " + name}, nil
	}
	if m := method(x, name); m != nil {
		return m, nil
	}
	if d, ok := x.(*Dict); ok {
		if val, ok := d.m[name]; ok {
			return val, nil
		}
	}
	return undefined{fmt.Sprintf("attribute %q of %s", name, typeName(x))}, nil
}

// getItem is Jinja's x[k]: an item first, then an attribute.
func getItem(x any, k any) (any, error) {
	switch v := x.(type) {
	case undefined:
		return nil, fmt.Errorf("%s is undefined, so it has no item %s", v.what, repr(k))
	case []any:
		i, ok := k.(int)
		if !ok {
			return nil, fmt.Errorf("list indices must be integers, not %s", typeName(k))
		}
		if i < 0 {
			i += len(v)
		}
		if i < 0 || i >= len(v) {
			return undefined{fmt.Sprintf("list index %d (of %d items)", k, len(v))}, nil
		}
		return v[i], nil
	case string:
		i, ok := k.(int)
		if !ok {
			return nil, fmt.Errorf("string indices must be integers, not %s", typeName(k))
		}
		rs := []rune(v)
		if i < 0 {
			i += len(rs)
		}
		if i < 0 || i >= len(rs) {
			return undefined{fmt.Sprintf("string index %d", k)}, nil
		}
		return string(rs[i]), nil
	case *Dict:
		if s, ok := k.(string); ok {
			if val, ok := v.m[s]; ok {
				return val, nil
			}
		}
	}
	if s, ok := k.(string); ok {
		return getAttr(x, s)
	}
	return undefined{fmt.Sprintf("item %s of %s", repr(k), typeName(x))}, nil
}

// slice is Python's x[lo:hi:step] on lists and strings.
func slice(x, lo, hi, step any) (any, error) {
	var n int
	var rs []rune
	switch v := x.(type) {
	case []any:
		n = len(v)
	case string:
		rs = []rune(v)
		n = len(rs)
	default:
		return nil, fmt.Errorf("cannot slice a %s", typeName(x))
	}
	st := 1
	if step != nil {
		s, ok := step.(int)
		if !ok || s == 0 {
			return nil, fmt.Errorf("slice step must be a non-zero integer")
		}
		st = s
	}
	bound := func(b any, def int) (int, error) {
		if b == nil {
			return def, nil
		}
		i, ok := b.(int)
		if !ok {
			return 0, fmt.Errorf("slice indices must be integers, not %s", typeName(b))
		}
		if i < 0 {
			i += n
		}
		if st > 0 {
			return min(max(i, 0), n), nil
		}
		return min(max(i, -1), n-1), nil
	}
	var start, stop int
	var err error
	if st > 0 {
		if start, err = bound(lo, 0); err == nil {
			stop, err = bound(hi, n)
		}
	} else {
		if start, err = bound(lo, n-1); err == nil {
			stop, err = bound(hi, -1)
		}
	}
	if err != nil {
		return nil, err
	}
	var idx []int
	for i := start; (st > 0 && i < stop) || (st < 0 && i > stop); i += st {
		idx = append(idx, i)
	}
	if _, ok := x.(string); ok {
		var b strings.Builder
		for _, i := range idx {
			b.WriteRune(rs[i])
		}
		return b.String(), nil
	}
	l := x.([]any)
	out := make([]any, len(idx))
	for j, i := range idx {
		out[j] = l[i]
	}
	return out, nil
}
