package bench

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/tasks"
)

// Suite is a parsed, validated suite file: which models, which cache policy
// configurations and which tasks to run, as a matrix (see Cells).
//
// The format is strict YAML:
//
//	name: passkey-quest      # required
//	backend: auto            # auto | cpu | cuda (default auto)
//	seed: 1                  # default 1
//	recall_every: 64         # sample attention recall every N decode steps (0: off)
//	threads: 0               # CPU threads per stream (0: every core)
//	kv_dtype: f32            # KV page type: f32 (every backend) | bf16 (cuda)
//	page_size: 16            # KV page slots (default 16)
//	prefill: dense           # prompt protocol: dense (default) | chunked (policies.Prefill)
//	prefill_chunk: 8192      # prompt tokens a forward pass (default: PrefillChunk)
//	precision: bf16          # compute: bf16 | f32 (default: the backend's; cuda bf16, cpu f32)
//	include: common.yaml     # optional, a file or a list: their models, policies and tasks come first
//	budgets: [64, 256, 1024] # optional: crosses every budgeted policy (not full) with these budgets
//	ratios: [0.1, 0.25]      # optional, instead of budgets: shares of the prompt kept (policies.RatioTokens)
//	models:                  # required, >= 1; name + path (+ tokenizer), or a bare path
//	  - {name: ref25m, path: ../shared/models/gutenberg-llama-25m, tokenizer: tok.model}
//	    # chat_template: a tokenizer_config.json or .jinja replacing the model's (optional)
//	  - hf:Qwen/Qwen2.5-0.5B@main  # a Hub model: downloaded into the Hugging Face cache
//	policies:                # required, >= 1; a bare name, or name + parameters
//	  - full
//	  - {name: quest, budget: [64, 256], page: 16}   # lists expand (cartesian product)
//	tasks:                   # required, >= 1; name + parameters
//	  - {name: passkey, lengths: [2048, 8192], depths: [0, 0.5, 1], trials: 10}
//
// budgets (or ratios) gives every policy entry whose policy takes the
// shared budget knob (every policy but full; see policies/budget.go) the
// parameter budget (or ratio) with those values, as if each entry listed
// them: one configuration per value, the entry's other lists crossed with
// them. An entry that gives budget or ratio itself is an error (the budgets
// are given in one place), and so are budgets and ratios together, and
// either in an included file (it would cross the including suite's
// policies too). A policy's own parameters stay fine controls:
// {name: streamingllm, sinks: 8} crossed with budgets [64, 256] keeps 8
// sinks and 56 or 248 recent tokens; one that contradicts a budget
// ({name: window, window: 64}) is an error at that budget.
//
// Unknown fields, wrong types, unknown policies, tasks or parameters and
// invalid values are errors naming file:line:col. Paths (model path and
// tokenizer, include, task path parameters such as text and haystack) may
// name environment variables, ${NAME} or ${NAME:-FALLBACK} (see expandVars);
// relative ones are resolved against the suite file's folder;
// "synthetic:NAME" models are kept, and so are "hf:ORG/NAME[@REV]" models of
// the Hugging Face Hub (their syntax checked here, downloaded by OpenModel).
type Suite struct {
	Name        string
	File        string // the suite file as named (errors name it)
	Dir         string // the folder relative paths were resolved against
	Backend     string // auto, cpu or cuda
	Seed        int64
	RecallEvery int
	Threads     int
	KVType      string // f32 or bf16
	PageSize    int
	Prefill     string // prompt protocol: dense or chunked
	// PrefillChunk is the prompt tokens a forward pass takes (0: the
	// default, PrefillChunk).
	PrefillChunk int
	Precision    string    // compute precision: bf16, f32, or "" (the backend's default: bf16 on cuda, f32 on cpu)
	Budgets      []int     // the suite's budgets, crossing every budgeted policy (nil: none)
	Ratios       []float64 // the suite's ratios, crossing every budgeted policy (nil: none)
	Includes     []string  // included files, resolved, in order read
	Models       []ModelSpec
	Policies     []PolicyEntry
	Tasks        []TaskEntry

	models []modelEntry // Models with the positions CheckModels reports
	cross  *crossing    // budgets or ratios as written
}

// crossing is a suite's budgets or ratios: the policy parameter they set,
// its values and where each was written.
type crossing struct {
	field string // "budgets" or "ratios"
	param string // "budget" or "ratio"
	key   Pos    // the field's key
	vals  []any
	at    []Pos
}

// ModelSpec is a model of a suite.
type ModelSpec struct {
	Name      string `json:"name"`
	Path      string `json:"path"`                // resolved, or synthetic:NAME
	Tokenizer string `json:"tokenizer,omitempty"` // resolved; "" to use the one beside the model
	// ChatTemplate is a tokenizer_config.json or Jinja file whose chat
	// template replaces the one beside the model or tokenizer (resolved).
	ChatTemplate string `json:"chat_template,omitempty"`
}

// PolicyEntry is one entry of a suite's policies: a policy and its
// parameters as written (a list value expands into one configuration per
// element).
type PolicyEntry struct {
	Name   string
	Params policies.Params
	Pos    Pos

	order  []string         // parameter names in file order
	pos    map[string]Pos   // parameter value positions
	elemAt map[string][]Pos // positions of list elements
}

// TaskEntry is one entry of a suite's tasks: a task and its parameters,
// with path parameters resolved.
type TaskEntry struct {
	Name   string
	Params tasks.Params
	Pos    Pos
	// Policies, when not empty, limits the task to the suite's policies of
	// these names (the task entry's `policies` key); empty: every policy.
	Policies []string

	policiesAt Pos

	order  []string
	pos    map[string]Pos
	elemAt map[string][]Pos
	raw    map[string]any // path parameters as written (for cell keys)
}

// ValueExpander is implemented by tasks whose expanded parameters accept
// values other than lists: ExpandValue returns the values a parameter
// stands for (needle's "depths: 10" is ten evenly spaced depths), or false
// to fall back to list expansion.
type ValueExpander interface {
	ExpandValue(name string, v any) ([]any, bool)
}

// PathLister is implemented by tasks that have path parameters besides
// text and haystack; their relative values are resolved against the suite.
type PathLister interface {
	PathParams() []string
}

// pathParams are task parameters that hold paths in every task.
var pathParams = []string{"text", "haystack"}

// Limits that keep a bad suite (or a fuzzer) from exhausting memory.
const (
	maxSuiteBytes  = 4 << 20
	maxNodes       = 200000 // YAML values decoded, aliases followed
	maxEntryCombos = 10000  // configurations of one policy or task entry
	maxCells       = 100000
	maxIncludes    = 8 // nesting depth
	maxErrors      = 20
	maxDepth       = 32 // nesting of a parameter value
)

// Pos is a position in a suite file.
type Pos struct {
	File      string
	Line, Col int
	via       string // " (included from f:l:c)"
}

func (p Pos) String() string {
	switch {
	case p.Line > 0 && p.Col > 0:
		return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
	case p.Line > 0:
		return fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	return p.File
}

// Error is one problem of a suite, at a position.
type Error struct {
	Pos Pos
	Msg string
}

func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg + e.Pos.via }

// Errors are every problem found in a suite, in file order.
type Errors []*Error

func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// LoadSuite reads and validates the suite file at path. Relative paths in it
// are resolved against its folder.
func LoadSuite(path string) (*Suite, error) {
	data, err := readSuiteFile(path)
	if err != nil {
		return nil, Errors{{Pos: Pos{File: path}, Msg: err.Error()}}
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		dir = filepath.Dir(path)
	}
	return parseSuite(path, dir, data)
}

// ParseSuite validates the suite in data; name is its file name, which
// errors name and against whose folder relative paths are resolved.
func ParseSuite(name string, data []byte) (*Suite, error) {
	return parseSuite(name, filepath.Dir(name), data)
}

func readSuiteFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, unwrapPath(err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file")
	}
	if st.Size() > maxSuiteBytes {
		return nil, fmt.Errorf("%d bytes: too large for a suite", st.Size())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, unwrapPath(err)
	}
	return data, nil
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// parser reads one file of a suite; included files get their own parser
// sharing the error list and the node budget.
type parser struct {
	file  string
	dir   string
	via   string
	errs  *Errors
	seen  map[string]bool // errors reported, shared
	nodes *int
	stack []string // files being read, for include cycles
	deep  bool     // a too deep value was reported
}

func (p *parser) pos(n *yaml.Node) Pos {
	if n == nil {
		return Pos{File: p.file, via: p.via}
	}
	return Pos{File: p.file, Line: n.Line, Col: n.Column, via: p.via}
}

func (p *parser) errorf(n *yaml.Node, format string, args ...any) {
	p.errorAt(p.pos(n), format, args...)
}

func (p *parser) errorAt(pos Pos, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	id := pos.String() + pos.via + "\x00" + msg
	if p.seen[id] {
		return
	}
	p.seen[id] = true
	*p.errs = append(*p.errs, &Error{Pos: pos, Msg: msg})
}

// part is what one file contributes to a suite.
type part struct {
	suite  Suite
	models []modelEntry
	has    map[string]*yaml.Node // top-level keys present
	vals   map[string]*yaml.Node // and their values
	root   *yaml.Node
}

type modelEntry struct {
	spec          ModelSpec
	pos           Pos
	pathAt, tokAt Pos // where the path and the tokenizer are written
}

func parseSuite(name string, dir string, data []byte) (s *Suite, err error) {
	var errs Errors
	nodes := 0
	abs, _ := filepath.Abs(name)
	p := &parser{file: name, dir: dir, errs: &errs, seen: map[string]bool{}, nodes: &nodes, stack: []string{abs}}
	pt := p.parseFile(data)
	if pt == nil {
		return nil, finish(errs)
	}
	s = &pt.suite
	s.File = name
	s.Dir = dir
	s.models = pt.models
	// Required fields.
	if _, ok := pt.has["name"]; !ok {
		p.errorf(pt.root, "missing required field name")
	}
	for _, f := range []struct {
		key string
		n   int
	}{{"models", len(s.Models)}, {"policies", len(s.Policies)}, {"tasks", len(s.Tasks)}} {
		if f.n > 0 {
			continue
		}
		if k, ok := pt.has[f.key]; ok {
			if v := deref(pt.vals[f.key]); v.Kind != yaml.SequenceNode && v.ShortTag() != "!!null" ||
				v.Kind == yaml.SequenceNode && len(v.Content) > 0 {
				continue // reported already: not a list, or its entries are wrong
			}
			p.errorf(k, "%s: needs at least one entry", f.key)
		} else {
			p.errorf(pt.root, "missing required field %s", f.key)
		}
	}
	p.cross(s)
	p.checkTaskPolicies(s)
	// Duplicate models.
	seen := map[string]Pos{}
	for _, m := range pt.models {
		if first, dup := seen[m.spec.Name]; dup {
			p.errorAt(m.pos, "duplicate model name %q (first at %s)", m.spec.Name, first)
			continue
		}
		seen[m.spec.Name] = m.pos
	}
	if len(errs) == 0 {
		p.checkMatrix(s)
	}
	if len(errs) > 0 {
		return nil, finish(errs)
	}
	return s, nil
}

// finish sorts errors by position (suite file first) and bounds their number.
func finish(errs Errors) error {
	sort.SliceStable(errs, func(i, j int) bool {
		a, b := errs[i].Pos, errs[j].Pos
		if (a.via == "") != (b.via == "") {
			return a.via == ""
		}
		if a.File != b.File {
			return false
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
	if len(errs) > maxErrors {
		more := len(errs) - maxErrors
		errs = append(errs[:maxErrors:maxErrors], &Error{Pos: errs[maxErrors].Pos, Msg: fmt.Sprintf("... and %d more errors", more)})
	}
	return errs
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// decode parses one YAML document into its root node.
func (p *parser) decode(data []byte) (root *yaml.Node) {
	defer func() {
		if r := recover(); r != nil {
			p.errorf(nil, "invalid YAML: %v", r)
			root = nil
		}
	}()
	yamlErr := func(err error) {
		msg := err.Error()
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			p.errorAt(Pos{File: p.file, Line: line, via: p.via}, "%s", m[2])
			return
		}
		p.errorf(nil, "%s", strings.TrimPrefix(msg, "yaml: "))
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			p.errorf(nil, "empty suite")
		} else {
			yamlErr(err)
		}
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.errorf(&extra, "a suite is one YAML document; found another")
		return nil
	} else if err != io.EOF {
		yamlErr(err)
		return nil
	}
	root = &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			p.errorf(nil, "empty suite")
			return nil
		}
		root = root.Content[0]
	}
	root = deref(root)
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		p.errorf(root, "empty suite")
		return nil
	}
	if root.Kind != yaml.MappingNode {
		p.errorf(root, "a suite is a mapping of fields (name, models, policies, tasks...), got %s", describe(root))
		return nil
	}
	return root
}

var topFields = []string{"name", "backend", "seed", "recall_every", "threads", "kv_dtype", "page_size", "prefill", "prefill_chunk", "precision", "budgets", "ratios", "include", "models", "policies", "tasks"}

func (p *parser) parseFile(data []byte) *part {
	root := p.decode(data)
	if root == nil {
		return nil
	}
	pt := &part{root: root, has: map[string]*yaml.Node{}, vals: map[string]*yaml.Node{}}
	s := &pt.suite
	s.Backend = "auto"
	s.KVType, s.PageSize = "f32", runtime.DefaultPageSize
	s.Prefill = policies.PrefillDense.String()
	s.Seed = 1
	var own struct {
		models   []modelEntry
		policies []PolicyEntry
		tasks    []TaskEntry
	}
	for _, f := range p.fields(root, "suite", topFields) {
		pt.has[f.name] = f.key
		pt.vals[f.name] = f.val
		v := f.val
		switch f.name {
		case "name":
			if str, ok := p.str(v, "name"); ok {
				if strings.TrimSpace(str) == "" {
					p.errorf(v, "name: must not be empty")
				}
				s.Name = str
			}
		case "backend":
			if str, ok := p.str(v, "backend"); ok {
				switch str {
				case "auto", "cpu", "cuda":
					s.Backend = str
				default:
					msg := fmt.Sprintf("backend: %q is not one of auto, cpu, cuda", str)
					if c := policies.Closest(str, []string{"auto", "cpu", "cuda"}); c != "" {
						msg += fmt.Sprintf("; did you mean %s?", c)
					}
					p.errorf(v, "%s", msg)
				}
			}
		case "seed":
			if i, ok := p.integer(v, "seed", 0, 1<<62); ok {
				s.Seed = i
			}
		case "recall_every":
			if i, ok := p.integer(v, "recall_every", 0, 1<<30); ok {
				s.RecallEvery = int(i)
			}
		case "threads":
			if i, ok := p.integer(v, "threads", 0, 1<<16); ok {
				s.Threads = int(i)
			}
		case "kv_dtype":
			if str, ok := p.str(v, "kv_dtype"); ok {
				if _, err := ParseKVType(str); err != nil {
					p.errorf(v, "kv_dtype: %v", err)
				} else {
					s.KVType = str
				}
			}
		case "page_size":
			if i, ok := p.integer(v, "page_size", 1, 1<<16); ok {
				s.PageSize = int(i)
			}
		case "prefill":
			if str, ok := p.str(v, "prefill"); ok {
				if pre, err := policies.ParsePrefill(str); err != nil {
					p.errorf(v, "prefill: %v", err)
				} else {
					s.Prefill = pre.String()
				}
			}
		case "prefill_chunk":
			if i, ok := p.integer(v, "prefill_chunk", 1, 1<<20); ok {
				s.PrefillChunk = int(i)
			}
		case "precision":
			if str, ok := p.str(v, "precision"); ok {
				if str != "bf16" && str != "f32" {
					p.errorf(v, "precision: %q is not bf16 or f32", str)
				} else {
					s.Precision = str
				}
			}
		case "budgets", "ratios":
			p.crossField(f, s)
		case "include":
			p.include(v, pt)
		case "models":
			own.models = p.models(v)
		case "policies":
			own.policies = p.policies(v)
		case "tasks":
			own.tasks = p.tasks(v)
		}
	}
	// Included entries come first, then this file's.
	pt.models = append(pt.models, own.models...)
	s.Policies = append(s.Policies, own.policies...)
	s.Tasks = append(s.Tasks, own.tasks...)
	s.Models = s.Models[:0]
	for _, m := range pt.models {
		s.Models = append(s.Models, m.spec)
	}
	return pt
}

// crossField reads budgets (integers of at least 1) or ratios (numbers in
// (0, 1]), a list or a single value, into s.cross.
func (p *parser) crossField(f field, s *Suite) {
	if p.via != "" {
		p.errorf(f.key, "%s: only the suite file that is run may give it (it crosses every budgeted policy of the suite, the including file's too); move it there", f.name)
		return
	}
	if s.cross != nil {
		p.errorf(f.key, "%s: give budgets or ratios, not both (%s is at %s)", f.name, s.cross.field, s.cross.key)
		return
	}
	c := &crossing{field: f.name, param: strings.TrimSuffix(f.name, "s"), key: p.pos(f.key)}
	v := deref(f.val)
	items := []*yaml.Node{v}
	if v.Kind == yaml.SequenceNode {
		items = v.Content
		if len(items) == 0 {
			p.errorf(f.val, "%s: needs at least one value", f.name)
			return
		}
	}
	good := true
	for _, it := range items {
		it = deref(it)
		if !p.spend() {
			return
		}
		if f.name == "budgets" {
			i, ok := p.integer(it, "budgets", 1, 1<<30)
			good = good && ok
			c.vals = append(c.vals, int(i))
		} else {
			var r float64
			if it.Kind != yaml.ScalarNode || (it.ShortTag() != "!!int" && it.ShortTag() != "!!float") || it.Decode(&r) != nil {
				p.errorf(it, "ratios: want a number in (0, 1] (the share of the prompt kept), got %s", describe(it))
				good = false
				continue
			}
			if r != r || r <= 0 || r > 1 {
				p.errorf(it, "ratios: %v is out of range (0, 1] (the share of the prompt kept: 1 - kvpress's compression_ratio)", r)
				good = false
				continue
			}
			c.vals = append(c.vals, r)
		}
		c.at = append(c.at, p.pos(it))
	}
	if good {
		s.cross = c
		for _, x := range c.vals {
			if b, ok := x.(int); ok {
				s.Budgets = append(s.Budgets, b)
			} else {
				s.Ratios = append(s.Ratios, x.(float64))
			}
		}
	}
}

// cross gives every budgeted policy entry the suite's budgets or ratios
// (see Suite).
func (p *parser) cross(s *Suite) {
	c := s.cross
	if c == nil {
		return
	}
	for i := range s.Policies {
		e := &s.Policies[i]
		spec, err := policies.Lookup(e.Name)
		if err != nil || !takesKnob(spec) {
			continue
		}
		if e.Params == nil {
			e.Params = policies.Params{}
		}
		own := ""
		for _, n := range []string{"budget", "ratio"} {
			if _, has := e.Params[n]; has && own == "" {
				own = n
			}
		}
		if own != "" {
			p.errorAt(e.pos[own], "policy %s: gives %s, and the suite's %s (%s) cross every budgeted policy: give the budgets in one place", e.Name, own, c.field, c.key)
			continue
		}
		if e.pos == nil {
			e.pos = map[string]Pos{}
		}
		if e.elemAt == nil {
			e.elemAt = map[string][]Pos{}
		}
		e.order = append(paramOrder(e.order, e.Params), c.param)
		e.Params[c.param] = append([]any(nil), c.vals...)
		e.pos[c.param] = c.key
		e.elemAt[c.param] = c.at
	}
}

// takesKnob reports whether a policy takes the shared budget knob (it
// documents budget and ratio).
func takesKnob(s policies.Spec) bool {
	n := 0
	for _, d := range s.Params {
		if d.Name == "budget" || d.Name == "ratio" {
			n++
		}
	}
	return n == 2
}

// include reads included files (a path or a list of paths) and adds their
// models, policies and tasks to pt.
func (p *parser) include(v *yaml.Node, pt *part) {
	v = deref(v)
	var items []*yaml.Node
	switch v.Kind {
	case yaml.ScalarNode:
		items = []*yaml.Node{v}
	case yaml.SequenceNode:
		items = v.Content
	default:
		p.errorf(v, "include: want a file or a list of files, got %s", describe(v))
		return
	}
	for _, it := range items {
		name, ok := p.str(it, "include")
		if !ok {
			continue
		}
		if name == "" {
			p.errorf(it, "include: empty file name")
			continue
		}
		path, ok := p.resolve(p.pos(it), "include", name)
		if !ok {
			continue
		}
		abs, _ := filepath.Abs(path)
		cycle := false
		for _, f := range p.stack {
			if f == abs {
				cycle = true
			}
		}
		if cycle {
			p.errorf(it, "include: %s includes itself (a cycle)", name)
			continue
		}
		if len(p.stack) > maxIncludes {
			p.errorf(it, "include: nested more than %d deep", maxIncludes)
			continue
		}
		data, err := readSuiteFile(path)
		if err != nil {
			p.errorf(it, "include %s: %v", name, err)
			continue
		}
		shown := name // as errors name it: relative to the including file as named
		if !filepath.IsAbs(name) {
			shown = filepath.Join(filepath.Dir(p.file), name)
		}
		sub := &parser{file: shown, dir: filepath.Dir(path), errs: p.errs, seen: p.seen, nodes: p.nodes,
			stack: append(p.stack[:len(p.stack):len(p.stack)], abs)}
		sub.via = fmt.Sprintf(" (included from %s)", p.pos(it))
		if p.via != "" {
			sub.via = fmt.Sprintf(" (included from %s%s)", p.pos(it), strings.TrimPrefix(p.via, " "))
		}
		spt := sub.parseFile(data)
		if spt == nil {
			continue
		}
		pt.suite.Includes = append(pt.suite.Includes, spt.suite.Includes...)
		pt.suite.Includes = append(pt.suite.Includes, abs)
		pt.models = append(pt.models, spt.models...)
		pt.suite.Policies = append(pt.suite.Policies, spt.suite.Policies...)
		pt.suite.Tasks = append(pt.suite.Tasks, spt.suite.Tasks...)
	}
}

// checkMatrix expands every entry, validates each policy configuration with
// policies.New and each task cell with Task.Check, and rejects repeated
// configurations and oversized matrices.
func (p *parser) checkMatrix(s *Suite) {
	npol, ntask, work := 0, 0, 0
	tooMany := func(at Pos, n int) bool {
		work += n
		if work > maxCells {
			p.errorAt(at, "the suite expands to more than %d configurations", maxCells)
			return true
		}
		return false
	}
	polKeys := map[string]Pos{}
	for i := range s.Policies {
		e := &s.Policies[i]
		combos, err := expandPolicy(e)
		if err != nil {
			p.errorAt(e.Pos, "policy %s: %v", e.Name, err)
			continue
		}
		if tooMany(e.Pos, len(combos)) {
			return
		}
		for _, c := range combos {
			if c.err != nil {
				p.errorAt(blame(c.err.Error(), c.pos, e.Pos, true), "%v", c.err)
				continue
			}
			if first, dup := polKeys[c.key]; dup {
				p.errorAt(e.Pos, "policy %s repeats the configuration of %s", c.key, first)
				continue
			}
			polKeys[c.key] = e.Pos
			npol++
		}
	}
	taskKeys := map[string]Pos{}
	for i := range s.Tasks {
		e := &s.Tasks[i]
		t, err := tasks.Lookup(e.Name)
		if err != nil {
			p.errorAt(e.Pos, "%v", err)
			continue
		}
		combos, err := expandTask(t, e)
		if err != nil {
			p.errorAt(e.Pos, "task %s: %v", e.Name, err)
			continue
		}
		if tooMany(e.Pos, len(combos)) {
			return
		}
		for _, c := range combos {
			if err := safeCheck(t, c.params); err != nil {
				msg := err.Error()
				if !strings.HasPrefix(msg, "task "+e.Name) {
					msg = "task " + e.Name + ": " + msg
				}
				p.errorAt(blame(err.Error(), c.pos, e.Pos, false), "%s", msg)
				continue
			}
			if first, dup := taskKeys[c.key]; dup {
				p.errorAt(e.Pos, "task %s repeats the cell of %s", c.key, first)
				continue
			}
			taskKeys[c.key] = e.Pos
			ntask++
		}
	}
	if n := float64(len(s.Models)) * float64(npol) * float64(ntask); n > maxCells {
		p.errorAt(Pos{File: p.file, Line: 1, Col: 1}, "the suite expands to %.0f cells (more than %d)", n, maxCells)
	}
}

var paramInErr = regexp.MustCompile(`parameter (\S+?):`)

// blame returns the position of the parameter an error is about: for
// policies the one named "parameter X:", for tasks that one or else the
// parameter name that appears first in the message; else the entry's.
func blame(msg string, pos map[string]Pos, entry Pos, policy bool) Pos {
	if m := paramInErr.FindStringSubmatch(msg); m != nil {
		if p, ok := pos[m[1]]; ok {
			return p
		}
	}
	if policy {
		return entry
	}
	best, bestAt := "", len(msg)+1
	for name := range pos {
		loc := regexp.MustCompile(`\b` + regexp.QuoteMeta(name) + `\b`).FindStringIndex(msg)
		if loc == nil {
			continue
		}
		if loc[0] < bestAt || (loc[0] == bestAt && len(name) > len(best)) {
			best, bestAt = name, loc[0]
		}
	}
	if best != "" {
		return pos[best]
	}
	return entry
}

// ParseKVType maps a kv_dtype name (f32, bf16) to its element type.
func ParseKVType(s string) (runtime.DType, error) {
	switch s {
	case "f32", "float32":
		return runtime.F32, nil
	case "bf16", "bfloat16":
		return runtime.BF16, nil
	}
	msg := fmt.Sprintf("%q is not one of f32, bf16", s)
	if c := policies.Closest(s, []string{"f32", "bf16"}); c != "" {
		msg += fmt.Sprintf("; did you mean %s?", c)
	}
	return 0, errors.New(msg)
}
