package cuda

import (
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/kvbench/kvbench/runtime"
)

// TestLiveBuffers frees buffers of the fake device in a random order: the
// live set (a slice, each buffer knowing its index) holds exactly those not
// freed, the KV bytes and buffers counted match them, and freeing a buffer
// twice, or one of another backend, panics.
func TestLiveBuffers(t *testing.T) {
	b := fakeOf(t, "bf16")
	other := fakeOf(t, "bf16")
	rng := rand.New(rand.NewPCG(4, 4))
	base := len(b.live)
	bufs := map[runtime.Buffer]bool{}
	var order []runtime.Buffer
	for range 500 {
		x := b.AllocKV(64*(1+rng.IntN(4)), runtime.BF16)
		bufs[x] = true
		order = append(order, x)
	}
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for k, x := range order {
		b.Free(x)
		delete(bufs, x)
		if k%50 != 0 {
			continue
		}
		if len(b.live) != base+len(bufs) {
			t.Fatalf("after %d frees: %d live buffers, want %d", k+1, len(b.live), base+len(bufs))
		}
		var kv int64
		for i, y := range b.live {
			if int(y.live) != i+1 {
				t.Fatalf("live buffer %d says it is at %d", i, y.live-1)
			}
			if y.kind == runtime.MemKV {
				if !bufs[y] {
					t.Fatalf("a freed KV buffer is still live")
				}
				kv += y.bytes
			}
		}
		if m := b.Memory(); m.KV != kv || m.KVBuffers != len(bufs) {
			t.Fatalf("after %d frees: %d KV bytes in %d buffers counted, %d in %d live", k+1, m.KV, m.KVBuffers, kv, len(bufs))
		}
	}
	mustPanic := func(what string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s did not panic", what)
			}
		}()
		f()
	}
	mustPanic("a second Free", func() { b.Free(order[0]) })
	y := other.AllocKV(64, runtime.BF16)
	mustPanic("a Free of another backend's buffer", func() { b.Free(y) })
}

// TestBufSize: a buf (one a KV page, millions in a long prompt) keeps the
// size its field order gives it.
func TestBufSize(t *testing.T) {
	if s := unsafe.Sizeof(buf{}); s != bufBytes {
		t.Errorf("a buf takes %d bytes, want %d (field order)", s, bufBytes)
	}
}
