package chat

import (
	"fmt"
	"slices"
)

// Statements of a parsed template.
type (
	node interface{}

	textNode   struct{ s string }
	outputNode struct {
		e  expr
		at pos
	}
	ifNode struct {
		conds  []expr
		bodies [][]node
		els    []node
	}
	forNode struct {
		vars      []string
		iter      expr
		cond      expr // the loop's filter (for x in xs if cond), or nil
		body, els []node
		at        pos
	}
	setNode struct {
		target string
		attr   string // set ns.attr = ...
		e      expr
		at     pos
	}
	loopCtlNode struct {
		brk bool
		at  pos
	}
	generationNode struct{ body []node } // transformers' {% generation %}
)

// Expressions.
type (
	expr interface{}

	litExpr  struct{ v any }
	nameExpr struct {
		n  string
		at pos
	}
	attrExpr struct {
		x    expr
		name string
		at   pos
	}
	indexExpr struct {
		x, idx expr
		at     pos
	}
	sliceExpr struct {
		x, lo, hi, step expr
		at              pos
	}
	callExpr struct {
		fn     expr
		args   []expr
		kwargs []kwarg
		at     pos
	}
	filterExpr struct {
		x      expr
		name   string
		args   []expr
		kwargs []kwarg
		at     pos
	}
	testExpr struct {
		x      expr
		name   string
		args   []expr
		negate bool
		at     pos
	}
	unaryExpr struct {
		op string
		x  expr
		at pos
	}
	binExpr struct {
		op   string
		l, r expr
		at   pos
	}
	condExpr struct {
		then, cond, els expr
		at              pos
	}
	listExpr struct{ items []expr }
	dictExpr struct{ keys, vals []expr }
)

type kwarg struct {
	name string
	e    expr
}

// parser builds the statement tree from segments.
type parser struct {
	name string
	segs []segment
	i    int
	// within one tag
	toks []token
	j    int
}

func (p *parser) errorf(at pos, format string, args ...any) error {
	return fmt.Errorf("chat template %s: %s: %s", p.name, at, fmt.Sprintf(format, args...))
}

// parseTemplate parses segments into statements.
func parseTemplate(name string, segs []segment) ([]node, error) {
	p := &parser{name: name, segs: segs}
	body, end, err := p.block(nil)
	if err != nil {
		return nil, err
	}
	if end != "" {
		return nil, p.errorf(p.segs[p.i-1].at, "unexpected {%% %s %%}", end)
	}
	return body, nil
}

// block parses statements until a block tag whose keyword is in ends (the
// tag's tokens stay loaded) or the end of the template ("").
func (p *parser) block(ends []string) ([]node, string, error) {
	var out []node
	for p.i < len(p.segs) {
		s := p.segs[p.i]
		p.i++
		switch s.kind {
		case segText:
			out = append(out, textNode{s.text})
		case segOutput:
			p.toks, p.j = s.toks, 0
			e, err := p.expr()
			if err != nil {
				return nil, "", err
			}
			if err := p.expectEnd(); err != nil {
				return nil, "", err
			}
			out = append(out, outputNode{e, s.at})
		case segBlock:
			p.toks, p.j = s.toks, 0
			kw := p.peek()
			if kw.kind != tName {
				return nil, "", p.errorf(kw.at, "expected a statement keyword")
			}
			if slices.Contains(ends, kw.s) {
				p.j++
				return out, kw.s, nil
			}
			n, err := p.statement(kw, s.at)
			if err != nil {
				return nil, "", err
			}
			out = append(out, n)
		}
	}
	if len(ends) > 0 {
		return nil, "", fmt.Errorf("chat template %s: end of template before {%% %s %%}", p.name, ends[len(ends)-1])
	}
	return out, "", nil
}

func (p *parser) statement(kw token, at pos) (node, error) {
	p.j++
	switch kw.s {
	case "if":
		n := ifNode{}
		for {
			c, err := p.expr()
			if err != nil {
				return nil, err
			}
			if err := p.expectEnd(); err != nil {
				return nil, err
			}
			body, end, err := p.block([]string{"elif", "else", "endif"})
			if err != nil {
				return nil, err
			}
			n.conds, n.bodies = append(n.conds, c), append(n.bodies, body)
			switch end {
			case "elif":
				continue
			case "else":
				if err := p.expectEnd(); err != nil {
					return nil, err
				}
				els, _, err := p.block([]string{"endif"})
				if err != nil {
					return nil, err
				}
				n.els = els
			}
			return n, p.expectEnd()
		}
	case "for":
		n := forNode{at: at}
		for {
			t := p.next()
			if t.kind != tName {
				return nil, p.errorf(t.at, "expected a loop variable name")
			}
			n.vars = append(n.vars, t.s)
			if !p.acceptOp(",") {
				break
			}
		}
		if t := p.next(); t.kind != tName || t.s != "in" {
			return nil, p.errorf(t.at, "expected 'in' in a for statement")
		}
		it, err := p.orExpr() // a bare conditional would swallow the loop filter
		if err != nil {
			return nil, err
		}
		n.iter = it
		if p.acceptName("if") {
			if n.cond, err = p.expr(); err != nil {
				return nil, err
			}
		}
		if t := p.peek(); t.kind == tName && t.s == "recursive" {
			return nil, p.errorf(t.at, "recursive loops are not supported")
		}
		if err := p.expectEnd(); err != nil {
			return nil, err
		}
		body, end, err := p.block([]string{"else", "endfor"})
		if err != nil {
			return nil, err
		}
		n.body = body
		if end == "else" {
			if err := p.expectEnd(); err != nil {
				return nil, err
			}
			if n.els, _, err = p.block([]string{"endfor"}); err != nil {
				return nil, err
			}
		}
		return n, p.expectEnd()
	case "set":
		t := p.next()
		if t.kind != tName {
			return nil, p.errorf(t.at, "expected a variable name after set")
		}
		n := setNode{target: t.s, at: at}
		if p.acceptOp(".") {
			a := p.next()
			if a.kind != tName {
				return nil, p.errorf(a.at, "expected an attribute name")
			}
			n.attr = a.s
		}
		if t := p.peek(); t.kind == tOp && t.s == "," {
			return nil, p.errorf(t.at, "tuple assignment in set is not supported")
		}
		if !p.acceptOp("=") {
			return nil, p.errorf(p.peek().at, "block set ({%% set x %%}...{%% endset %%}) is not supported; want set NAME = EXPR")
		}
		e, err := p.expr()
		if err != nil {
			return nil, err
		}
		n.e = e
		return n, p.expectEnd()
	case "break", "continue":
		return loopCtlNode{brk: kw.s == "break", at: at}, p.expectEnd()
	case "generation":
		if err := p.expectEnd(); err != nil {
			return nil, err
		}
		body, _, err := p.block([]string{"endgeneration"})
		if err != nil {
			return nil, err
		}
		return generationNode{body}, p.expectEnd()
	}
	switch kw.s {
	case "endif", "endfor", "elif", "else", "endgeneration":
		return nil, p.errorf(kw.at, "unexpected {%% %s %%} (no block open that it ends)", kw.s)
	}
	return nil, p.errorf(kw.at, "unsupported statement {%% %s %%}", kw.s)
}

func (p *parser) peek() token { return p.toks[p.j] }

func (p *parser) next() token {
	t := p.toks[p.j]
	if t.kind != tEnd {
		p.j++
	}
	return t
}

func (p *parser) acceptOp(op string) bool {
	if t := p.peek(); t.kind == tOp && t.s == op {
		p.j++
		return true
	}
	return false
}

func (p *parser) acceptName(n string) bool {
	if t := p.peek(); t.kind == tName && t.s == n {
		p.j++
		return true
	}
	return false
}

func (p *parser) expectOp(op string) error {
	if !p.acceptOp(op) {
		return p.errorf(p.peek().at, "expected %q, found %s", op, describe(p.peek()))
	}
	return nil
}

func (p *parser) expectEnd() error {
	if t := p.peek(); t.kind != tEnd {
		return p.errorf(t.at, "unexpected %s", describe(t))
	}
	return nil
}

func describe(t token) string {
	switch t.kind {
	case tEnd:
		return "end of tag"
	case tString:
		return fmt.Sprintf("string %q", t.s)
	case tInt:
		return fmt.Sprintf("number %d", t.i)
	case tFloat:
		return fmt.Sprintf("number %g", t.f)
	}
	return fmt.Sprintf("%q", t.s)
}

// expr parses a conditional expression: a if c else b.
func (p *parser) expr() (expr, error) {
	e, err := p.orExpr()
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind == tName && t.s == "if" {
		p.j++
		c, err := p.orExpr()
		if err != nil {
			return nil, err
		}
		var els expr = litExpr{undefined{}}
		if p.acceptName("else") {
			if els, err = p.expr(); err != nil {
				return nil, err
			}
		}
		return condExpr{then: e, cond: c, els: els, at: t.at}, nil
	}
	return e, nil
}

// leftAssoc parses next (op next)* with op a token of kind among ops,
// associating to the left: one precedence level of binary operators.
func (p *parser) leftAssoc(next func() (expr, error), kind tokKind, ops ...string) (expr, error) {
	l, err := next()
	for err == nil {
		t := p.peek()
		if t.kind != kind || !slices.Contains(ops, t.s) {
			return l, nil
		}
		p.j++
		var r expr
		if r, err = next(); err == nil {
			l = binExpr{op: t.s, l: l, r: r, at: t.at}
		}
	}
	return nil, err
}

func (p *parser) orExpr() (expr, error) { return p.leftAssoc(p.andExpr, tName, "or") }

func (p *parser) andExpr() (expr, error) { return p.leftAssoc(p.notExpr, tName, "and") }

func (p *parser) notExpr() (expr, error) {
	if t := p.peek(); t.kind == tName && t.s == "not" {
		p.j++
		x, err := p.notExpr()
		if err != nil {
			return nil, err
		}
		return unaryExpr{op: "not", x: x, at: t.at}, nil
	}
	return p.compare()
}

func (p *parser) compare() (expr, error) {
	l, err := p.concat()
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		op := ""
		switch {
		case t.kind == tOp && slices.Contains([]string{"==", "!=", "<", ">", "<=", ">="}, t.s):
			op = t.s
			p.j++
		case t.kind == tName && t.s == "in":
			op = "in"
			p.j++
		case t.kind == tName && t.s == "not" && p.toks[p.j+1].kind == tName && p.toks[p.j+1].s == "in":
			op = "not in"
			p.j += 2
		default:
			return l, nil
		}
		r, err := p.concat()
		if err != nil {
			return nil, err
		}
		l = binExpr{op: op, l: l, r: r, at: t.at}
	}
}

func (p *parser) concat() (expr, error) { return p.leftAssoc(p.sum, tOp, "~") }

func (p *parser) sum() (expr, error) { return p.leftAssoc(p.product, tOp, "+", "-") }

func (p *parser) product() (expr, error) { return p.leftAssoc(p.power, tOp, "*", "/", "//", "%") }

func (p *parser) power() (expr, error) { return p.leftAssoc(p.unary, tOp, "**") }

// unary parses -x, +x, then a primary with its postfixes, filters and tests.
func (p *parser) unary() (expr, error) {
	t := p.peek()
	if t.kind == tOp && (t.s == "-" || t.s == "+") {
		p.j++
		x, err := p.unaryNoFilter()
		if err != nil {
			return nil, err
		}
		return p.filters(unaryExpr{op: t.s, x: x, at: t.at})
	}
	x, err := p.postfix()
	if err != nil {
		return nil, err
	}
	return p.filters(x)
}

func (p *parser) unaryNoFilter() (expr, error) {
	t := p.peek()
	if t.kind == tOp && (t.s == "-" || t.s == "+") {
		p.j++
		x, err := p.unaryNoFilter()
		if err != nil {
			return nil, err
		}
		return unaryExpr{op: t.s, x: x, at: t.at}, nil
	}
	return p.postfix()
}

// filters parses x | f(args) ..., x is [not] test [arg], and calls after them.
func (p *parser) filters(x expr) (expr, error) {
	for {
		t := p.peek()
		switch {
		case t.kind == tOp && t.s == "|":
			p.j++
			n := p.next()
			if n.kind != tName {
				return nil, p.errorf(n.at, "expected a filter name after |")
			}
			f := filterExpr{x: x, name: n.s, at: n.at}
			if p.acceptOp("(") {
				var err error
				if f.args, f.kwargs, err = p.callArgs(); err != nil {
					return nil, err
				}
			}
			x = f
		case t.kind == tName && t.s == "is":
			p.j++
			te := testExpr{x: x, at: t.at}
			if p.acceptName("not") {
				te.negate = true
			}
			n := p.next()
			if n.kind != tName {
				return nil, p.errorf(n.at, "expected a test name after is")
			}
			te.name = n.s
			switch a := p.peek(); {
			case a.kind == tOp && a.s == "(":
				p.j++
				args, kw, err := p.callArgs()
				if err != nil {
					return nil, err
				}
				if len(kw) > 0 {
					return nil, p.errorf(a.at, "keyword arguments to tests are not supported")
				}
				te.args = args
			case a.kind == tString || a.kind == tInt || a.kind == tFloat || (a.kind == tName && !slices.Contains([]string{"and", "or", "else", "if", "in", "not", "is"}, a.s)):
				arg, err := p.postfix()
				if err != nil {
					return nil, err
				}
				te.args = []expr{arg}
			}
			x = te
		default:
			return x, nil
		}
	}
}

// postfix parses a primary then .attr, [index], [a:b:c] and (call).
func (p *parser) postfix() (expr, error) {
	x, err := p.primary()
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		if t.kind != tOp {
			return x, nil
		}
		switch t.s {
		case ".":
			p.j++
			n := p.next()
			switch n.kind {
			case tName:
				x = attrExpr{x: x, name: n.s, at: n.at}
			case tInt:
				x = indexExpr{x: x, idx: litExpr{n.i}, at: n.at}
			default:
				return nil, p.errorf(n.at, "expected an attribute name after .")
			}
		case "[":
			p.j++
			var parts [3]expr
			k := 0
			isSlice := false
			for {
				if a := p.peek(); !(a.kind == tOp && (a.s == ":" || a.s == "]")) {
					if parts[k], err = p.expr(); err != nil {
						return nil, err
					}
				}
				if p.acceptOp(":") {
					isSlice = true
					if k++; k > 2 {
						return nil, p.errorf(t.at, "too many ':' in a slice")
					}
					continue
				}
				break
			}
			if err := p.expectOp("]"); err != nil {
				return nil, err
			}
			if isSlice {
				x = sliceExpr{x: x, lo: parts[0], hi: parts[1], step: parts[2], at: t.at}
			} else {
				if parts[0] == nil {
					return nil, p.errorf(t.at, "empty subscript []")
				}
				x = indexExpr{x: x, idx: parts[0], at: t.at}
			}
		case "(":
			p.j++
			args, kw, err := p.callArgs()
			if err != nil {
				return nil, err
			}
			x = callExpr{fn: x, args: args, kwargs: kw, at: t.at}
		default:
			return x, nil
		}
	}
}

// callArgs parses arguments after "(" up to and including ")".
func (p *parser) callArgs() ([]expr, []kwarg, error) {
	var args []expr
	var kws []kwarg
	for !p.acceptOp(")") {
		if len(args)+len(kws) > 0 {
			if err := p.expectOp(","); err != nil {
				return nil, nil, err
			}
			if p.acceptOp(")") {
				break
			}
		}
		if t := p.peek(); t.kind == tName && p.toks[p.j+1].kind == tOp && p.toks[p.j+1].s == "=" {
			p.j += 2
			e, err := p.expr()
			if err != nil {
				return nil, nil, err
			}
			kws = append(kws, kwarg{t.s, e})
			continue
		}
		if len(kws) > 0 {
			return nil, nil, p.errorf(p.peek().at, "positional argument after a keyword argument")
		}
		e, err := p.expr()
		if err != nil {
			return nil, nil, err
		}
		args = append(args, e)
	}
	return args, kws, nil
}

func (p *parser) primary() (expr, error) {
	t := p.next()
	switch t.kind {
	case tString:
		s := t.s
		for p.peek().kind == tString { // adjacent literals concatenate
			s += p.next().s
		}
		return litExpr{s}, nil
	case tInt:
		return litExpr{t.i}, nil
	case tFloat:
		return litExpr{t.f}, nil
	case tName:
		switch t.s {
		case "true", "True":
			return litExpr{true}, nil
		case "false", "False":
			return litExpr{false}, nil
		case "none", "None":
			return litExpr{nil}, nil
		}
		return nameExpr{n: t.s, at: t.at}, nil
	case tOp:
		switch t.s {
		case "(":
			e, err := p.expr()
			if err != nil {
				return nil, err
			}
			if p.peek().kind == tOp && p.peek().s == "," {
				items := []expr{e}
				for p.acceptOp(",") {
					if a := p.peek(); a.kind == tOp && a.s == ")" {
						break
					}
					it, err := p.expr()
					if err != nil {
						return nil, err
					}
					items = append(items, it)
				}
				e = listExpr{items}
			}
			return e, p.expectOp(")")
		case "[":
			var l listExpr
			err := p.commaList("]", func() error {
				it, err := p.expr()
				l.items = append(l.items, it)
				return err
			})
			if err != nil {
				return nil, err
			}
			return l, nil
		case "{":
			var d dictExpr
			err := p.commaList("}", func() error {
				k, err := p.expr()
				if err != nil {
					return err
				}
				if err := p.expectOp(":"); err != nil {
					return err
				}
				v, err := p.expr()
				d.keys, d.vals = append(d.keys, k), append(d.vals, v)
				return err
			})
			if err != nil {
				return nil, err
			}
			return d, nil
		}
	}
	return nil, p.errorf(t.at, "unexpected %s in an expression", describe(t))
}

// commaList reads comma-separated items (a trailing comma allowed) up to
// and including the closing operator; item reads one.
func (p *parser) commaList(closing string, item func() error) error {
	for n := 0; !p.acceptOp(closing); n++ {
		if n > 0 {
			if err := p.expectOp(","); err != nil {
				return err
			}
			if p.acceptOp(closing) {
				break
			}
		}
		if err := item(); err != nil {
			return err
		}
	}
	return nil
}
