package cuda

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"

	kernelsrc "github.com/kvbench/kvbench/cuda"
)

// KernelOptions are the NVRTC options kvbench's kernels are compiled with,
// besides the architecture: $KVBENCH_NVRTC_OPTS (space-separated) when set,
// else -lineinfo (for compute-sanitizer's reports). NVRTC's default dialect
// (C++17 since CUDA 12) is used.
func KernelOptions() []string {
	if s, ok := os.LookupEnv("KVBENCH_NVRTC_OPTS"); ok {
		return strings.Fields(s)
	}
	return []string{"-lineinfo"}
}

// Kernels is kvbench's kernel module (package kvbench/cuda's sources)
// compiled and loaded on one device.
type Kernels struct {
	D   *Device
	Mod *Module

	mu  sync.Mutex
	fns map[string]*Function
}

// LoadKernels compiles (or takes from the cache) and loads the kernels.
func LoadKernels(d *Device) (*Kernels, error) {
	m, err := d.Load("kvbench.cu", kernelsrc.Source(), KernelOptions())
	if err != nil {
		return nil, err
	}
	return &Kernels{D: d, Mod: m, fns: map[string]*Function{}}, nil
}

// Func returns the kernel name, looked up once.
func (k *Kernels) Func(name string) (*Function, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if f, ok := k.fns[name]; ok {
		return f, nil
	}
	f, err := k.Mod.Function(name)
	if err != nil {
		return nil, err
	}
	k.fns[name] = f
	return f, nil
}

func (k *Kernels) launch(name string, grid, block Dim3, smem int, args ...any) error {
	f, err := k.Func(name)
	if err != nil {
		return err
	}
	return f.Launch(grid, block, smem, args...)
}

// launchAfter launches a kernel that depends on the one before it
// (Function.LaunchAfter: it may start early and waits in pdl_wait).
func (k *Kernels) launchAfter(name string, grid, block Dim3, smem int, args ...any) error {
	f, err := k.Func(name)
	if err != nil {
		return err
	}
	return f.LaunchAfter(grid, block, smem, args...)
}

// FillRandomBF16 writes n pseudo-random bf16 values uniform in
// [-scale, scale) at p, determined by seed.
func (k *Kernels) FillRandomBF16(p Ptr, n int64, seed uint64, scale float32) error {
	blocks := int(min((n+255)/256, int64(k.D.SMs*32)))
	return k.launch("fill_bf16", Dim3{blocks, 1, 1}, Dim3{256, 1, 1}, 0, p, uint64(n), seed, scale)
}

// PageMinMax writes the per-page channel minimum and maximum of the keys K
// [kvHeads, tokens, headDim] into mn and mx [kvHeads, pages, headDim].
func (k *Kernels) PageMinMax(K Ptr, kvHeads, tokens, headDim, pageSize int, mn, mx Ptr) error {
	pages := (tokens + pageSize - 1) / pageSize
	return k.launch("page_minmax", Dim3{pages, kvHeads, 1}, Dim3{headDim, 1, 1}, 0,
		K, int32(tokens), int32(headDim), int32(pageSize), int32(pages), mn, mx)
}

// Spin enqueues a kernel that keeps the GPU busy for d nanoseconds.
func (k *Kernels) Spin(ns int64) error {
	return k.launch("spin", Dim3{1, 1, 1}, Dim3{1, 1, 1}, 0, uint64(ns))
}

// Shape is the shape of one decode step's attention: one query token of
// Heads query heads over Tokens cached tokens of KVHeads KV heads.
type Shape struct {
	Heads, KVHeads, HeadDim, Tokens int
}

// Group is the number of query heads per KV head.
func (s Shape) Group() int { return s.Heads / s.KVHeads }

// KVBytes is the size of the K and V caches.
func (s Shape) KVBytes() int64 { return 2 * int64(s.KVHeads) * int64(s.Tokens) * int64(s.HeadDim) * 2 }

func (s Shape) validate() error {
	switch {
	case s.HeadDim != 64 && s.HeadDim != 128:
		return fmt.Errorf("cuda: head dim %d: the kernels are built for 64 and 128", s.HeadDim)
	case s.KVHeads <= 0 || s.Heads <= 0 || s.Heads%s.KVHeads != 0:
		return fmt.Errorf("cuda: %d query heads are not a multiple of %d KV heads", s.Heads, s.KVHeads)
	case s.Group() != 1 && s.Group() != 2 && s.Group() != 4 && s.Group() != 8:
		return fmt.Errorf("cuda: GQA group %d: the kernels are built for 1, 2, 4 and 8", s.Group())
	case s.Tokens <= 0 || int64(s.Tokens)*int64(s.HeadDim) > math.MaxInt32:
		return fmt.Errorf("cuda: %d tokens out of range", s.Tokens)
	}
	return nil
}

const (
	attnThreads    = 128 // ATTN_NT in attention.cu
	combThreads    = 256 // COMB_NT
	mergeGroup     = 16  // MERGE_S
	questThreads   = 128 // QS_NT in quest.cu
	topkThreads    = 512 // TK_NT
	maxAttnSmemB   = 48 << 10
	minChunkTokens = 32
	bulkThreads    = 128 // BULK_NT in attention_bulk.cu
	bulkTile       = 16  // BULK_TT
	bulkMaxStages  = 8   // BULK_SMAX
)

// splitKV is one configured launch of attn_{dense,paged}_d{D}_g{G} and
// attn_combine_d{D}.
type splitKV struct {
	k         *Kernels
	fn, comb  string
	family    string // "split", "mma" or "bulk" (attention_bulk.cu)
	stages    int    // bulk: tiles in flight per warp
	threads   int    // per block
	g         int    // query heads per row
	rows      int
	rowsPerKV int
	chunk     int
	nchunks   int
	smem      int
	occ       int // resident blocks per multiprocessor
	partO     Ptr
	partML    Ptr
	counters  Ptr // [rows*(groups+1)] int32 for the fused merge, zero between launches; 0: separate combine
}

// fusedCombine reports whether the split-KV kernel with g query heads per
// row merges the partials itself (two levels of last-block merges) instead
// of a separate attn_combine launch. Default: fused for g = 1 (measured
// faster on the H100), separate for GQA rows (measured ~1 µs slower fused);
// KVBENCH_ATTN_COMBINE=fused or =separate forces one form.
func fusedCombine(g int) bool {
	switch os.Getenv("KVBENCH_ATTN_COMBINE") {
	case "fused":
		return true
	case "separate":
		return false
	}
	return g == 1
}

// useMMA reports whether rows of g query heads run on the tensor-core
// kernels (attn_mma_*, attention_mma.cu): with KVBENCH_ATTN_MMA=on, for GQA
// groups on sm_80 and later. They are not the default: on the H100 they
// measured 2-4 % slower than the CUDA-core attn_split kernels at 4K-128K
// tokens (docs/gpu-notes.md, fifth round), the loads, not the arithmetic,
// setting the pace of both.
func (k *Kernels) useMMA(g int) bool {
	return g >= 2 && g <= 8 && k.D.Major >= 8 && os.Getenv("KVBENCH_ATTN_MMA") == "on"
}

// bulkStages is the tiles each warp of the bulk-copy kernels keeps in
// flight: $KVBENCH_ATTN_STAGES (1-8), else 2.
func bulkStages() (int, error) {
	v, ok := os.LookupEnv("KVBENCH_ATTN_STAGES")
	if !ok {
		return 2, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > bulkMaxStages {
		return 0, fmt.Errorf("cuda: KVBENCH_ATTN_STAGES=%q: want 1 to %d", v, bulkMaxStages)
	}
	return n, nil
}

// useBulk reports whether rows run on the bulk-copy kernels (attn_bulk_*,
// attention_bulk.cu; sm_90 and later, compiled by NVRTC 12 or later): with
// KVBENCH_ATTN_BULK=on.
func (k *Kernels) useBulk() bool {
	major, _, _ := strings.Cut(k.Mod.Res.NVRTC, ".")
	v, _ := strconv.Atoi(major)
	return k.D.Major >= 9 && v >= 12 && os.Getenv("KVBENCH_ATTN_BULK") == "on"
}

// bulkSmem is the bulk-copy kernel's dynamic shared memory: each warp's
// ring of stages tiles of keys and values, each warp's tile scores and,
// when paged, the chunk's page ids.
func bulkSmem(g, chunk, headDim, pageSize, stages int) int {
	warps := bulkThreads / 32
	b := warps*stages*2*bulkTile*headDim*2 + warps*g*bulkTile*4
	if pageSize > 0 {
		b += 4 * (chunk/pageSize + 2)
	}
	return b
}

// pickBulkChunk is pickChunk for the bulk-copy kernels: chunks are whole
// tiles, and the ring sets the blocks per multiprocessor.
func (k *Kernels) pickBulkChunk(f *Function, g, rows, tokensPerRow, headDim, pageSize, stages int) (int, error) {
	chunk := bulkTile
	for range 4 {
		occ, err := f.Occupancy(bulkThreads, bulkSmem(g, chunk, headDim, pageSize, stages))
		if err != nil {
			return 0, err
		}
		if occ == 0 {
			return 0, fmt.Errorf("cuda: %s: %d stages do not fit in shared memory", f.Name, stages)
		}
		perRow := max(1, k.D.SMs*occ/rows)
		c := (tokensPerRow + perRow - 1) / perRow
		c = (c + bulkTile - 1) / bulkTile * bulkTile
		if c == chunk {
			break
		}
		chunk = c
	}
	return chunk, nil
}

// scorePad is the words the split-KV kernel pads each head's scores with:
// 8 for the tensor-core kernels (so that heads fall in different banks).
func scorePad(mma bool) int {
	if mma {
		return 8
	}
	return 0
}

// attnSmem is the dynamic shared memory of the split-KV kernel: the scores
// and, when paged, the chunk's page ids; later the warps' partial outputs.
func attnSmem(g, chunk, headDim, pageSize int, mma bool) int {
	words := g * (chunk + scorePad(mma))
	if pageSize > 0 {
		words += chunk/pageSize + 2
	}
	// attnThreads float4 for the fused merge's chunk-group reduction.
	return 4 * max(words, attnThreads/32*g*headDim, 4*attnThreads)
}

// pickChunk chooses the tokens per block: the grid should fill the GPU's
// resident block slots (multiprocessors times blocks per multiprocessor) in
// one wave, so that no multiprocessor gets a second round of blocks while
// others idle; chunks are multiples of 32 tokens and at least 64.
func (k *Kernels) pickChunk(f *Function, g, rows, tokensPerRow, headDim, pageSize int, mma bool) (int, error) {
	chunk := minChunkTokens
	for range 4 {
		occ, err := f.Occupancy(attnThreads, attnSmem(g, chunk, headDim, pageSize, mma))
		if err != nil {
			return 0, err
		}
		perRow := max(1, k.D.SMs*occ/rows)
		c := (tokensPerRow + perRow - 1) / perRow
		c = max(minChunkTokens, (c+31)/32*32)
		if c == chunk {
			break
		}
		chunk = c
	}
	maxChunk := ((maxAttnSmemB/4-64)/g - scorePad(mma)) / 32 * 32
	chunk = min(chunk, maxChunk)
	return chunk, nil
}

func (k *Kernels) newSplitKV(kind string, s Shape, g, rows, rowsPerKV, tokensPerRow, pageSize, chunk int) (*splitKV, error) {
	mma := k.useMMA(g)
	a := &splitKV{k: k, family: "split", threads: attnThreads, comb: fmt.Sprintf("attn_combine_d%d", s.HeadDim),
		g: g, rows: rows, rowsPerKV: rowsPerKV}
	prefix := "attn_"
	switch {
	case mma:
		prefix, a.family = "attn_mma_", "mma"
	case k.useBulk():
		prefix, a.family, a.threads = "attn_bulk_", "bulk", bulkThreads
	}
	a.fn = fmt.Sprintf("%s%s_d%d_g%d", prefix, kind, s.HeadDim, g)
	f, err := k.Func(a.fn)
	if err != nil {
		return nil, err
	}
	if _, err := k.Func(a.comb); err != nil {
		return nil, err
	}
	if a.family == "bulk" {
		err = a.sizeBulk(f, s, tokensPerRow, pageSize, chunk)
	} else {
		err = a.sizeSplit(f, s, tokensPerRow, pageSize, chunk, mma)
	}
	if err != nil {
		return nil, err
	}
	a.nchunks = (tokensPerRow + a.chunk - 1) / a.chunk
	// The fused merge keeps its group partials after the chunk partials and
	// has a counter per group and per row.
	parts, nctr := a.nchunks, 0
	if fusedCombine(g) {
		ngroups := (a.nchunks + mergeGroup - 1) / mergeGroup
		parts += ngroups
		nctr = rows * (ngroups + 1)
	}
	if a.partO, err = k.D.Alloc(int64(rows*parts*g*s.HeadDim) * 4); err != nil {
		return nil, err
	}
	if a.partML, err = k.D.Alloc(int64(rows*parts*g*2) * 4); err != nil {
		a.free()
		return nil, err
	}
	if fusedCombine(g) {
		if a.counters, err = k.D.Alloc(int64(nctr) * 4); err == nil {
			err = k.D.Memset32(a.counters, 0, int64(nctr))
		}
		if err != nil {
			a.free()
			return nil, err
		}
	}
	return a, nil
}

// sizeSplit sets the chunk (picked when chunk is 0), shared memory and
// occupancy of the split (CUDA-core or tensor-core) kernels.
func (a *splitKV) sizeSplit(f *Function, s Shape, tokensPerRow, pageSize, chunk int, mma bool) error {
	var err error
	if chunk <= 0 {
		if chunk, err = a.k.pickChunk(f, a.g, a.rows, tokensPerRow, s.HeadDim, pageSize, mma); err != nil {
			return err
		}
	}
	if chunk%32 != 0 {
		return fmt.Errorf("cuda: chunk %d is not a multiple of 32", chunk)
	}
	a.chunk = chunk
	a.smem = attnSmem(a.g, chunk, s.HeadDim, pageSize, mma)
	if a.smem > maxAttnSmemB {
		return fmt.Errorf("cuda: chunk %d: %d B of shared memory", chunk, a.smem)
	}
	a.occ, err = f.Occupancy(attnThreads, a.smem)
	return err
}

// sizeBulk is sizeSplit for the bulk-copy kernels, which first opt in to
// the device's largest shared memory per block.
func (a *splitKV) sizeBulk(f *Function, s Shape, tokensPerRow, pageSize, chunk int) error {
	var err error
	if a.stages, err = bulkStages(); err != nil {
		return err
	}
	if err = f.AllowShared(a.k.D.SharedPerBlockOptin - f.Shared); err != nil {
		return err
	}
	if chunk <= 0 {
		if chunk, err = a.k.pickBulkChunk(f, a.g, a.rows, tokensPerRow, s.HeadDim, pageSize, a.stages); err != nil {
			return err
		}
	}
	if chunk%bulkTile != 0 {
		return fmt.Errorf("cuda: chunk %d is not a multiple of %d", chunk, bulkTile)
	}
	a.chunk = chunk
	a.smem = bulkSmem(a.g, chunk, s.HeadDim, pageSize, a.stages)
	if a.smem > a.k.D.SharedPerBlockOptin-f.Shared {
		return fmt.Errorf("cuda: chunk %d, %d stages: %d B of shared memory", chunk, a.stages, a.smem)
	}
	a.occ, err = f.Occupancy(bulkThreads, a.smem)
	return err
}

// scaleLog2 is the softmax scale times log2(e): the kernels' scores are in
// base 2.
func scaleLog2(headDim int) float32 { return float32(1 / math.Sqrt(float64(headDim)) * math.Log2E) }

// launch enqueues the attention; raw (0: none) receives the base-2 scores
// [rows*g, tokens of a row]. With after, the attention kernel depends on
// the kernel before it (it reads its page list); the combine always depends
// on the attention.
func (a *splitKV) launch(s Shape, q, K, V, pages Ptr, nsel, pageSize int, out, raw Ptr, after bool) error {
	launch := a.k.launch
	if after {
		launch = a.k.launchAfter
	}
	args := []any{q, K, V, pages, int32(s.Tokens), int32(nsel), int32(pageSize), int32(a.rowsPerKV), int32(a.chunk),
		scaleLog2(s.HeadDim), a.partO, a.partML, a.counters, out, raw}
	if a.family == "bulk" {
		args = append(args, int32(a.stages))
	}
	err := launch(a.fn, Dim3{a.nchunks, a.rows, 1}, Dim3{a.threads, 1, 1}, a.smem, args...)
	if err != nil || a.counters != 0 {
		return err
	}
	return a.k.launchAfter(a.comb, Dim3{a.g, a.rows, s.HeadDim / 32}, Dim3{combThreads, 1, 1}, 0, a.partO, a.partML, int32(a.nchunks), out)
}

func (a *splitKV) free() {
	for _, p := range []Ptr{a.partO, a.partML, a.counters} {
		if p != 0 {
			_ = a.k.D.Free(p)
		}
	}
}

// Plan describes a configured split-KV launch.
type Plan struct {
	Kernel    string // the split-KV kernel
	Chunk     int    // tokens per block
	Blocks    int    // blocks of the attention kernel
	Resident  int    // blocks resident per multiprocessor
	SharedMem int    // dynamic shared memory per block, bytes
}

func (a *splitKV) plan() Plan {
	return Plan{Kernel: a.fn, Chunk: a.chunk, Blocks: a.nchunks * a.rows, Resident: a.occ, SharedMem: a.smem}
}

// Dense is dense decode attention for one Shape: q [Heads, HeadDim] bf16, K
// and V [KVHeads, Tokens, HeadDim] bf16, out [Heads, HeadDim] float32.
type Dense struct {
	S Shape
	a *splitKV
}

// NewDense prepares dense attention for s; chunk is the tokens per block
// (0 picks one for the device).
func (k *Kernels) NewDense(s Shape, chunk int) (*Dense, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	a, err := k.newSplitKV("dense", s, s.Group(), s.KVHeads, 1, s.Tokens, 0, chunk)
	if err != nil {
		return nil, err
	}
	return &Dense{S: s, a: a}, nil
}

// Plan is the split of the work into blocks.
func (d *Dense) Plan() Plan { return d.a.plan() }

// Launch enqueues the attention (the split-KV kernel, then attn_combine
// unless the split-KV kernel merges; see fusedCombine).
func (d *Dense) Launch(q, K, V, out Ptr) error {
	return d.a.launch(d.S, q, K, V, 0, 0, 1, out, 0, false)
}

// Bytes is the memory the attention must read: K and V.
func (d *Dense) Bytes() int64 { return d.S.KVBytes() }

// Free releases the scratch memory.
func (d *Dense) Free() { d.a.free() }

// Quest is Quest attention for one Shape: page scoring from per-page key
// bounds, top-K page selection, and attention over the selected pages.
type Quest struct {
	S        Shape
	PageSize int
	Pages    int  // pages per KV head
	Select   int  // pages selected per row: min(budget pages, Pages)
	PerHead  bool // a selection per query head, else one per KV head's group
	ppb      int
	scores   Ptr // [rows, Pages] float32
	sel      Ptr // [rows, Select] int32
	a        *splitKV
	k        *Kernels
}

// NewQuest prepares Quest attention over pages of pageSize tokens that
// attends to budget tokens (rounded up to whole pages) per row. perHead
// selects per query head (Quest as published); otherwise each GQA group
// shares one selection, scored by the maximum of its heads' bounds.
func (k *Kernels) NewQuest(s Shape, pageSize, budget int, perHead bool, chunk int) (*Quest, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	if pageSize <= 0 || budget <= 0 {
		return nil, fmt.Errorf("cuda: quest page size %d, budget %d", pageSize, budget)
	}
	q := &Quest{S: s, PageSize: pageSize, PerHead: perHead, k: k}
	q.Pages = (s.Tokens + pageSize - 1) / pageSize
	if q.topkSmem() > 48<<10 {
		return nil, fmt.Errorf("cuda: quest: %d pages per head; the selection holds at most 11900", q.Pages)
	}
	q.Select = min((budget+pageSize-1)/pageSize, q.Pages)
	sf, err := k.Func(q.scoreFn())
	if err != nil {
		return nil, err
	}
	// Pages per scoring block: one wave of resident blocks, like pickChunk.
	occ, err := sf.Occupancy(questThreads, 0)
	if err != nil {
		return nil, err
	}
	blocksPerHead := max(1, k.D.SMs*max(occ, 1)/s.KVHeads)
	q.ppb = max(32, ((q.Pages+blocksPerHead-1)/blocksPerHead+31)/32*32)
	rows, g, rowsPerKV := s.KVHeads, s.Group(), 1
	if perHead {
		rows, g, rowsPerKV = s.Heads, 1, s.Group()
	}
	alloc := func(p *Ptr, bytes int64) {
		if err == nil {
			*p, err = k.D.Alloc(bytes)
		}
	}
	alloc(&q.scores, int64(rows*q.Pages)*4)
	alloc(&q.sel, int64(rows*q.Select)*4)
	if err == nil {
		_, err = k.Func("quest_topk")
	}
	if err == nil {
		q.a, err = k.newSplitKV("paged", s, g, rows, rowsPerKV, q.Select*pageSize, pageSize, chunk)
	}
	if err != nil {
		q.Free()
		return nil, err
	}
	return q, nil
}

func (q *Quest) scoreFn() string { return fmt.Sprintf("quest_score_d%d_g%d", q.S.HeadDim, q.S.Group()) }

// topkSmem is quest_topk's shared memory: the keys, padded (kpad).
func (q *Quest) topkSmem() int { return 4 * (q.Pages + q.Pages/32 + 1) }

// Rows is the number of selections: Heads when PerHead, else KVHeads.
func (q *Quest) Rows() int { return q.a.rows }

// Plan is the split of the attention over the selected pages into blocks.
func (q *Quest) Plan() Plan { return q.a.plan() }

// Launch enqueues the scoring and the selection (two kernels) and the
// attention over the selected pages (one or two kernels, see fusedCombine). mn and mx are the page key bounds
// [KVHeads, Pages, HeadDim] bf16.
func (q *Quest) Launch(qp, K, V, mn, mx, out Ptr) error {
	if err := q.LaunchSelect(qp, mn, mx); err != nil {
		return err
	}
	return q.LaunchAttend(qp, K, V, out)
}

// LaunchSelect enqueues the page scoring and top-K selection alone.
func (q *Quest) LaunchSelect(qp, mn, mx Ptr) error {
	perHead := int32(0)
	if q.PerHead {
		perHead = 1
	}
	err := q.k.launch(q.scoreFn(), Dim3{(q.Pages + q.ppb - 1) / q.ppb, q.S.KVHeads, 1}, Dim3{questThreads, 1, 1}, 0,
		qp, mn, mx, int32(q.Pages), int32(q.ppb), perHead, q.scores)
	if err != nil {
		return err
	}
	return q.k.launchAfter("quest_topk", Dim3{q.Rows(), 1, 1}, Dim3{topkThreads, 1, 1}, q.topkSmem(),
		q.scores, int32(q.Pages), int32(q.Select), q.sel)
}

// LaunchAttend enqueues the attention over the pages the last LaunchSelect
// chose.
func (q *Quest) LaunchAttend(qp, K, V, out Ptr) error {
	return q.a.launch(q.S, qp, K, V, q.sel, q.Select, q.PageSize, out, 0, true)
}

// MetaBytes is the size of the page bounds read by the scoring.
func (q *Quest) MetaBytes() int64 {
	return 2 * int64(q.S.KVHeads) * int64(q.Pages) * int64(q.S.HeadDim) * 2
}

// Bytes is the memory the step reads: the page bounds and, for each row,
// the K and V of its selected pages.
func (q *Quest) Bytes() int64 {
	return q.MetaBytes() + 2*int64(q.Rows())*int64(q.Select)*int64(q.PageSize)*int64(q.S.HeadDim)*2
}

// Scores downloads the page scores of the last launch: [Rows()][Pages].
func (q *Quest) Scores() ([][]float32, error) {
	return downloadRows[float32](q.k.D, q.scores, q.Rows(), q.Pages)
}

// Selection downloads the selected pages of the last launch, ascending:
// [Rows()][Select].
func (q *Quest) Selection() ([][]int32, error) {
	return downloadRows[int32](q.k.D, q.sel, q.Rows(), q.Select)
}

// Free releases the scratch memory.
func (q *Quest) Free() {
	for _, p := range []Ptr{q.scores, q.sel} {
		if p != 0 {
			_ = q.k.D.Free(p)
		}
	}
	if q.a != nil {
		q.a.free()
	}
}
