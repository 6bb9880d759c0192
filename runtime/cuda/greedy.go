package cuda

import (
	"fmt"

	"github.com/kvbench/kvbench/runtime"
)

// Greedy decoding on the device (runtime.DeviceArgmax): be_argmax writes a
// step's chosen token into a slot after the output head, and the next
// step's be_embed_slot reads it there, so Runner.Greedy queues its steps
// without a download between them.

var _ runtime.DeviceArgmax = (*Backend)(nil)

// argmaxThreads is be_argmax's block (ARGMAX_THREADS in backend.cu).
const argmaxThreads = 1024

// slot is the device address of slot i of slots, checked.
func (b *Backend) slot(slots runtime.Buffer, i int, op string) Ptr {
	if i < 0 {
		panic(fmt.Sprintf("cuda: %s of slot %d", op, i))
	}
	b.check(slots, i*runtime.GreedySlot, runtime.GreedySlot, op)
	return b.f32(slots).Add(int64(i*runtime.GreedySlot) * 4)
}

// Argmax writes into slot i the index of the largest finite value of
// logits [0, n) and the first non-finite value's index and bits.
func (b *Backend) Argmax(slots runtime.Buffer, i int, logits runtime.Buffer, n int) {
	p := b.slot(slots, i, "Argmax")
	b.check(logits, 0, n, "Argmax")
	b.launchAfter("be_argmax", Dim3{1, 1, 1}, Dim3{argmaxThreads, 1, 1}, p, b.f32(logits), int32(n))
}

// EmbedSlot writes the table row of slot i's token into dst [dim] (zeros
// for a slot that holds no token of [0, vocab)).
func (b *Backend) EmbedSlot(dst, table, slots runtime.Buffer, i, dim, vocab int) {
	t := b.dev(table)
	if vocab*dim > t.n {
		panic(fmt.Sprintf("cuda: EmbedSlot over %d tokens of width %d from a table of %d values", vocab, dim, t.n))
	}
	b.check(dst, 0, dim, "EmbedSlot")
	p := b.slot(slots, i, "EmbedSlot")
	b.launch("be_embed_slot", Dim3{1, 1, 1}, Dim3{256, 1, 1}, b.f32(dst), t.p, wtype(t.dtype), p, int32(dim), int32(vocab))
}
