package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/policies/policytest"
	"github.com/kvbench/kvbench/results"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// uploadSuite is a suite of six cells of one model on backend %s: three
// policies, each over a four-stream perplexity task and a passkey task of
// two trials (streams one after the other).
const uploadSuite = `name: upload-once
backend: %s
recall_every: 4
models: [{name: tiny, path: "synthetic:tiny"}]
policies: [full, {name: window, window: 32}, {name: h2o, heavy: 16, recent: 16}]
tasks:
  - {name: perplexity, text: text.txt, tokens: 60, streams: 4, bucket: 30}
  - {name: passkey, lengths: [256], depths: [0.5], trials: 2, seed: 1}
`

// TestWeightsUploadedOnce runs a suite of six cells, with several streams
// each, on the CPU and checks that the model's weights were uploaded once:
// one backend opened, one upload of every tensor, the first record saying
// it uploaded them and the others that they reused them, each with its
// device memory.
func TestWeightsUploadedOnce(t *testing.T) { checkUploadedOnce(t, "cpu") }

// TestWeightsUploadedOnceGPU is TestWeightsUploadedOnce on the CUDA backend
// (skipped without a GPU).
func TestWeightsUploadedOnceGPU(t *testing.T) {
	skipWithoutGPU(t)
	checkUploadedOnce(t, "cuda")
}

func checkUploadedOnce(t *testing.T, backend string) {
	dir, out := t.TempDir(), t.TempDir()
	text, err := os.ReadFile("../configs/data/river.txt")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "text.txt"), text, 0o644))
	path := filepath.Join(dir, "suite.yaml")
	require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(uploadSuite, backend)), 0o644))
	s, err := LoadSuite(path)
	require.NoError(t, err)

	devs := NewDevices()
	defer devs.Close()
	opened := 0
	devs.onOpen = func(runtime.Backend) { opened++ }
	opt := runOpts(out)
	opt.devices = devs
	before := runtime.WeightUploads()
	sum, err := Run(context.Background(), s, opt)
	require.NoError(t, err)
	require.Equal(t, 6, sum.Ran)
	require.Empty(t, sum.FailedCells)
	if opened != 1 {
		t.Errorf("%d backends opened for six cells, want 1", opened)
	}
	if n := runtime.WeightUploads() - before; n != 1 {
		t.Errorf("the model's weights were uploaded %d times, want once", n)
	}
	bes := devs.backends()
	require.Len(t, bes, 1)
	mem := bes[0].(runtime.MemoryReporter).Memory()
	if want := distinctTensors("synthetic:tiny", t); mem.Uploads != want {
		t.Errorf("the backend received %d tensor uploads, want %d (each tensor once)", mem.Uploads, want)
	}
	recs, err := results.Load(out)
	require.NoError(t, err)
	require.Len(t, recs, 6)
	for i, r := range recs {
		m := r.Memory
		if m == nil {
			t.Errorf("record %s has no memory", r.Cell)
			continue
		}
		if m.Uploaded != (i == 0) {
			t.Errorf("record %d (%s) says weights_uploaded %v", i, r.Cell, m.Uploaded)
		}
		if m.Weights != mem.Weights || m.KV <= 0 || m.Peak < m.Weights+m.KV {
			t.Errorf("record %s: memory %+v (device weights %d): want the weights, some KV, a peak above both", r.Cell, *m, mem.Weights)
		}
	}
}

// TestKVAccountingMatchesDevice checks, for policies that keep, evict and
// select, that what a policy reports of the cache agrees with what the
// backend allocated for it, after the prompt and after every decode step:
// the resident bytes are the pages that hold tokens, the allocated bytes
// (free pages for reuse included) plus the recall reference are the KV
// bytes and page buffers the backend counts, the peak the policy reports is
// the device's KV peak (on a GPU, less a run's reserve for a policy that
// keeps every token: KVCache.Hold), and closing the cell gives every page
// back.
func TestKVAccountingMatchesDevice(t *testing.T) { checkKVAccounting(t, "cpu") }

// The backend "cpu-bulk-test": policytest.BulkPages.
func init() {
	runtime.RegisterBackend(runtime.BackendSpec{
		Name:      "cpu-bulk-test",
		Available: func() (bool, string) { return true, "" },
		New:       func(threads int) (runtime.Backend, error) { return policytest.BulkPages{Backend: cpu.New(1)}, nil },
	})
}

// TestKVAccountingBulkPages is TestKVAccountingMatchesDevice on a backend
// that allocates pages in bulk, as the GPU's does, so that a prompt's pages
// may be held in runs (KVCache.Hold): the GPU test's accounting, checked
// without a GPU (a policy that evicted once held every layer's whole prompt
// there, and only the GPU test could see it).
func TestKVAccountingBulkPages(t *testing.T) { checkKVAccounting(t, "cpu-bulk-test") }

// TestKVAccountingMatchesDeviceGPU is TestKVAccountingMatchesDevice on the
// CUDA backend, with float32 and bf16 pages (skipped without a GPU).
func TestKVAccountingMatchesDeviceGPU(t *testing.T) {
	skipWithoutGPU(t)
	checkKVAccounting(t, "cuda")
}

func checkKVAccounting(t *testing.T, backend string) {
	m, err := runtime.Synthetic("tiny")
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(5, 6))
	prompt := make([]int, 150)
	for i := range prompt {
		prompt[i] = 3 + rng.IntN(m.Config.Vocab-3)
	}
	kvTypes := []runtime.DType{runtime.F32}
	if backend == "cuda" {
		kvTypes = append(kvTypes, runtime.BF16)
	}
	for _, kt := range kvTypes {
		for _, tc := range []struct {
			name   string
			params policies.Params
			recall int
		}{
			{"full", nil, 0},
			{"window", policies.Params{"window": 40}, 0},
			{"streamingllm", policies.Params{"sinks": 4, "recent": 36}, 4},
			{"h2o", policies.Params{"heavy": 20, "recent": 20}, 0},
			{"tova", policies.Params{"cache": 40}, 4},
			{"snapkv", policies.Params{"capacity": 48, "window": 8, "kernel": 3}, 0},
			{"quest", policies.Params{"budget": 32, "page": 16}, 0},
			{"random", policies.Params{"budget": 40, "seed": 3}, 0},
		} {
			t.Run(fmt.Sprintf("%s/%v/recall=%d", tc.name, kt, tc.recall), func(t *testing.T) {
				e, err := NewEngine(m, nil, tc.name, tc.params)
				require.NoError(t, err)
				e.Backend, e.Threads, e.MaxRows, e.KVType, e.RecallEvery = backend, 1, 64, kt, tc.recall
				for run := range 2 { // the second stream reuses the first one's runner and pages
					ts, err := e.NewStream()
					require.NoError(t, err)
					s := ts.(*stream)
					mr := e.dev.be.(runtime.MemoryReporter)
					c := s.r.Cache
					// A policy that keeps every token holds its prompt and the
					// answer's first tokens in one run a sequence where the
					// backend allocates pages in bulk (KVCache.Hold): the
					// device's peak is then the policy's plus at most that
					// reserve. Elsewhere, and for every policy that evicts,
					// the two are equal.
					reserve := int64(0)
					if _, bulk := e.dev.be.(runtime.KVPageAllocator); bulk && !s.p.Evicts() {
						reserve = policytest.HoldReserve(c, m.Config.Layers, m.Config.KVHeads)
					}
					check := func(when string) {
						t.Helper()
						st := s.p.Stats()
						held := 0
						for l := range m.Config.Layers {
							for _, q := range c.Seqs(l) {
								held += len(q.K)
							}
						}
						if want := int64(held) * c.PageBytes(); st.ResidentBytes != want {
							t.Fatalf("%s: policy reports %d resident bytes, its sequences hold %d pages = %d bytes", when, st.ResidentBytes, held, want)
						}
						dev := mr.Memory()
						if want := st.AllocatedBytes + c.ReferenceBytes(); dev.KV != want {
							t.Fatalf("%s: device holds %d KV bytes, the policy reports %d allocated + %d reference", when, dev.KV, st.AllocatedBytes, c.ReferenceBytes())
						}
						if want := int(2 * dev.KV / c.PageBytes()); dev.KVBuffers != want {
							t.Fatalf("%s: device holds %d KV page buffers, want %d (keys and values of %d pages)", when, dev.KVBuffers, want, want/2)
						}
						if tc.recall == 0 && run == 0 && (dev.PeakKV < st.MaxResidentBytes || dev.PeakKV > st.MaxResidentBytes+reserve) {
							t.Fatalf("%s: device KV peak %d bytes, the policy's peak %d (a run's reserve of at most %d)", when, dev.PeakKV, st.MaxResidentBytes, reserve)
						}
					}
					logits := make([]float32, m.Config.Vocab)
					require.NoError(t, s.Prompt(prompt[:150-40*run], logits))
					check(fmt.Sprintf("stream %d after the prompt", run))
					for i := range 40 {
						require.NoError(t, s.Step(3+i%50, logits))
						check(fmt.Sprintf("stream %d after step %d", run, i+1))
					}
					s.Close()
				}
				mr := e.dev.be.(runtime.MemoryReporter)
				require.NoError(t, e.Close())
				if dev := mr.Memory(); dev.KV != 0 || dev.KVBuffers != 0 {
					t.Errorf("after the cell the device holds %d KV bytes in %d buffers", dev.KV, dev.KVBuffers)
				}
				mem := e.Memory()
				require.NotNil(t, mem)
				if mem.KV <= 0 || mem.Weights <= 0 {
					t.Errorf("cell memory %+v: want its weights and KV", *mem)
				}
			})
		}
	}
}

// TestDevicesOneModelAtATime runs cells of two models on one device: the
// first model's weights are given back when the second's are uploaded, each
// model is uploaded once, and a failed upload (injected) fails its cell
// only: the device stays, and the next cell uploads the model.
func TestDevicesOneModelAtATime(t *testing.T) {
	dir := t.TempDir()
	text, err := os.ReadFile("../configs/data/river.txt")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "text.txt"), text, 0o644))
	y := `name: two-models
backend: cpu
models: [{name: a, path: "synthetic:tiny"}, {name: b, path: "synthetic:tiny-mha"}]
policies: [full, {name: window, window: 32}]
tasks: [{name: perplexity, text: text.txt, tokens: 40, streams: 2, bucket: 20}]
`
	s, err := ParseSuite(filepath.Join(dir, "s.yaml"), []byte(y))
	require.NoError(t, err)
	cells := s.Cells()
	require.Len(t, cells, 4) // a/full, a/window, b/full, b/window
	devs := NewDevices()
	defer devs.Close()
	// failNext fails the next weight allocation: set when model b's first
	// cell starts.
	var failNext bool
	devs.onOpen = func(be runtime.Backend) {
		be.(runtime.AllocFailer).FailAllocs(func(kind runtime.MemKind, _ int64) error {
			if failNext && kind == runtime.MemWeights {
				failNext = false
				return errInjected
			}
			return nil
		})
	}
	models := map[string]*loadedModel{}
	ran := func(i int) *results.Record {
		t.Helper()
		return runCell(t.Context(), s, cells[i], models, devs, "cpu")
	}
	for i := range 2 {
		require.True(t, ran(i).OK(), "cell %d", i)
	}
	mem := func() runtime.Memory { return devs.backends()[0].(runtime.MemoryReporter).Memory() }
	wa := mem().Weights
	require.Positive(t, wa)
	failNext = true
	bad := ran(2)
	if bad.OK() || !strings.Contains(bad.Error, "injected") {
		t.Fatalf("cell with the failed upload: status %s, error %q", bad.Status, bad.Error)
	}
	if len(devs.backends()) != 1 {
		t.Fatalf("%d devices after a failed upload, want the one", len(devs.backends()))
	}
	for _, i := range []int{2, 3} {
		r := ran(i)
		require.True(t, r.OK(), "cell %d: %s", i, r.Error)
		require.NotNil(t, r.Memory)
		if r.Memory.Uploaded != (i == 2) {
			t.Errorf("cell %d says weights_uploaded %v", i, r.Memory.Uploaded)
		}
	}
	wb := mem().Weights
	mb, err := runtime.Synthetic("tiny-mha")
	require.NoError(t, err)
	dw, err := runtime.UploadWeights(mb, cpu.New(1))
	require.NoError(t, err)
	if wb != dw.Bytes() {
		t.Errorf("the device holds %d weight bytes after model b's cells, want b's %d alone (a's %d given back)", wb, dw.Bytes(), wa)
	}
}
