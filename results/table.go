package results

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"github.com/kvbench/kvbench/internal/num"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"
)

// Table is one task's results: a row per cell, columns for the cell's
// identity, the task's metrics and the cost measurements.
type Table struct {
	Task     string
	Versions []int    // task versions seen (normally one)
	Metrics  []string // task metric columns, headline first
	Rows     []Row
	Failures int // rows whose cell failed
}

// Row is one cell of a Table. Numbers are NaN where unknown.
type Row struct {
	Cell         string
	Task         string
	Model        string
	Policy       string
	PolicyParams string // "budget=64, page=16"
	TaskParams   string
	Status       string
	Error        string
	Metrics      []float64 // aligned with Table.Metrics
	Budget       int
	KVMaxMiB     float64 // KV max resident, MiB
	BytesRead    float64 // KV bytes read per decode step
	Recall       float64 // NaN when not sampled
	AttnP50      float64 // µs
	AttnP90      float64 // µs
	TokensPerS   float64
	// NotApplicable is why the cell's policy did not apply (NotApplicable);
	// its numbers are then left out: they are full attention's.
	NotApplicable string

	policyParams, taskParams map[string]any // for ordering
}

// DetailNotApplicable is the key of a record's Detail that marks a cell
// whose policy had nothing to act on, so that it ran as full attention; the
// value says why ("no prompt": snapkv and pyramidkv compress a prompt, and
// the perplexity task streams a text without one).
const DetailNotApplicable = "not_applicable"

// NotApplicable returns why r's policy did not apply to its task (the
// record's Detail[DetailNotApplicable]), or "" when it did or the cell
// failed. Tables show such a cell as "n/a (why)" rather than numbers that
// are full attention's beside the policy's name and budget.
func NotApplicable(r *Record) string {
	if !r.OK() {
		return ""
	}
	s, _ := r.Detail[DetailNotApplicable].(string)
	return s
}

// metricOrder puts headline metrics first; others follow alphabetically.
var metricOrder = []string{"accuracy", "score", "exact_match", "f1", "ppl", "perplexity", "nll", "loss"}

func sortMetrics(ms []string) {
	rank := func(m string) int {
		for i, o := range metricOrder {
			if m == o {
				return i
			}
		}
		return len(metricOrder)
	}
	sort.Slice(ms, func(i, j int) bool {
		ri, rj := rank(ms[i]), rank(ms[j])
		if ri != rj {
			return ri < rj
		}
		return ms[i] < ms[j]
	})
}

// Tables groups records by task (sorted by name) and builds one table each.
// Rows are ordered by model, policy, policy parameters and task parameters
// (numbers compared as numbers), then cell key.
func Tables(records []Record) []Table {
	byTask := map[string][]*Record{}
	for i := range records {
		byTask[records[i].Task] = append(byTask[records[i].Task], &records[i])
	}
	tasks := make([]string, 0, len(byTask))
	for t := range byTask {
		tasks = append(tasks, t)
	}
	sort.Strings(tasks)
	out := make([]Table, 0, len(tasks))
	for _, t := range tasks {
		out = append(out, buildTable(t, byTask[t]))
	}
	return out
}

func buildTable(task string, recs []*Record) Table {
	t := Table{Task: task}
	names := map[string]bool{}
	versions := map[int]bool{}
	for _, r := range recs {
		for m := range r.Metrics {
			names[m] = true
		}
		versions[r.TaskVersion] = true
	}
	for m := range names {
		t.Metrics = append(t.Metrics, m)
	}
	sortMetrics(t.Metrics)
	for v := range versions {
		t.Versions = append(t.Versions, v)
	}
	sort.Ints(t.Versions)
	for _, r := range recs {
		row := Row{
			Cell: r.Cell, Task: r.Task, Model: r.Model, Policy: r.Policy,
			PolicyParams: FormatParams(r.PolicyParams), TaskParams: FormatParams(r.TaskParams),
			Status: r.Status, Error: r.Error, Budget: r.Budget,
			KVMaxMiB:   float64(r.KV.MaxResident) / (1 << 20),
			BytesRead:  r.KV.BytesRead,
			Recall:     r.KV.Recall,
			AttnP50:    r.Latency.P50,
			AttnP90:    r.Latency.P90,
			TokensPerS: r.Throughput,

			NotApplicable: NotApplicable(r),
			policyParams:  r.PolicyParams, taskParams: r.TaskParams,
		}
		if row.Recall < 0 {
			row.Recall = math.NaN()
		}
		if r.Latency.N == 0 && r.Latency.P50 == 0 {
			row.AttnP50, row.AttnP90 = math.NaN(), math.NaN()
		}
		if !r.OK() {
			t.Failures++
		}
		row.Metrics = make([]float64, len(t.Metrics))
		for i, m := range t.Metrics {
			if v, ok := r.Metrics[m]; ok {
				row.Metrics[i] = v
			} else {
				row.Metrics[i] = math.NaN()
			}
		}
		t.Rows = append(t.Rows, row)
	}
	sort.SliceStable(t.Rows, func(i, j int) bool { return rowLess(&t.Rows[i], &t.Rows[j]) })
	return t
}

func rowLess(a, b *Row) bool {
	if a.Model != b.Model {
		return a.Model < b.Model
	}
	if a.Policy != b.Policy {
		return a.Policy < b.Policy
	}
	if c := compareParams(a.policyParams, b.policyParams); c != 0 {
		return c < 0
	}
	if c := compareParams(a.taskParams, b.taskParams); c != 0 {
		return c < 0
	}
	return a.Cell < b.Cell
}

// compareParams orders parameter maps key by key (sorted keys; a missing
// key first), numbers numerically, other values by their text.
func compareParams(a, b map[string]any) int {
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	ks := make([]string, 0, len(keys))
	for k := range keys {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	for _, k := range ks {
		av, aok := a[k]
		bv, bok := b[k]
		switch {
		case !aok && !bok:
			continue
		case !aok:
			return -1
		case !bok:
			return 1
		}
		an, aNum := num.Float(av)
		bn, bNum := num.Float(bv)
		if aNum && bNum {
			if an != bn {
				if an < bn {
					return -1
				}
				return 1
			}
			continue
		}
		if as, bs := FormatValue(av), FormatValue(bv); as != bs {
			if as < bs {
				return -1
			}
			return 1
		}
	}
	return 0
}

// FormatValue formats a parameter value: numbers in their shortest form
// (64, 0.5), strings as they are, anything else as compact JSON.
func FormatValue(v any) string {
	if f, ok := num.Float(v); ok {
		if _, isFloat := v.(float64); !isFloat {
			return fmt.Sprint(v)
		}
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// FormatParams formats parameters as "k=v, k2=v2", keys sorted.
func FormatParams(p map[string]any) string { return joinParams(p, ", ") }

func joinParams(p map[string]any, sep string) string {
	ks := make([]string, 0, len(p))
	for k := range p {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	parts := make([]string, len(ks))
	for i, k := range ks {
		parts[i] = k + "=" + FormatValue(p[k])
	}
	return strings.Join(parts, sep)
}

// Header returns the table's Markdown column names.
func (t *Table) Header() []string {
	h := []string{"model", "policy", "policy params", "task params"}
	h = append(h, t.Metrics...)
	h = append(h, "budget", "KV max", "KV read/step", "recall", "attn p50", "attn p90", "tokens/s")
	if t.Failures > 0 {
		h = append(h, "error")
	}
	return h
}

// csvHeader returns the CSV column names (machine-friendly).
func (t *Table) csvHeader(withTask bool) []string {
	var h []string
	if withTask {
		h = append(h, "task")
	}
	h = append(h, "cell", "model", "policy", "policy_params", "task_params", "status", "error")
	h = append(h, t.Metrics...)
	return append(h, "budget", "kv_max_resident_mib", "kv_bytes_read_per_step", "kv_recall",
		"attn_p50_us", "attn_p90_us", "tokens_per_s")
}

func mdNum(v float64, format string) string {
	if math.IsNaN(v) {
		return "—"
	}
	return fmt.Sprintf(format, v)
}

func csvNum(v float64) string {
	if math.IsNaN(v) {
		return ""
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// markdownRow formats a row for the Markdown table.
func (t *Table) markdownRow(r *Row) []string {
	// File paths shortened (the CSV keeps them whole).
	out := []string{mdEscape(r.Model), mdEscape(r.Policy), mdEscape(htmlShortParams(r.PolicyParams)), mdEscape(htmlShortParams(r.TaskParams))}
	failed := r.Status != "ok"
	na := r.NotApplicable != ""
	for _, v := range r.Metrics {
		switch {
		case failed:
			out = append(out, "—")
		case na:
			out = append(out, "n/a ("+mdEscape(r.NotApplicable)+")")
		default:
			out = append(out, HumanNumber(v))
		}
	}
	budget := "—"
	if r.Budget > 0 && !na {
		budget = strconv.Itoa(r.Budget)
	}
	if failed || na {
		out = append(out, budget, "—", "—", "—", "—", "—", "—")
	} else {
		out = append(out, budget,
			HumanBytes(r.KVMaxMiB*(1<<20)),
			HumanBytes(r.BytesRead),
			HumanNumber(r.Recall),
			HumanMicros(r.AttnP50),
			HumanMicros(r.AttnP90),
			HumanNumber(r.TokensPerS))
	}
	if t.Failures > 0 {
		e := ""
		if failed {
			e = "FAILED"
			if r.Error != "" {
				e += ": " + mdEscape(r.Error)
			}
		}
		out = append(out, e)
	}
	return out
}

func (t *Table) csvRow(r *Row, withTask bool) []string {
	var out []string
	if withTask {
		out = append(out, r.Task)
	}
	if r.NotApplicable != "" {
		// The status says why; the numbers, full attention's, are left out.
		out = append(out, r.Cell, r.Model, r.Policy, r.PolicyParams, r.TaskParams, "n/a ("+r.NotApplicable+")", r.Error)
		for range r.Metrics {
			out = append(out, "")
		}
		return append(out, "", "", "", "", "", "", "")
	}
	out = append(out, r.Cell, r.Model, r.Policy, r.PolicyParams, r.TaskParams, r.Status, r.Error)
	for _, v := range r.Metrics {
		out = append(out, csvNum(v))
	}
	return append(out, strconv.Itoa(r.Budget), csvNum(r.KVMaxMiB), csvNum(r.BytesRead), csvNum(r.Recall),
		csvNum(r.AttnP50), csvNum(r.AttnP90), csvNum(r.TokensPerS))
}

// mdEscape makes text safe inside a Markdown table cell: one line, pipes
// escaped.
func mdEscape(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	return strings.ReplaceAll(s, "|", `\|`)
}

// RenderMarkdown writes the table (without a heading).
func (t *Table) RenderMarkdown(w io.Writer) error {
	header := t.Header()
	align := make([]tw.Align, len(header))
	for i := range align {
		align[i] = tw.AlignRight
	}
	for i := 0; i < 4; i++ {
		align[i] = tw.AlignLeft
	}
	if t.Failures > 0 {
		align[len(align)-1] = tw.AlignLeft
	}
	tb := tablewriter.NewTable(w,
		tablewriter.WithRenderer(renderer.NewMarkdown()),
		tablewriter.WithHeaderAutoFormat(tw.Off),
		tablewriter.WithHeaderAutoWrap(tw.WrapNone),
		tablewriter.WithRowAutoWrap(tw.WrapNone),
		tablewriter.WithHeaderAlignment(tw.AlignLeft),
		tablewriter.WithRowAlignmentConfig(tw.CellAlignment{PerColumn: align}),
	)
	tb.Header(header)
	for i := range t.Rows {
		if err := tb.Append(t.markdownRow(&t.Rows[i])); err != nil {
			return err
		}
	}
	return tb.Render()
}

// WriteMarkdown writes one section per task: a heading and its table.
func WriteMarkdown(w io.Writer, records []Record) error {
	for i, t := range Tables(records) {
		if i > 0 {
			if _, err := fmt.Fprintln(w); err != nil {
				return err
			}
		}
		vs := make([]string, len(t.Versions))
		for j, v := range t.Versions {
			vs[j] = "v" + strconv.Itoa(v)
		}
		title := t.Task
		if title == "" {
			title = "(no task)"
		}
		if _, err := fmt.Fprintf(w, "### %s (%s)\n\n", mdEscape(title), strings.Join(vs, ", ")); err != nil {
			return err
		}
		if err := t.RenderMarkdown(w); err != nil {
			return err
		}
	}
	return nil
}

// WriteCSV writes the table of one task as CSV (a header row, then a row per
// cell, numbers unrounded, empty where unknown). An empty task writes every
// task in one table with a leading task column and the union of the metrics.
func WriteCSV(w io.Writer, task string, records []Record) error {
	var t Table
	withTask := task == ""
	if withTask {
		ptrs := make([]*Record, len(records))
		for i := range records {
			ptrs[i] = &records[i]
		}
		t = buildTable("", ptrs)
		sort.SliceStable(t.Rows, func(i, j int) bool {
			if t.Rows[i].Task != t.Rows[j].Task {
				return t.Rows[i].Task < t.Rows[j].Task
			}
			return rowLess(&t.Rows[i], &t.Rows[j])
		})
	} else {
		var ptrs []*Record
		for i := range records {
			if records[i].Task == task {
				ptrs = append(ptrs, &records[i])
			}
		}
		if len(ptrs) == 0 {
			return fmt.Errorf("results: no records of task %q", task)
		}
		t = buildTable(task, ptrs)
	}
	cw := csv.NewWriter(w)
	if err := cw.Write(t.csvHeader(withTask)); err != nil {
		return err
	}
	for i := range t.Rows {
		if err := cw.Write(t.csvRow(&t.Rows[i], withTask)); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}
