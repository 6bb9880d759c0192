package cuda

import (
	"fmt"
	"math"
	"math/bits"
	"slices"

	"github.com/kvbench/kvbench/runtime"
)

// A prompt chunk whose every row adds to Acc (H2O's prompt under the dense
// protocol) runs on the tensor cores: the prefill kernel (flashOK's, as for
// a chunk without Acc) computes the outputs and each (row, head)'s lse,
// then acc_cols (cuda/acccols.cu) adds up each key's probabilities over the
// rows. Before, such a chunk ran on the split-KV path keeping every row's
// raw scores (rows x heads x tokens floats: in blocks of rows past
// accRawMax, 4 GiB, each block rereading the keys) and summed them on CUDA
// cores. The scores are the prefill's (queries rounded to bf16, as the
// outputs are computed), not the split-KV path's near-float32 ones; the
// sums differ from those by the queries' rounding (bf16 precision only:
// flashOK). KVBENCH_ACC_COLS=off keeps such chunks on the split-KV path.

// accColsMinRows is the fewest rows a call takes to the tensor cores for
// its sums. Fewer rows keep the split-KV path, whose scratch for their
// scores is small and whose scores are near float32: SnapKV's and
// PyramidKV's observation windows (32 rows by default, attendAccTail's
// tail) stay there.
const accColsMinRows = 128

// accColsOK says whether Attend runs a's sums on the tensor cores: Acc
// without a selection, accColsMinRows rows or more, every one of them
// adding (at or past AccFrom), and a call the prefill kernel would take
// without its Acc.
func (b *Backend) accColsOK(a *runtime.AttnArgs) bool {
	if b.noAccCols || a.Acc == nil || a.Rows < accColsMinRows || a.Chosen != nil || a.Recall != nil {
		return false
	}
	for _, p := range a.QPos[:a.Rows] {
		if p < a.AccFrom {
			return false
		}
	}
	plain := *a
	plain.Acc = nil
	return b.flashOK(&plain)
}

// accColsShape is a variant of acc_cols (ACC_COLS_KERNEL in acccols.cu):
// m-tiles of 16 keys a warp, warps a block, rows a tile of the queries.
type accColsShape struct{ mt, warps, rows int }

// accColsShapes are the variants by KVBENCH_ACC_COLS_MT (1, the default:
// 8 warps of 16 keys, tiles of 64 rows; 2: 4 warps of 32 keys, tiles of 32
// rows, each query fragment read from shared memory feeding 4 products).
var accColsShapes = map[int]accColsShape{1: {1, 8, 64}, 2: {2, 4, 32}}

// keys is the keys a block of f takes.
func (f accColsShape) keys() int { return 16 * f.mt * f.warps }

// kernel is f's kernel for head dim hd (64 or 128) and its dynamic shared
// memory (AC_SMEM).
func (f accColsShape) kernel(hd int) (string, int) {
	name := fmt.Sprintf("acc_cols_d%d", hd)
	if f.mt != 1 {
		name += fmt.Sprintf("_m%d", f.mt)
	}
	return name, f.keys()*(hd+8)*2 + 2*f.rows*8
}

// attendAccCols runs a (accColsOK) as the prefill kernel writing each
// (row, head)'s lse, then acc_cols over the same metadata, a block a tile
// of keys (accColsShape.keys) and KV head, after the queries are rounded to
// bf16 (be_narrow) for it; the sums are read back as the split-KV path's
// are (accRead: deferred, queued with a batch's, or at once).
func (b *Backend) attendAccCols(a *runtime.AttnArgs) {
	m, a := b.attnMeta(a)
	hd, rows := a.HeadDim, a.Rows
	// Scratch first: growing one waits for the device and restarts the
	// staging arena.
	lse := b.grow(&b.lse, int64(rows*a.Heads)*4)
	qb := b.grow(&b.qbf, int64(rows*a.Heads*hd)*2)
	astride := b.accHost(a)
	ints, ptrs := b.flashCall(a, m.rowOff, lse, span(int64(len(b.hAcc))*4))
	acc := b.accDevice(a)
	n := int64(rows * a.Heads * hd)
	b.launch("be_narrow", Dim3{blocks(n), 1, 1}, Dim3{256, 1, 1}, qb, b.f32(a.Q), wtype(runtime.BF16), n)
	f := accColsShapes[b.accColsMT]
	tiles := 0
	for g := range a.KVHeads {
		d := b.hInts[g*sdWords:]
		tiles = max(tiles, (int(d[sdHi]-d[sdLo])+f.keys()-1)/f.keys())
	}
	if tiles > 0 {
		name, smem := f.kernel(hd)
		b.allowShared(name, smem)
		b.launchSmem(name, Dim3{tiles, a.KVHeads, 1}, Dim3{32 * f.warps, 1, 1}, smem,
			acc, int32(astride), qb, lse, ptrs, ints, int32(a.Heads), int32(a.KVHeads), a.Scale*float32(math.Log2E),
			m.rowOff, int32(rows), b.pageType(), flag(slices.IsSorted(a.QPos[:rows])),
			int32(bits.TrailingZeros(uint(a.Seqs[0].PageSize))), int32(max(a.Window, 0)), flag(a.AccGroup))
	}
	b.split.last.Kernel += "+acc_cols"
	b.accRead(a, acc, astride)
}
