package main

// The cells kvbench kernels times: the shared inputs of a head shape and
// length, each policy's decode step over its own cache, and the streams
// of a batch step that run as one.

import (
	"math"
	"math/rand/v2"
	"slices"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// The cache a cell builds: the prompt enters the cache in chunks of up to
// promptChunk tokens (the KV block repeated), the policy's hooks seeing each
// chunk; attention runs for the last promptRows rows only (the last
// cellOpts.rows rows, the timed prompt chunk, under --rows).
const (
	promptChunk = 4096
	promptRows  = 64
)

// cell is the attention shape of a row of the table: Tokens cached tokens
// of KVHeads KV heads read by Heads query heads of dim channels.
type cell struct{ heads, kvHeads, dim, tokens int }

// cellOpts are the flags that shape every cell.
type cellOpts struct {
	page, budget, iters int
	rows                int // query rows of the timed call: 1 the decode step, more the prompt's last chunk (--rows)
	batch               int // runs timed back to back behind one spin (--back-to-back)
	kvPage              int // KV cache page slots
	streams             int // steps timed as one batch (AttendBatch); 1: one Attend
	check, split, floor bool
	trace               bool
	seed                uint64
	bw                  float64 // copy bandwidth, bytes/s
}

// cellData is what every policy of a cell shares: the model (its shape; one
// layer), its uploaded weights, the block of keys and values appended
// repeatedly (host copy and device rows [block, kvDim]), the queries and
// the output rows.
type cellData struct {
	s      cell
	kvPage int // KV cache page slots (0: the runtime's default)
	model  *runtime.Model
	dw     *runtime.DeviceWeights
	block  int
	last   int       // rows of the prompt's last chunk, the one attended (its KV rows start at row 0 of the block)
	rows   int       // query rows of the timed call: 1 (a decode step) or last (the prompt's last chunk, --rows)
	hk, hv []float32 // [block, kvDim] as generated; the pages hold them rounded to bf16
	kb, vb runtime.Buffer
	hq     []float32 // [last, heads*dim]
	qb, ob runtime.Buffer
}

// newCellData makes the shared inputs of cell s whose timed call has rows
// query rows: 1, a decode step after the prompt, or more, the prompt's last
// chunk of that many rows (at most the cell's tokens).
func newCellData(b *cuda.Backend, s cell, rows int, seed uint64) (*cellData, error) {
	c := runtime.Config{Arch: "synthetic", Dim: 8, Hidden: 8, Layers: 1, Heads: s.heads, KVHeads: s.kvHeads, HeadDim: s.dim,
		Vocab: 8, MaxSeq: s.tokens + 1, RopeTheta: 1e4, Rope: runtime.RopeHalf, NormEps: 1e-5, TiedEmbeddings: true, BOS: 1, EOS: 2}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	d := &cellData{s: s, model: runtime.NewRandomModel(c, seed), block: min(s.tokens, promptChunk), last: min(s.tokens, promptRows), rows: 1}
	if rows > 1 {
		d.last = min(s.tokens, rows)
		d.rows = d.last
	}
	dw, err := runtime.UploadWeights(d.model, b)
	if err != nil {
		return nil, err
	}
	d.dw = dw
	rng := rand.New(rand.NewPCG(seed, 0x6b65726e656c73))
	uni := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(2*rng.Float64() - 1)
		}
		return v
	}
	kvDim, qDim := c.KVDim(), c.QDim()
	d.hk, d.hv, d.hq = uni(d.block*kvDim), uni(d.block*kvDim), uni(d.last*qDim)
	d.kb, d.vb = b.Alloc(d.block*kvDim), b.Alloc(d.block*kvDim)
	d.qb, d.ob = b.Alloc(d.last*qDim), b.Alloc(d.last*qDim)
	b.Write(d.kb, 0, d.hk)
	b.Write(d.vb, 0, d.hv)
	b.Write(d.qb, 0, d.hq)
	return d, nil
}

// rowOf is the row of the KV block that newStep appends at position p: the
// prompt's chunks before its last d.last rows start at multiples of the
// block, its last rows (in blocks) and the decode step's token at row 0.
func (d *cellData) rowOf(p int) int {
	n := d.s.tokens
	last := n - d.last
	switch {
	case p >= n:
		return p - n
	case p >= last:
		return (p - last) % d.block
	}
	return p % d.block
}

func (d *cellData) free(b *cuda.Backend) {
	for _, x := range []runtime.Buffer{d.kb, d.vb, d.qb, d.ob} {
		b.Free(x)
	}
	d.dw.Free()
}

// policyParams are the parameters policy name runs with in a cell: the
// budget and Quest's page where the policy has them, and every layer sparse
// (the cell's model has one layer).
func policyParams(name string, o cellOpts) (policies.Params, error) {
	spec, err := policies.Lookup(name)
	if err != nil {
		return nil, err
	}
	p := policies.Params{}
	for _, d := range spec.Params {
		switch d.Name {
		case "budget":
			p["budget"] = o.budget
		case "page":
			p["page"] = o.page
		case "dense_layers":
			p["dense_layers"] = 0
		}
	}
	return p, nil
}

// step is one policy's timed call over its own cache: the runner that holds
// the cache, the policy, and the attention arguments the policy set for the
// call (a decode step: the newest token's query at the end of the cache; or
// the prompt's last chunk, its rows' queries over the whole prompt).
type step struct {
	r *runtime.Runner
	p policies.Policy
	a runtime.AttnArgs
}

// args are the attention arguments the runner would pass for rows rows at
// positions pos (layer 0 of d's model), before the policy's hook.
func (d *cellData) args(r *runtime.Runner, rows int, pos []int) runtime.AttnArgs {
	c := d.model.Config
	return runtime.AttnArgs{Out: d.ob, Q: d.qb, Rows: rows, QPos: pos, Heads: c.Heads, KVHeads: c.KVHeads, HeadDim: c.HeadDim,
		Scale: float32(1 / math.Sqrt(float64(c.HeadDim))), Seqs: r.Cache.Seqs(0), Window: c.SlidingWindow,
		Rope: c.Rope, Theta: c.RopeTheta}
}

// newStep builds policy name's cache for d's cell: a prompt of the cell's
// tokens (the KV block repeated) announced to the policy and fed to its
// hooks in chunks, attention computed for the last d.last rows, the policy
// compressing as it does after a prompt; then a decode step's token
// appended and the policy's hook run before its attention. Where the timed
// call is the prompt's last chunk (d.rows > 1), the step stops at that
// chunk's hook before its attention: the chunk is attended as the
// runner's last prefill pass attends it, before the policy compresses.
func newStep(b *cuda.Backend, d *cellData, name string, params policies.Params) (*step, error) {
	r, err := runtime.NewRunnerWith(d.model, b, runtime.RunnerOptions{MaxRows: 1, PageSize: d.kvPage, KVType: runtime.BF16, Weights: d.dw})
	if err != nil {
		return nil, err
	}
	p, err := policies.New(name, params)
	if err != nil {
		r.Cache.Free()
		return nil, err
	}
	st := &step{r: r, p: p}
	if err := p.Start(r); err != nil {
		st.free()
		return nil, err
	}
	n := d.s.tokens
	last := d.last
	p.Prompt(n)
	// appendRows appends the prompt's rows at positions at.., the KV block's
	// rows in turn (rowOf), and returns their positions.
	appendRows := func(rows, at int) []int {
		pos := make([]int, rows)
		for i := range pos {
			pos[i] = at + i
		}
		for i := 0; i < rows; i += d.block {
			m := min(d.block, rows-i)
			r.Cache.Append(0, d.kb, d.vb, m, pos[i:i+m])
		}
		return pos
	}
	run := func(rows, at int, attend bool) error {
		pos := appendRows(rows, at)
		a := d.args(r, rows, pos)
		p.BeforeAttend(0, &a)
		if attend {
			b.Attend(&a)
		}
		p.AfterAttend(0, &a)
		if e, ok := p.(interface{ Err() error }); ok {
			return e.Err()
		}
		return nil
	}
	for at := 0; at < n-last; at += d.block {
		// Hooks only: these rows' queries are not computed (their
		// attention would not change what the cell times).
		if err := run(min(d.block, n-last-at), at, false); err != nil {
			st.free()
			return nil, err
		}
	}
	if d.rows > 1 {
		st.a = d.args(r, last, appendRows(last, n-last))
	} else {
		if err := run(last, n-last, true); err != nil {
			st.free()
			return nil, err
		}
		r.Cache.Append(0, d.kb, d.vb, 1, []int{n})
		st.a = d.args(r, 1, []int{n})
	}
	p.BeforeAttend(0, &st.a)
	if e, ok := p.(interface{ Err() error }); ok && e.Err() != nil {
		err := e.Err()
		st.free()
		return nil, err
	}
	return st, nil
}

// free gives the step's cache and the policy's device memory back.
func (st *step) free() {
	if rl, ok := st.p.(interface{ Release() }); ok {
		rl.Release()
	}
	st.r.Cache.Free()
}

// unit is what one timed run attends: one policy's decode step a stream
// (--streams), each over its own cache, run as one Attend, or as one
// AttendBatch of every stream's call, each with output rows of its own.
type unit struct {
	steps []*step
	calls []*runtime.AttnArgs
	outs  []runtime.Buffer
}

// newUnit builds streams steps of policy name in d's cell (newStep).
func newUnit(b *cuda.Backend, d *cellData, name string, params policies.Params, streams int) (*unit, error) {
	u := &unit{}
	for range streams {
		st, err := newStep(b, d, name, params)
		if err != nil {
			u.free(b)
			return nil, err
		}
		u.steps = append(u.steps, st)
		if streams > 1 {
			out := b.Alloc(d.s.heads * d.s.dim)
			u.outs = append(u.outs, out)
			st.a.Out = out
		}
		u.calls = append(u.calls, &st.a)
	}
	return u, nil
}

// run queues u's attention: Attend for one stream, AttendBatch for more.
func (u *unit) run(b *cuda.Backend) {
	if len(u.calls) == 1 {
		b.Attend(u.calls[0])
		return
	}
	b.AttendBatch(u.calls)
}

// bytes is what u's run moves: its steps' bytes.
func (u *unit) bytes() int64 {
	var n int64
	for _, st := range u.steps {
		n += st.bytes()
	}
	return n
}

// free gives u's steps and output rows back.
func (u *unit) free(b *cuda.Backend) {
	for _, st := range u.steps {
		st.free()
	}
	for _, x := range u.outs {
		b.Free(x)
	}
}

// kvBytes is what the step's attention reads of the cache: each KV head's
// keys and values once per split row of the kernels (per query head where
// the heads select their own tokens, per GQA group otherwise).
func (st *step) kvBytes() int64 {
	a := &st.a
	group := a.Heads / a.KVHeads
	vec := int64(a.HeadDim) * 2 // bf16
	var n int64
	for g := range a.Seqs {
		own := false
		for h := g * group; h < (g+1)*group; h++ {
			own = own || st.count(h) >= 0
		}
		if !own {
			n += int64(a.Seqs[g].N)
			continue
		}
		for h := g * group; h < (g+1)*group; h++ {
			if c := st.count(h); c >= 0 {
				n += int64(c)
			} else {
				n += int64(a.Seqs[g].N)
			}
		}
	}
	return 2 * n * vec
}

// count is the number of tokens query head h selects, -1 for all.
func (st *step) count(h int) int {
	a := &st.a
	switch {
	case a.Chosen != nil:
		return a.Chosen.Count(h)
	case a.Sel != nil && a.Sel[h] != nil:
		return len(a.Sel[h])
	}
	return -1
}

// tokens is the token indices query head h attends (all of its KV head's
// when it selects none).
func (st *step) tokens(h int) []int32 {
	a := &st.a
	var sel []int32
	switch {
	case a.Chosen != nil:
		sel = a.Chosen.Tokens(h)
	case a.Sel != nil:
		sel = a.Sel[h]
	}
	if sel != nil {
		return sel
	}
	all := make([]int32, a.Seqs[h/(a.Heads/a.KVHeads)].N)
	for i := range all {
		all[i] = int32(i)
	}
	return all
}

// bytes is what the step moves: the cache it reads and, where it
// accumulates probabilities (H2O, TOVA, SnapKV), the scores written and
// read back and the accumulators read and written.
func (st *step) bytes() int64 {
	b := st.kvBytes()
	a := &st.a
	if a.Acc != nil {
		longest := 0
		for g := range a.Seqs {
			longest = max(longest, a.Seqs[g].N)
		}
		b += 4 * int64(a.Heads) * int64(longest) * 4
	}
	return b
}

// flops is the call's attention arithmetic: 4 x dim a query head for each
// query-key pair a row sees (the scores' and the output's multiply-adds),
// the pairs being the tokens its head attends at positions up to the
// row's.
func (st *step) flops() float64 {
	a := &st.a
	group := a.Heads / a.KVHeads
	var pairs int64
	for h := range a.Heads {
		seq := &a.Seqs[h/group]
		toks := st.tokens(h)
		pos := make([]int, len(toks))
		for i, t := range toks {
			pos[i] = int(seq.Pos[t])
		}
		slices.Sort(pos)
		for r := range a.Rows {
			n, _ := slices.BinarySearch(pos, a.QPos[r]+1)
			pairs += int64(n)
		}
	}
	return 4 * float64(a.HeadDim) * float64(pairs)
}
