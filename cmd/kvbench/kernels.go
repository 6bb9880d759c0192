package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kvbench/kvbench/runtime/cuda"
)

func init() {
	register("kernels", "time the GPU decode-attention kernels (dense, Quest) against copy bandwidth", cmdKernels)
}

// kernelPolicies are the decode steps `kvbench kernels` times, in the
// order it lists them.
var kernelPolicies = []struct{ name, doc string }{
	{"full", "dense split-KV attention over every token"},
	{"window", "dense attention over the last budget tokens it holds"},
	{"streamingllm", "dense attention over the sinks and recent tokens it holds (budget in all)"},
	{"h2o", "attention over the budget tokens it holds, their probabilities added to the accumulated scores, the lowest outside the recent window (budget/2) chosen for eviction"},
	{"tova", "attention over the budget tokens it holds, the token of lowest probability averaged over the heads chosen for eviction"},
	{"snapkv", "dense attention over the budget tokens kept after the prompt"},
	{"pyramidkv", "dense attention over the layer's budget of tokens kept after the prompt (the average budget here)"},
	{"quest", "Quest, one page selection per GQA group (max of the group's page bounds)"},
	{"quest-head", "Quest, one page selection per query head (as published)"},
	{"oracle", "the exact score of every token, the best budget per query head, attention over them"},
	{"random", "dense attention over the budget tokens it holds (the victim is drawn on the host)"},
}

func kernelPolicy(name string) bool {
	return slices.ContainsFunc(kernelPolicies, func(p struct{ name, doc string }) bool { return p.name == name })
}

func kernelPolicyNames() string {
	var names []string
	for _, p := range kernelPolicies {
		names = append(names, p.name)
	}
	return strings.Join(names, ", ")
}

func cmdKernels(stdout, stderr io.Writer, args []string) error {
	fs := newFlags("kernels", "kernels [--lengths N,...] [--heads H/KV,...] [--dim D] [--policies full,quest,...|all] [--budget T] [--page P] [--iters N] [--graph] [--floor]", stderr)
	lengthsF := fs.String("lengths", "4096,16384,32768,65536,131072", "cached tokens, comma-separated")
	headsF := fs.String("heads", "32/8", "query heads / KV heads, comma-separated (32/8,32/32)")
	dim := fs.Int("dim", 128, "head dimension (64 or 128)")
	policiesF := fs.String("policies", "full,quest", "policies, comma-separated, or all: "+kernelPolicyNames())
	budget := fs.Int("budget", 2048, "tokens a policy holds or attends to per head (Quest: rounded up to pages)")
	page := fs.Int("page", 16, "Quest: tokens per page")
	iters := fs.Int("iters", 200, "timed runs per cell (the median is reported)")
	chunk := fs.Int("chunk", 0, "tokens per block of the split-KV kernel (0: chosen for the device)")
	check := fs.Bool("check", true, "compare the outputs with a float64 CPU reference (two KV heads)")
	seed := fs.Uint64("seed", 1, "random seed of the synthetic Q/K/V")
	device := fs.Int("device", 0, "CUDA device ordinal")
	split := fs.Bool("split", false, "Quest: also time the selection and the attention alone")
	verbose := fs.Bool("v", false, "print each cell's launch plan")
	graph := fs.Bool("graph", false, "also time each policy's step replayed as a CUDA graph (rows marked +graph)")
	floor := fs.Bool("floor", false, "also time a kernel that only reads as many bytes as each step moves (rows marked /floor)")
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
	policies := strings.Split(*policiesF, ",")
	if *policiesF == "all" {
		policies = policies[:0]
		for _, p := range kernelPolicies {
			policies = append(policies, p.name)
		}
	}
	for _, p := range policies {
		if !kernelPolicy(p) {
			return fmt.Errorf("kernels: --policies: unknown policy %q (have %s, or all)", p, kernelPolicyNames())
		}
	}
	if *iters < 1 || *page < 1 || *budget < 1 {
		return fmt.Errorf("kernels: --iters, --page and --budget must be positive")
	}
	if *chunk < 0 || *chunk%cuda.ChunkTokens != 0 {
		return fmt.Errorf("kernels: --chunk %d is not 0 (chosen for the device) or a positive multiple of %d", *chunk, cuda.ChunkTokens)
	}
	for _, hk := range heads {
		for _, n := range lengths {
			if err := (cuda.Shape{Heads: hk[0], KVHeads: hk[1], HeadDim: *dim, Tokens: n}).Validate(); err != nil {
				return fmt.Errorf("kernels: --heads %d/%d --dim %d --lengths %d: %w", hk[0], hk[1], *dim, n, err)
			}
		}
	}
	if ok, why := cuda.Available(); !ok {
		return fmt.Errorf("kernels: no usable GPU: %s", why)
	}
	d, err := cuda.Open(*device)
	if err != nil {
		return fmt.Errorf("kernels: %w", err)
	}
	defer d.Close()
	t0 := time.Now()
	k, err := cuda.LoadKernels(d)
	if err != nil {
		return fmt.Errorf("kernels: %w", err)
	}
	ver, path, _ := cuda.NVRTCVersion()
	fmt.Fprintf(stdout, "# device: %s\n", d)
	fmt.Fprintf(stdout, "# kernels: NVRTC %s (%s), %s, options %q, cached %v, loaded in %.1fs\n",
		ver, path, d.Arch(), k.Mod.Res.Opts, k.Mod.Res.Cached, time.Since(t0).Seconds())
	for _, name := range []string{fmt.Sprintf("attn_dense_d%d_g4", *dim), fmt.Sprintf("attn_mma_dense_d%d_g4", *dim), fmt.Sprintf("attn_paged_d%d_g1", *dim),
		fmt.Sprintf("attn_combine_d%d", *dim), fmt.Sprintf("quest_score_d%d_g4", *dim)} {
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
	for _, hk := range heads {
		for _, n := range lengths {
			s := cuda.Shape{Heads: hk[0], KVHeads: hk[1], HeadDim: *dim, Tokens: n}
			rows, err := benchShape(k, s, policies, cellOpts{page: *page, budget: *budget, chunk: *chunk, iters: *iters,
				check: *check, split: *split, graph: *graph, floor: *floor, seed: *seed, bw: bw})
			for _, r := range rows {
				if *verbose && r.plan != "" {
					fmt.Fprintf(stdout, "# %s %s %d: %s\n", r.policy, r.heads, r.tokens, r.plan)
				}
				fmt.Fprintln(stdout, r.String())
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
}

func (r kernelRow) String() string {
	gbs := float64(r.bytes) / (r.median * 1e-6) / 1e9
	return fmt.Sprintf("%-8s %-10s %6s %8d %10.1f %9.1f %10.1f %8.0f %6.1f  %s",
		"kvbench", r.policy, r.heads, r.tokens, r.median, r.best, float64(r.bytes)/1e6, gbs, 100*gbs*1e9/r.bw, r.check)
}

// kvSet is one copy of the inputs; cells rotate among several so that the
// bytes touched between two runs of one set exceed the L2 cache.
type kvSet struct {
	q, K, V, mn, mx, out cuda.Ptr
}

// cellOpts are the flags that shape every cell.
type cellOpts struct {
	page, budget, chunk, iters int
	check, split, graph, floor bool
	seed                       uint64
	bw                         float64 // copy bandwidth, bytes/s
}

// kernelStep is a configured decode step of one policy.
type kernelStep interface {
	Bytes() int64
	Free()
}

// cellStep is one policy's step in a cell: the implementation, how to run
// it on an input set, and (with --split) its parts.
type cellStep struct {
	policy     string
	impl       kernelStep
	launch     func(st kvSet) error
	plan       string
	parts      []kernelRow
	partLaunch []func(st kvSet) error
}

// newCellStep configures policy p's step for shape s. Policies that hold a
// smaller cache run on the first min(budget, tokens) tokens of each KV head
// (the inputs read as [KVHeads, held, HeadDim]).
func newCellStep(k *cuda.Kernels, s cuda.Shape, p string, o cellOpts) (*cellStep, error) {
	held := s
	held.Tokens = min(o.budget, s.Tokens)
	c := &cellStep{policy: p}
	switch p {
	case "full", "window", "streamingllm", "snapkv", "pyramidkv", "random":
		shape := held
		if p == "full" {
			shape = s
		}
		a, err := k.NewDense(shape, o.chunk)
		if err != nil {
			return nil, err
		}
		c.impl, c.plan = a, fmt.Sprintf("%d tokens, %+v", shape.Tokens, a.Plan())
		c.launch = func(st kvSet) error { return a.Launch(st.q, st.K, st.V, st.out) }
	case "h2o", "tova":
		a, err := k.NewEvicting(held, p == "tova", held.Tokens/2, o.chunk)
		if err != nil {
			return nil, err
		}
		c.impl, c.plan = a, fmt.Sprintf("%d tokens, recent %d, %+v", held.Tokens, a.Recent, a.Plan())
		c.launch = func(st kvSet) error { return a.Launch(st.q, st.K, st.V, st.out) }
	case "oracle":
		a, err := k.NewOracle(s, o.budget, o.chunk)
		if err != nil {
			return nil, err
		}
		c.impl, c.plan = a, fmt.Sprintf("%d selected per query head, attention %+v", a.Select, a.Plan())
		c.launch = func(st kvSet) error { return a.Launch(st.q, st.K, st.V, st.out) }
	case "quest", "quest-head":
		a, err := k.NewQuest(s, o.page, o.budget, p == "quest-head", o.chunk)
		if err != nil {
			return nil, err
		}
		c.impl = a
		c.plan = fmt.Sprintf("%d pages, %d selected per row, %d rows, attention %+v", a.Pages, a.Select, a.Rows(), a.Plan())
		c.launch = func(st kvSet) error { return a.Launch(st.q, st.K, st.V, st.mn, st.mx, st.out) }
		if o.split {
			c.parts = []kernelRow{{policy: p + "/sel", bytes: a.MetaBytes()}, {policy: p + "/att", bytes: a.Bytes() - a.MetaBytes()}}
			c.partLaunch = []func(st kvSet) error{
				func(st kvSet) error { return a.LaunchSelect(st.q, st.mn, st.mx) },
				func(st kvSet) error { return a.LaunchAttend(st.q, st.K, st.V, st.out) }}
		}
	default:
		return nil, fmt.Errorf("unknown policy %q", p)
	}
	return c, nil
}

func benchShape(k *cuda.Kernels, s cuda.Shape, policies []string, o cellOpts) ([]kernelRow, error) {
	d := k.D
	kvBytes := s.KVBytes()
	needMeta := false
	// Bytes each policy touches per run, for the rotation.
	touched := kvBytes
	var steps []*cellStep
	defer func() {
		for _, c := range steps {
			c.impl.Free()
		}
	}()
	for _, p := range policies {
		c, err := newCellStep(k, s, p, o)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		steps = append(steps, c)
		touched = min(touched, c.impl.Bytes())
		_, isQuest := c.impl.(*cuda.Quest)
		needMeta = needMeta || isQuest
	}
	pages := int64((s.Tokens + o.page - 1) / o.page)
	metaBytes := 2 * int64(s.KVHeads) * pages * int64(s.HeadDim) * 2
	setBytes := kvBytes + 2*int64(s.Heads*s.HeadDim)*2 + int64(s.Heads*s.HeadDim)*4
	if needMeta {
		setBytes += metaBytes
	}
	free, _, err := d.MemInfo()
	if err != nil {
		return nil, err
	}
	nsets := int(min(16, max(1, (3*int64(d.L2Bytes)+touched-1)/touched)))
	nsets = int(min(int64(nsets), max(1, free/2/setBytes)))
	sets := make([]kvSet, nsets)
	var allocs []cuda.Ptr
	defer func() {
		for _, p := range allocs {
			_ = d.Free(p)
		}
	}()
	alloc := func(bytes int64) (cuda.Ptr, error) {
		p, err := d.Alloc(bytes)
		if err == nil {
			allocs = append(allocs, p)
		}
		return p, err
	}
	elems := int64(s.KVHeads) * int64(s.Tokens) * int64(s.HeadDim)
	for i := range sets {
		st := &sets[i]
		for _, b := range []struct {
			p     *cuda.Ptr
			bytes int64
		}{{&st.q, int64(s.Heads*s.HeadDim) * 2}, {&st.K, elems * 2}, {&st.V, elems * 2}, {&st.out, int64(s.Heads*s.HeadDim) * 4}} {
			if *b.p, err = alloc(b.bytes); err != nil {
				return nil, err
			}
		}
		base := o.seed*1000003 + uint64(i)*16
		if err := k.FillRandomBF16(st.q, int64(s.Heads*s.HeadDim), base+1, 1); err != nil {
			return nil, err
		}
		if err := k.FillRandomBF16(st.K, elems, base+2, 1); err != nil {
			return nil, err
		}
		if err := k.FillRandomBF16(st.V, elems, base+3, 1); err != nil {
			return nil, err
		}
		if needMeta {
			if st.mn, err = alloc(metaBytes / 2); err != nil {
				return nil, err
			}
			if st.mx, err = alloc(metaBytes / 2); err != nil {
				return nil, err
			}
			if err := k.PageMinMax(st.K, s.KVHeads, s.Tokens, s.HeadDim, o.page, st.mn, st.mx); err != nil {
				return nil, err
			}
		}
	}
	if err := d.Sync(); err != nil {
		return nil, err
	}
	var rows []kernelRow
	timed := func(row kernelRow, launch func(i int) error, n int) error {
		samples, err := timeLaunches(k, launch, n, o.iters)
		if err != nil {
			return err
		}
		row.median, row.best = median(samples)*1e3, slices.Min(samples)*1e3
		rows = append(rows, row)
		return nil
	}
	for _, c := range steps {
		row := kernelRow{policy: c.policy, heads: fmt.Sprintf("%d/%d", s.Heads, s.KVHeads), tokens: s.Tokens, bw: o.bw,
			check: "-", bytes: c.impl.Bytes(), plan: c.plan}
		if o.check {
			if err := d.PoisonF32(sets[0].out, int64(s.Heads*s.HeadDim)); err != nil {
				return rows, err
			}
			if err := c.launch(sets[0]); err != nil {
				return rows, err
			}
			msg, ok, err := checkCell(k, sets[0], c.impl, o.page)
			if err != nil {
				return rows, err
			}
			row.check, row.bad = msg, !ok
		}
		if err := timed(row, func(i int) error { return c.launch(sets[i%nsets]) }, nsets); err != nil {
			return rows, err
		}
		row.plan = ""
		if o.graph {
			gr := row
			gr.policy = c.policy + "+graph"
			samples, err := timeGraphs(k, c.launch, sets, o.iters)
			if err != nil {
				return rows, err
			}
			gr.median, gr.best = median(samples)*1e3, slices.Min(samples)*1e3
			rows = append(rows, gr)
		}
		for i, pr := range c.parts {
			pr.heads, pr.tokens, pr.bw, pr.check = row.heads, row.tokens, row.bw, "-"
			if err := timed(pr, func(j int) error { return c.partLaunch[i](sets[j%nsets]) }, nsets); err != nil {
				return rows, err
			}
		}
		if o.floor {
			fl := row
			fl.policy, fl.check = c.policy+"/floor", "-"
			if err := timeFloor(k, fl.bytes, func(launch func(i int) error, n int) error { return timed(fl, launch, n) }); err != nil {
				return rows, err
			}
		}
	}
	return rows, nil
}

// timeFloor times read_floor over bytes (rounded up to 16), rotating over
// enough copies that the L2 cache holds none of them between two reads.
func timeFloor(k *cuda.Kernels, bytes int64, timed func(launch func(i int) error, n int) error) error {
	d := k.D
	bytes = (bytes + 15) / 16 * 16
	copies := max(1, (3*int64(d.L2Bytes)+bytes-1)/bytes)
	buf, err := d.Alloc(copies * bytes)
	if err != nil {
		return err
	}
	defer d.Free(buf)
	sink, err := d.Alloc(16)
	if err != nil {
		return err
	}
	defer d.Free(sink)
	if err := k.FillRandomBF16(buf, copies*bytes/2, 7, 1); err != nil {
		return err
	}
	return timed(func(i int) error { return k.ReadFloor(buf.Add(int64(i)%copies*bytes), bytes, sink) }, int(copies))
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

// timeGraphs captures one run of launch per input set as a CUDA graph and
// times the replays as timeLaunches times direct launches.
func timeGraphs(k *cuda.Kernels, launch func(st kvSet) error, sets []kvSet, iters int) ([]float64, error) {
	d := k.D
	graphs := make([]*cuda.Graph, len(sets))
	defer func() {
		for _, g := range graphs {
			if g != nil {
				_ = g.Destroy()
			}
		}
	}()
	for i := range sets {
		if err := d.BeginCapture(); err != nil {
			return nil, err
		}
		lerr := launch(sets[i])
		g, err := d.EndCapture()
		if lerr != nil {
			if g != nil {
				_ = g.Destroy()
			}
			return nil, lerr
		}
		if err != nil {
			return nil, err
		}
		graphs[i] = g
	}
	return timeLaunches(k, func(i int) error { return graphs[i%len(graphs)].Launch() }, len(sets), iters)
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

// checkCell compares the output of the last launch on st with float64
// references on the first and last KV heads, and each policy's own choice:
// Quest's and the oracle's selections against a brute-force top-K of their
// scores, H2O's and TOVA's token scores against the reference probabilities
// and their eviction against the lowest of those scores. It returns the
// report and whether it passed.
func checkCell(k *cuda.Kernels, st kvSet, impl kernelStep, page int) (string, bool, error) {
	d := k.D
	var s cuda.Shape
	switch a := impl.(type) {
	case *cuda.Dense:
		s = a.S
	case *cuda.Quest:
		s = a.S
	case *cuda.Evicting:
		s = a.S
	case *cuda.Oracle:
		s = a.S
	}
	D, G, n := s.HeadDim, s.Group(), s.Tokens
	q := make([]uint16, s.Heads*D)
	if err := cuda.Download(d, q, st.q); err != nil {
		return "", false, err
	}
	out := make([]float32, s.Heads*D)
	if err := cuda.Download(d, out, st.out); err != nil {
		return "", false, err
	}
	headKV := func(p cuda.Ptr, h int) ([]uint16, error) {
		x := make([]uint16, n*D)
		return x, cuda.Download(d, x, p.Add(int64(h)*int64(n*D)*2))
	}
	kvHeads := []int{0}
	if s.KVHeads > 1 {
		kvHeads = append(kvHeads, s.KVHeads-1)
	}
	worst := 0.0
	choiceOK := true
	var extra string
	for _, h := range kvHeads {
		K, err := headKV(st.K, h)
		if err != nil {
			return "", false, err
		}
		V, err := headKV(st.V, h)
		if err != nil {
			return "", false, err
		}
		qg, og := q[h*G*D:(h+1)*G*D], out[h*G*D:(h+1)*G*D]
		switch a := impl.(type) {
		case *cuda.Dense:
			worst = math.Max(worst, cuda.RelErr(og, cuda.RefDecode(qg, K, V, D, nil)))
		case *cuda.Evicting:
			worst = math.Max(worst, cuda.RelErr(og, cuda.RefDecode(qg, K, V, D, nil)))
			ok, msg, err := checkEvicting(a, h, cuda.RefProbs(qg, K, D))
			if err != nil {
				return "", false, err
			}
			choiceOK = choiceOK && ok
			extra = msg
		case *cuda.Oracle:
			scores, sel, err := choices(a)
			if err != nil {
				return "", false, err
			}
			for g := range G {
				r := h*G + g
				if !slices.Equal(sel[r], cuda.TopK(scores[r], a.Select)) {
					choiceOK = false
				}
				toks := make([]int, len(sel[r]))
				for i, t := range sel[r] {
					toks[i] = int(t)
				}
				worst = math.Max(worst, cuda.RelErr(out[r*D:(r+1)*D], cuda.RefDecode(q[r*D:(r+1)*D], K, V, D, toks)))
			}
		case *cuda.Quest:
			scores, sel, err := choices(a)
			if err != nil {
				return "", false, err
			}
			rows := []int{h}
			if a.PerHead {
				rows = rows[:0]
				for g := range G {
					rows = append(rows, h*G+g)
				}
			}
			for _, r := range rows {
				if !slices.Equal(sel[r], cuda.TopK(scores[r], a.Select)) {
					choiceOK = false
				}
				qh, oh := qg, og
				if a.PerHead {
					qh, oh = q[r*D:(r+1)*D], out[r*D:(r+1)*D]
				}
				ref := cuda.RefDecode(qh, K, V, D, cuda.PageTokens(sel[r], page, n))
				worst = math.Max(worst, cuda.RelErr(oh, ref))
			}
		}
	}
	ok := worst < 1e-3 && choiceOK
	msg := fmt.Sprintf("relerr=%.1e", worst)
	switch impl.(type) {
	case *cuda.Quest, *cuda.Oracle:
		if choiceOK {
			msg += " sel=ok"
		} else {
			msg += " sel=MISMATCH"
		}
	case *cuda.Evicting:
		msg += " " + extra
	}
	if !ok {
		msg += " FAIL"
	}
	return msg, ok, nil
}

// selecting is a step that scores candidates and selects the best of them
// per row (Quest's pages, the oracle's tokens).
type selecting interface {
	Scores() ([][]float32, error)
	Selection() ([][]int32, error)
}

// choices downloads the scores and the selection of a's last launch.
func choices(a selecting) ([][]float32, [][]int32, error) {
	scores, err := a.Scores()
	if err != nil {
		return nil, nil, err
	}
	sel, err := a.Selection()
	return scores, sel, err
}

// checkEvicting compares KV head h's token scores after one launch with the
// reference probabilities of its query heads (probs [G][n]), and (H2O) its
// eviction with the lowest score outside the recent window.
func checkEvicting(a *cuda.Evicting, h int, probs [][]float64) (bool, string, error) {
	scores, err := a.Scores()
	if err != nil {
		return false, "", err
	}
	ev, err := a.Evicted()
	if err != nil {
		return false, "", err
	}
	n := a.S.Tokens
	ref := make([]float64, n)
	for _, p := range probs {
		for i, x := range p {
			ref[i] += x
		}
	}
	worst := 0.0
	for i, x := range ref {
		worst = math.Max(worst, math.Abs(float64(scores[h][i])-x))
	}
	ok := worst < 1e-5
	if !a.TOVA {
		lim := n - a.Recent
		e := int(ev[h])
		ok = ok && e == cuda.ArgMin(scores[h], lim)
		if lim > 0 && e >= 0 {
			ok = ok && ref[e]-ref[cuda.ArgMin(ref, lim)] <= 1e-6
		}
	} else {
		// The lowest sum over every KV head, added in the kernel's order.
		sum := make([]float32, n)
		for _, row := range scores {
			for i, x := range row {
				sum[i] += x
			}
		}
		ok = ok && int(ev[0]) == cuda.ArgMin(sum, n)
	}
	if !ok {
		return false, fmt.Sprintf("scores=%.0e evict=MISMATCH", worst), nil
	}
	return true, fmt.Sprintf("scores=%.0e evict=ok", worst), nil
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
