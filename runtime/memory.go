package runtime

import "strconv"

// This file holds the optional Backend capabilities that account for and
// release device memory: what a cell of a benchmark holds (weights, KV
// pages, scratch), and how it gives everything but the weights back.

// MemKind is what a backend buffer is used for.
type MemKind uint8

const (
	// MemScratch is activations, workspaces and everything else that is
	// neither a weight nor a KV page.
	MemScratch MemKind = iota
	// MemWeights is an uploaded weight (Upload).
	MemWeights
	// MemKV is a KV-cache page (KVAllocator.AllocKV).
	MemKV
)

// String names the kind as records and errors do.
func (k MemKind) String() string {
	switch k {
	case MemWeights:
		return "weights"
	case MemKV:
		return "kv"
	case MemScratch:
		return "scratch"
	}
	return "MemKind(" + strconv.Itoa(int(k)) + ")"
}

// Memory is the memory a backend holds, by use, now and at the peak since
// the last ResetMemoryPeak. Weights + KV + Scratch is what the backend took
// from the device (on a GPU: every driver allocation it made, so Scratch
// also holds workspaces, staging space and the unused part of its slabs).
type Memory struct {
	Weights int64 // uploaded weights
	KV      int64 // KV pages, as allocated (AllocKV): free pages a cache keeps for reuse included
	Scratch int64 // everything else

	KVBuffers int   // live KV page buffers (a page's keys and its values are two)
	Uploads   int   // weight tensors uploaded since the backend was made
	PeakKV    int64 // the most KV bytes held at once
	// PeakScratch is the most scratch bytes held at once.
	PeakScratch int64
	// Peak is the most memory held at once, Weights + KV + Scratch.
	Peak int64
}

// Total is Weights + KV + Scratch.
func (m Memory) Total() int64 { return m.Weights + m.KV + m.Scratch }

// MemoryReporter is an optional Backend capability: the memory it holds, by
// use, so that a benchmark can report weights, KV and scratch per cell.
type MemoryReporter interface {
	// Memory reports what the backend holds now and its peaks.
	Memory() Memory
	// ResetMemoryPeak sets the peaks to what is held now.
	ResetMemoryPeak()
}

// MemoryRoom is an optional Backend capability: the bytes it could still
// allocate now (a GPU's free memory; for the CPU, the host's available
// memory), 0 when it cannot tell.
type MemoryRoom interface {
	FreeBytes() int64
}

// BufferFreer is an optional Backend capability: a buffer given back before
// the backend closes. The buffer is not used after.
type BufferFreer interface {
	Free(x Buffer)
}

// WorkReleaser is an optional Backend capability: everything but the
// uploaded weights given back at once (the end of a benchmark cell, or the
// recovery from a failed one). Every Buffer that is not a weight, every
// workspace and every recorded replay is invalid after it; the weights stay.
type WorkReleaser interface {
	// ReleaseWork frees every buffer but the weights and the backend's
	// workspaces, and reports whether the device still works: a non-nil
	// error (a sticky device fault) means the backend must be closed and
	// opened anew.
	ReleaseWork() error
}

// WeightCopier is an optional Backend capability: Upload copies a weight
// into memory of the backend's own (a GPU's), so the host's copy of its data
// is not needed once Upload returns. UploadWeights then lets the host drop
// the pages of file-backed tensors as it goes (see ReleaseHost). A backend
// without it reads weights where they are (the CPU).
type WeightCopier interface {
	CopiesWeights() bool
}

// AllocFailer is an optional Backend capability for tests of failure
// handling: fail, when set, is asked before every allocation of the given
// kind and size, and a non-nil error fails that allocation as running out
// of device memory would (the backend panics with it, or returns it where
// the method has an error result). nil clears it.
type AllocFailer interface {
	FailAllocs(fail func(kind MemKind, bytes int64) error)
}
