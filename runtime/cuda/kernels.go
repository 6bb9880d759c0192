package cuda

import (
	"fmt"
	"math"
	"os"
	"strings"
	"sync"

	kernelsrc "github.com/kvbench/kvbench/cuda"
)

// KernelOptions are the NVRTC options kvbench's kernels are compiled with,
// besides the architecture: $KVBENCH_NVRTC_OPTS (space-separated) when
// set, else -lineinfo (for compute-sanitizer's reports); the trace's
// build; the tensor-core decode kernels' stages where they are not the
// default (tcStages). NVRTC's default dialect (C++17 since CUDA 12) is used.
func KernelOptions() []string {
	opts := []string{"-lineinfo"}
	if s, ok := os.LookupEnv("KVBENCH_NVRTC_OPTS"); ok {
		opts = strings.Fields(s)
	}
	if traceBuild() {
		opts = append(opts, "-DKVB_TRACE=1")
	}
	if n, err := tcStages(); err == nil && n != tcStagesDefault {
		opts = append(opts, fmt.Sprintf("-DTC_ST=%d", n))
	}
	return opts
}

// Kernels is kvbench's kernel module (package kvbench/cuda's sources)
// compiled and loaded on one device.
type Kernels struct {
	D    *Device
	Mods Modules // the source's parts (Device.LoadParts)

	mu  sync.Mutex
	fns map[string]*Function
}

// LoadKernels compiles (or takes from the cache) and loads the kernels.
func LoadKernels(d *Device) (*Kernels, error) {
	m, err := d.LoadParts("kvbench.cu", kernelsrc.Source(), KernelOptions(), kernelsrc.Parts)
	if err != nil {
		return nil, err
	}
	return &Kernels{D: d, Mods: m, fns: map[string]*Function{}}, nil
}

// Func returns the kernel name, looked up once.
func (k *Kernels) Func(name string) (*Function, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if f, ok := k.fns[name]; ok {
		return f, nil
	}
	f, err := k.Mods.Function(name)
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

// Validate says why the kernels cannot take shape s (nil: they can).
func (s Shape) Validate() error {
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
	minChunkTokens = ChunkTokens
)

// ChunkTokens is the unit of the split-KV kernels' chunks: a chunk asked
// for (Kernels.NewDense and the others) is a multiple of it.
const ChunkTokens = 32

// Dense is dense decode attention for one Shape: q [Heads, HeadDim] bf16, K
// and V [KVHeads, Tokens, HeadDim] bf16, out [Heads, HeadDim] float32.
type Dense struct {
	S Shape
	a *splitKV
}

// NewDense prepares dense attention for s; chunk is the tokens per block
// (0 picks one for the device).
func (k *Kernels) NewDense(s Shape, chunk int) (*Dense, error) {
	if err := s.Validate(); err != nil {
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
	if err := s.Validate(); err != nil {
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
