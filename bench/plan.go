package bench

import (
	"fmt"
	"github.com/kvbench/kvbench/internal/num"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/tasks"
)

// Cell is one point of a suite's matrix: a model, a policy configuration and
// a task configuration.
type Cell struct {
	Model        ModelSpec
	Policy       string
	PolicyParams policies.Params // as given in the suite (defaults not added), one value each
	Task         string
	TaskParams   tasks.Params // expanded parameters one value each, others whole; paths resolved
	// Key is stable and unique within the suite: model/policy(params)/task(params)
	// with parameters sorted by name and values formatted canonically, e.g.
	// "ref25m/quest(budget=64,page=16)/passkey(depths=0.5,lengths=2048,trials=10)".
	Key string
}

// Cells expands the suite's matrix: for every model, every policy
// configuration (each list-valued parameter expands, cartesian product in
// the order written) and every task configuration (the parameters the task
// names in Expand expand; others are passed whole). Order follows the suite:
// models, then policies, then tasks, the last parameter varying fastest.
func (s *Suite) Cells() []Cell {
	type pc struct {
		name   string
		params policies.Params
		key    string
	}
	type tc struct {
		name   string
		params tasks.Params
		key    string
		only   []string
	}
	var pcs []pc
	for i := range s.Policies {
		e := &s.Policies[i]
		combos, _ := expandPolicy(e)
		for _, c := range combos {
			pcs = append(pcs, pc{e.Name, c.params, c.key})
		}
	}
	var tcs []tc
	for i := range s.Tasks {
		e := &s.Tasks[i]
		t, err := tasks.Lookup(e.Name)
		if err != nil {
			continue
		}
		combos, _ := expandTask(t, e)
		for _, c := range combos {
			tcs = append(tcs, tc{e.Name, c.params, c.key, e.Policies})
		}
	}
	// A non-default KV layout is part of every key, so that results of
	// another layout in the same folder are not taken as done.
	kv := ""
	if (s.KVType != "" && s.KVType != "f32") || (s.PageSize != 0 && s.PageSize != runtime.DefaultPageSize) {
		kv = fmt.Sprintf("@kv=%s/%d", s.KVType, s.PageSize)
	}
	cells := make([]Cell, 0, len(s.Models)*len(pcs)*len(tcs))
	for _, m := range s.Models {
		for _, p := range pcs {
			for _, t := range tcs {
				if len(t.only) > 0 && !contains(t.only, p.name) {
					continue
				}
				cells = append(cells, Cell{
					Model:        m,
					Policy:       p.name,
					PolicyParams: cloneMap(p.params),
					Task:         t.name,
					TaskParams:   cloneMap(t.params),
					Key:          m.Name + kv + "/" + p.key + "/" + t.key,
				})
			}
		}
	}
	return cells
}

func cloneMap[M ~map[string]any](m M) M {
	out := make(M, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// combo is one configuration of an entry.
type combo struct {
	params map[string]any
	keyVal map[string]any // values for the key (paths as written)
	pos    map[string]Pos // where each value was written
	key    string
	err    error // policies: policies.New's error
}

// axis is one parameter's values.
type axis struct {
	name string
	vals []any
	raw  []any
	pos  []Pos
}

// product returns every combination of the axes, the last varying fastest.
func product(axes []axis) ([]combo, error) {
	n := 1
	for _, a := range axes {
		if len(a.vals) == 0 {
			return nil, fmt.Errorf("parameter %s: empty list", a.name)
		}
		if n > maxEntryCombos/len(a.vals) {
			return nil, fmt.Errorf("more than %d configurations", maxEntryCombos)
		}
		n *= len(a.vals)
	}
	out := make([]combo, 0, n)
	idx := make([]int, len(axes))
	for {
		c := combo{params: map[string]any{}, keyVal: map[string]any{}, pos: map[string]Pos{}}
		for i, a := range axes {
			c.params[a.name] = a.vals[idx[i]]
			c.keyVal[a.name] = a.raw[idx[i]]
			c.pos[a.name] = a.pos[idx[i]]
		}
		out = append(out, c)
		i := len(axes) - 1
		for ; i >= 0; i-- {
			idx[i]++
			if idx[i] < len(axes[i].vals) {
				break
			}
			idx[i] = 0
		}
		if i < 0 {
			return out, nil
		}
	}
}

// paramOrder is the entry's parameter names in file order (sorted for
// entries built by hand).
func paramOrder(order []string, params map[string]any) []string {
	if len(order) == len(params) {
		ok := true
		for _, n := range order {
			if _, has := params[n]; !has {
				ok = false
			}
		}
		if ok {
			return order
		}
	}
	names := make([]string, 0, len(params))
	for n := range params {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func elemPos(at map[string][]Pos, pos map[string]Pos, entry Pos, name string, i int) Pos {
	if l := at[name]; i < len(l) {
		return l[i]
	}
	if p, ok := pos[name]; ok {
		return p
	}
	return entry
}

// expandPolicy returns an entry's configurations, each checked with
// policies.New; given values are replaced by the policy's resolved ones
// (so "64" and 64 make the same key).
func expandPolicy(e *PolicyEntry) ([]combo, error) {
	var axes []axis
	for _, name := range paramOrder(e.order, e.Params) {
		v := e.Params[name]
		a := axis{name: name}
		if l, ok := v.([]any); ok {
			a.vals, a.raw = l, l
			for i := range l {
				a.pos = append(a.pos, elemPos(e.elemAt, e.pos, e.Pos, name, i))
			}
		} else {
			a.vals, a.raw = []any{v}, []any{v}
			a.pos = []Pos{elemPos(nil, e.pos, e.Pos, name, 0)}
		}
		axes = append(axes, a)
	}
	combos, err := product(axes)
	if err != nil {
		return nil, err
	}
	for i := range combos {
		c := &combos[i]
		pol, err := safeNew(e.Name, policies.Params(c.params))
		if err != nil {
			c.err = err
		} else {
			resolved := pol.Params()
			for k := range c.params {
				if v, ok := resolved[k]; ok {
					c.params[k] = v
					c.keyVal[k] = v
				}
			}
		}
		c.key = keyOf(e.Name, c.keyVal)
	}
	return combos, nil
}

// safeNew runs policies.New, turning a panic into an error.
func safeNew(name string, p policies.Params) (pol policies.Policy, err error) {
	defer func() {
		if r := recover(); r != nil {
			pol, err = nil, fmt.Errorf("policy %s: panicked: %v", name, r)
		}
	}()
	return policies.New(name, p)
}

// expandTask returns an entry's cells (not checked).
func expandTask(t tasks.Task, e *TaskEntry) ([]combo, error) {
	expand := map[string]bool{}
	for _, n := range t.Expand() {
		expand[n] = true
	}
	ve, hasVE := t.(ValueExpander)
	if !hasVE {
		ve, hasVE = builtinExpanders[t.Name()]
	}
	var axes []axis
	for _, name := range paramOrder(e.order, e.Params) {
		v := e.Params[name]
		raw, hasRaw := e.raw[name]
		if !hasRaw {
			raw = v
		}
		a := axis{name: name}
		switch {
		case !expand[name]:
			a.vals, a.raw = []any{v}, []any{raw}
			a.pos = []Pos{elemPos(nil, e.pos, e.Pos, name, 0)}
		case hasVE:
			if vals, ok := ve.ExpandValue(name, v); ok {
				a.vals, a.raw = vals, vals
				for range vals {
					a.pos = append(a.pos, elemPos(nil, e.pos, e.Pos, name, 0))
				}
				break
			}
			fallthrough
		default:
			if l, ok := v.([]any); ok {
				rl, _ := raw.([]any)
				if len(rl) != len(l) {
					rl = l
				}
				a.vals, a.raw = l, rl
				for i := range l {
					a.pos = append(a.pos, elemPos(e.elemAt, e.pos, e.Pos, name, i))
				}
			} else {
				a.vals, a.raw = []any{v}, []any{raw}
				a.pos = []Pos{elemPos(nil, e.pos, e.Pos, name, 0)}
			}
		}
		axes = append(axes, a)
	}
	combos, err := product(axes)
	if err != nil {
		return nil, err
	}
	for i := range combos {
		combos[i].key = keyOf(e.Name, combos[i].keyVal)
	}
	return combos, nil
}

// builtinExpanders stand in for tasks that do not implement ValueExpander
// themselves.
var builtinExpanders = map[string]ValueExpander{"needle": expandFunc(needleDepths)}

type expandFunc func(name string, v any) ([]any, bool)

func (f expandFunc) ExpandValue(name string, v any) ([]any, bool) { return f(name, v) }

// needleDepths turns needle's "depths: N" (an integer N >= 2) into N evenly
// spaced depths over [0, 1]; 0 and 1 stay depths.
func needleDepths(name string, v any) ([]any, bool) {
	n, ok := v.(int)
	if name != "depths" || !ok || n < 2 || n > maxEntryCombos {
		return nil, false
	}
	var out []any
	for _, d := range tasks.NeedleDepths(n) {
		out = append(out, d)
	}
	return out, true
}

// keyOf formats name(k=v,...) with keys sorted; name alone without params.
func keyOf(name string, params map[string]any) string {
	if len(params) == 0 {
		return name
	}
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('(')
	for i, k := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(canon(params[k]))
	}
	b.WriteByte(')')
	return b.String()
}

var plainString = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.:+-]*$`)

// canon formats a value canonically for keys: integers (and integral floats)
// in decimal, other floats in the shortest form that round-trips, strings
// bare when unambiguous and quoted otherwise, lists in brackets.
func canon(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return strconv.FormatBool(x)
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case int32:
		return strconv.FormatInt(int64(x), 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case float32:
		return canonFloat(float64(x))
	case float64:
		return canonFloat(x)
	case string:
		if plainString.MatchString(x) && x != "true" && x != "false" && x != "null" {
			return x
		}
		return strconv.Quote(x)
	case []any:
		parts := make([]string, len(x))
		for i, y := range x {
			parts[i] = canon(y)
		}
		return "[" + strings.Join(parts, ",") + "]"
	case map[string]any:
		return keyOf("", x)
	}
	return strconv.Quote(fmt.Sprint(v))
}

func canonFloat(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		if f == 0 {
			return "0" // -0 too
		}
		return strconv.FormatInt(int64(f), 10)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// TokenEstimator is implemented by tasks that estimate the tokens one cell
// processes (prefill and decode), for Estimate.
type TokenEstimator interface {
	EstimateTokens(p tasks.Params) int64
}

// CellCost is the estimated work of one cell.
type CellCost struct {
	Key    string
	Tokens int64 // tokens processed, prefill and decode (0: unknown)
}

// Cost is a rough estimate of a suite's work, for --dry-run.
type Cost struct {
	Cells   []CellCost
	Tokens  int64 // tokens, over every cell
	Unknown int   // cells whose task has no estimate
}

// Estimate estimates the tokens each cell processes: passkey trials ×
// (length + generated tokens), perplexity tokens × streams, needle length +
// max_new (× trials when given); tasks implementing TokenEstimator estimate
// themselves. Missing parameters take the task's documented defaults.
func Estimate(cells []Cell) Cost {
	var c Cost
	for _, cell := range cells {
		n := estimateCell(cell)
		if n <= 0 {
			c.Unknown++
			n = 0
		}
		c.Cells = append(c.Cells, CellCost{Key: cell.Key, Tokens: n})
		c.Tokens += n
	}
	return c
}

func estimateCell(cell Cell) int64 {
	t, err := tasks.Lookup(cell.Task)
	if err != nil {
		return 0
	}
	if te, ok := t.(TokenEstimator); ok {
		return te.EstimateTokens(cell.TaskParams)
	}
	docs := t.Params()
	num := func(def float64, names ...string) float64 {
		for _, n := range names {
			if v, ok := cell.TaskParams[n]; ok {
				if f, ok := num.Parse(v); ok {
					return f
				}
			}
		}
		for _, n := range names {
			for _, d := range docs {
				if d.Name == n {
					if f, err := strconv.ParseFloat(strings.TrimSpace(d.Default), 64); err == nil {
						return f
					}
				}
			}
		}
		return def
	}
	length := num(0, "lengths", "length", "context", "tokens")
	gen := num(16, "max_new", "max_new_tokens", "generate")
	var f float64
	switch cell.Task {
	case "passkey":
		f = num(1, "trials") * (length + gen)
	case "perplexity":
		f = num(0, "tokens") * num(1, "streams")
	case "needle":
		f = num(1, "trials") * (length + gen)
	default:
		f = num(1, "trials") * num(1, "streams") * length
	}
	if f != f || f < 0 {
		return 0
	}
	if f > math.MaxInt64/2 {
		return math.MaxInt64 / 2
	}
	return int64(f)
}

// String summarises the estimate.
func (c Cost) String() string {
	s := fmt.Sprintf("%d cells, about %s tokens", len(c.Cells), humanCount(c.Tokens))
	if c.Unknown > 0 {
		s += fmt.Sprintf(" (%d cells not estimated)", c.Unknown)
	}
	return s
}

func humanCount(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.1fG", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 1e4:
		return fmt.Sprintf("%.1fk", float64(n)/1e3)
	}
	return strconv.FormatInt(n, 10)
}
