package tasks_test

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
	"github.com/kvbench/kvbench/runtime/tokenizer"
	"github.com/kvbench/kvbench/tasks"
)

const sample = "It was the best of times, it was the worst of times, it was the age of wisdom, " +
	"it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity, " +
	"it was the season of Light, it was the season of Darkness, it was the spring of hope, " +
	"it was the winter of despair. "

// writeText writes s to a file in a temporary folder and returns its path.
func writeText(t testing.TB, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "text.txt")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// directNLL scores ids[0:n] after BOS with full attention in prefill chunks.
func directNLL(t *testing.T, m *runtime.Model, ids []int, n int) float64 {
	t.Helper()
	be := cpu.New(0)
	defer be.Close()
	r, err := runtime.NewRunner(m, be, 64)
	if err != nil {
		t.Fatal(err)
	}
	in := append([]int{tokenizer.Bytes{}.BOS()}, ids[:n-1]...)
	V := m.Config.Vocab
	logits := make([]float32, len(in)*V)
	if err := r.ForwardAll(in, logits); err != nil {
		t.Fatal(err)
	}
	var sum float64
	for i := range n {
		sum -= runtime.LogProb(logits[i*V:(i+1)*V], ids[i])
	}
	return sum
}

func TestPerplexityMatchesPrefill(t *testing.T) {
	text := sample + sample
	path := writeText(t, text)
	const n, bucket = 300, 64
	res := run(t, newEngine(t, "full", nil), "perplexity", tasks.Params{"text": path, "tokens": n, "bucket": bucket})
	m, _ := tiny()
	want := directNLL(t, m, tokenizer.Bytes{}.Encode(tasks.CleanText(text)), n)
	got := res.Metrics["nll"] * n
	if math.Abs(got-want) > 1e-4*math.Abs(want) {
		t.Errorf("streamed NLL sum %.6f, prefill %.6f", got, want)
	}
	if p := res.Metrics["ppl"]; math.Abs(p-math.Exp(res.Metrics["nll"])) > 1e-9*p {
		t.Errorf("ppl %v != exp(nll %v)", p, res.Metrics["nll"])
	}
	if res.Tokens != n {
		t.Errorf("Tokens = %d, want %d", res.Tokens, n)
	}
	// The bucket curve averages back to the total, weighted by bucket size.
	curve := res.Curves["nll"]
	if len(curve) != 5 || curve[len(curve)-1].X != n || curve[0].X != bucket {
		t.Fatalf("nll curve %v: want 5 buckets ending at 64 ... 300", curve)
	}
	var sum, prev float64
	for i, pt := range curve {
		sum += pt.Y * (pt.X - prev)
		prev = pt.X
		if ppl := res.Curves["ppl"][i]; ppl.X != pt.X || math.Abs(ppl.Y-math.Exp(pt.Y)) > 1e-9*ppl.Y {
			t.Errorf("ppl point %v does not match nll point %v", ppl, pt)
		}
	}
	if math.Abs(sum/n-res.Metrics["nll"]) > 1e-12 {
		t.Errorf("curve mean %v, total %v", sum/n, res.Metrics["nll"])
	}
}

func TestPerplexityStreams(t *testing.T) {
	path := writeText(t, sample)
	n := len(tasks.CleanText(sample))
	e := newEngine(t, "full", nil)
	p := tasks.Params{"text": path, "tokens": 120, "streams": 3, "bucket": 50}
	res := run(t, e, "perplexity", p)
	if res.Tokens != 360 {
		t.Errorf("Tokens = %d, want 360", res.Tokens)
	}
	offsets := res.Detail["offsets"].([]int)
	if want := []int{0, n / 3, 2 * n / 3}; !reflect.DeepEqual(offsets, want) {
		t.Errorf("offsets %v, want %v", offsets, want)
	}
	if res.Detail["wrapped"] != true {
		t.Errorf("streams past the end of a %d-token text not marked wrapped", n)
	}
	// Stream 0 alone scores the same tokens as stream 0 among three (to the
	// rounding of the CPU's one-row and multi-row matrix kernels: the three
	// streams step as one batch).
	one := run(t, e, "perplexity", tasks.Params{"text": path, "tokens": 120})
	if s0 := res.Detail["stream_nll"].([]float64)[0]; math.Abs(s0-one.Metrics["nll"]) > 1e-5*one.Metrics["nll"] {
		t.Errorf("stream 0 nll %v, single stream %v", s0, one.Metrics["nll"])
	}
	var mean float64
	for _, v := range res.Detail["stream_nll"].([]float64) {
		mean += v / 3
	}
	if math.Abs(mean-res.Metrics["nll"]) > 1e-12 {
		t.Errorf("mean of streams %v, total %v", mean, res.Metrics["nll"])
	}
	// Deterministic.
	again := run(t, e, "perplexity", p)
	if !reflect.DeepEqual(res.Metrics, again.Metrics) || !reflect.DeepEqual(res.Curves, again.Curves) {
		t.Errorf("two runs differ: %v vs %v", res.Metrics, again.Metrics)
	}
}

func TestPerplexityBoundedMemory(t *testing.T) {
	path := writeText(t, sample+sample)
	resident := func(tokens int) int64 {
		e := newEngine(t, "streamingllm", policies.Params{"sinks": 4, "recent": 32})
		run(t, e, "perplexity", tasks.Params{"text": path, "tokens": tokens})
		_, kv := e.Summary()
		return int64(kv.MaxResident)
	}
	if a, b := resident(100), resident(400); a != b || a == 0 {
		t.Errorf("max resident KV %d bytes after 100 tokens, %d after 400: want equal", a, b)
	}
}

func TestPerplexityCancel(t *testing.T) {
	path := writeText(t, sample)
	task, _ := tasks.Lookup("perplexity")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := task.Run(ctx, newEngine(t, "full", nil), tasks.Params{"text": path, "tokens": 100, "streams": 2})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run after cancel: %v", err)
	}
}

func TestPerplexityCheck(t *testing.T) {
	path := writeText(t, sample)
	type c = struct {
		p     tasks.Params
		param string
	}
	checkErrors(t, "perplexity", map[string]c{
		"missing text":    {tasks.Params{"tokens": 10}, "text"},
		"absent file":     {tasks.Params{"text": path + ".none", "tokens": 10}, "text"},
		"text not string": {tasks.Params{"text": 3, "tokens": 10}, "text"},
		"empty text list": {tasks.Params{"text": []any{}, "tokens": 10}, "text"},
		"number in list":  {tasks.Params{"text": []any{path, 3}, "tokens": 10}, "text"},
		"absent in list":  {tasks.Params{"text": []any{path, path + ".none"}, "tokens": 10}, "text"},
		"missing tokens":  {tasks.Params{"text": path}, "tokens"},
		"zero tokens":     {tasks.Params{"text": path, "tokens": 0}, "tokens"},
		"fraction":        {tasks.Params{"text": path, "tokens": 2.5}, "tokens"},
		"tokens list":     {tasks.Params{"text": path, "tokens": []any{1, 2}}, "tokens"},
		"negative stream": {tasks.Params{"text": path, "tokens": 10, "streams": -1}, "streams"},
		"bucket word":     {tasks.Params{"text": path, "tokens": 10, "bucket": "big"}, "bucket"},
		"unknown":         {tasks.Params{"text": path, "tokens": 10, "pooling": "max"}, "pooling"},
	})
	task, _ := tasks.Lookup("perplexity")
	err := task.Check(tasks.Params{"text": path, "tokens": 10, "bucke": 5})
	if err == nil || !strings.Contains(err.Error(), "did you mean bucket") {
		t.Errorf("misspelt parameter: %v", err)
	}
	if err := task.Check(tasks.Params{"text": []any{path, path}, "tokens": 10}); err != nil {
		t.Errorf("a list of texts: %v", err)
	}
	if err := task.Check(tasks.Params{"text": path, "tokens": "1000", "streams": 4.0, "bucket": int64(8)}); err != nil {
		t.Errorf("numbers as string, float and int64: %v", err)
	}
}

func TestPerplexityGutenberg(t *testing.T) {
	book := fixtures.Path(t, "data/gutenberg/Pride-and-Prejudice_1342.txt")
	res := run(t, newEngine(t, "streamingllm", policies.Params{"sinks": 4, "recent": 60}), "perplexity",
		tasks.Params{"text": book, "tokens": 200, "streams": 2, "bucket": 100})
	nll := res.Metrics["nll"]
	// An untrained model over 259 byte ids: near log(259), far from 0.
	if math.IsNaN(nll) || nll < 1 || nll > 10 {
		t.Errorf("nll %v on Pride and Prejudice", nll)
	}
	if n := res.Detail["text_tokens"].(int); n < 500000 || res.Detail["offsets"].([]int)[1] != n/2 {
		t.Errorf("text tokens %d, offsets %v", n, res.Detail["offsets"])
	}
	if res.Detail["wrapped"] != false {
		t.Error("wrapped over a whole book")
	}
}
