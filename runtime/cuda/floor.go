package cuda

import "fmt"

// floorThreads is RF_NT in floor.cu: the read floors' threads a block.
const floorThreads = 256

// ReadFloor enqueues a kernel that reads bytes (a multiple of 16) at src
// once and does nothing else, with one wave of resident blocks: what no
// step that must read as many bytes can beat. sink is 4 bytes of device
// memory it may write.
func (k *Kernels) ReadFloor(src Ptr, bytes int64, sink Ptr) error {
	if bytes%16 != 0 {
		return fmt.Errorf("cuda: read floor of %d bytes, not a multiple of 16", bytes)
	}
	f, err := k.Func("read_floor")
	if err != nil {
		return err
	}
	occ, err := f.Occupancy(floorThreads, 0)
	if err != nil {
		return err
	}
	return f.Launch(Dim3{k.D.SMs * max(occ, 1), 1, 1}, Dim3{floorThreads, 1, 1}, 0, src, uint64(bytes/16), sink)
}

// How SplitFloor's partials are merged.
const (
	FloorCombine = iota // a second kernel, after the first one's end (attn_rt_combine's way)
	FloorFused          // the row's last block to finish (the fused merge's way)
	FloorNone           // none: the partials are written and left (the split shape's reads and writes alone)
)

// SplitFloor is the read floor in a split step's shape (floor_split and
// floor_combine in floor.cu): Rows rows read in Chunks chunks each, one
// block a chunk, each writing NP floats of partial that a merge sums: what
// a split-KV decode step that reads as many bytes and merges as many
// partials could reach at best.
type SplitFloor struct {
	k                  *Kernels
	Rows, Chunks, NP   int
	part, out, counter Ptr
}

// NewSplitFloor allocates a SplitFloor's partials, outputs and counters.
func (k *Kernels) NewSplitFloor(rows, chunks, np int) (*SplitFloor, error) {
	if rows < 1 || rows > maxGridY || chunks < 1 || np < 1 {
		return nil, fmt.Errorf("cuda: split floor of %d rows (1 to %d), %d chunks and %d floats a partial", rows, maxGridY, chunks, np)
	}
	f := &SplitFloor{k: k, Rows: rows, Chunks: chunks, NP: np}
	var err error
	alloc := func(p *Ptr, bytes int64) {
		if err == nil {
			*p, err = k.D.Alloc(bytes)
		}
	}
	alloc(&f.part, int64(rows*chunks*np)*4)
	alloc(&f.out, int64(rows*np)*4)
	alloc(&f.counter, int64(rows)*4)
	if err == nil {
		err = k.D.Memset32(f.counter, 0, int64(rows))
	}
	if err != nil {
		f.Free()
		return nil, err
	}
	return f, nil
}

// Launch enqueues one step: rows of rowBytes (a multiple of 16) each from
// src, merged by mode (FloorCombine, FloorFused or FloorNone).
func (f *SplitFloor) Launch(src Ptr, rowBytes int64, mode int) error {
	if rowBytes%16 != 0 || rowBytes < 16 {
		return fmt.Errorf("cuda: split floor rows of %d bytes, not a positive multiple of 16", rowBytes)
	}
	if mode != FloorCombine && mode != FloorFused && mode != FloorNone {
		return fmt.Errorf("cuda: split floor merge %d", mode)
	}
	sf, err := f.k.Func("floor_split")
	if err != nil {
		return err
	}
	if err := sf.Launch(Dim3{f.Chunks, f.Rows, 1}, Dim3{floorThreads, 1, 1}, 0, src, uint64(rowBytes/16), int32(f.NP),
		f.part, f.out, f.counter, flag(mode == FloorFused)); err != nil {
		return err
	}
	if mode != FloorCombine {
		return nil
	}
	cf, err := f.k.Func("floor_combine")
	if err != nil {
		return err
	}
	return cf.LaunchAfter(Dim3{(f.NP + floorThreads - 1) / floorThreads, f.Rows, 1}, Dim3{floorThreads, 1, 1}, 0,
		f.part, int32(f.Chunks), int32(f.NP), f.out)
}

// Out reads the last step's merged rows [Rows, NP].
func (f *SplitFloor) Out() ([]float32, error) {
	out := make([]float32, f.Rows*f.NP)
	return out, Download(f.k.D, out, f.out)
}

// Parts reads the last step's partials [Rows, Chunks, NP].
func (f *SplitFloor) Parts() ([]float32, error) {
	part := make([]float32, f.Rows*f.Chunks*f.NP)
	return part, Download(f.k.D, part, f.part)
}

// Free releases the device memory.
func (f *SplitFloor) Free() {
	for _, p := range []Ptr{f.part, f.out, f.counter} {
		if p != 0 {
			_ = f.k.D.Free(p)
		}
	}
}
