package policytest

import (
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// BulkPages is the CPU backend with the CUDA backend's bulk page allocation
// (runtime.KVPageAllocator), the capability runtime.KVCache.Hold acts on:
// the GPU's page handling, its memory counted as the CPU backend counts it
// (the pages come from AllocKV one by one), for tests without a GPU.
type BulkPages struct{ *cpu.Backend }

// AllocKVPages fills dst with zeroed page buffers of n elements of type t.
func (b BulkPages) AllocKVPages(n int, t runtime.DType, dst []runtime.Buffer) {
	for i := range dst {
		dst[i] = b.AllocKV(n, t)
	}
}

// HoldReserve is the most bytes runtime.KVCache.Hold's runs hold past the
// pages of the tokens a cache of layers x kvHeads sequences holds: the
// HoldTail tokens after a prompt, and a partly filled page, a sequence.
func HoldReserve(c *runtime.KVCache, layers, kvHeads int) int64 {
	pages := (runtime.HoldTail+c.PageSize()-1)/c.PageSize() + 1
	return int64(layers*kvHeads*pages) * c.PageBytes()
}
