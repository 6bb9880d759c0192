package policies

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Params are a policy's parameters by name, as a suite file or the CLI
// (--param key=value) gives them: numbers, booleans or strings.
type Params map[string]any

// ParamDoc documents one parameter of a policy.
type ParamDoc struct {
	Name    string
	Default string // "" when required
	Doc     string
}

// paramReader reads typed parameters, remembering which were used so that
// unknown ones can be reported, and keeps the first error.
type paramReader struct {
	policy string
	p      Params
	used   map[string]bool
	err    error
	out    Params // resolved values, defaults included
}

func newReader(policy string, p Params) *paramReader {
	return &paramReader{policy: policy, p: p, used: map[string]bool{}, out: Params{}}
}

func (r *paramReader) fail(name, format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("policy %s: parameter %s: %s", r.policy, name, fmt.Sprintf(format, args...))
	}
}

func (r *paramReader) has(name string) bool {
	_, ok := r.p[name]
	return ok
}

// number returns the parameter as a float64 and whether it was given.
func (r *paramReader) number(name string) (float64, bool) {
	v, ok := r.p[name]
	r.used[name] = true
	if !ok {
		return 0, false
	}
	switch x := v.(type) {
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		if err != nil {
			r.fail(name, "%q is not a number", x)
			return 0, false
		}
		return f, true
	}
	r.fail(name, "%v (%T) is not a number", v, v)
	return 0, false
}

// Int reads an integer in [lo, hi]; def is used when absent (required when
// def < lo).
func (r *paramReader) Int(name string, def, lo, hi int) int {
	f, ok := r.number(name)
	if !ok {
		if r.err == nil && def < lo {
			r.fail(name, "is required")
		}
		r.out[name] = def
		return def
	}
	if f != float64(int(f)) {
		r.fail(name, "%v is not an integer", f)
		return def
	}
	if int(f) < lo || int(f) > hi {
		r.fail(name, "%d is out of range [%d, %d]", int(f), lo, hi)
		return def
	}
	r.out[name] = int(f)
	return int(f)
}

// Float reads a number in [lo, hi]; def is used when absent.
func (r *paramReader) Float(name string, def, lo, hi float64) float64 {
	f, ok := r.number(name)
	if !ok {
		r.out[name] = def
		return def
	}
	if f < lo || f > hi || f != f {
		r.fail(name, "%v is out of range [%v, %v]", f, lo, hi)
		return def
	}
	r.out[name] = f
	return f
}

// Bool reads a boolean; def is used when absent.
func (r *paramReader) Bool(name string, def bool) bool {
	v, ok := r.p[name]
	r.used[name] = true
	if !ok {
		r.out[name] = def
		return def
	}
	switch x := v.(type) {
	case bool:
		r.out[name] = x
		return x
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(x))
		if err == nil {
			r.out[name] = b
			return b
		}
	}
	r.fail(name, "%v is not true or false", v)
	return def
}

// Enum reads one of choices; the first is the default.
func (r *paramReader) Enum(name string, choices ...string) string {
	v, ok := r.p[name]
	r.used[name] = true
	if !ok {
		r.out[name] = choices[0]
		return choices[0]
	}
	s := fmt.Sprint(v)
	for _, c := range choices {
		if s == c {
			r.out[name] = s
			return s
		}
	}
	r.fail(name, "%q is not one of %s", s, strings.Join(choices, ", "))
	return choices[0]
}

// done reports an unknown parameter (with the closest known name), else the
// first error.
func (r *paramReader) done() (Params, error) {
	var unknown []string
	for name := range r.p {
		if !r.used[name] {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		known := make([]string, 0, len(r.used))
		for n := range r.used {
			known = append(known, n)
		}
		sort.Strings(known)
		msg := fmt.Sprintf("policy %s: unknown parameter %s (known: %s)", r.policy, unknown[0], strings.Join(known, ", "))
		if c := Closest(unknown[0], known); c != "" {
			msg += fmt.Sprintf("; did you mean %s?", c)
		}
		return nil, fmt.Errorf("%s", msg)
	}
	if r.err != nil {
		return nil, r.err
	}
	return r.out, nil
}

// Closest returns the candidate nearest to s by edit distance, or "" when
// none is near (distance more than half of s's length, at least 3).
func Closest(s string, candidates []string) string {
	best, bestD := "", max(3, len(s)/2)+1
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// ParseParam splits a CLI "key=value" into Params.
func ParseParam(p Params, kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("--param %q: want key=value", kv)
	}
	p[strings.TrimSpace(k)] = strings.TrimSpace(v)
	return nil
}
