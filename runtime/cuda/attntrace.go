package cuda

import (
	"fmt"
	"os"
	"slices"
	"strings"
)

// The split-KV attention's trace (RH_TRACE, TR_WORDS in attention_rt.cu): a
// measuring tool for `kvbench kernels --trace`. While it is on, every
// Attend on the split-KV kernels (attn_rt, the tensor-core kernel; not the
// batched launches) passes the kernel the address of a zeroed device
// buffer, where each block writes when it started, staged its page
// pointers, saw its first tile land (the tensor-core kernel only),
// finished its tiles, formed its maxima and put its warps' outputs in
// shared memory (the tensor-core kernel only), and wrote its partial, and each block of the combine
// when it started and ended, all on the GPU's global clock. AttnTrace
// reads the last call's back.

// traceWords is TR_WORDS: a split block's words in the trace.
const traceWords = 10

// traceState is a Backend's trace (SetAttnTrace) and the layout of the
// last traced call's words.
type traceState struct {
	built      bool // the kernels were built with the trace's stamps (KVBENCH_ATTN_TRACE)
	on         bool
	buf        scratch
	kernel     string
	chunks     int // the split kernel's chunks a row (grid x)
	rows       int // its split rows
	combBlocks int // the combine's blocks (0: none launched)
	words      int // the call's words in buf
	traced     bool
}

// traceEnv builds the kernels with the trace's stamps (KVB_TRACE): set to
// 1 before a backend opens, for SetAttnTrace. Without it the stamps are
// not in the kernels at all.
const traceEnv = "KVBENCH_ATTN_TRACE"

// traceBuild reports whether $KVBENCH_ATTN_TRACE asks for the trace's build.
func traceBuild() bool { v := os.Getenv(traceEnv); return v != "" && v != "0" && v != "off" }

// SetAttnTrace turns the trace on or off; on needs kernels built with it
// (KVBENCH_ATTN_TRACE=1 when the backend opened). While on, each split-KV
// call costs a zeroing launch, a few stores and a barrier or two a block
// more; the batched launches write nothing. Off, a trace build's kernels
// test one header word a block and skip the stamps.
func (b *Backend) SetAttnTrace(on bool) error {
	if on && !b.trace.built {
		return fmt.Errorf("cuda: the attention trace needs kernels built with it: set %s=1 before the backend opens", traceEnv)
	}
	b.trace.on = on
	return nil
}

// traceCall readies the trace of a call of kernel over chunks x rows
// blocks and combBlocks combine blocks: the buffer grown and zeroed. It
// returns the buffer's address (0 when the trace is off). Called with the
// workspaces, before the call's metadata is placed (growing waits). The
// zeroing kernel does not trigger its dependents, so the attention kernel
// starts after it even where it reads early (RH_EARLY): a traced call's
// start does not overlap the kernel before it, as an untraced one's may.
func (b *Backend) traceCall(kernel string, chunks, rows, combBlocks int) Ptr {
	t := &b.trace
	if !t.on {
		return 0
	}
	words := chunks*rows*traceWords + 2*combBlocks
	p := b.grow(&t.buf, int64(words)*8)
	b.launch("be_zero", Dim3{blocks(int64(2 * words)), 1, 1}, Dim3{256, 1, 1}, p, int64(2*words))
	t.kernel, t.chunks, t.rows, t.combBlocks, t.words, t.traced = kernel, chunks, rows, combBlocks, words, true
	return p
}

// TraceBlock is a split block's timestamps (ns, the GPU's global clock;
// 0: not written) and what it read. Maxima and Shared split the partial's
// phase (TilesDone..End) of the tensor-core kernel: thread 0's block
// maxima and sums formed, and the warps' outputs in shared memory.
type TraceBlock struct {
	Start, Staged, FirstTile, TilesDone, End uint64
	SM, Tiles, Tokens                        int // its multiprocessor, warp 0's 16-token tiles, its tokens
	Maxima, Shared                           uint64
}

// TraceSpan is a combine block's start and end (ns).
type TraceSpan struct{ Start, End uint64 }

// AttnTrace is one traced call's timestamps.
type AttnTrace struct {
	Kernel       string
	Chunks, Rows int
	Blocks       []TraceBlock // row-major: split row r's chunk c at r*Chunks + c
	Combine      []TraceSpan
}

// AttnTrace reads back the trace of the last Attend (it waits for the
// device); an error when that call wrote none (the trace off, or the call
// not on the split-KV kernels: the prefill's, the general kernel's). A call
// split into blocks of rows leaves its last block's.
func (b *Backend) AttnTrace() (*AttnTrace, error) {
	t := &b.trace
	if !t.traced {
		return nil, fmt.Errorf("cuda: the last Attend left no trace (SetAttnTrace first; only the split-KV kernels write one)")
	}
	w := make([]uint64, t.words)
	get(b, w, t.buf.p)
	return parseTrace(t.kernel, t.chunks, t.rows, t.combBlocks, w), nil
}

// parseTrace lays out a call's words (traceWords a split block, then two a
// combine block).
func parseTrace(kernel string, chunks, rows, comb int, w []uint64) *AttnTrace {
	a := &AttnTrace{Kernel: kernel, Chunks: chunks, Rows: rows}
	for i := range chunks * rows {
		x := w[i*traceWords : (i+1)*traceWords]
		a.Blocks = append(a.Blocks, TraceBlock{Start: x[0], Staged: x[1], FirstTile: x[2], TilesDone: x[3], End: x[4],
			SM: int(x[5]), Tiles: int(x[6]), Tokens: int(x[7]), Maxima: x[8], Shared: x[9]})
	}
	for i := range comb {
		x := w[chunks*rows*traceWords+2*i:]
		a.Combine = append(a.Combine, TraceSpan{x[0], x[1]})
	}
	return a
}

// Summary describes the trace in one line, times in microseconds from the
// first block's start: when the blocks started (spread), each phase's
// median and maximum (staging the page pointers, the first tile's wait,
// the tiles, writing the partial; where the blocks stamped inside that
// last phase, its parts: the block's maxima, the outputs to shared memory,
// their sums and stores), when the blocks ended (first, median, last) and
// when the combine's blocks ended; or why there is nothing to say (a
// kernel that writes no trace).
func (a *AttnTrace) Summary() string {
	var bl []TraceBlock
	for _, x := range a.Blocks {
		if x.Start != 0 && x.End >= x.Start {
			bl = append(bl, x)
		}
	}
	if len(bl) == 0 {
		return fmt.Sprintf("%s: no block wrote a trace", a.Kernel)
	}
	t0 := slices.MinFunc(bl, func(x, y TraceBlock) int { return cmpU(x.Start, y.Start) }).Start
	us := func(ns uint64) float64 { return float64(ns) / 1e3 }
	var starts, stage, first, tiles, fin, ends, maxima, shared, stores []float64
	sms := map[int]int{}
	for _, x := range bl {
		starts = append(starts, us(x.Start-t0))
		stage = append(stage, us(x.Staged-x.Start))
		switch {
		case x.FirstTile != 0:
			first = append(first, us(x.FirstTile-x.Staged))
			tiles = append(tiles, us(x.TilesDone-x.FirstTile))
		case x.Tokens > 0: // attn_rt stamps no first tile: its passes from the staging
			tiles = append(tiles, us(x.TilesDone-x.Staged))
		}
		fin = append(fin, us(x.End-x.TilesDone))
		if x.TilesDone <= x.Maxima && x.Maxima <= x.Shared && x.Shared <= x.End {
			maxima = append(maxima, us(x.Maxima-x.TilesDone))
			shared = append(shared, us(x.Shared-x.Maxima))
			stores = append(stores, us(x.End-x.Shared))
		}
		ends = append(ends, us(x.End-t0))
		sms[x.SM]++
	}
	var s strings.Builder
	part := medMax(fin)
	if len(maxima) > 0 {
		part += fmt.Sprintf(" (maxima %s, to shared %s, sums and stores %s)", medMax(maxima), medMax(shared), medMax(stores))
	}
	fmt.Fprintf(&s, "%s: %d of %d blocks on %d multiprocessors; start %s; stage %s; first tile %s; tiles %s; partial %s; end %s",
		a.Kernel, len(bl), len(a.Blocks), len(sms), spread(starts), medMax(stage), medMax(first), medMax(tiles), part, spread(ends))
	var ce []float64
	for _, c := range a.Combine {
		if c.End >= t0 && c.End != 0 {
			ce = append(ce, us(c.End-t0))
		}
	}
	if len(ce) > 0 {
		fmt.Fprintf(&s, "; combine (%d blocks) ends %s", len(ce), spread(ce))
	}
	return s.String()
}

func cmpU(x, y uint64) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// medMax is "median/max" of x (microseconds), "-" when empty.
func medMax(x []float64) string {
	if len(x) == 0 {
		return "-"
	}
	s := slices.Clone(x)
	slices.Sort(s)
	return fmt.Sprintf("%.2f/%.2f", s[len(s)/2], s[len(s)-1])
}

// spread is "first..median..last" of x (microseconds).
func spread(x []float64) string {
	s := slices.Clone(x)
	slices.Sort(s)
	return fmt.Sprintf("%.2f..%.2f..%.2f", s[0], s[len(s)/2], s[len(s)-1])
}
