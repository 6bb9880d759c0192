package cuda_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestAppendKVGPU stores rows of one KV head into a page list with
// AppendKV, from a first token inside a page, and reads every page back:
// each slot holds its row's channels (rounded to bf16 on bf16 pages, as
// the host rounds them), the slots before the first token and after the
// last stay zero (the lists given start at the first token's page, as
// AppendKV wants; the pages before it are read back too). Head dims 64, 128 and 256 take the four-channels-a-thread
// kernel (be_kv_append4), 20 and 6 the one-channel kernel
// (KVBENCH_KV_WIDE=off the same values), and page sizes 16 and 7, rows 1
// to 300, heads at every offset.
func TestAppendKVGPU(t *testing.T) {
	for _, wide := range []string{"", "off"} {
		t.Run("wide"+wide, func(t *testing.T) { appendKVCases(t, wide) })
	}
}

func appendKVCases(t *testing.T, wide string) {
	t.Setenv("KVBENCH_KV_WIDE", wide)
	g := newGPU(t)
	{
		rng := rand.New(rand.NewPCG(3, 9))
		for _, typ := range []runtime.DType{runtime.F32, runtime.BF16} {
			for _, hd := range []int{64, 128, 256, 20, 6} {
				for _, ps := range []int{16, 7} {
					for _, sh := range [][2]int{{1, 0}, {5, 3}, {300, 9}, {33, 16}} { // rows, first
						rows, first, kvHeads := sh[0], sh[1], 3
						name := fmt.Sprintf("wide%q/%v/hd%d/ps%d/rows%d/first%d", wide, typ, hd, ps, rows, first)
						kvDim := kvHeads * hd
						kh, vh := randVec(rng, rows*kvDim, 2), randVec(rng, rows*kvDim, 2)
						k, v := g.Alloc(rows*kvDim), g.Alloc(rows*kvDim)
						g.Write(k, 0, kh)
						g.Write(v, 0, vh)
						npages := (first+rows-1)/ps + 1
						for head := range kvHeads {
							kp, vp := make([]runtime.Buffer, npages), make([]runtime.Buffer, npages)
							for i := range kp {
								kp[i], vp[i] = g.AllocKV(ps*hd, typ), g.AllocKV(ps*hd, typ)
							}
							g.AppendKV(kp[first/ps:], vp[first/ps:], first, ps, k, v, rows, head, hd, kvDim) // the lists from first's page on
							for _, side := range []struct {
								pages []runtime.Buffer
								src   []float32
							}{{kp, kh}, {vp, vh}} {
								for pi, p := range side.pages {
									got := g.PageValues(p, ps*hd)
									for s := range ps {
										r := pi*ps + s - first
										for c := range hd {
											want := float32(0)
											if r >= 0 && r < rows {
												want = side.src[r*kvDim+head*hd+c]
												if typ == runtime.BF16 {
													want = runtime.BF16ToF32(runtime.F32ToBF16(want))
												}
											}
											if got[s*hd+c] != want {
												t.Fatalf("%s head %d: page %d slot %d channel %d holds %v, want %v", name, head, pi, s, c, got[s*hd+c], want)
											}
										}
									}
								}
							}
							for i := range kp {
								g.Free(kp[i])
								g.Free(vp[i])
							}
						}
						g.Free(k)
						g.Free(v)
					}
				}
			}
		}
	}
}

// TestFakeAppendKVKernel checks AppendKV's kernel choice on the fake
// device: four channels a thread for head dims that are multiples of 4
// (be_kv_append4), one for the others and with KVBENCH_KV_WIDE=off.
func TestFakeAppendKVKernel(t *testing.T) {
	for _, c := range []struct {
		hd   int
		wide string
		want string
	}{{128, "", "be_kv_append4"}, {64, "", "be_kv_append4"}, {6, "", "be_kv_append"}, {128, "off", "be_kv_append"}} {
		t.Run(fmt.Sprintf("hd%d/wide%s", c.hd, c.wide), func(t *testing.T) {
			t.Setenv("KVBENCH_KV_WIDE", c.wide)
			be := fakeBackend(t)
			rows, kvDim := 40, 2*c.hd
			k, v := be.Alloc(rows*kvDim), be.Alloc(rows*kvDim)
			kp, vp := make([]runtime.Buffer, 3), make([]runtime.Buffer, 3)
			for i := range kp {
				kp[i], vp[i] = be.AllocKV(16*c.hd, runtime.BF16), be.AllocKV(16*c.hd, runtime.BF16)
			}
			k0 := cuda.FakeKernels()
			be.AppendKV(kp, vp, 5, 16, k, v, rows, 1, c.hd, kvDim)
			be.Read(make([]float32, 1), k, 0)
			k1 := cuda.FakeKernels()
			for _, name := range []string{"be_kv_append4", "be_kv_append"} {
				n, want := k1[name]-k0[name], int64(0)
				if name == c.want {
					want = 1
				}
				if n != want {
					t.Errorf("%d launches of %s, want %d", n, name, want)
				}
			}
		})
	}
}
