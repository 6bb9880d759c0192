package tasks_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/bench"
	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/tokenizer"
	"github.com/kvbench/kvbench/tasks"
)

// A length that cannot hold the prompt is an error naming the parameter and
// the length needed, not a longer prompt run silently.
func TestPromptLongerThanLength(t *testing.T) {
	e := newEngine(t, "full", nil)
	ctx := context.Background()
	passkey, _ := tasks.Lookup("passkey")
	_, err := passkey.Run(ctx, e, tasks.Params{"lengths": 32, "trials": 1})
	if err == nil || !strings.Contains(err.Error(), "parameter lengths: 32 is too short") || !strings.Contains(err.Error(), "use lengths of at least") {
		t.Errorf("passkey lengths 32: %v", err)
	}
	// The smallest length it asks for runs.
	need := len(tasks.BuildPasskey(e.Tokenizer(), 1, 0.5, tasks.PasskeyMax).IDs)
	if _, err := passkey.Run(ctx, e, tasks.Params{"lengths": need, "trials": 2}); err != nil {
		t.Errorf("passkey at the length it asks for (%d): %v", need, err)
	}
	if _, err := passkey.Run(ctx, e, tasks.Params{"lengths": need - 1, "trials": 1}); err == nil {
		t.Errorf("passkey at length %d, one under the prompt: no error", need-1)
	}

	needle, _ := tasks.Lookup("needle")
	path := writeText(t, haystack)
	_, err = needle.Run(ctx, e, tasks.Params{"haystack": path, "lengths": 40, "max_new": 2})
	if err == nil || !strings.Contains(err.Error(), "parameter lengths: 40 is too short") {
		t.Errorf("needle lengths 40: %v", err)
	}
	res, err := needle.Run(ctx, e, tasks.Params{"haystack": path, "lengths": 200, "max_new": 2})
	if err != nil || res.Detail["prompt_tokens"].(int) > 200 {
		t.Errorf("needle lengths 200: %v, %v", err, res)
	}
}

// A binary file given as text fails Check (validate) and Run, naming the file.
func TestBinaryText(t *testing.T) {
	e := newEngine(t, "full", nil)
	bin := writeText(t, "\x00\x01\x02 weights")
	for _, c := range []struct {
		task string
		p    tasks.Params
	}{
		{"perplexity", tasks.Params{"text": bin, "tokens": 10}},
		{"needle", tasks.Params{"haystack": bin, "lengths": 200, "max_new": 2}},
	} {
		task, _ := tasks.Lookup(c.task)
		err := task.Check(c.p)
		if err == nil || !strings.Contains(err.Error(), bin) || !strings.Contains(err.Error(), "NUL byte at offset 0") {
			t.Errorf("%s Check: %v", c.task, err)
		}
		_, err = task.Run(context.Background(), e, c.p)
		if err == nil || !strings.Contains(err.Error(), bin) || !strings.Contains(err.Error(), "NUL byte") {
			t.Errorf("%s Run: %v", c.task, err)
		}
	}
	// Only the start is read by Check: a bad byte beyond 64 KiB is found by Run.
	late := writeText(t, strings.Repeat("plain words. ", 6000)+"\xff")
	task, _ := tasks.Lookup("perplexity")
	if err := task.Check(tasks.Params{"text": late, "tokens": 10}); err != nil {
		t.Errorf("Check read past 64 KiB: %v", err)
	}
	if _, err := task.Run(context.Background(), e, tasks.Params{"text": late, "tokens": 10}); err == nil || !strings.Contains(err.Error(), "offset 78000") {
		t.Errorf("Run of a text with a bad byte at 78000: %v", err)
	}
}

// NaN in the logits fails the cell, naming the token and where it arose.
func TestNonFiniteLogits(t *testing.T) {
	m, err := runtime.Synthetic("tiny-interleaved") // an untied head
	if err != nil {
		t.Fatal(err)
	}
	z := tokenizer.Bytes{}.Encode("Z")[0]
	m.Weights.Embed.F32[z*m.Config.Dim] = float32(math.NaN())
	e, err := bench.NewEngine(m, tokenizer.Bytes{}, "window", policies.Params{"window": 16})
	if err != nil {
		t.Fatal(err)
	}
	path := writeText(t, strings.Repeat("a", 50)+"Z"+strings.Repeat("b", 50))
	task, _ := tasks.Lookup("perplexity")
	_, err = task.Run(context.Background(), e, tasks.Params{"text": path, "tokens": 80})
	// BOS is token 0 of the stream; text byte 50 is token 51.
	if err == nil || !strings.Contains(err.Error(), "non-finite logits (NaN) at token 51 of the stream") ||
		!strings.Contains(err.Error(), "the token's embedding is not finite") {
		t.Errorf("perplexity over a NaN embedding: %v", err)
	}
	var nf *runtime.NonFiniteError
	if !errors.As(err, &nf) || nf.Token != z {
		t.Errorf("error %v does not carry the runtime's NonFiniteError for token %d", err, z)
	}
}
