package policies_test

// Tests of snapkv and pyramidkv through their public behaviour: the
// conformance suite, and the tokens kept after a prompt against a brute-force
// float64 reference computed here from the queries and keys the model
// produced. The unexported helpers (per-layer budgets, pooling, ranking) are
// tested in pyramidkv_test.go, inside the package.

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/policies/policytest"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

func TestSnapKVConformance(t *testing.T) {
	policytest.Run(t, policytest.Case{Policy: "snapkv", Prompt: 64,
		Small: policies.Params{"capacity": 24, "window": 8, "kernel": 5},
		Large: policies.Params{"capacity": 4096}})
}

func TestSnapKVAvgConformance(t *testing.T) {
	policytest.Run(t, policytest.Case{Policy: "snapkv", Prompt: 64,
		Small: policies.Params{"capacity": 24, "window": 8, "kernel": 5, "pooling": "avg"},
		Large: policies.Params{"capacity": 4096, "pooling": "avg"}})
}

func TestPyramidKVConformance(t *testing.T) {
	policytest.Run(t, policytest.Case{Policy: "pyramidkv", Prompt: 64,
		Small: policies.Params{"capacity": 24, "window": 8, "kernel": 5},
		Large: policies.Params{"capacity": 4096}})
}

// snapCapture wraps a policy's hook and records, before the policy acts, every
// query row (RoPE applied) and every cached key of each layer, by position.
type snapCapture struct {
	inner runtime.Hook
	be    runtime.Backend
	q     []map[int][]float32     // [layer] position -> [heads*headDim]
	k     [][]map[int32][]float32 // [layer][kv head] position -> [headDim]
}

func newSnapCapture(inner runtime.Hook, be runtime.Backend, c runtime.Config) *snapCapture {
	cp := &snapCapture{inner: inner, be: be, q: make([]map[int][]float32, c.Layers), k: make([][]map[int32][]float32, c.Layers)}
	for l := range cp.q {
		cp.q[l] = map[int][]float32{}
		cp.k[l] = make([]map[int32][]float32, c.KVHeads)
		for g := range cp.k[l] {
			cp.k[l][g] = map[int32][]float32{}
		}
	}
	return cp
}

func (cp *snapCapture) BeforeAttend(l int, a *runtime.AttnArgs) {
	w := a.Heads * a.HeadDim
	q := make([]float32, a.Rows*w)
	cp.be.Read(q, a.Q, 0)
	for r := 0; r < a.Rows; r++ {
		cp.q[l][a.QPos[r]] = q[r*w : (r+1)*w]
	}
	hd := a.HeadDim
	for g := range a.Seqs {
		s := &a.Seqs[g]
		page := make([]float32, s.PageSize*hd)
		for p := range s.K {
			cp.be.Read(page, s.K[p], 0)
			for slot := 0; slot < s.PageSize && p*s.PageSize+slot < s.N; slot++ {
				cp.k[l][g][s.Pos[p*s.PageSize+slot]] = slices.Clone(page[slot*hd : (slot+1)*hd])
			}
		}
	}
	cp.inner.BeforeAttend(l, a)
}

func (cp *snapCapture) AfterAttend(l int, a *runtime.AttnArgs) { cp.inner.AfterAttend(l, a) }

// snapRefPool is the pooling of the reference, written out independently: torch
// F.max_pool1d pads with -Inf, F.avg_pool1d with zeros counted in the mean.
func snapRefPool(x []float64, kernel int, avg bool) []float64 {
	out := make([]float64, len(x))
	pad := kernel / 2
	for i := range x {
		m, sum := math.Inf(-1), 0.0
		for j := i - pad; j <= i+pad; j++ {
			v, pv := 0.0, math.Inf(-1) // padding: zero for avg, -Inf for max
			if j >= 0 && j < len(x) {
				v, pv = x[j], x[j]
			}
			sum += v
			m = math.Max(m, pv)
		}
		if avg {
			out[i] = sum / float64(kernel)
		} else {
			out[i] = m
		}
	}
	return out
}

// snapRefPyramid is PyramidKV's per-layer prefix budget, from the reference's
// update_kv with Python's floor division.
func snapRefPyramid(k, w, beta, layers, n, l int) int {
	floorDiv := func(a, b int) int { return int(math.Floor(float64(a) / float64(b))) }
	if n < 2*(k-w) {
		return k - w
	}
	minN := floorDiv(k-w, beta)
	maxN := (k-w)*2 - minN
	if maxN >= n-w {
		maxN = n - w
		minN = (k-w)*2 - maxN
	}
	return maxN - l*floorDiv(maxN-minN, layers-1)
}

type snapRefCase struct {
	policy  string
	model   string
	pooling string
	rows    int // runner chunk size
	before  int // single tokens fed before the prompt
	n       int // prompt length
	k, w    int // capacity, window
	kernel  int
}

// TestSnapKVMatchesReference feeds a prompt through snapkv or pyramidkv, then
// recomputes in float64 what the reference selects — the window queries'
// causal softmax over the cached keys, summed over the window for the prefix
// keys, pooled per query head, averaged over the GQA group, the top budget
// kept plus the window — and compares with the positions the cache kept,
// per layer and KV head.
func TestSnapKVMatchesReference(t *testing.T) {
	for _, c := range []snapRefCase{
		{"snapkv", "tiny", "max", 16, 0, 45, 20, 6, 5},                // window inside the last chunk
		{"snapkv", "tiny", "avg", 10, 0, 45, 20, 8, 3},                // window across two chunks
		{"snapkv", "tiny", "max", 32, 0, 40, 12, 4, 1},                // no smoothing
		{"snapkv", "tiny", "max", 8, 0, 57, 30, 8, 7},                 // window across two chunks, kernel 7
		{"snapkv", "tiny-mha", "avg", 16, 0, 50, 18, 6, 5},            // one query head per KV head
		{"snapkv", "tiny", "max", 16, 7, 40, 20, 6, 5},                // prompt after decoded tokens
		{"snapkv", "tiny", "max", 16, 0, 33, 33, 8, 5},                // n == capacity: nothing to drop
		{"snapkv", "tiny-mha", "max", 16, 0, 64, 20, 4, 15},           // wide max pooling: cuts through plateaus
		{"pyramidkv", "tiny", "max", 16, 0, 60, 20, 6, 5},             // budgets 28, 14, 0
		{"pyramidkv", "tiny", "avg", 8, 0, 34, 20, 4, 5},              // clipped: 30, 16, 2
		{"pyramidkv", "tiny", "max", 16, 0, 25, 20, 4, 3},             // n < 2(k-w): uniform 16
		{"pyramidkv", "tiny-interleaved", "max", 12, 0, 70, 30, 6, 5}, // two layers
	} {
		t.Run(fmt.Sprintf("%s-%s-%s-rows%d-before%d-n%d-k%d-w%d-kernel%d", c.policy, c.model, c.pooling, c.rows, c.before, c.n, c.k, c.w, c.kernel),
			func(t *testing.T) { checkSnapReference(t, c) })
	}
}

func checkSnapReference(t *testing.T, c snapRefCase) {
	m, err := runtime.Synthetic(c.model)
	if err != nil {
		t.Fatal(err)
	}
	cfg := m.Config
	be := cpu.New(0)
	r, err := runtime.NewRunner(m, be, c.rows)
	if err != nil {
		t.Fatal(err)
	}
	p, err := policies.New(c.policy, policies.Params{"capacity": c.k, "window": c.w, "kernel": c.kernel, "pooling": c.pooling})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(r); err != nil {
		t.Fatal(err)
	}
	cp := newSnapCapture(r.Hook, be, cfg)
	r.Hook = cp
	toks := make([]int, c.before+c.n+5)
	for i := range toks {
		toks[i] = 3 + (i*97+13*(i%7))%256
	}
	logits := make([]float32, cfg.Vocab)
	for i := 0; i < c.before; i++ {
		if err := r.Forward(toks[i:i+1], logits); err != nil {
			t.Fatal(err)
		}
	}
	p.Prompt(c.n)
	if err := r.Forward(toks[c.before:c.before+c.n], logits); err != nil {
		t.Fatal(err)
	}

	start := c.before
	from := start + c.n - c.w
	group := cfg.Heads / cfg.KVHeads
	scale := 1 / math.Sqrt(float64(cfg.HeadDim))
	hd := cfg.HeadDim
	evicted, swaps, ties := 0, 0, 0
	kept := make([][][]int32, cfg.Layers) // [layer][kv head] sorted positions after the prompt
	for l := 0; l < cfg.Layers; l++ {
		budget := c.k - c.w
		if c.policy == "pyramidkv" {
			budget = snapRefPyramid(c.k, c.w, 20, cfg.Layers, c.n, l)
		}
		kept[l] = make([][]int32, cfg.KVHeads)
		for g := 0; g < cfg.KVHeads; g++ {
			keys := cp.k[l][g]
			var all []int32
			for pos := range keys {
				all = append(all, pos)
			}
			slices.Sort(all)
			if len(all) != start+c.n {
				t.Fatalf("layer %d kv head %d: captured %d keys, want %d", l, g, len(all), start+c.n)
			}
			var prefix []int32
			for _, pos := range all {
				if int(pos) < from {
					prefix = append(prefix, pos)
				}
			}
			// Window probabilities summed per query head over prefix keys.
			score := make([]float64, len(prefix))
			for h := g * group; h < (g+1)*group; h++ {
				raw := make([]float64, len(prefix))
				for qp := from; qp < start+c.n; qp++ {
					q := cp.q[l][qp][h*hd : (h+1)*hd]
					logit := make([]float64, 0, len(all))
					mx := math.Inf(-1)
					for _, pos := range all {
						if int(pos) > qp {
							break
						}
						var dot float64
						for i, kv := range keys[pos] {
							dot += float64(q[i]) * float64(kv)
						}
						logit = append(logit, dot*scale)
						mx = math.Max(mx, dot*scale)
					}
					var z float64
					for i := range logit {
						logit[i] = math.Exp(logit[i] - mx)
						z += logit[i]
					}
					for i := range prefix {
						raw[i] += logit[i] / z
					}
				}
				for i, v := range snapRefPool(raw, c.kernel, c.pooling == "avg") {
					score[i] += v / float64(group)
				}
			}
			order := make([]int, len(prefix))
			for i := range order {
				order[i] = i
			}
			slices.SortStableFunc(order, func(x, y int) int {
				switch {
				case score[x] > score[y]:
					return -1
				case score[x] < score[y]:
					return 1
				}
				return 0
			})
			want := map[int32]bool{}
			for _, pos := range all {
				if int(pos) >= from {
					want[pos] = true
				}
			}
			nkeep := min(budget, len(prefix))
			for _, i := range order[:nkeep] {
				want[prefix[i]] = true
			}
			seq := r.Cache.Seqs(l)[g]
			got := map[int32]bool{}
			for _, pos := range seq.Pos[:seq.N] {
				got[pos] = true
			}
			kept[l][g] = slices.Sorted(maps.Keys(got))
			if len(got) != len(want) {
				t.Fatalf("layer %d kv head %d keeps %d tokens, want %d (budget %d of %d prefix tokens + %d)",
					l, g, len(got), len(want), budget, len(prefix), start+c.n-from)
			}
			evicted += len(all) - len(got)
			// Selections may differ only between tokens whose reference scores
			// tie with the cut to float32 accuracy but not exactly: exact ties
			// (max pooling repeats one element's score over a plateau, in both
			// computations) must be broken alike, by the earlier position.
			if nkeep == len(prefix) {
				for pos := range want {
					if !got[pos] {
						t.Fatalf("layer %d kv head %d dropped position %d with budget for every prefix token", l, g, pos)
					}
				}
				continue
			}
			thr := math.Inf(1) // nothing of the prefix is kept
			if nkeep > 0 {
				thr = (score[order[nkeep-1]] + score[order[nkeep]]) / 2
			}
			if nkeep > 0 && score[order[nkeep-1]] == score[order[nkeep]] {
				ties++
			}
			nearTie := func(s, thr float64) bool {
				return s != thr && math.Abs(s-thr) <= 1e-5*math.Max(1, math.Abs(thr))
			}
			byPos := map[int32]float64{}
			for i, pos := range prefix {
				byPos[pos] = score[i]
			}
			for pos := range want {
				if !got[pos] {
					if int(pos) >= from {
						t.Fatalf("layer %d kv head %d dropped window position %d", l, g, pos)
					}
					if !nearTie(byPos[pos], thr) {
						t.Errorf("layer %d kv head %d dropped position %d (score %.9g, threshold %.9g)", l, g, pos, byPos[pos], thr)
					}
				}
			}
			for pos := range got {
				if !want[pos] {
					swaps++
					if !nearTie(byPos[pos], thr) {
						t.Errorf("layer %d kv head %d kept position %d (score %.9g, threshold %.9g)", l, g, pos, byPos[pos], thr)
					}
				}
			}
		}
	}
	t.Logf("%d tokens evicted; %d cuts through an exact tie; %d kept tokens differ from the reference's choice by a near-tie", evicted, ties, swaps)
	if c.n > c.k && evicted == 0 {
		t.Errorf("prompt of %d tokens over capacity %d evicted nothing", c.n, c.k)
	}

	// Decode steps only append: every kept token stays.
	r.Hook = p
	for i := c.before + c.n; i < len(toks); i++ {
		if err := r.Forward(toks[i:i+1], logits); err != nil {
			t.Fatal(err)
		}
	}
	extra := len(toks) - c.before - c.n
	for l := 0; l < cfg.Layers; l++ {
		for g := 0; g < cfg.KVHeads; g++ {
			seq := r.Cache.Seqs(l)[g]
			pos := slices.Sorted(slices.Values(seq.Pos[:seq.N]))
			if len(pos) != len(kept[l][g])+extra || !slices.Equal(pos[:len(kept[l][g])], kept[l][g]) {
				t.Fatalf("layer %d kv head %d after %d decode steps holds %v, kept %v after the prompt", l, g, extra, pos, kept[l][g])
			}
		}
	}
}

// TestSnapKVNoCompression: without an announced prompt, or with a prompt
// shorter than the capacity, nothing is evicted.
func TestSnapKVNoCompression(t *testing.T) {
	for _, name := range []string{"snapkv", "pyramidkv"} {
		m, err := runtime.Synthetic("tiny")
		if err != nil {
			t.Fatal(err)
		}
		run := func(prompt, total int) {
			r, err := runtime.NewRunner(m, cpu.New(0), 16)
			if err != nil {
				t.Fatal(err)
			}
			p, err := policies.New(name, policies.Params{"capacity": 24, "window": 8})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Start(r); err != nil {
				t.Fatal(err)
			}
			logits := make([]float32, m.Config.Vocab)
			toks := make([]int, total)
			for i := range toks {
				toks[i] = 3 + i%200
			}
			i := 0
			if prompt > 0 {
				p.Prompt(prompt)
				if err := r.Forward(toks[:prompt], logits); err != nil {
					t.Fatal(err)
				}
				i = prompt
			}
			for ; i < total; i++ {
				if err := r.Forward(toks[i:i+1], logits); err != nil {
					t.Fatal(err)
				}
			}
			for l := 0; l < m.Config.Layers; l++ {
				for g := 0; g < m.Config.KVHeads; g++ {
					if n := r.Cache.Len(l, g); n != total {
						t.Errorf("%s prompt %d: layer %d kv head %d holds %d of %d tokens", name, prompt, l, g, n, total)
					}
				}
			}
		}
		run(0, 80)  // every token one at a time: never compressed
		run(23, 60) // prompt below capacity
	}
}

func TestSnapKVBudgets(t *testing.T) {
	for _, name := range []string{"snapkv", "pyramidkv"} {
		p, err := policies.New(name, policies.Params{"capacity": 100, "window": 10})
		if err != nil {
			t.Fatal(err)
		}
		if p.Budget() != 100 || !p.Evicts() {
			t.Errorf("%s: Budget %d, Evicts %v; want 100, true", name, p.Budget(), p.Evicts())
		}
		for l := 0; l < 4; l++ {
			if h, a := p.LayerBudget(l); h != 0 || a != 0 {
				t.Errorf("%s: LayerBudget(%d) = %d, %d; want 0, 0 (the cache grows during decode)", name, l, h, a)
			}
		}
		want := policies.Params{"budget": 100, "capacity": 100, "window": 10, "kernel": 7, "pooling": "max"}
		if name == "pyramidkv" {
			want["beta"] = 20
		}
		if got := p.Params(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: params %v, want %v", name, got, want)
		}
	}
}

// TestSnapKVDecodeAllocs checks that decode steps after compression allocate
// no more than full attention's do.
func TestSnapKVDecodeAllocs(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	allocs := func(name string, params policies.Params) float64 {
		r, err := runtime.NewRunner(m, cpu.New(0), 32)
		if err != nil {
			t.Fatal(err)
		}
		r.Cache.Reserve(512)
		p, err := policies.New(name, params)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(r); err != nil {
			t.Fatal(err)
		}
		logits := make([]float32, m.Config.Vocab)
		toks := make([]int, 64)
		for i := range toks {
			toks[i] = 3 + i
		}
		p.Prompt(len(toks))
		if err := r.Forward(toks, logits); err != nil {
			t.Fatal(err)
		}
		tok := []int{42}
		for range 5 {
			if err := r.Forward(tok, logits); err != nil {
				t.Fatal(err)
			}
		}
		return testing.AllocsPerRun(100, func() {
			if err := r.Forward(tok, logits); err != nil {
				t.Fatal(err)
			}
		})
	}
	base := allocs("full", nil)
	t.Logf("full attention: %.1f allocations per decode step", base)
	for _, name := range []string{"snapkv", "pyramidkv"} {
		if a := allocs(name, policies.Params{"capacity": 24, "window": 8, "kernel": 5}); a > base {
			t.Errorf("%s allocates %.1f times per decode step, full attention %.1f", name, a, base)
		}
	}
}

func TestSnapKVParamErrors(t *testing.T) {
	for _, name := range []string{"snapkv", "pyramidkv"} {
		for _, c := range []struct {
			params policies.Params
			want   string
		}{
			{policies.Params{"capacity": 16, "window": 32}, "parameter capacity: 16 is less than window 32"},
			{policies.Params{"capacity": 64, "kernel": 4}, "parameter kernel: 4 is even"},
			{policies.Params{"capacity": 64, "pooling": "median"}, `parameter pooling: "median" is not one of max, avg`},
			{policies.Params{"capacity": 64, "window": 0}, "parameter window: 0 is out of range"},
			{policies.Params{"capacity": 64, "kernal": 5}, "did you mean kernel"},
		} {
			_, err := policies.New(name, c.params)
			want := "policy " + name + ": " + c.want
			if c.want == "did you mean kernel" {
				want = c.want
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("New(%s, %v) error %v, want it to mention %q", name, c.params, err, want)
			}
		}
	}
	if _, err := policies.New("pyramidkv", policies.Params{"capacity": 64, "beta": 0}); err == nil ||
		!strings.Contains(err.Error(), "policy pyramidkv: parameter beta") {
		t.Errorf("pyramidkv beta 0: error %v", err)
	}
	if _, err := policies.New("snapkv", policies.Params{"capacity": 64, "beta": 20}); err == nil ||
		!strings.Contains(err.Error(), "unknown parameter beta") {
		t.Errorf("snapkv beta: error %v, want unknown parameter", err)
	}
}
