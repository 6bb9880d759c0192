package bench

import (
	"encoding/json"
	"os"
	"slices"
	"testing"

	"github.com/kvbench/kvbench/tasks"
)

// refModel is the reference model bundled with the repository (make demo).
const refModel = "../models/kvbench-ref-7m"

// TestRefModelBundle checks the bundled model: it fits the 16 MB bound, it
// loads as a Llama with its own tokenizer, and that tokenizer gives the ids
// of the Python encoder it was trained with (bench/refmodel/bpe.py; the
// golden ids in testdata/refmodel_tokens.json were written by it).
func TestRefModelBundle(t *testing.T) {
	st, err := os.Stat(refModel + "/model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > 16<<20 {
		t.Errorf("model.safetensors is %d bytes, over 16 MiB", st.Size())
	}
	m, tok, err := OpenModel(refModel, "")
	if err != nil {
		t.Fatal(err)
	}
	if c := m.Config; c.Vocab != 4096 || c.Layers != 8 || c.MaxSeq != 4096 {
		t.Errorf("config: vocab %d, layers %d, context %d", c.Vocab, c.Layers, c.MaxSeq)
	}
	if tok.BOS() != 1 {
		t.Errorf("BOS %d, want 1", tok.BOS())
	}
	data, err := os.ReadFile("testdata/refmodel_tokens.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Text string
		IDs  []int
	}
	if err := json.Unmarshal(data, &cases); err != nil || len(cases) == 0 {
		t.Fatalf("golden ids: %v", err)
	}
	for _, c := range cases {
		if got := tok.Encode(c.Text); !slices.Equal(got, c.IDs) {
			t.Errorf("%q: ids %v, want %v", c.Text, got, c.IDs)
		}
		if got := tok.Decode(c.IDs); got != c.Text {
			t.Errorf("decode: %q, want %q", got, c.Text)
		}
	}
}

// TestRefModelRetrieves runs kvbench's passkey task on the bundled model on
// the CPU: with full attention it must find every key at 1K tokens (the
// demo's claims rest on it), and a window of 64 tokens must lose the keys
// it evicted.
func TestRefModelRetrieves(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs the bundled model for a few seconds")
	}
	m, tok, err := OpenModel(refModel, "")
	if err != nil {
		t.Fatal(err)
	}
	task, err := tasks.Lookup("passkey")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		policy string
		params map[string]any
		want   float64
	}{{"full", map[string]any{}, 1}, {"window", map[string]any{"window": 64}, 0}} {
		for _, depth := range []float64{0, 0.5} {
			e, err := NewEngine(m, tok, c.policy, c.params)
			if err != nil {
				t.Fatal(err)
			}
			res, err := task.Run(t.Context(), e, tasks.Params{"lengths": 1024, "depths": depth, "trials": 2, "seed": 5})
			e.Close()
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Metrics["accuracy"]; got != c.want {
				t.Errorf("%s, depth %v: accuracy %v, want %v (%v)", c.policy, depth, got, c.want, res.Detail["trials"])
			}
		}
	}
}
