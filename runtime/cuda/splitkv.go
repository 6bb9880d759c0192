package cuda

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
)

// The split-KV attention kernels come in families that compute the same
// thing (every family is tested against the same references):
//
//   - split (attention.cu, the default): CUDA cores, loads in registers.
//   - mma (attention_mma.cu): tensor cores for GQA rows.
//   - async (attention_async.cu): split's passes with the loads staged in
//     shared memory by cp.async (sm_80 and later).
//   - bulk (attention_bulk.cu): per-warp rings filled by bulk copies and an
//     online softmax (sm_90 and later, NVRTC 12 and later).
//
// $KVBENCH_ATTN_KERNEL picks one; a family a row cannot use falls back to
// split.
const attnKernelEnv = "KVBENCH_ATTN_KERNEL"

// attnFamily is the family for rows of g query heads on this device.
func (k *Kernels) attnFamily(g int) (string, error) {
	switch v := os.Getenv(attnKernelEnv); v {
	case "", "split":
		return "split", nil
	case "mma":
		if g >= 2 && k.D.Major >= 8 {
			return "mma", nil
		}
		return "split", nil
	case "async":
		if k.D.Major >= 8 {
			return "async", nil
		}
		return "split", nil
	case "bulk":
		major, _, _ := strings.Cut(k.Mod.Res.NVRTC, ".")
		if v, _ := strconv.Atoi(major); k.D.Major >= 9 && v >= 12 {
			return "bulk", nil
		}
		return "split", nil
	default:
		return "", fmt.Errorf("cuda: %s=%q: want split, mma, async or bulk", attnKernelEnv, v)
	}
}

// asyncRing is the async kernels' ring: $KVBENCH_ATTN_RING ("P,U") or the
// kernels' defaults.
func asyncRing() (p, u int, err error) {
	v, ok := os.LookupEnv("KVBENCH_ATTN_RING")
	if !ok {
		return defaultRingP, defaultRingU, nil
	}
	ps, us, _ := strings.Cut(v, ",")
	p, err1 := strconv.Atoi(ps)
	u, err2 := strconv.Atoi(us)
	if err1 != nil || err2 != nil || p < 2 || p > 8 || u < 1 || u > 8 {
		return 0, 0, fmt.Errorf("cuda: KVBENCH_ATTN_RING=%q: want P,U with P in 2..8 and U in 1..8", v)
	}
	return p, u, nil
}

// bulkStages is the tiles each warp of the bulk kernels keeps in flight:
// $KVBENCH_ATTN_STAGES (1-8), else 2.
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

// splitKV is one configured launch of a split-KV kernel
// (attn[_family]_{dense,paged}_d{D}_g{G}) and, unless it merges its
// partials itself, attn_combine_d{D}.
type splitKV struct {
	k         *Kernels
	fn, comb  string
	family    string
	threads   int // per block
	step      int // chunks are multiples of step tokens
	maxSmem   int // the most dynamic shared memory a block may have
	smemFor   func(chunk int) int
	extra     []any // launch arguments after the common ones
	g         int   // query heads per row
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

// scorePad is the words the split-KV kernel pads each head's scores with:
// 8 for the tensor-core kernels (so that heads fall in different banks).
func scorePad(mma bool) int {
	if mma {
		return 8
	}
	return 0
}

// pageIDWords is the page ids a paged chunk stages in shared memory.
func pageIDWords(chunk, pageSize int) int {
	if pageSize <= 0 {
		return 0
	}
	return chunk/pageSize + 2
}

// configure sets the family's kernel name, block, chunk step and shared
// memory for rows of the shape's head dim.
func (a *splitKV) configure(kind string, s Shape, pageSize int) error {
	D, g := s.HeadDim, a.g
	// Every family's end: the warps' partial outputs [warps][g][D] float and
	// the fused merge's threads float4, over whatever came before.
	finish := func(threads int) int { return max(4*threads/32*g*D, 16*threads) }
	a.threads, a.step, a.maxSmem = attnThreads, minChunkTokens, maxAttnSmemB
	prefix := "attn_"
	switch a.family {
	case "split", "mma":
		mma := a.family == "mma"
		if mma {
			prefix = "attn_mma_"
		}
		a.smemFor = func(chunk int) int {
			return max(4*(g*(chunk+scorePad(mma))+pageIDWords(chunk, pageSize)), finish(attnThreads))
		}
	case "async":
		prefix = "attn_async_"
		a.maxSmem = a.k.D.SharedPerBlockOptin
		ring := 16 * a.k.ringP * a.k.ringU * attnThreads
		a.smemFor = func(chunk int) int {
			return max(ring+4*(g*chunk+pageIDWords(chunk, pageSize)), finish(attnThreads))
		}
	case "bulk":
		prefix, a.threads, a.step = "attn_bulk_", bulkThreads, bulkTile
		a.maxSmem = a.k.D.SharedPerBlockOptin
		stages, err := bulkStages()
		if err != nil {
			return err
		}
		warps := bulkThreads / 32
		a.smemFor = func(chunk int) int {
			return warps*stages*2*bulkTile*D*2 + warps*g*bulkTile*4 + 4*pageIDWords(chunk, pageSize)
		}
		a.extra = []any{int32(stages)}
	}
	a.fn = fmt.Sprintf("%s%s_d%d_g%d", prefix, kind, D, g)
	return nil
}

// size sets the chunk (picked when chunk is 0), the shared memory and the
// occupancy. A picked chunk fills the GPU's resident block slots
// (multiprocessors times blocks per multiprocessor) in one wave, so that no
// multiprocessor gets a second round of blocks while others idle, within
// the family's shared memory.
func (a *splitKV) size(f *Function, tokensPerRow, chunk int) error {
	// Static and dynamic shared memory share the limit; above 48 KiB a
	// kernel opts in.
	optIn := a.maxSmem > maxAttnSmemB
	a.maxSmem -= f.Shared
	if optIn {
		if err := f.AllowShared(a.maxSmem); err != nil {
			return err
		}
	}
	if chunk <= 0 {
		chunk = a.step
		for range 4 {
			occ, err := f.Occupancy(a.threads, a.smemFor(chunk))
			if err != nil {
				return err
			}
			perRow := max(1, a.k.D.SMs*max(occ, 1)/a.rows)
			c := (tokensPerRow + perRow - 1) / perRow
			c = max(a.step, (c+a.step-1)/a.step*a.step)
			if c == chunk {
				break
			}
			chunk = c
		}
		for chunk > a.step && a.smemFor(chunk) > a.maxSmem {
			chunk -= a.step
		}
	}
	if chunk%a.step != 0 {
		return fmt.Errorf("cuda: %s: chunk %d is not a multiple of %d", a.fn, chunk, a.step)
	}
	a.chunk = chunk
	a.smem = a.smemFor(chunk)
	if a.smem > a.maxSmem {
		return fmt.Errorf("cuda: %s: chunk %d: %d B of shared memory (at most %d)", a.fn, chunk, a.smem, a.maxSmem)
	}
	var err error
	if a.occ, err = f.Occupancy(a.threads, a.smem); err == nil && a.occ == 0 {
		err = fmt.Errorf("cuda: %s: %d B of shared memory: no block fits on a multiprocessor", a.fn, a.smem)
	}
	return err
}

func (k *Kernels) newSplitKV(kind string, s Shape, g, rows, rowsPerKV, tokensPerRow, pageSize, chunk int) (*splitKV, error) {
	family, err := k.attnFamily(g)
	if err != nil {
		return nil, err
	}
	a := &splitKV{k: k, family: family, comb: fmt.Sprintf("attn_combine_d%d", s.HeadDim), g: g, rows: rows, rowsPerKV: rowsPerKV}
	if err := a.configure(kind, s, pageSize); err != nil {
		return nil, err
	}
	f, err := k.Func(a.fn)
	if err != nil {
		return nil, err
	}
	if _, err := k.Func(a.comb); err != nil {
		return nil, err
	}
	if err := a.size(f, tokensPerRow, chunk); err != nil {
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
	args := append([]any{q, K, V, pages, int32(s.Tokens), int32(nsel), int32(pageSize), int32(a.rowsPerKV), int32(a.chunk),
		scaleLog2(s.HeadDim), a.partO, a.partML, a.counters, out, raw}, a.extra...)
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
