package cuda

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	kernelsrc "github.com/kvbench/kvbench/cuda"
)

// Kernels are looked up by name at run time (Modules.Function), on a GPU
// only: the fake device finds any name, so no test without a GPU would see
// a name the source lacks. The tests here check the names the Go code asks
// for against the source itself, with no GPU, NVRTC or clang.

// cToken matches one token of C source: a string or character literal, a
// number, an identifier, ##, a run of white space, or any other character.
var cToken = regexp.MustCompile(`"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[0-9][\w.]*|[A-Za-z_]\w*|##|\s+|.`)

var cIdent = regexp.MustCompile(`^[A-Za-z_]\w*$`)

// stripComments removes the comments of C source src, leaving string and
// character literals as they are.
func stripComments(src string) string {
	var out strings.Builder
	for i := 0; i < len(src); {
		switch {
		case src[i] == '"' || src[i] == '\'':
			j := i + 1
			for j < len(src) && src[j] != src[i] && src[j] != '\n' {
				if src[j] == '\\' {
					j++
				}
				j++
			}
			j = min(j+1, len(src))
			out.WriteString(src[i:j])
			i = j
		case strings.HasPrefix(src[i:], "//"):
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case strings.HasPrefix(src[i:], "/*"):
			end := strings.Index(src[i+2:], "*/")
			if end < 0 {
				return out.String()
			}
			i += end + 4
			out.WriteByte(' ')
		default:
			out.WriteByte(src[i])
			i++
		}
	}
	return out.String()
}

// nextToken is the index of the first token at or after i that is not
// white space (len(toks) where none is).
func nextToken(toks []string, i int) int {
	for i < len(toks) && strings.TrimSpace(toks[i]) == "" {
		i++
	}
	return i
}

// sourceKernels lists the kernels (extern "C" __global__ functions) that
// src defines, its function-like macros expanded as the preprocessor would
// (arguments substituted, ## pasted, the result rescanned) and every branch
// of its conditionals taken: the kernels of every part and architecture
// (a macro defined in several branches takes its last definition).
func sourceKernels(src string) map[string]bool {
	src = strings.ReplaceAll(src, "\\\r\n", " ")
	src = strings.ReplaceAll(src, "\\\n", " ")
	src = stripComments(src)
	type macro struct {
		params []string
		body   []string
	}
	macros := map[string]macro{}
	define := regexp.MustCompile(`^#\s*define\s+(\w+)\(([^)]*)\)(.*)$`)
	undef := regexp.MustCompile(`^#\s*undef\s+(\w+)`)
	var text strings.Builder
	for _, line := range strings.Split(src, "\n") {
		l := strings.TrimSpace(line)
		if !strings.HasPrefix(l, "#") {
			text.WriteString(line + "\n")
			continue
		}
		if m := define.FindStringSubmatch(l); m != nil {
			var params []string
			for _, p := range strings.Split(m[2], ",") {
				params = append(params, strings.TrimSpace(p))
			}
			macros[m[1]] = macro{params, cToken.FindAllString(m[3], -1)}
		} else if m := undef.FindStringSubmatch(l); m != nil {
			delete(macros, m[1])
		}
	}
	paste := regexp.MustCompile(`\s*##\s*`)
	var expand func(s string, active []string) string
	expand = func(s string, active []string) string {
		toks := cToken.FindAllString(s, -1)
		var out strings.Builder
		for i := 0; i < len(toks); i++ {
			name := toks[i]
			m, ok := macros[name]
			open := nextToken(toks, i+1)
			if !ok || slices.Contains(active, name) || open >= len(toks) || toks[open] != "(" {
				out.WriteString(name)
				continue
			}
			// The arguments, split at the commas outside nested parentheses.
			var args []string
			depth, start := 0, open+1
			for i = open; i < len(toks); i++ {
				switch toks[i] {
				case "(":
					depth++
				case ")":
					depth--
				}
				if depth == 0 || depth == 1 && toks[i] == "," {
					args = append(args, strings.TrimSpace(strings.Join(toks[start:i], "")))
					start = i + 1
				}
				if depth == 0 {
					break
				}
			}
			var sub strings.Builder
			for k, t := range m.body {
				p := slices.Index(m.params, t)
				if p < 0 || p >= len(args) {
					sub.WriteString(t)
					continue
				}
				prev := k - 1
				for prev >= 0 && strings.TrimSpace(m.body[prev]) == "" {
					prev--
				}
				if next := nextToken(m.body, k+1); prev >= 0 && m.body[prev] == "##" || next < len(m.body) && m.body[next] == "##" {
					sub.WriteString(args[p]) // an operand of ##: pasted as written
				} else {
					sub.WriteString(expand(args[p], active))
				}
			}
			out.WriteString(expand(paste.ReplaceAllString(sub.String(), ""), append(slices.Clip(active), name)))
		}
		return out.String()
	}
	kernels := map[string]bool{}
	var toks []string
	for _, t := range cToken.FindAllString(expand(text.String(), nil), -1) {
		if strings.TrimSpace(t) != "" {
			toks = append(toks, t)
		}
	}
	for i := 0; i+2 < len(toks); i++ {
		if toks[i] != "extern" || toks[i+1] != `"C"` {
			continue
		}
		global := false
	decl:
		for j := i + 2; j+1 < len(toks); j++ {
			switch t := toks[j]; {
			case t == "__global__":
				global = true
			case t == "__launch_bounds__": // its arguments, in parentheses
				for depth := 0; j+1 < len(toks); {
					j++
					if toks[j] == "(" {
						depth++
					} else if toks[j] == ")" {
						if depth--; depth == 0 {
							break
						}
					}
				}
			case t == ";" || t == "{" || t == "(":
				break decl
			case toks[j+1] == "(" && cIdent.MatchString(t):
				if global {
					kernels[t] = true
				}
				break decl
			}
		}
	}
	return kernels
}

// TestSourceKernels checks sourceKernels on a source of its own: macros
// within macros, pasting, an empty argument, a commented-out kernel, a
// __device__ function and a kernel under a conditional.
func TestSourceKernels(t *testing.T) {
	src := `#define NT 128
#define ONE(D, G, KN, SN) \
    extern "C" __global__ void __launch_bounds__(NT, ((G) == 4 ? 2 : 1)) k_d##D##_g##G##_##KN##SN(int n) { \
        body<D, G>(n); \
    }
#define BOTH(D, G) ONE(D, G, bf16, ) ONE(D, G, f32, _sh)
#if KVB_IN(3)
BOTH(64, 4)
#endif
// extern "C" __global__ void commented(int n) {}
/* extern "C" __global__ void commented2(int n) {} */
extern "C" __device__ int helper(int n) { return n; }
extern "C" __global__ void __launch_bounds__(256) plain(const char* s) { puts("extern \"C\" __global__ void quoted("); }
`
	got := slices.Sorted(func(yield func(string) bool) {
		for k := range sourceKernels(src) {
			if !yield(k) {
				return
			}
		}
	})
	want := []string{"k_d64_g4_bf16", "k_d64_g4_f32_sh", "plain"}
	if !slices.Equal(got, want) {
		t.Fatalf("kernels %v, want %v", got, want)
	}
}

// kernelSinks are the methods that take a kernel's name first and look it
// up (Module.Function, in the end).
var kernelSinks = []string{"fn", "launch", "launchSmem", "launchAfter", "allowShared", "tcFits", "Func", "Function"}

// nameSite is a call of a kernelSinks method whose name is no string
// literal, as the test finds it: file (base name), enclosing function and
// the argument's expression.
type nameSite struct{ file, fn, expr string }

// dynamicNames are the names each call site that builds its name may ask
// for, from the builders the runtime uses; a call site missing here fails
// TestKernelNamesExist until its names are added.
func dynamicNames(t *testing.T) map[nameSite][]string {
	var split, flash, mv []string
	for _, hd := range []int{64, 128} {
		for _, vg := range []int{1, 2, 4, 8} {
			for _, bf16 := range []bool{false, true} {
				for _, shifted := range []bool{false, true} {
					n := splitNamesOf(splitKey{hd: hd, vg: vg, bf16: bf16, shifted: shifted})
					for _, name := range []string{n.rt, n.rtb, n.rtbX, n.rtComb, n.rtbComb, n.rtbCombX, n.short, n.tc, n.tcc, n.tcb, n.tcbX} {
						if name != "" && !slices.Contains(split, name) {
							split = append(split, name)
						}
					}
				}
			}
		}
		for _, f := range flashShapes {
			name, _ := f.kernel(hd)
			flash = append(flash, name)
		}
	}
	for _, rows := range []string{"", "4", "8"} {
		t.Setenv(mvRowsEnv, rows)
		name, err := mvKernelOf()
		if err != nil {
			t.Fatal(err)
		}
		mv = append(mv, name)
	}
	var accCols []string
	for _, f := range accColsShapes {
		for _, hd := range []int{64, 128} {
			n, _ := f.kernel(hd)
			accCols = append(accCols, n)
		}
	}
	return map[nameSite][]string{
		{"backend_attention.go", "flashCall", "name"}:   flash, // flashShape.kernel
		{"acccols.go", "attendAccCols", "name"}:         accCols,
		{"backend_attention.go", "FitRows", "name"}:     flash,
		{"splitkv.go", "attendSplit", "name"}:           split, // splitShape.names
		{"splitkv.go", "attendSplit", "p.names.tc"}:     split,
		{"splitkv.go", "attendSplit", "p.names.tcc"}:    split,
		{"splitkv.go", "attendSplit", "p.names.rtComb"}: split,
		{"batchattn.go", "AttendBatch", "kernel"}:       split, // batchLaunch's, from splitNames
		{"batchattn.go", "AttendBatch", "l.kernel"}:     split,
		{"batchattn.go", "AttendBatch", "comb"}:         split,
		{"batchattn.go", "planLaunch", "l.kernel"}:      split,
		{"batchattn.go", "batchTC", "c.tcb"}:            split,
		{"batchattn.go", "batchTC", "c.tcbX"}:           split,
		{"gemv.go", "mv", "b.mvKernel"}:                 mv,    // mvKernelOf
		{"kernels.go", "cmdKernels", "name"}:            split, // DecodeKernels, in cmd/kvbench's register report
	}
}

// TestKernelNamesExist checks that every kernel name the Go code of this
// package and of cmd/kvbench can ask for is defined in package
// kvbench/cuda's source: the string literals passed to kernelSinks, the
// names of the call sites that build them (dynamicNames), and the names a
// call site takes from a range over a literal list of names and
// fmt.Sprintf("...%d...", head dim) (cmd/kvbench's register report).
func TestKernelNamesExist(t *testing.T) {
	defined := sourceKernels(kernelsrc.Source())
	if len(defined) < 100 || !defined["be_zero"] || !defined["attn_rt_d128_g4_bf16_sh"] {
		t.Fatalf("the source's kernels look wrong: %d, be_zero %v, attn_rt_d128_g4_bf16_sh %v",
			len(defined), defined["be_zero"], defined["attn_rt_d128_g4_bf16_sh"])
	}
	dynamic := dynamicNames(t)
	seen := map[nameSite]bool{}
	check := func(where, name string) {
		if !defined[name] {
			t.Errorf("%s: kernel %s is not in package kvbench/cuda's source", where, name)
		}
	}
	fset := token.NewFileSet()
	literals := 0
	for _, dir := range []string{".", "../../cmd/kvbench"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range files {
			if strings.HasSuffix(path, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, decl := range f.Decls {
				fd, ok := decl.(*ast.FuncDecl)
				if !ok || fd.Body == nil {
					continue
				}
				params := map[string]bool{}
				for _, p := range fd.Type.Params.List {
					for _, n := range p.Names {
						params[n.Name] = true
					}
				}
				recv := "" // the receiver's type, and its name
				var recvName string
				if fd.Recv != nil && len(fd.Recv.List) == 1 {
					typ := fd.Recv.List[0].Type
					if s, ok := typ.(*ast.StarExpr); ok {
						typ = s.X
					}
					if id, ok := typ.(*ast.Ident); ok {
						recv = id.Name
					}
					if len(fd.Recv.List[0].Names) == 1 {
						recvName = fd.Recv.List[0].Names[0].Name
					}
				}
				var ranges []*ast.RangeStmt // outer ones first
				ast.Inspect(fd.Body, func(n ast.Node) bool {
					if r, ok := n.(*ast.RangeStmt); ok {
						ranges = append(ranges, r)
					}
					return true
				})
				ast.Inspect(fd.Body, func(n ast.Node) bool {
					c, ok := n.(*ast.CallExpr)
					if !ok || len(c.Args) == 0 {
						return true
					}
					sel, ok := c.Fun.(*ast.SelectorExpr)
					if !ok || !slices.Contains(kernelSinks, sel.Sel.Name) {
						return true
					}
					if x, ok := sel.X.(*ast.Ident); ok && recv == "Function" && x.Name == recvName {
						return true // Function.launch: no name
					}
					where := fset.Position(c.Pos()).String()
					arg := c.Args[0]
					if lit, ok := arg.(*ast.BasicLit); ok && lit.Kind == token.STRING {
						name, err := strconv.Unquote(lit.Value)
						if err != nil {
							t.Fatal(err)
						}
						check(where, name)
						literals++
						return true
					}
					if id, ok := arg.(*ast.Ident); ok && params[id.Name] && slices.Contains(kernelSinks, fd.Name.Name) {
						return true // a sink passing its own argument on
					}
					var b strings.Builder
					if err := printer.Fprint(&b, fset, arg); err != nil {
						t.Fatal(err)
					}
					site := nameSite{filepath.Base(path), fd.Name.Name, b.String()}
					if names, ok := dynamic[site]; ok {
						seen[site] = true
						for _, name := range names {
							check(fmt.Sprintf("%s (%s)", where, site.expr), name)
						}
						return true
					}
					if names, ok := rangeNames(ranges, arg, t); ok {
						for _, name := range names {
							check(fmt.Sprintf("%s (%s)", where, site.expr), name)
						}
						return true
					}
					t.Errorf("%s: %s(%s, ...): a name built at run time; add the names this call site may ask for to dynamicNames (%+v)",
						where, sel.Sel.Name, site.expr, site)
					return true
				})
			}
		}
	}
	if literals < 30 {
		t.Errorf("%d literal kernel names found: the scan looks broken", literals)
	}
	for site := range dynamic {
		if !seen[site] {
			t.Errorf("dynamicNames lists %+v, a call site no longer found", site)
		}
	}
}

// rangeNames returns the names a call's argument arg takes when it is the
// value of a range (of ranges, the innermost holding arg) over a literal
// list of string literals and fmt.Sprintf calls whose arguments are all the
// head dim (each %d 64, then 128); false otherwise.
func rangeNames(ranges []*ast.RangeStmt, arg ast.Expr, t *testing.T) ([]string, bool) {
	id, ok := arg.(*ast.Ident)
	if !ok {
		return nil, false
	}
	for _, r := range slices.Backward(ranges) {
		v, ok := r.Value.(*ast.Ident)
		if !ok || v.Name != id.Name || arg.Pos() < r.Body.Pos() || arg.Pos() >= r.Body.End() {
			continue
		}
		list, ok := r.X.(*ast.CompositeLit)
		if !ok {
			return nil, false
		}
		var names []string
		for _, e := range list.Elts {
			switch e := e.(type) {
			case *ast.BasicLit:
				s, err := strconv.Unquote(e.Value)
				if err != nil {
					t.Fatal(err)
				}
				names = append(names, s)
			case *ast.CallExpr:
				sel, ok := e.Fun.(*ast.SelectorExpr)
				if !ok || sel.Sel.Name != "Sprintf" || len(e.Args) < 2 {
					return nil, false
				}
				lit, ok := e.Args[0].(*ast.BasicLit)
				if !ok {
					return nil, false
				}
				format, err := strconv.Unquote(lit.Value)
				if err != nil || strings.Count(format, "%") != strings.Count(format, "%d") || strings.Count(format, "%d") != len(e.Args)-1 {
					return nil, false
				}
				for _, hd := range []int{64, 128} {
					names = append(names, strings.ReplaceAll(format, "%d", strconv.Itoa(hd)))
				}
			default:
				return nil, false
			}
		}
		return names, true
	}
	return nil, false
}
