package results

import (
	"bytes"
	"encoding/csv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tableRecords: two tasks, parameters that sort numerically, a failed cell.
func tableRecords() []Record {
	mk := func(policy string, pp map[string]any, task string, tp map[string]any, metrics map[string]float64) Record {
		r := Record{
			Cell:  "ref25m/" + policy + "(" + FormatParams(pp) + ")/" + task + "(" + FormatParams(tp) + ")",
			Model: "ref25m", Policy: policy, PolicyParams: pp, Task: task, TaskVersion: 1, TaskParams: tp,
			Status: "ok", Metrics: metrics,
			Latency:    Latency{P50: 123.45, P90: 150.5, N: 10},
			KV:         KV{MaxResident: 3 << 20, BytesRead: 1 << 19, Recall: -1},
			Throughput: 456.78,
		}
		if b, ok := pp["budget"].(float64); ok {
			r.Budget = int(b)
			r.KV.Recall = 0.875
		}
		return r
	}
	recs := []Record{
		mk("quest", map[string]any{"budget": 256.0}, "passkey", map[string]any{"length": 2048.0}, map[string]float64{"accuracy": 0.75}),
		mk("quest", map[string]any{"budget": 64.0}, "passkey", map[string]any{"length": 2048.0}, map[string]float64{"accuracy": 0.5}),
		mk("full", nil, "passkey", map[string]any{"length": 512.0}, map[string]float64{"accuracy": 1}),
		mk("full", nil, "passkey", map[string]any{"length": 2048.0}, map[string]float64{"accuracy": 1}),
		mk("full", nil, "perplexity", map[string]any{"tokens": 4096.0}, map[string]float64{"ppl": 12.3456, "nll": 2.513}),
	}
	failed := mk("h2o", map[string]any{"budget": 64.0, "note": "a b"}, "passkey", map[string]any{"length": 2048.0}, nil)
	failed.Status, failed.Error = "failed", "cuda: out of memory | retry\nlater"
	return append(recs, failed)
}

func TestTablesOrderAndColumns(t *testing.T) {
	tabs := Tables(tableRecords())
	require.Len(t, tabs, 2)
	assert.Equal(t, "passkey", tabs[0].Task)
	assert.Equal(t, "perplexity", tabs[1].Task)
	assert.Equal(t, []string{"ppl", "nll"}, tabs[1].Metrics, "headline metrics first")

	pk := tabs[0]
	assert.Equal(t, 1, pk.Failures)
	var order []string
	for _, r := range pk.Rows {
		order = append(order, r.Policy+" "+r.PolicyParams+" "+r.TaskParams)
	}
	assert.Equal(t, []string{
		"full  length=512",
		"full  length=2048",
		"h2o budget=64, note=a b length=2048",
		"quest budget=64 length=2048",
		"quest budget=256 length=2048",
	}, order, "numeric parameters sort as numbers")
	assert.Equal(t, "error", pk.Header()[len(pk.Header())-1])

	// Deterministic: the input order does not matter.
	recs := tableRecords()
	for i, j := 0, len(recs)-1; i < j; i, j = i+1, j-1 {
		recs[i], recs[j] = recs[j], recs[i]
	}
	var a, b bytes.Buffer
	require.NoError(t, WriteMarkdown(&a, tableRecords()))
	require.NoError(t, WriteMarkdown(&b, recs))
	assert.Equal(t, a.String(), b.String())
}

func TestWriteMarkdown(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, WriteMarkdown(&b, tableRecords()))
	md := b.String()
	t.Log("\n" + md)
	assert.Contains(t, md, "### passkey (v1)")
	assert.Contains(t, md, "### perplexity (v1)")
	// Header as given (no auto-format to upper case).
	assert.Contains(t, md, "policy params")
	assert.Contains(t, md, "attn p50")
	assert.NotContains(t, md, "POLICY")
	assert.NotContains(t, md, "kv_bytes_read_per_step")
	// Values, with 3 significant digits and units.
	assert.Contains(t, md, "12.3")     // ppl
	assert.Contains(t, md, "3 MiB")    // KV max
	assert.Contains(t, md, "512 KiB")  // read/step
	assert.Contains(t, md, "123 µs")   // p50
	assert.Contains(t, md, "0.875")    // recall
	assert.Contains(t, md, " 457 |")   // tokens/s
	assert.NotContains(t, md, "123.5") // no more digits than 3
	// The failed cell shows its error on one line with the pipe escaped.
	assert.Contains(t, md, `FAILED: cuda: out of memory \| retry later`)
	// Two tables, each with one separator row, every row closed by a pipe.
	seps := 0
	for _, line := range strings.Split(strings.TrimSpace(md), "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		assert.True(t, strings.HasSuffix(line, "|"), line)
		if strings.Trim(line, "|:- ") == "" {
			seps++
		}
	}
	assert.Equal(t, 2, seps)
}

func TestWriteCSV(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, WriteCSV(&b, "passkey", tableRecords()))
	rows, err := csv.NewReader(&b).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 6)
	h := rows[0]
	assert.Equal(t, []string{"cell", "model", "policy", "policy_params", "task_params", "status", "error", "accuracy",
		"budget", "kv_max_resident_mib", "kv_bytes_read_per_step", "kv_recall", "attn_p50_us", "attn_p90_us", "tokens_per_s"}, h)
	col := func(name string) int {
		for i, c := range h {
			if c == name {
				return i
			}
		}
		t.Fatalf("no column %s", name)
		return -1
	}
	assert.Equal(t, "1", rows[1][col("accuracy")])
	assert.Equal(t, "3", rows[1][col("kv_max_resident_mib")])
	assert.Equal(t, "524288", rows[1][col("kv_bytes_read_per_step")])
	assert.Equal(t, "", rows[1][col("kv_recall")], "not sampled")
	assert.Equal(t, "123.45", rows[1][col("attn_p50_us")])
	assert.Equal(t, "failed", rows[3][col("status")])
	assert.Equal(t, "cuda: out of memory | retry\nlater", rows[3][col("error")], "CSV keeps the error whole")
	assert.Equal(t, "", rows[3][col("accuracy")])

	b.Reset()
	require.NoError(t, WriteCSV(&b, "", tableRecords()))
	rows, err = csv.NewReader(&b).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 7)
	assert.Equal(t, "task", rows[0][0])
	assert.Contains(t, rows[0], "ppl")
	assert.Equal(t, "perplexity", rows[6][0])

	assert.Error(t, WriteCSV(&b, "nope", tableRecords()))
}

func TestFormatParams(t *testing.T) {
	assert.Equal(t, "", FormatParams(nil))
	assert.Equal(t, "a=1, b=0.5, c=x, d=[1,2], e=true", FormatParams(map[string]any{
		"e": true, "d": []any{1.0, 2.0}, "c": "x", "b": 0.5, "a": 1,
	}))
}

// A cell whose policy did not apply (snapkv streamed without a prompt) shows
// "n/a (why)" and none of its numbers, which are full attention's; the
// record's own status stays ok (the cell ran).
func TestTableNotApplicable(t *testing.T) {
	recs := tableRecords()
	na := recs[4] // full perplexity, made snapkv's
	na.Policy, na.PolicyParams, na.Budget = "snapkv", map[string]any{"budget": 256.0}, 256
	na.Cell = "ref25m/snapkv(budget=256)/perplexity(tokens=4096)"
	na.Detail = map[string]any{DetailNotApplicable: "no prompt"}
	recs = append(recs, na)
	assert.Equal(t, "no prompt", NotApplicable(&na))
	assert.Equal(t, "", NotApplicable(&recs[4]))
	failed := na
	failed.Status = "failed"
	assert.Equal(t, "", NotApplicable(&failed), "a failed cell is failed, not n/a")

	var b bytes.Buffer
	require.NoError(t, WriteMarkdown(&b, recs))
	var row string
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.Contains(line, "snapkv") {
			row = line
		}
	}
	t.Log(row)
	assert.Equal(t, 2, strings.Count(row, "n/a (no prompt)"), "ppl and nll")
	assert.NotRegexp(t, `\|\s*256\s*\|`, row, "no budget beside full attention's numbers")
	assert.NotContains(t, row, "12.35")
	assert.NotContains(t, row, "123.5")

	b.Reset()
	require.NoError(t, WriteCSV(&b, "perplexity", recs))
	rows, err := csv.NewReader(&b).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 3)
	h := rows[0]
	got := map[string]string{}
	for i, c := range rows[2] {
		got[h[i]] = c
	}
	assert.Equal(t, "snapkv", got["policy"])
	assert.Equal(t, "n/a (no prompt)", got["status"])
	for _, c := range []string{"ppl", "nll", "budget", "kv_max_resident_mib", "attn_p50_us", "tokens_per_s"} {
		assert.Equal(t, "", got[c], c)
	}
	assert.Equal(t, "ok", rows[1][5], "full's row")
}
