package cpu_test

import (
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// tinyCache is a KVCache of the tiny synthetic model's shape, pages of ps
// slots, on a one-thread CPU backend (closed with the test), with key and
// value sources of rows rows for Append.
func tinyCache(t *testing.T, ps, rows int) (cache *runtime.KVCache, c runtime.Config, k, v runtime.Buffer) {
	t.Helper()
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	be := cpu.New(1)
	t.Cleanup(func() { be.Close() })
	c = m.Config
	if cache, err = runtime.NewKVCacheOf(be, c, ps, runtime.F32); err != nil {
		t.Fatal(err)
	}
	return cache, c, be.Alloc(rows * c.KVDim()), be.Alloc(rows * c.KVDim())
}
