package bench

import (
	"testing"

	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
	"github.com/kvbench/kvbench/tasks"
)

// TestPasskeyAnswersBF16 runs passkey on the models that retrieve (the
// bundled models/kvbench-ref-7m and the fixture kvbench-ref-13m) on the CPU
// and on the GPU at its default bf16 precision (bf16 GEMMs, tensor-core
// prefill, bf16 KV pages) and requires the same answer in every trial, for
// full attention, Quest, SnapKV and TOVA (whose prompt's last rows alone
// accumulate: the other rows on the tensor-core prefill) and H2O (whose
// every prompt row accumulates: the prefill, then acc_cols). It needs a
// GPU.
func TestPasskeyAnswersBF16(t *testing.T) {
	if ok, why := cuda.Available(); !ok {
		t.Skip("no CUDA device: " + why)
	}
	t.Run("kvbench-ref-7m", func(t *testing.T) { passkeyAnswersBF16(t, "../models/kvbench-ref-7m") })
	t.Run("kvbench-ref-13m", func(t *testing.T) { passkeyAnswersBF16(t, fixtures.Path(t, "models/kvbench-ref-13m")) })
}

func passkeyAnswersBF16(t *testing.T, path string) {
	m, tok, err := OpenModel(path, "")
	if err != nil {
		t.Fatal(err)
	}
	task, err := tasks.Lookup("passkey")
	if err != nil {
		t.Fatal(err)
	}
	params := tasks.Params{"lengths": 2048, "depths": 0.5, "trials": 6, "seed": 3}
	for _, pol := range []struct {
		name   string
		params policies.Params
	}{{"full", nil}, {"quest", policies.Params{"budget": 256, "page": 16}},
		{"snapkv", policies.Params{"budget": 512}}, {"tova", policies.Params{"budget": 512}}, {"h2o", policies.Params{"budget": 512}}} {
		answers := map[string][]string{}
		for _, be := range []string{"cpu", "cuda"} {
			e, err := NewEngine(m, tok, pol.name, pol.params)
			if err != nil {
				t.Fatal(err)
			}
			e.Backend = be
			if be == "cuda" {
				e.KVType = runtime.BF16
			}
			res, err := task.Run(t.Context(), e, params)
			e.Close()
			if err != nil {
				t.Fatalf("%s on %s: %v", pol.name, be, err)
			}
			for _, tr := range res.Detail["trials"].([]tasks.PasskeyTrial) {
				answers[be] = append(answers[be], tr.Answer)
			}
			t.Logf("%s on %s: accuracy %.2f, answers %q", pol.name, be, res.Metrics["accuracy"], answers[be])
		}
		for i := range answers["cpu"] {
			if answers["cpu"][i] != answers["cuda"][i] {
				t.Errorf("%s trial %d: cpu answered %q, the GPU at bf16 %q", pol.name, i, answers["cpu"][i], answers["cuda"][i])
			}
		}
	}
}
