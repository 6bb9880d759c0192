package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
)

var (
	gpuOnce sync.Once
	gpuK    *Kernels
	gpuErr  error
	gpuWhy  string
)

// gpu returns the kernels on device 0, or skips the test with the reason
// when there is no GPU. The device stays open for the test binary's life.
func gpu(t *testing.T) *Kernels {
	t.Helper()
	gpuOnce.Do(func() {
		ok, why := Available()
		if !ok {
			gpuWhy = why
			return
		}
		d, err := Open(0)
		if err != nil {
			gpuErr = err
			return
		}
		gpuK, gpuErr = LoadKernels(d)
	})
	if gpuWhy != "" {
		t.Skip("no CUDA device: " + gpuWhy)
	}
	if gpuErr != nil {
		t.Fatal(gpuErr)
	}
	return gpuK
}

func TestAvailable(t *testing.T) {
	ok, why := Available()
	t.Logf("available %v %s; driver CUDA %q", ok, why, DriverVersion())
	if !ok && why == "" {
		t.Fatal("unavailable without a reason")
	}
}

func randBF16(rng *rand.Rand, n int) []uint16 {
	out := make([]uint16, n)
	for i := range out {
		out[i] = BF16(float32(2*rng.Float64() - 1))
	}
	return out
}

// upload allocates device memory for src and copies it there.
func upload[T any](t *testing.T, d *Device, src []T) Ptr {
	t.Helper()
	_, n := bytesOf(src)
	ptr, err := d.Alloc(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Free(ptr) })
	if err := Upload(d, ptr, src); err != nil {
		t.Fatal(err)
	}
	return ptr
}

func TestDeviceMemory(t *testing.T) {
	k := gpu(t)
	d := k.D
	t.Log(d)
	before, _ := d.MemStats()
	src := make([]float32, 1000)
	for i := range src {
		src[i] = float32(i) * 0.5
	}
	a := upload(t, d, src)
	b, err := d.Alloc(4000)
	if err != nil {
		t.Fatal(err)
	}
	if now, peak := d.MemStats(); now != before+8000 || peak < now {
		t.Fatalf("MemStats %d %d, want now %d", now, peak, before+8000)
	}
	if err := d.Copy(b, a, 4000); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, 1000)
	if err := Download(d, got, b); err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i] != src[i] {
			t.Fatalf("copy: [%d] = %v, want %v", i, got[i], src[i])
		}
	}
	if err := d.Memset8(b, 0, 4000); err != nil {
		t.Fatal(err)
	}
	if err := Download(d, got, b); err != nil {
		t.Fatal(err)
	}
	if got[999] != 0 {
		t.Fatal("memset left", got[999])
	}
	if err := d.Free(b); err != nil {
		t.Fatal(err)
	}
	if now, _ := d.MemStats(); now != before+4000 {
		t.Fatalf("after Free: %d bytes, want %d", now, before+4000)
	}
	if _, err := d.Alloc(1 << 50); err == nil {
		t.Fatal("allocating 1 PiB succeeded")
	} else {
		t.Log("expected error:", err)
	}
}

// devOut allocates a float32 output of n elements poisoned with NaN.
func devOut(t *testing.T, d *Device, n int) Ptr {
	t.Helper()
	p, err := d.Alloc(int64(n) * 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Free(p) })
	if err := d.PoisonF32(p, int64(n)); err != nil {
		t.Fatal(err)
	}
	return p
}

func headSlice(x []uint16, h, n, D int) []uint16 { return x[h*n*D : (h+1)*n*D] }

func TestKernelDense(t *testing.T) {
	k := gpu(t)
	d := k.D
	type tc struct {
		heads, kv, dim int
		lens           []int
		chunk          int
	}
	cases := []tc{
		{8, 2, 128, []int{1, 77, 1000, 4099}, 0},
		{8, 2, 128, []int{1000, 4099}, 64},
		{4, 4, 128, []int{5, 300, 2049}, 0},
		{4, 4, 128, []int{2049}, 128},
		{16, 2, 128, []int{700, 3333}, 0},
		{8, 1, 64, []int{3, 999}, 64},
		{4, 2, 64, []int{1500}, 0},
		{32, 8, 128, []int{40000}, 0},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	attnFamilies(t, func(t *testing.T) {
		for _, c := range cases {
			for _, n := range c.lens {
				name := fmt.Sprintf("h%d_kv%d_d%d_n%d_chunk%d", c.heads, c.kv, c.dim, n, c.chunk)
				t.Run(name, func(t *testing.T) {
					if testing.Short() && n > 5000 {
						t.Skip("long sequence in -short mode")
					}
					s := Shape{Heads: c.heads, KVHeads: c.kv, HeadDim: c.dim, Tokens: n}
					q := randBF16(rng, c.heads*c.dim)
					K := randBF16(rng, c.kv*n*c.dim)
					V := randBF16(rng, c.kv*n*c.dim)
					qd, Kd, Vd := upload(t, d, q), upload(t, d, K), upload(t, d, V)
					out := devOut(t, d, c.heads*c.dim)
					a, err := k.NewDense(s, c.chunk)
					if err != nil {
						t.Fatal(err)
					}
					defer a.Free()
					if fam := os.Getenv(attnKernelEnv); fam == "mma" && c.heads > c.kv && d.Major >= 8 && !strings.HasPrefix(a.Plan().Kernel, "attn_mma_") {
						t.Fatalf("%s=mma: kernel %s", attnKernelEnv, a.Plan().Kernel)
					}
					if err := a.Launch(qd, Kd, Vd, out); err != nil {
						t.Fatal(err)
					}
					got := make([]float32, c.heads*c.dim)
					if err := Download(d, got, out); err != nil {
						t.Fatal(err)
					}
					G := s.Group()
					worst := 0.0
					for h := 0; h < c.kv; h++ {
						ref := RefDecode(q[h*G*c.dim:(h+1)*G*c.dim], headSlice(K, h, n, c.dim), headSlice(V, h, n, c.dim), c.dim, nil)
						worst = math.Max(worst, RelErr(got[h*G*c.dim:(h+1)*G*c.dim], ref))
					}
					t.Logf("%+v: max relative error %.2e", a.Plan(), worst)
					if !(worst < 1e-4) {
						t.Fatalf("relative error %.3e", worst)
					}
					// A second launch gives the same bits: nothing depends on
					// the order in which blocks run.
					if err := d.PoisonF32(out, int64(len(got))); err != nil {
						t.Fatal(err)
					}
					if err := a.Launch(qd, Kd, Vd, out); err != nil {
						t.Fatal(err)
					}
					again := make([]float32, len(got))
					if err := Download(d, again, out); err != nil {
						t.Fatal(err)
					}
					for i := range got {
						if math.Float32bits(got[i]) != math.Float32bits(again[i]) {
							t.Fatalf("second launch differs at %d: %v vs %v", i, again[i], got[i])
						}
					}
				})
			}
		}
	})
}

func TestKernelQuest(t *testing.T) {
	k := gpu(t)
	d := k.D
	type tc struct {
		heads, kv, dim, n, page, budget int
		zeroQ                           bool // every score ties at 0
	}
	cases := []tc{
		{8, 2, 128, 1000, 16, 160, false},
		{4, 4, 128, 5000, 16, 2048, false},
		{8, 1, 64, 333, 8, 5000, false}, // budget above the pages: all
		{16, 2, 128, 3000, 32, 512, false},
		{8, 2, 128, 70001, 16, 2048, false},
		{4, 2, 128, 4096, 16, 16, false}, // one page
		{4, 2, 128, 2000, 16, 400, true},
	}
	rng := rand.New(rand.NewPCG(3, 4))
	attnFamilies(t, func(t *testing.T) {
		for _, c := range cases {
			for _, perHead := range []bool{false, true} {
				name := fmt.Sprintf("h%d_kv%d_d%d_n%d_p%d_b%d_perhead%v_zeroq%v", c.heads, c.kv, c.dim, c.n, c.page, c.budget, perHead, c.zeroQ)
				t.Run(name, func(t *testing.T) {
					if testing.Short() && c.n > 5000 {
						t.Skip("long sequence in -short mode")
					}
					s := Shape{Heads: c.heads, KVHeads: c.kv, HeadDim: c.dim, Tokens: c.n}
					D, G, n := c.dim, s.Group(), c.n
					q := randBF16(rng, c.heads*D)
					if c.zeroQ {
						clear(q)
					}
					K := randBF16(rng, c.kv*n*D)
					V := randBF16(rng, c.kv*n*D)
					qd, Kd, Vd := upload(t, d, q), upload(t, d, K), upload(t, d, V)
					P := (n + c.page - 1) / c.page
					mnd, mxd := devOut(t, d, c.kv*P*D/2), devOut(t, d, c.kv*P*D/2)
					if err := k.PageMinMax(Kd, c.kv, n, D, c.page, mnd, mxd); err != nil {
						t.Fatal(err)
					}
					mn, mx := make([]uint16, c.kv*P*D), make([]uint16, c.kv*P*D)
					if err := Download(d, mn, mnd); err != nil {
						t.Fatal(err)
					}
					if err := Download(d, mx, mxd); err != nil {
						t.Fatal(err)
					}
					for h := 0; h < c.kv; h++ {
						rmn, rmx := RefPageBounds(headSlice(K, h, n, D), D, c.page)
						for i := range rmn {
							if mn[h*P*D+i] != rmn[i] || mx[h*P*D+i] != rmx[i] {
								t.Fatalf("page bounds differ at head %d, %d", h, i)
							}
						}
					}
					qa, err := k.NewQuest(s, c.page, c.budget, perHead, 0)
					if err != nil {
						t.Fatal(err)
					}
					defer qa.Free()
					out := devOut(t, d, c.heads*D)
					if err := qa.Launch(qd, Kd, Vd, mnd, mxd, out); err != nil {
						t.Fatal(err)
					}
					scores, err := qa.Scores()
					if err != nil {
						t.Fatal(err)
					}
					sel, err := qa.Selection()
					if err != nil {
						t.Fatal(err)
					}
					got := make([]float32, c.heads*D)
					if err := Download(d, got, out); err != nil {
						t.Fatal(err)
					}
					worst := 0.0
					for h := 0; h < c.kv; h++ {
						ref := RefQuestScores(q[h*G*D:(h+1)*G*D], mn[h*P*D:(h+1)*P*D], mx[h*P*D:(h+1)*P*D], D)
						rows := []int{h}
						if perHead {
							rows = rows[:0]
							for g := 0; g < G; g++ {
								rows = append(rows, h*G+g)
							}
						}
						for ri, row := range rows {
							want := make([]float64, P)
							for p := range want {
								if perHead {
									want[p] = ref[ri][p]
								} else {
									want[p] = math.Inf(-1)
									for g := 0; g < G; g++ {
										want[p] = math.Max(want[p], ref[g][p])
									}
								}
							}
							scale := 1e-30
							for _, w := range want {
								scale = math.Max(scale, math.Abs(w))
							}
							for p, w := range want {
								if math.Abs(float64(scores[row][p])-w) > 1e-5*scale {
									t.Fatalf("row %d page %d: score %v, want %v", row, p, scores[row][p], w)
								}
							}
							brute := TopK(scores[row], qa.Select)
							for i := range brute {
								if sel[row][i] != brute[i] {
									t.Fatalf("row %d: selection %v, brute force %v", row, sel[row], brute)
								}
							}
							toks := PageTokens(sel[row], c.page, n)
							qh := q[row*D : (row+1)*D]
							oh := got[row*D : (row+1)*D]
							if !perHead {
								qh = q[h*G*D : (h+1)*G*D]
								oh = got[h*G*D : (h+1)*G*D]
							}
							refOut := RefDecode(qh, headSlice(K, h, n, D), headSlice(V, h, n, D), D, toks)
							worst = math.Max(worst, RelErr(oh, refOut))
						}
					}
					t.Logf("%d pages, %d selected per row, attention %+v: max relative error %.2e",
						P, qa.Select, qa.Plan(), worst)
					if !(worst < 1e-4) {
						t.Fatalf("relative error %.3e", worst)
					}
					if c.zeroQ {
						for i, p := range sel[0] {
							if int(p) != i {
								t.Fatalf("all scores tie: selection %v, want the first pages", sel[0])
							}
						}
					}
				})
			}
		}
	})
}

// attnFamilies runs f once per family of split-KV kernels (splitkv.go):
// split and mma (which runs split for rows of one head).
func attnFamilies(t *testing.T, f func(t *testing.T)) {
	for _, fam := range []string{"split", "mma"} {
		t.Run(fam, func(t *testing.T) {
			t.Setenv(attnKernelEnv, fam)
			f(t)
		})
	}
}
