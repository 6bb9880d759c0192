package results

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// BenchName returns the Go benchmark name of a record's attention latency:
// "BenchmarkAttn/model=M/policy=P_k=v/task=T_k=v" (parameters sorted by key,
// joined by "_"). Characters that would break the benchmark format (spaces,
// slashes, control characters) become "_".
func BenchName(r *Record) string {
	part := func(name string, params map[string]any) string {
		s := sanitizeBench(name)
		if p := joinParams(params, "_"); p != "" {
			s += "_" + sanitizeBench(p)
		}
		return s
	}
	name := "BenchmarkAttn/model=" + sanitizeBench(r.Model) +
		"/policy=" + part(r.Policy, r.PolicyParams) +
		"/task=" + part(r.Task, r.TaskParams)
	// Tools read a final "-N" as GOMAXPROCS: keep a parameter such as
	// "offset=-1" at the end from being taken for one.
	if i := strings.LastIndexByte(name, '-'); i >= 0 && i < len(name)-1 && allDigits(name[i+1:]) {
		name += "_"
	}
	return name
}

func allDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

func sanitizeBench(s string) string {
	if s == "" {
		return "none"
	}
	return strings.Map(func(r rune) rune {
		if r == '/' || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return '_'
		}
		return r
	}, s)
}

// WriteGoBench writes the attention latency of the successful records in the
// Go benchmark format, so that benchstat can summarise and compare runs:
// configuration lines (goos, goarch, pkg: kvbench, and the backend and device
// when all the records written share them), then one result line per record
// ("BenchmarkAttn/... 1 123456 ns/op"): the median per-step attention time
// of the cell in that run (Latency.P50, all layers, in ns). The per-step
// samples of one run are not independent draws, so they are not written as
// if they were runs: pass the records of several runs of the suite (the same
// cell once per run) and benchstat sees that many repetitions. Lines are
// ordered by name, then run.
func WriteGoBench(w io.Writer, records []Record) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "goos: %s\n", runtime.GOOS)
	fmt.Fprintf(bw, "goarch: %s\n", runtime.GOARCH)
	fmt.Fprintf(bw, "pkg: kvbench\n")

	type entry struct {
		name string
		r    *Record
	}
	var es []entry
	for i := range records {
		r := &records[i]
		if !r.OK() || r.Latency.P50 <= 0 {
			continue
		}
		es = append(es, entry{BenchName(r), r})
	}
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].name != es[j].name {
			return es[i].name < es[j].name
		}
		return es[i].r.Cell < es[j].r.Cell
	})
	// Distinct cells whose names collide after sanitizing get a suffix, so
	// that benchstat does not pool them; the runs of one cell share a name.
	owner := map[string]string{}
	suffix := map[string]string{} // cell -> its name
	seen := map[string]int{}
	for i := range es {
		if n, ok := suffix[es[i].r.Cell]; ok {
			es[i].name = n
			continue
		}
		base := es[i].name
		if c, ok := owner[base]; ok && c != es[i].r.Cell {
			seen[base]++
			es[i].name = fmt.Sprintf("%s_dup%d", base, seen[base])
		} else {
			owner[base] = es[i].r.Cell
		}
		suffix[es[i].r.Cell] = es[i].name
	}
	benched := make([]*Record, len(es))
	for i := range es {
		benched[i] = es[i].r
	}
	if v, ok := common(benched, func(r *Record) string { return r.Meta.Backend }); ok {
		fmt.Fprintf(bw, "backend: %s\n", v)
	}
	if v, ok := common(benched, func(r *Record) string { return r.Meta.Device }); ok {
		fmt.Fprintf(bw, "device: %s\n", v)
	}
	width := 0
	for _, e := range es {
		width = max(width, len(e.name))
	}
	for _, e := range es {
		ns := strconv.FormatFloat(math.Round(e.r.Latency.P50*1e6)/1e3, 'f', -1, 64) // µs → ns, to the ps
		fmt.Fprintf(bw, "%-*s \t%8d\t%12s ns/op\n", width, e.name, 1, ns)
	}
	return bw.Flush()
}

// common returns the value that all the records share, if it is not empty
// and fits on a configuration line.
func common(records []*Record, f func(*Record) string) (string, bool) {
	if len(records) == 0 {
		return "", false
	}
	v := f(records[0])
	for _, r := range records[1:] {
		if f(r) != v {
			return "", false
		}
	}
	if strings.TrimSpace(v) == "" || strings.ContainsAny(v, "\r\n") {
		return "", false
	}
	return v, true
}
