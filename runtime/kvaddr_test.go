package runtime_test

import (
	"fmt"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// addrBackend is the CPU backend with KV page addresses
// (runtime.KVAddresser, runtime.KVAddrOps): an address is a page's index
// in the pages seen so far (shifted past the type bit); copies through
// addresses and through page buffers are counted apart and run the CPU's
// StoreKV and MoveKV. It hides the CPU backend's other capabilities, as
// noViewBackend does.
type addrBackend struct {
	runtime.Backend
	ids            map[runtime.Buffer]uint64
	pages          []runtime.Buffer
	stores, moves  int // through addresses
	plainS, plainM int // through the page buffers
}

func newAddrBackend(be runtime.Backend) *addrBackend {
	return &addrBackend{Backend: be, ids: map[runtime.Buffer]uint64{}}
}

func (a *addrBackend) KVPageAddr(p runtime.Buffer) uint64 {
	if id, ok := a.ids[p]; ok {
		return id
	}
	a.pages = append(a.pages, p)
	id := uint64(len(a.pages)) << 1
	a.ids[p] = id
	return id
}

func (a *addrBackend) page(addr uint64) runtime.Buffer {
	i := int(addr>>1) - 1
	if addr&1 != 0 || i < 0 || i >= len(a.pages) {
		panic(fmt.Sprintf("page address %#x: not one KVPageAddr gave", addr))
	}
	return a.pages[i]
}

func (a *addrBackend) StoreKVAt(kPage, vPage uint64, slot int, k, v runtime.Buffer, row, head, headDim, kvDim int) {
	a.stores++
	a.Backend.StoreKV(a.page(kPage), a.page(vPage), slot, k, v, row, head, headDim, kvDim)
}

func (a *addrBackend) StoreKV(kPage, vPage runtime.Buffer, slot int, k, v runtime.Buffer, row, head, headDim, kvDim int) {
	a.plainS++
	a.Backend.StoreKV(kPage, vPage, slot, k, v, row, head, headDim, kvDim)
}

func (a *addrBackend) MoveKV(dstK, dstV runtime.Buffer, dstSlot int, srcK, srcV runtime.Buffer, srcSlot, headDim int) {
	a.plainM++
	a.Backend.MoveKV(dstK, dstV, dstSlot, srcK, srcV, srcSlot, headDim)
}

func (a *addrBackend) MoveKVAt(dstK, dstV uint64, dstSlot int, srcK, srcV uint64, srcSlot, headDim int) {
	a.moves++
	a.Backend.MoveKV(a.page(dstK), a.page(dstV), dstSlot, a.page(srcK), a.page(srcV), srcSlot, headDim)
}

// TestKVAddresses: a KVCache on a backend with page addresses stores and
// moves every token through them (KVCache keeps them beside the page lists
// through appends, evictions one by one and many at once, pages freed and
// taken again, and Reset), and every logit of a 41-token prompt and 40
// decode steps, twice (the runner reset between), under full, window,
// streamingllm, h2o and tova attention with pages of 4 slots and budgets
// of 12, is bit for bit what the same backend gives without addresses.
// (Without trim cutting the addresses of freed pages, 5 of the 5 runs
// fail.)
func TestKVAddresses(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	V := m.Config.Vocab
	for _, pc := range []struct {
		name   string
		params policies.Params
	}{{"full", nil}, {"window", policies.Params{"budget": 12}}, {"streamingllm", policies.Params{"sinks": 2, "budget": 12}},
		{"h2o", policies.Params{"budget": 12}}, {"tova", policies.Params{"budget": 12}}} {
		t.Run(pc.name, func(t *testing.T) {
			run := func(be runtime.Backend) [][]float32 {
				r, err := runtime.NewRunnerWith(m, be, runtime.RunnerOptions{MaxRows: 8, PageSize: 4})
				if err != nil {
					t.Fatal(err)
				}
				var out [][]float32
				for round := range 2 { // the second after Reset: pages come back from the free list
					p, err := policies.New(pc.name, pc.params)
					if err != nil {
						t.Fatal(err)
					}
					if err := p.Start(r); err != nil {
						t.Fatal(err)
					}
					logits := make([]float32, V)
					if err := r.Forward(randTokens(41, V, uint64(7+round)), logits); err != nil {
						t.Fatal(err)
					}
					out = append(out, logits)
					for step := range 40 {
						logits := make([]float32, V)
						if err := r.Forward(randTokens(1, V, uint64(100*round+step)), logits); err != nil {
							t.Fatal(err)
						}
						out = append(out, logits)
					}
					r.Reset() // as the suites' engine reuses a runner
					r.Hook, r.OnAttend = nil, nil
				}
				return out
			}
			cb := cpu.New(1)
			defer cb.Close()
			ab := newAddrBackend(noViewBackend{cb})
			want, got := run(noViewBackend{cb}), run(ab)
			for i := range want {
				for j := range want[i] {
					if got[i][j] != want[i][j] {
						t.Fatalf("pass %d logit %d: %v with addresses, %v without", i, j, got[i][j], want[i][j])
					}
				}
			}
			// Every copy goes through the addresses: they stayed whole.
			if ab.stores == 0 || (pc.name != "full" && ab.moves == 0) || ab.plainS+ab.plainM > 0 {
				t.Errorf("%d stores and %d moves through addresses, %d and %d through the pages; want all through addresses",
					ab.stores, ab.moves, ab.plainS, ab.plainM)
			}
		})
	}
}
