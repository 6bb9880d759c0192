package cuda

import (
	"fmt"
	"math/rand/v2"
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

// TestPageMinMax checks page_minmax against RefPageBounds: pages of 8, 16
// and 32 tokens, a partial last page among them.
func TestPageMinMax(t *testing.T) {
	k := gpu(t)
	d := k.D
	type tc struct{ kv, dim, n, page int }
	cases := []tc{{2, 128, 1000, 16}, {4, 128, 5000, 16}, {1, 64, 333, 8}, {2, 128, 3000, 32}, {2, 128, 4096, 16}}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range cases {
		t.Run(fmt.Sprintf("kv%d_d%d_n%d_p%d", c.kv, c.dim, c.n, c.page), func(t *testing.T) {
			D, n := c.dim, c.n
			K := randBF16(rng, c.kv*n*D)
			Kd := upload(t, d, K)
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
		})
	}
}
