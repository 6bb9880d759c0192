package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

func init() {
	register("kernels", "time the runtime's decode attention step (Backend.Attend) under each policy against copy bandwidth", cmdKernels)
}

// kernelPolicyNames lists the policies `kvbench kernels` can time: every
// registered policy.
func kernelPolicyNames() string { return strings.Join(policies.Names(), ", ") }

// The cache a cell builds: the prompt enters the cache in chunks of up to
// promptChunk tokens (the KV block repeated), the policy's hooks seeing each
// chunk; attention runs for the last promptRows rows only.
const (
	promptChunk = 4096
	promptRows  = 64
)

func cmdKernels(stdout, stderr io.Writer, args []string) error {
	fs := newFlags("kernels", "kernels [--lengths N,...] [--heads H/KV,...] [--dim D] [--policies full,quest,...|all] [--budget T] [--page P] [--kv-page P] [--iters N] [--streams N] [--floor] [--trace]", stderr)
	lengthsF := fs.String("lengths", "4096,16384,32768,65536,131072", "cached tokens, comma-separated")
	headsF := fs.String("heads", "32/8", "query heads / KV heads, comma-separated (32/8,32/32)")
	dim := fs.Int("dim", 128, "head dimension (64 or 128)")
	policiesF := fs.String("policies", "full,quest", "policies, comma-separated, or all: "+kernelPolicyNames())
	budget := fs.Int("budget", 2048, "the policies' budget parameter: tokens held or attended per head (Quest: rounded up to pages)")
	page := fs.Int("page", 16, "Quest: tokens per page")
	kvPage := fs.Int("kv-page", runtime.DefaultPageSize, "token slots of a KV cache page")
	iters := fs.Int("iters", 200, "timed runs per cell (the median is reported)")
	chunk := fs.Int("chunk", 0, "tokens per block of the split-KV kernels (0: chosen for the device)")
	check := fs.Bool("check", true, "compare the output (and accumulated probabilities) with a float64 CPU reference (two KV heads)")
	seed := fs.Uint64("seed", 1, "random seed of the synthetic Q/K/V")
	device := fs.Int("device", 0, "CUDA device ordinal")
	split := fs.Bool("split", false, "selecting policies (Quest, the oracle): also time the selection, the policy's step before attention (rows marked /sel)")
	verbose := fs.Bool("v", false, "print each cell's launch plan and cache")
	graph := fs.Bool("graph", false, "replay each step as a CUDA graph (refused: the runtime's attention uploads per-call metadata)")
	floor := fs.Bool("floor", false, "also time a kernel that only reads as many bytes as each step moves (rows marked /floor), and the same in the step's split rows and chunks with each merge (/floor-combine, /floor-fused)")
	streams := fs.Int("streams", 1, "streams whose decode steps are timed together as one batch step's attention (Backend.AttendBatch), each over its own cache under its own policy")
	trace := fs.Bool("trace", false, "after timing, run each step once more with the split-KV kernel's blocks stamping their phases on the GPU's clock (a '# trace' line a cell; the run's kernels are the trace's build, KVBENCH_ATTN_TRACE=1)")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	lengths, err := parseInts(*lengthsF)
	if err != nil {
		return fmt.Errorf("kernels: --lengths: %w", err)
	}
	heads, err := parseHeads(*headsF)
	if err != nil {
		return fmt.Errorf("kernels: --heads: %w", err)
	}
	names := strings.Split(*policiesF, ",")
	if *policiesF == "all" {
		names = policies.Names()
	}
	for _, p := range names {
		if _, err := policies.Lookup(p); err != nil {
			return fmt.Errorf("kernels: --policies: %w", err)
		}
	}
	if *iters < 1 || *page < 1 || *budget < 1 || *kvPage < 1 {
		return fmt.Errorf("kernels: --iters, --page, --kv-page and --budget must be positive")
	}
	if *streams < 1 {
		return fmt.Errorf("kernels: --streams %d: want 1 or more", *streams)
	}
	if *streams > 1 && (*split || *trace) {
		return fmt.Errorf("kernels: --streams %d: --split and --trace time one stream's step", *streams)
	}
	if *chunk < 0 || *chunk%cuda.ChunkTokens != 0 {
		return fmt.Errorf("kernels: --chunk %d is not 0 (chosen for the device) or a positive multiple of %d", *chunk, cuda.ChunkTokens)
	}
	if *dim != 64 && *dim != 128 {
		return fmt.Errorf("kernels: --dim %d: the split-KV kernels are built for head dims 64 and 128", *dim)
	}
	if *graph {
		return fmt.Errorf("kernels: --graph: the runtime's attention uploads its per-call metadata (rows, selections, positions) from the host, so a step cannot be replayed as a CUDA graph")
	}
	if ok, why := cuda.Available(); !ok {
		return fmt.Errorf("kernels: no usable GPU: %s", why)
	}
	t0 := time.Now()
	if *trace { // the kernels built with the trace's stamps (a header word tested a block, the stamps skipped when off)
		os.Setenv("KVBENCH_ATTN_TRACE", "1")
	}
	b, err := cuda.NewBackend(*device)
	if err != nil {
		return fmt.Errorf("kernels: %w", err)
	}
	defer b.Close()
	// The helper kernels (spin, read floor) come from the same source.
	k, err := cuda.LoadKernels(b.D)
	if err != nil {
		return fmt.Errorf("kernels: %w", err)
	}
	if err := b.SetAttnChunk(*chunk); err != nil {
		return fmt.Errorf("kernels: --chunk: %w", err)
	}
	ver, path, _ := cuda.NVRTCVersion()
	fmt.Fprintf(stdout, "# device: %s\n", b.Device())
	cached := true
	for _, m := range k.Mods {
		cached = cached && m.Res.Cached
	}
	fmt.Fprintf(stdout, "# kernels: NVRTC %s (%s), %s, options %q, %d modules, cached %v, loaded in %.1fs\n",
		ver, path, b.D.Arch(), cuda.KernelOptions(), len(k.Mods), cached, time.Since(t0).Seconds())
	timed := "Backend.Attend of one decode step"
	if *streams > 1 {
		timed = fmt.Sprintf("Backend.AttendBatch of %d streams' decode steps (the heads column's NxH/KV), each stream's cache its own", *streams)
	}
	fmt.Fprintf(stdout, "# timed: %s (device time between events, its metadata included, passed by value or uploaded) on a bf16 cache of pages of %d tokens built through runtime.KVCache and each policy's hooks\n", timed, *kvPage)
	for _, name := range kernelNames(*dim, heads) {
		if f, err := k.Func(name); err == nil {
			fmt.Fprintf(stdout, "# %s: %d registers, %d B local, %d B static shared\n", f.Name, f.Regs, f.Local, f.Shared)
		}
	}
	bw, err := copyBandwidth(k)
	if err != nil {
		return fmt.Errorf("kernels: copy bandwidth: %w", err)
	}
	fmt.Fprintf(stdout, "# device-to-device copy (cuMemcpyDtoDAsync, 1 GiB, read+write bytes): %.0f GB/s\n", bw/1e9)
	io.WriteString(stdout, tableHeader+"\n")
	var failed []string
	o := cellOpts{page: *page, kvPage: *kvPage, budget: *budget, iters: *iters, streams: *streams, check: *check, split: *split, floor: *floor, trace: *trace, seed: *seed, bw: bw}
	for _, hk := range heads {
		for _, n := range lengths {
			s := cell{heads: hk[0], kvHeads: hk[1], dim: *dim, tokens: n}
			rows, err := benchCell(b, k, s, names, o)
			for _, r := range rows {
				if *verbose && r.plan != "" {
					fmt.Fprintf(stdout, "# %s %s %d: %s\n", r.policy, r.heads, r.tokens, r.plan)
				}
				fmt.Fprintln(stdout, r.String())
				if r.trace != "" {
					fmt.Fprintf(stdout, "# trace %s %s %d: %s\n", r.policy, r.heads, r.tokens, r.trace)
				}
				if r.bad {
					failed = append(failed, fmt.Sprintf("%s %d/%d n=%d", r.policy, hk[0], hk[1], n))
				}
			}
			if err != nil {
				return fmt.Errorf("kernels: %d/%d heads, %d tokens: %w", hk[0], hk[1], n, err)
			}
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("kernels: check failed: %s", strings.Join(failed, "; "))
	}
	return nil
}

// tableHeader names the columns that bench/sdpa.py prints too.
const tableHeader = "impl     policy      heads   tokens  median_us    min_us   MB_moved     GB/s  %copy  check"

type kernelRow struct {
	policy       string
	heads        string
	tokens       int
	median, best float64 // microseconds
	bytes        int64
	bw           float64 // copy bandwidth, bytes/s
	check        string
	bad          bool
	plan         string
	trace        string // the traced step's summary (--trace)
}

func (r kernelRow) String() string {
	gbs := float64(r.bytes) / (r.median * 1e-6) / 1e9
	return fmt.Sprintf("%-8s %-10s %6s %8d %10.1f %9.1f %10.1f %8.0f %6.1f  %s",
		"kvbench", r.policy, r.heads, r.tokens, r.median, r.best, float64(r.bytes)/1e6, gbs, 100*gbs*1e9/r.bw, r.check)
}

// cell is the attention shape of a row of the table: Tokens cached tokens
// of KVHeads KV heads read by Heads query heads of dim channels.
type cell struct{ heads, kvHeads, dim, tokens int }

// cellOpts are the flags that shape every cell.
type cellOpts struct {
	page, budget, iters int
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
	hk, hv []float32 // [block, kvDim] as generated; the pages hold them rounded to bf16
	kb, vb runtime.Buffer
	hq     []float32 // [promptRows, heads*dim]
	qb, ob runtime.Buffer
}

// newCellData makes the shared inputs of cell s.
func newCellData(b *cuda.Backend, s cell, seed uint64) (*cellData, error) {
	c := runtime.Config{Arch: "synthetic", Dim: 8, Hidden: 8, Layers: 1, Heads: s.heads, KVHeads: s.kvHeads, HeadDim: s.dim,
		Vocab: 8, MaxSeq: s.tokens + 1, RopeTheta: 1e4, Rope: runtime.RopeHalf, NormEps: 1e-5, TiedEmbeddings: true, BOS: 1, EOS: 2}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	d := &cellData{s: s, model: runtime.NewRandomModel(c, seed), block: min(s.tokens, promptChunk)}
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
	d.hk, d.hv, d.hq = uni(d.block*kvDim), uni(d.block*kvDim), uni(promptRows*qDim)
	d.kb, d.vb = b.Alloc(d.block*kvDim), b.Alloc(d.block*kvDim)
	d.qb, d.ob = b.Alloc(d.block*qDim), b.Alloc(d.block*qDim)
	b.Write(d.kb, 0, d.hk)
	b.Write(d.vb, 0, d.hv)
	b.Write(d.qb, 0, d.hq)
	return d, nil
}

// rowOf is the row of the KV block that newStep appends at position p: the
// prompt's chunks before its last rows start at multiples of the block, its
// last promptRows rows and the decode step's token start at row 0.
func (d *cellData) rowOf(p int) int {
	n := d.s.tokens
	last := n - min(n, promptRows)
	switch {
	case p >= n:
		return p - n
	case p >= last:
		return p - last
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

// step is one policy's decode step over its own cache: the runner that
// holds the cache, the policy, and the attention arguments the policy set
// for the step (the newest token's query at the end of the cache).
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
// hooks in chunks, attention computed for the last promptRows rows, the
// policy compressing as it does after a prompt; then a decode step's token
// appended and the policy's hook run before its attention.
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
	last := min(n, promptRows)
	p.Prompt(n)
	run := func(rows, at int, attend bool) error {
		pos := make([]int, rows)
		for i := range pos {
			pos[i] = at + i
		}
		for i := 0; i < rows; i += d.block {
			m := min(d.block, rows-i)
			r.Cache.Append(0, d.kb, d.vb, m, pos[i:i+m])
		}
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
	if err := run(last, n-last, true); err != nil {
		st.free()
		return nil, err
	}
	r.Cache.Append(0, d.kb, d.vb, 1, []int{n})
	st.a = d.args(r, 1, []int{n})
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

func benchCell(b *cuda.Backend, k *cuda.Kernels, s cell, names []string, o cellOpts) ([]kernelRow, error) {
	d, err := newCellData(b, s, o.seed)
	if err != nil {
		return nil, err
	}
	d.kvPage = o.kvPage
	defer d.free(b)
	var rows []kernelRow
	for _, name := range names {
		params, err := policyParams(name, o)
		if err != nil {
			return rows, err
		}
		r, err := benchPolicy(b, k, d, name, params, o)
		rows = append(rows, r...)
		if err != nil {
			return rows, fmt.Errorf("%s: %w", name, err)
		}
	}
	return rows, nil
}

// benchPolicy times one policy's step in d's cell (o.streams steps as one
// batch: unit), on as many copies of its caches as keep the bytes touched
// between two runs of one copy above the L2 cache (up to 16, within half the
// free memory).
func benchPolicy(b *cuda.Backend, k *cuda.Kernels, d *cellData, name string, params policies.Params, o cellOpts) ([]kernelRow, error) {
	streams := max(o.streams, 1)
	u0, err := newUnit(b, d, name, params, streams)
	if err != nil {
		return nil, err
	}
	units := []*unit{u0}
	defer func() {
		for _, u := range units {
			u.free(b)
		}
	}()
	first := u0.steps[0]
	touched := max(u0.bytes(), 1)
	free, _, err := b.D.MemInfo()
	if err != nil {
		return nil, err
	}
	cacheBytes := first.r.Cache.AllocatedBytes() * int64(streams)
	nsets := int(min(16, (3*int64(b.D.L2Bytes)+touched-1)/touched))
	nsets = int(min(int64(nsets), max(1, free/2/max(cacheBytes, 1))))
	for len(units) < nsets {
		u, err := newUnit(b, d, name, params, streams)
		if err != nil {
			return nil, err
		}
		units = append(units, u)
	}
	s := d.s
	heads := fmt.Sprintf("%d/%d", s.heads, s.kvHeads)
	if streams > 1 {
		heads = fmt.Sprintf("%dx%s", streams, heads)
	}
	row := kernelRow{policy: name, heads: heads, tokens: s.tokens, bw: o.bw, check: "-", bytes: u0.bytes()}
	if o.check {
		row.check, row.bad = checkUnit(b, d, u0)
	}
	samples, err := timeRuns(b, k, len(units), o.iters, func(i int) { units[i].run(b) })
	if err != nil {
		return nil, err
	}
	row.median, row.best = median(samples)*1e3, slices.Min(samples)*1e3
	held := 0
	for _, sq := range first.a.Seqs {
		held += sq.N
	}
	row.plan = fmt.Sprintf("%+v; %d copies of the cache; %.0f tokens held per KV head", b.AttnPlan(), len(units), float64(held)/float64(len(first.a.Seqs)))
	if o.trace {
		if row.trace, err = traceStep(b, k, units[len(units)-1].steps[0]); err != nil {
			return nil, err
		}
	}
	rows := []kernelRow{row}
	if o.split && (first.a.Sel != nil || first.a.Chosen != nil) {
		sel := row
		sel.policy, sel.check, sel.plan = name+"/sel", "-", ""
		sel.bytes = max(0, stepBytesRead(first)-first.kvBytes())
		samples, err := timeRuns(b, k, len(units), o.iters, func(i int) { st := units[i].steps[0]; st.p.BeforeAttend(0, &st.a) })
		if err != nil {
			return rows, err
		}
		sel.median, sel.best = median(samples)*1e3, slices.Min(samples)*1e3
		rows = append(rows, sel)
	}
	if o.floor {
		fl := row
		fl.policy, fl.check, fl.plan = name+"/floor", "-", ""
		if err := timeFloor(k, fl.bytes, timeInto(k, &fl, o.iters)); err != nil {
			return rows, err
		}
		rows = append(rows, fl)
		// The floor in the step's own shape: its split rows and chunks, a
		// partial as large as each block's, merged by a combine or by the row's last
		// block, or not merged (what the split shape's reads and writes cost alone).
		if p := b.AttnPlan(); p.Rows > 0 && p.Blocks > p.Rows {
			np := s.heads * streams / p.Rows * (s.dim + 2)
			for _, m := range []struct {
				name string
				mode int
			}{{"floor-combine", cuda.FloorCombine}, {"floor-fused", cuda.FloorFused}, {"floor-split", cuda.FloorNone}} {
				sf := fl
				sf.policy = name + "/" + m.name
				if err := timeSplitFloor(k, fl.bytes, p.Rows, p.Blocks/p.Rows, np, m.mode, timeInto(k, &sf, o.iters)); err != nil {
					return rows, err
				}
				rows = append(rows, sf)
			}
		}
	}
	return rows, nil
}

// timeInto is a timer for timeFloor and timeSplitFloor: it times the
// launches iters times (timeLaunches) and sets r's median and best.
func timeInto(k *cuda.Kernels, r *kernelRow, iters int) func(launch func(i int) error, n int) error {
	return func(launch func(i int) error, n int) error {
		samples, err := timeLaunches(k, launch, n, iters)
		if err != nil {
			return err
		}
		r.median, r.best = median(samples)*1e3, slices.Min(samples)*1e3
		return nil
	}
}

// timeSplitFloor times cuda.SplitFloor over bytes (rows rows, rounded up
// to 16 bytes a row) in chunks chunks with np floats of partial a block,
// merged by mode, over coldCopies.
func timeSplitFloor(k *cuda.Kernels, bytes int64, rows, chunks, np, mode int, timed func(launch func(i int) error, n int) error) error {
	rowBytes := (bytes/int64(rows) + 15) / 16 * 16
	f, err := k.NewSplitFloor(rows, chunks, np)
	if err != nil {
		return err
	}
	defer f.Free()
	return coldCopies(k, rowBytes*int64(rows), func(at func(i int) cuda.Ptr, n int) error {
		return timed(func(i int) error { return f.Launch(at(i), rowBytes, mode) }, n)
	})
}

// stepBytesRead is the bytes the policy counts for a decode step (the cache
// it reads and what it reads to choose), from a whole step on a copy of
// st's cache state: the policy's accounting after its hooks.
func stepBytesRead(st *step) int64 {
	st.r.Backend.Attend(&st.a)
	st.p.AfterAttend(0, &st.a)
	return st.p.Stats().BytesRead
}

// timeRuns runs run(i) for each of n copies warm, then iters times
// rotating over the copies, each run between two device timestamps behind a
// spin kernel long enough to cover the host's share of the run (so the
// timestamps hold the device's work: uploads, kernels, downloads), and
// returns the milliseconds of each run.
func timeRuns(b *cuda.Backend, k *cuda.Kernels, n, iters int, run func(i int)) ([]float64, error) {
	// The host's share: the fastest warm run (the first ones may grow the
	// backend's workspaces, which waits for the device).
	host := time.Duration(math.MaxInt64)
	for i := range max(5, n) {
		t0 := time.Now()
		run(i % n)
		host = min(host, time.Since(t0))
	}
	sync := b.Alloc(1)
	defer b.Free(sync)
	tmp := make([]float32, 1)
	spin := max(200*time.Microsecond, 3*host)
	out := make([]float64, 0, iters)
	for i := range iters {
		b.Read(tmp, sync, 0) // the device idle and the staging arena free
		if err := k.Spin(spin.Nanoseconds()); err != nil {
			return nil, err
		}
		m0 := b.Mark()
		run(i % n)
		m1 := b.Mark()
		out = append(out, float64(b.Elapsed(m0, m1))/1e6)
		b.ClearMarks()
	}
	return out, nil
}

// traceStep runs st's attention with the trace on, as timeRuns times it
// (warm runs, then one behind a spin, the device otherwise idle), and
// returns the last run's trace summary and its time between events.
func traceStep(b *cuda.Backend, k *cuda.Kernels, st *step) (string, error) {
	if err := b.SetAttnTrace(true); err != nil {
		return "", err
	}
	defer b.SetAttnTrace(false)
	ms, err := timeRuns(b, k, 1, 1, func(int) { b.Attend(&st.a) })
	if err != nil {
		return "", err
	}
	t, err := b.AttnTrace()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s; events %.2f (with the trace's zeroing)", t.Summary(), ms[0]*1e3), nil
}

// checkUnit checks u's run, stream by stream (checkStep, the whole unit run
// once for each), and returns the report of the worst errors and whether
// they passed: outputs within 1e-3 of the largest reference value, added
// probabilities within 1e-5.
func checkUnit(b *cuda.Backend, d *cellData, u *unit) (string, bool) {
	worst, accWorst := 0.0, 0.0
	for _, st := range u.steps {
		w, aw := checkStep(b, d, st, func() { u.run(b) })
		worst, accWorst = max(worst, w), max(accWorst, aw)
	}
	ok := worst < 1e-3
	msg := fmt.Sprintf("relerr=%.1e", worst)
	if u.steps[0].a.Acc != nil {
		ok = ok && accWorst < 1e-5
		msg += fmt.Sprintf(" acc=%.0e", accWorst)
	}
	if !ok {
		msg += " FAIL"
	}
	return msg, ok
}

// checkStep compares st's output from one run of attend (which computes
// st's attention, alone or in a batch) with a float64 reference on the
// first and last KV heads, from the host copy of the keys, values and
// queries as the pages hold them (bf16): the output of each of their query
// heads and, where the policy accumulates probabilities, what the run
// added. It returns the worst output error relative to the largest
// reference value and the worst probability's error (+Inf where an output
// is NaN).
func checkStep(b *cuda.Backend, d *cellData, st *step, attend func()) (worst, accWorst float64) {
	a := &st.a
	hd, group := a.HeadDim, a.Heads/a.KVHeads
	var before [][]float32
	for _, acc := range a.Acc {
		before = append(before, slices.Clone(acc))
	}
	b.Write(a.Out, 0, slices.Repeat([]float32{float32(math.NaN())}, a.Heads*hd))
	attend()
	out := make([]float32, a.Heads*hd)
	b.Read(out, a.Out, 0)
	kvHeads := []int{0}
	if a.KVHeads > 1 {
		kvHeads = append(kvHeads, a.KVHeads-1)
	}
	// What the run added to the sums: Acc's values, less what they held
	// before where the backend adds to them (not under AccZero); a query
	// head's own slice, or under AccGroup its KV head's, holding the sum of
	// the group's probabilities.
	added := func(i int, t int32) float64 {
		v := float64(a.Acc[i][t])
		if !a.AccZero {
			v -= float64(before[i][t])
		}
		return v
	}
	for _, g := range kvHeads {
		seq := &a.Seqs[g]
		groupProbs := map[int32]float64{} // token -> the group's probabilities (AccGroup)
		for h := g * group; h < (g+1)*group; h++ {
			toks := st.tokens(h)
			ref, probs := refAttend(d, a, h, seq, toks)
			var m, e float64
			for c := range hd {
				m = max(m, math.Abs(ref[c]))
				e = max(e, math.Abs(float64(out[h*hd+c])-ref[c]))
			}
			if math.IsNaN(e) {
				e = math.Inf(1)
			}
			worst = max(worst, e/max(m, 1e-30))
			if a.Acc != nil && a.QPos[0] >= a.AccFrom {
				for i, t := range toks {
					if a.AccGroup {
						groupProbs[t] += probs[i]
					} else {
						accWorst = max(accWorst, math.Abs(added(h, t)-probs[i]))
					}
				}
			}
		}
		for t, p := range groupProbs {
			accWorst = max(accWorst, math.Abs(added(g, t)-p))
		}
	}
	return worst, accWorst
}

// refAttend is query head h's attention (row 0 of a) over tokens toks of
// seq in float64, from the host copies: the keys and values of the token at
// position p are row rowOf(p) of the KV block rounded to bf16; a
// re-positioned key (KVSeq.Shift with AttnArgs.QShift) is scored against
// the query rotated by its shift minus the row's. It returns the output and
// each token's probability.
func refAttend(d *cellData, a *runtime.AttnArgs, h int, seq *runtime.KVSeq, toks []int32) ([]float64, []float64) {
	hd, g := a.HeadDim, h/(a.Heads/a.KVHeads)
	kvDim := a.KVHeads * hd
	q := make([]float64, hd)
	for c := range q {
		q[c] = float64(d.hq[h*hd+c])
	}
	row := func(src []float32, t int32) []float64 {
		p := d.rowOf(int(seq.Pos[t]))
		v := make([]float64, hd)
		for c := range v {
			v[c] = cuda.BF16Float64(cuda.BF16(src[p*kvDim+g*hd+c]))
		}
		return v
	}
	scores := make([]float64, len(toks))
	m := math.Inf(-1)
	for i, t := range toks {
		qq := q
		if a.QShift != nil && seq.Shift != nil {
			if dd := int(seq.Shift[t]) - a.QShift[0]; dd != 0 {
				qq = rotate(q, dd, a)
			}
		}
		k := row(d.hk, t)
		s := 0.0
		for c := range k {
			s += qq[c] * k[c]
		}
		scores[i] = s * float64(a.Scale)
		if int(seq.Pos[t]) > a.QPos[0] {
			scores[i] = math.Inf(-1)
		}
		m = max(m, scores[i])
	}
	out := make([]float64, hd)
	probs := make([]float64, len(toks))
	if math.IsInf(m, -1) {
		return out, probs
	}
	sum := 0.0
	for i := range scores {
		probs[i] = math.Exp(scores[i] - m)
		sum += probs[i]
	}
	for i, t := range toks {
		probs[i] /= sum
		v := row(d.hv, t)
		for c := range out {
			out[c] += probs[i] * v[c]
		}
	}
	return out, probs
}

// rotate returns q turned by RoPE over dd positions (a's style and base;
// the angle in float32 as the runtime computes it).
func rotate(q []float64, dd int, a *runtime.AttnArgs) []float64 {
	hd := len(q)
	r := slices.Clone(q)
	for i := range hd / 2 {
		inv := float32(1 / math.Pow(a.Theta, float64(2*i)/float64(hd)))
		if a.InvFreq != nil {
			inv = a.InvFreq[i]
		}
		ang := float64(float32(dd) * inv)
		c, s := math.Cos(ang), math.Sin(ang)
		ia, ib := i, i+hd/2
		if a.Rope == runtime.RopeInterleaved {
			ia, ib = 2*i, 2*i+1
		}
		r[ia] = q[ia]*c - q[ib]*s
		r[ib] = q[ib]*c + q[ia]*s
	}
	return r
}

// timeFloor times read_floor over bytes (rounded up to 16), over
// coldCopies.
func timeFloor(k *cuda.Kernels, bytes int64, timed func(launch func(i int) error, n int) error) error {
	d := k.D
	bytes = (bytes + 15) / 16 * 16
	sink, err := d.Alloc(16)
	if err != nil {
		return err
	}
	defer d.Free(sink)
	return coldCopies(k, bytes, func(at func(i int) cuda.Ptr, n int) error {
		return timed(func(i int) error { return k.ReadFloor(at(i), bytes, sink) }, n)
	})
}

// coldCopies runs use over n copies of bytes (a multiple of 16) of random
// bf16 data, enough that the L2 cache holds none of them between two reads
// when a caller rotates over them: at(i) is the start of copy i mod n.
func coldCopies(k *cuda.Kernels, bytes int64, use func(at func(i int) cuda.Ptr, n int) error) error {
	d := k.D
	copies := max(1, (3*int64(d.L2Bytes)+bytes-1)/bytes)
	buf, err := d.Alloc(copies * bytes)
	if err != nil {
		return err
	}
	defer d.Free(buf)
	if err := k.FillRandomBF16(buf, copies*bytes/2, 7, 1); err != nil {
		return err
	}
	return use(func(i int) cuda.Ptr { return buf.Add(int64(i) % copies * bytes) }, int(copies))
}

// timeLaunches runs launch(i) warm, then iters times, each between two CUDA
// events, and returns the milliseconds of each run. The runs of a batch are
// queued behind a spin kernel, so that they execute back to back without
// the host's launch latency inside the timed region.
func timeLaunches(k *cuda.Kernels, launch func(i int) error, nsets, iters int) ([]float64, error) {
	d := k.D
	for i := range max(3, nsets) {
		if err := launch(i); err != nil {
			return nil, err
		}
	}
	if err := d.Sync(); err != nil {
		return nil, err
	}
	const batch = 50
	evs := make([]*cuda.Event, 2*batch)
	for i := range evs {
		e, err := d.NewEvent()
		if err != nil {
			return nil, err
		}
		evs[i] = e
		defer e.Destroy()
	}
	spin := int64(2_000_000) // ns; grown when enqueuing a batch takes longer
	var out []float64
	retries := 0
	for run := 0; run < iters; {
		b := min(batch, iters-run)
		if err := k.Spin(spin); err != nil {
			return nil, err
		}
		t0 := time.Now()
		for i := range b {
			if err := evs[2*i].Record(); err != nil {
				return nil, err
			}
			if err := launch(run + i); err != nil {
				return nil, err
			}
			if err := evs[2*i+1].Record(); err != nil {
				return nil, err
			}
		}
		host := time.Since(t0).Nanoseconds()
		var ms []float64
		for i := range b {
			t, err := evs[2*i+1].Since(evs[2*i])
			if err != nil {
				return nil, err
			}
			ms = append(ms, t)
		}
		if host > spin*8/10 && retries < 4 {
			// The GPU may have caught up with the host: runs of this batch
			// could include launch gaps. Spin longer and redo it.
			spin, retries = host*2, retries+1
			continue
		}
		out = append(out, ms...)
		run += b
	}
	return out, nil
}

// kernelNames lists the split-KV kernels whose resources -v prints: the
// tensor-core and CUDA-core kernels of groups of 4 (the usual GQA shape)
// and of each group the heads ask for (the kernel's group: a power of two,
// at most 8, that holds it), of one head, and the combine.
func kernelNames(dim int, heads [][2]int) []string {
	gs := []int{4}
	for _, h := range heads {
		g := 1
		for g < h[0]/h[1] && g < 8 {
			g *= 2
		}
		if !slices.Contains(gs, g) && g != 1 {
			gs = append(gs, g)
		}
	}
	var out []string
	comb := ""
	for _, g := range append(gs, 1) {
		names, c := cuda.DecodeKernels(dim, g)
		out, comb = append(out, names...), c
	}
	return append(out, comb)
}

func median(x []float64) float64 {
	s := slices.Clone(x)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// copyBandwidth measures a 1 GiB device-to-device copy: bytes read plus
// bytes written over the median time.
func copyBandwidth(k *cuda.Kernels) (float64, error) {
	d := k.D
	const bytes = 1 << 30
	src, err := d.Alloc(bytes)
	if err != nil {
		return 0, err
	}
	defer d.Free(src)
	dst, err := d.Alloc(bytes)
	if err != nil {
		return 0, err
	}
	defer d.Free(dst)
	if err := k.FillRandomBF16(src, bytes/2, 99, 1); err != nil {
		return 0, err
	}
	ms, err := timeLaunches(k, func(int) error { return d.CopyAsync(dst, src, bytes) }, 1, 20)
	if err != nil {
		return 0, err
	}
	return 2 * bytes / (median(ms) * 1e-3), nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, v)
	}
	return out, nil
}

// parseHeads parses "32/8,32/32" into (query heads, KV heads) pairs.
func parseHeads(s string) ([][2]int, error) {
	var out [][2]int
	for _, f := range strings.Split(s, ",") {
		a, b, ok := strings.Cut(strings.TrimSpace(f), "/")
		h, err1 := strconv.Atoi(a)
		kv, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil || h <= 0 || kv <= 0 || h%kv != 0 {
			return nil, fmt.Errorf("%q is not QUERY/KV heads with KV dividing QUERY", f)
		}
		out = append(out, [2]int{h, kv})
	}
	if len(out) == 0 {
		return nil, errors.New("no heads")
	}
	return out, nil
}
