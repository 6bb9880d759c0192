package main

import (
	"errors"
	"fmt"
	"io"
	"math"
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
	register("kernels", "time the runtime's decode attention step (Backend.Attend) under each policy against copy bandwidth, or a prompt chunk's (--rows)", cmdKernels)
}

// kernelPolicyNames lists the policies `kvbench kernels` can time: every
// registered policy.
func kernelPolicyNames() string { return strings.Join(policies.Names(), ", ") }

func cmdKernels(stdout, stderr io.Writer, args []string) error {
	fs := newFlags("kernels", "kernels [--lengths N,...] [--heads H/KV,...] [--dim D] [--policies full,quest,...|all] [--budget T] [--page P] [--kv-page P] [--iters N] [--rows R] [--streams N] [--floor] [--trace]", stderr)
	lengthsF := fs.String("lengths", "4096,16384,32768,65536,131072", "prompt tokens cached before the timed decode step, comma-separated (the step appends its token and attends one key more: N+1)")
	headsF := fs.String("heads", "32/8", "query heads / KV heads, comma-separated (32/8,32/32)")
	dim := fs.Int("dim", 128, "head dimension (64 or 128)")
	policiesF := fs.String("policies", "full,quest", "policies, comma-separated, or all: "+kernelPolicyNames())
	budget := fs.Int("budget", 2048, "the policies' budget parameter: tokens held or attended per head (Quest: rounded up to pages)")
	page := fs.Int("page", 16, "Quest: tokens per page")
	kvPage := fs.Int("kv-page", runtime.DefaultPageSize, "token slots of a KV cache page")
	iters := fs.Int("iters", 200, "timed runs per cell (the median is reported)")
	rowsF := fs.Int("rows", 1, "query rows of the timed call: 1, the decode step after the prompt; more, the prompt's last chunk of that many rows (at most N) over the N-token prompt, attended as the runner's last prefill pass attends it under each policy's hook, before the policy compresses (8192: the suites' chunk on a GPU; rows then report GFLOP and TFLOP/s, as bench/sdpa.py --rows does)")
	chunk := fs.Int("chunk", 0, "tokens per block of the split-KV kernels (0: chosen for the device)")
	check := fs.Bool("check", true, "compare the output (and accumulated probabilities) with a float64 CPU reference (two KV heads)")
	seed := fs.Uint64("seed", 1, "random seed of the synthetic Q/K/V")
	device := fs.Int("device", 0, "CUDA device ordinal")
	split := fs.Bool("split", false, "selecting policies (Quest, the oracle): also time the selection, the policy's step before attention (rows marked /sel)")
	verbose := fs.Bool("v", false, "print each cell's launch plan and cache")
	graph := fs.Bool("graph", false, "replay each step as a CUDA graph (refused: the runtime's attention uploads per-call metadata)")
	floor := fs.Bool("floor", false, "also time a kernel that only reads as many bytes as each step moves (rows marked /floor), and the same in the step's split rows and chunks with each merge (/floor-combine, /floor-fused)")
	streams := fs.Int("streams", 1, "streams whose decode steps are timed together as one batch step's attention (Backend.AttendBatch), each over its own cache under its own policy")
	backToBack := fs.Int("back-to-back", 1, "runs timed back to back behind one spin, each between its own timestamps, as bench/sdpa.py times SDPA (50 there); 1: each run alone behind a spin")
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
	if *backToBack < 1 || *backToBack > 1000 {
		return fmt.Errorf("kernels: --back-to-back %d: want 1 to 1000 runs", *backToBack)
	}
	if *rowsF < 1 {
		return fmt.Errorf("kernels: --rows %d: want 1 (a decode step) or more (a prompt chunk)", *rowsF)
	}
	if *rowsF > 1 && (*streams > 1 || *split || *floor || *trace) {
		return fmt.Errorf("kernels: --rows %d: --streams, --split, --floor and --trace time decode steps", *rowsF)
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
	if *rowsF > 1 {
		timed = fmt.Sprintf("Backend.Attend of the prompt's last %d rows (fewer where N is smaller: the rows column) over its N keys, causal", *rowsF)
	}
	if *streams > 1 {
		timed = fmt.Sprintf("Backend.AttendBatch of %d streams' decode steps (the heads column's NxH/KV), each stream's cache its own", *streams)
	}
	if *backToBack > 1 {
		timed += fmt.Sprintf(", %d runs back to back behind one spin", *backToBack)
	}
	tokensN := "tokens N: the decode step after an N-token prompt, over N+1 keys"
	header := tableHeader
	if *rowsF > 1 {
		tokensN = "tokens N: an N-token prompt; GFLOP: 4 x dim x query heads x the query-key pairs the rows see"
		header = rowsHeader
	}
	fmt.Fprintf(stdout, "# timed: %s (device time between events, its metadata included, passed by value or uploaded) on a bf16 cache of pages of %d tokens built through runtime.KVCache and each policy's hooks; %s\n", timed, *kvPage, tokensN)
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
	io.WriteString(stdout, header+"\n")
	var failed []string
	o := cellOpts{rows: *rowsF, page: *page, kvPage: *kvPage, budget: *budget, iters: *iters, batch: *backToBack, streams: *streams, check: *check, split: *split, floor: *floor, trace: *trace, seed: *seed, bw: bw}
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

// tableHeader names the columns that bench/sdpa.py prints too; rowsHeader
// those of prompt chunks (--rows), bench/sdpa.py's under its --rows.
const (
	tableHeader = "impl     policy        heads   tokens  median_us    min_us   MB_moved     GB/s  %copy  check"
	rowsHeader  = "impl     policy        heads   tokens     rows  median_us    min_us    GFLOP  TFLOP/s  check"
)

type kernelRow struct {
	policy       string
	heads        string
	tokens       int
	rows         int     // query rows of the timed call (more than 1: a prompt chunk, timed in FLOP/s)
	flops        float64 // the call's attention FLOPs (rows > 1)
	median, best float64 // microseconds
	bytes        int64
	bw           float64 // copy bandwidth, bytes/s
	check        string
	bad          bool
	plan         string
	trace        string // the traced step's summary (--trace)
}

func (r kernelRow) String() string {
	if r.rows > 1 {
		return fmt.Sprintf("%-8s %-12s %6s %8d %8d %10.1f %9.1f %8.2f %8.1f  %s",
			"kvbench", r.policy, r.heads, r.tokens, r.rows, r.median, r.best, r.flops/1e9, r.flops/(r.median*1e-6)/1e12, r.check)
	}
	gbs := float64(r.bytes) / (r.median * 1e-6) / 1e9
	return fmt.Sprintf("%-8s %-12s %6s %8d %10.1f %9.1f %10.1f %8.0f %6.1f  %s",
		"kvbench", r.policy, r.heads, r.tokens, r.median, r.best, float64(r.bytes)/1e6, gbs, 100*gbs*1e9/r.bw, r.check)
}

func benchCell(b *cuda.Backend, k *cuda.Kernels, s cell, names []string, o cellOpts) ([]kernelRow, error) {
	d, err := newCellData(b, s, o.rows, o.seed)
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
	row := kernelRow{policy: name, heads: heads, tokens: s.tokens, rows: d.rows, bw: o.bw, check: "-", bytes: u0.bytes()}
	if d.rows > 1 {
		row.flops = first.flops() // a prompt chunk's rows report FLOP/s
	}
	if o.check {
		msg, ok := checkUnit(b, d, u0)
		row.check, row.bad = msg, !ok
	}
	samples, err := timeRuns(b, k, len(units), o.iters, o.batch, func(i int) { units[i].run(b) })
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
		samples, err := timeRuns(b, k, len(units), o.iters, o.batch, func(i int) {
			st := units[i].steps[0]
			st.p.BeforeAttend(0, &st.a)
			b.FlushQuest() // Quest's scores and choice are queued until the attention: launched here
		})
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
// returns the milliseconds of each run. With batch > 1 (--back-to-back) the
// runs go batch at a time behind one spin, each between its own
// timestamps, one run's end the next one's start: as bench/sdpa.py times
// SDPA (50 calls behind one sleep), so that a run starts as soon as the one
// before it ends, not after the spin's end.
func timeRuns(b *cuda.Backend, k *cuda.Kernels, n, iters, batch int, run func(i int)) ([]float64, error) {
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
	batch = max(batch, 1)
	spin := max(200*time.Microsecond, 3*host*time.Duration(batch))
	out := make([]float64, 0, iters)
	marks := make([]int, 0, batch+1)
	for retries := 0; len(out) < iters; {
		m := min(batch, iters-len(out))
		b.Read(tmp, sync, 0) // the device idle and the staging arena free
		if err := k.Spin(spin.Nanoseconds()); err != nil {
			return nil, err
		}
		t0 := time.Now()
		marks = append(marks[:0], b.Mark())
		for j := range m {
			run((len(out) + j) % n)
			marks = append(marks, b.Mark())
		}
		if queued := time.Since(t0); m > 1 && queued > spin*8/10 && retries < 4 {
			// The host queued the runs slower than the spin covered: the
			// device may have waited between them. Again, with a longer spin.
			spin, retries = 2*queued, retries+1
			b.ClearMarks()
			continue
		}
		for j := range m {
			out = append(out, float64(b.Elapsed(marks[j], marks[j+1]))/1e6)
		}
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
	ms, err := timeRuns(b, k, 1, 1, 1, func(int) { b.Attend(&st.a) })
	if err != nil {
		return "", err
	}
	t, err := b.AttnTrace()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s; events %.2f (with the trace's zeroing)", t.Summary(), ms[0]*1e3), nil
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
