package runtime

import (
	"math"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stSame checks that two sets of tensors hold the same names, types, shapes
// and data, wherever their data lives (mapped or on the heap).
func stSame(t *testing.T, got, want map[string]*Tensor) {
	t.Helper()
	require.Len(t, got, len(want))
	for name, w := range want {
		g := got[name]
		require.NotNil(t, g, name)
		assert.Equal(t, w.Name, g.Name)
		assert.Equal(t, w.DType, g.DType, name)
		assert.Equal(t, w.Shape, g.Shape, name)
		assert.Equal(t, w.F32, g.F32, name)
		assert.Equal(t, w.U16, g.U16, name)
	}
}

// TestSafetensorsMappedAndRead checks that a mapped file gives the tensors a
// read one does: aligned tensors point into the mapping, a tensor whose
// offset is not a multiple of its element size is copied.
func TestSafetensorsMappedAndRead(t *testing.T) {
	file := stEncode(
		stU16("one", "BF16", []uint16{0x3f80}, 1),                        // 2 bytes: what follows is misaligned for F32
		stF32("odd", []float32{1.5, -2, float32(math.Pi)}, 3),            // at data offset 2
		stU16("pad", "F16", []uint16{1, 2, 3}, 3),                        // at 14
		stF32("even", []float32{4, 5, 6, 7, 8, 9, 10, 11}, 2, 4),         // at 20
		stU16("tail", "BF16", []uint16{0x4000, 0x4040, 0x4080, 0}, 2, 2), // at 52
	)
	path := stWrite(t, t.TempDir(), "m.safetensors", file)
	mappedTs, err := ReadSafetensors(path)
	require.NoError(t, err)
	old := useMmap
	useMmap = false
	readTs, err := ReadSafetensors(path)
	useMmap = old
	require.NoError(t, err)
	stSame(t, mappedTs, readTs)
	for _, x := range readTs {
		assert.Nil(t, x.mem, "%s: read, not mapped", x.Name)
	}
	if !mapped || !readNative {
		t.Skip("files are not mapped on this system")
	}
	assert.Nil(t, mappedTs["odd"].mem, "a float32 tensor at offset 2 is copied")
	for _, name := range []string{"one", "pad", "even", "tail"} {
		assert.NotNil(t, mappedTs[name].mem, "%s points into the mapping", name)
	}
	// Dropping the pages keeps the data readable.
	for _, x := range mappedTs {
		ReleaseHost(x)
	}
	stSame(t, mappedTs, readTs)
	// A row slice of a mapped tensor keeps the mapping too.
	s, err := rowSlice(mappedTs["even"], "lo", 1, 2)
	require.NoError(t, err)
	assert.Equal(t, []float32{8, 9, 10, 11}, s.F32)
	assert.NotNil(t, s.mem)
}

// TestReleaseHostDropsPages checks that the pages of a mapped tensor count
// in its mapping's resident memory once read, and no longer after
// ReleaseHost, while the data stays readable.
func TestReleaseHostDropsPages(t *testing.T) {
	if !mapped || !readNative {
		t.Skip("files are not mapped on this system")
	}
	const n = 16 << 20 // 64 MiB of float32
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(i % 1000)
	}
	path := filepath.Join(t.TempDir(), "big.safetensors")
	require.NoError(t, os.WriteFile(path, stEncode(stF32("w", v, n)), 0o644))
	v = nil
	goruntime.GC()
	ts, err := ReadSafetensors(path)
	require.NoError(t, err)
	w := ts["w"]
	require.NotNil(t, w.mem)
	sum := func() float64 {
		var s float64
		for _, x := range w.F32 {
			s += float64(x)
		}
		return s
	}
	want := sum() // every page read: resident
	rssIn := rssMapped(t, []*Tensor{w})
	ReleaseHost(w)
	rssOut := rssMapped(t, []*Tensor{w})
	if drop := rssIn - rssOut; drop < 48<<20 {
		t.Errorf("resident memory of the mapping went from %d to %d bytes after ReleaseHost of a 64 MiB tensor: want it %d MiB lower at least", rssIn, rssOut, 48)
	}
	assert.Equal(t, want, sum(), "the data reads the same after its pages were dropped")
}

// rssMapped is the resident memory of the mappings the tensors point into
// (the Rss of their areas in /proc/self/smaps): unlike the process's RssFile
// it does not move when the garbage collector unmaps another test's mapping
// of the same file. The test skips where smaps is not readable.
func rssMapped(t testing.TB, tensors []*Tensor) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Skip("no /proc/self/smaps: ", err)
	}
	type span struct{ lo, hi uintptr }
	var spans []span
	seen := map[*mapping]bool{}
	for _, x := range tensors {
		if x == nil {
			continue
		}
		mp, ok := x.mem.(*mapping)
		if !ok || seen[mp] || len(mp.data) == 0 {
			continue
		}
		seen[mp] = true
		lo := uintptr(unsafe.Pointer(unsafe.SliceData(mp.data)))
		spans = append(spans, span{lo, lo + uintptr(len(mp.data))})
	}
	if len(spans) == 0 {
		t.Fatalf("none of %d tensors is mapped", len(tensors))
	}
	return smapsRss(t, string(data), func(lo, hi uintptr) bool {
		for _, s := range spans {
			if lo < s.hi && hi > s.lo {
				return true
			}
		}
		return false
	})
}

// smapsRss sums the Rss lines (kB) of the areas of an smaps text that in
// says to count.
func smapsRss(t testing.TB, text string, in func(lo, hi uintptr) bool) int64 {
	t.Helper()
	var total int64
	counting := false
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if a, b, ok := strings.Cut(f[0], "-"); ok && len(f) >= 5 {
			lo, err1 := strconv.ParseUint(a, 16, 64)
			hi, err2 := strconv.ParseUint(b, 16, 64)
			if err1 == nil && err2 == nil {
				counting = in(uintptr(lo), uintptr(hi))
				continue
			}
		}
		if counting && f[0] == "Rss:" {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || len(f) != 3 || f[2] != "kB" {
				t.Fatalf("/proc/self/smaps: %q", line)
			}
			total += n << 10
		}
	}
	return total
}

// TestSmapsRss sums the Rss of the areas asked for only.
func TestSmapsRss(t *testing.T) {
	text := "7f0000000000-7f0000004000 r--p 00000000 08:01 12 /m/a.safetensors\n" +
		"Size:                 16 kB\nRss:                   8 kB\nPss:  8 kB\n" +
		"7f0000010000-7f0000011000 r--p 00000000 08:01 13 /m/b.safetensors\n" +
		"Rss:                   4 kB\n" +
		"7f0000020000-7f0000030000 rw-p 00000000 00:00 0\n" +
		"Rss:                  64 kB\nVmFlags: rd wr mr mw me ac\n"
	got := smapsRss(t, text, func(lo, hi uintptr) bool { return lo < 0x7f0000012000 })
	assert.Equal(t, int64(12<<10), got)
	assert.Equal(t, int64(64<<10), smapsRss(t, text, func(lo, hi uintptr) bool { return lo >= 0x7f0000020000 }))
}

// TestParseMemAvailable reads MemAvailable (kB) from /proc/meminfo's text,
// 0 when it is missing or not a number.
func TestParseMemAvailable(t *testing.T) {
	assert.Equal(t, int64(3<<30), parseMemAvailable([]byte("MemTotal:  8388608 kB\nMemFree: 1 kB\nMemAvailable:    3145728 kB\n")))
	assert.Equal(t, int64(0), parseMemAvailable([]byte("MemTotal:  8388608 kB\n")))
	assert.Equal(t, int64(0), parseMemAvailable([]byte("MemAvailable: lots kB\n")))
	if _, err := os.Stat("/proc/meminfo"); err == nil {
		assert.Greater(t, HostAvailable(), int64(0))
	}
}

// TestParseProcStatus checks the reading of VmRSS and VmHWM, and the errors
// for a status without them or with values that are not kB.
func TestParseProcStatus(t *testing.T) {
	rss, peak, err := parseProcStatus([]byte("Name:\tkvbench\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t4\n"))
	require.NoError(t, err)
	assert.Equal(t, int64(100<<20), rss)
	assert.Equal(t, int64(200<<20), peak)
	_, _, err = parseProcStatus([]byte("Name:\tx\nVmRSS:\t1 kB\n"))
	assert.ErrorContains(t, err, "no VmRSS or VmHWM")
	_, _, err = parseProcStatus([]byte("VmRSS:\t1 MB\nVmHWM:\t2 kB\n"))
	assert.ErrorContains(t, err, "VmRSS")
	if _, err := os.Stat("/proc/self/status"); err == nil {
		rss, peak, err := HostMemory()
		require.NoError(t, err)
		assert.Greater(t, rss, int64(0))
		assert.GreaterOrEqual(t, peak, rss)
	}
}
