package cuda

import (
	"fmt"
	"math"
	"os"
)

// The split-KV attention kernels come in two families that compute the
// same thing (both are tested against the same references):
//
//   - split (attention.cu, the default): CUDA cores, loads in registers.
//   - mma (attention_mma.cu): tensor cores for GQA rows, sm_80 and later.
//     Not the default: on the H100 it measured 2-4 % slower than split at
//     4K-128K tokens (docs/gpu-notes.md, fifth round), the loads, not the
//     arithmetic, setting the pace of both.
//
// $KVBENCH_ATTN_KERNEL picks one; rows that mma cannot take run split.
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
	default:
		return "", fmt.Errorf("cuda: %s=%q: want split or mma", attnKernelEnv, v)
	}
}

// splitKV is one configured launch of a split-KV kernel
// (attn[_mma]_{dense,paged}_d{D}_g{G}) and, unless it merges its partials
// itself, attn_combine_d{D}.
type splitKV struct {
	k         *Kernels
	fn, comb  string
	family    string // "split" or "mma"
	smemFor   func(chunk int) int
	g         int // query heads per row
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

// configure sets the family's kernel name and shared memory.
func (a *splitKV) configure(kind string, s Shape, pageSize int) {
	D, g, mma := s.HeadDim, a.g, a.family == "mma"
	prefix := "attn_"
	if mma {
		prefix = "attn_mma_"
	}
	a.fn = fmt.Sprintf("%s%s_d%d_g%d", prefix, kind, D, g)
	// The scores and (paged) the chunk's page ids; at the end the warps'
	// partial outputs [warps][g][D] float and the fused merge's threads
	// float4 over them.
	a.smemFor = func(chunk int) int {
		words := g*(chunk+scorePad(mma)) + pageIDWords(chunk, pageSize)
		return max(4*words, 4*attnThreads/32*g*D, 16*attnThreads)
	}
}

// size sets the chunk (picked when chunk is 0), the shared memory and the
// occupancy. Chunks are multiples of minChunkTokens; a picked chunk is the
// smallest that fills the GPU's resident block slots (multiprocessors times
// blocks per multiprocessor) in one wave, so that no multiprocessor gets a
// second round of blocks while others idle, within 48 KiB of shared
// memory. (Steps of 8 tokens, which spread a row more evenly over the wave,
// measured slower on the H100: 32/8 at 32K tokens 52.5-53.2 µs with chunks
// of 504 against 51.7 with 512.)
func (a *splitKV) size(f *Function, tokensPerRow, chunk int) error {
	limit := maxAttnSmemB - f.Shared // static and dynamic shared memory share it
	if chunk <= 0 {
		chunk = minChunkTokens
		for range 4 {
			occ, err := f.Occupancy(attnThreads, a.smemFor(chunk))
			if err != nil {
				return err
			}
			perRow := max(1, a.k.D.SMs*max(occ, 1)/a.rows)
			c := (tokensPerRow + perRow - 1) / perRow
			c = max(minChunkTokens, (c+minChunkTokens-1)/minChunkTokens*minChunkTokens)
			if c == chunk {
				break
			}
			chunk = c
		}
		for chunk > minChunkTokens && a.smemFor(chunk) > limit {
			chunk -= minChunkTokens
		}
	}
	if chunk%minChunkTokens != 0 {
		return fmt.Errorf("cuda: %s: chunk %d is not a multiple of %d", a.fn, chunk, minChunkTokens)
	}
	a.chunk = chunk
	a.smem = a.smemFor(chunk)
	if a.smem > limit {
		return fmt.Errorf("cuda: %s: chunk %d: %d B of shared memory (at most %d)", a.fn, chunk, a.smem, limit)
	}
	var err error
	if a.occ, err = f.Occupancy(attnThreads, a.smem); err == nil && a.occ == 0 {
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
	a.configure(kind, s, pageSize)
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
	err := launch(a.fn, Dim3{a.nchunks, a.rows, 1}, Dim3{attnThreads, 1, 1}, a.smem,
		q, K, V, pages, int32(s.Tokens), int32(nsel), int32(pageSize), int32(a.rowsPerKV), int32(a.chunk),
		scaleLog2(s.HeadDim), a.partO, a.partML, a.counters, out, raw)
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
