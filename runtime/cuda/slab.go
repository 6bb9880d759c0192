package cuda

import (
	"fmt"
	"slices"
	"sync"
)

// slabBytes is the size of one slab of the small-buffer allocator.
const slabBytes = 64 << 20

// slabMaxBlock is the largest block served from slabs; larger buffers get
// their own cuMemAlloc.
const slabMaxBlock = 64 << 10

// slabMinBlock is the smallest block (and the alignment of every block).
const slabMinBlock = 256

// slabAllocator carves slabs of device memory (each one Device.Alloc, so the
// device's MemStats counts them exactly) into fixed-size blocks of
// power-of-two classes, with a free list per class. KV pages (pageSize *
// headDim float32s, 4 KiB for 16 x 64) come from here.
type slabAllocator struct {
	d       *Device
	mu      sync.Mutex
	classes map[int64]*slabClass
	slabs   []Ptr
	sizes   map[Ptr]int64 // the slabs not of slabBytes (a bulk run's own): their bytes
}

type slabClass struct {
	block int64
	free  []Ptr
}

func newSlabAllocator(d *Device) *slabAllocator {
	return &slabAllocator{d: d, classes: map[int64]*slabClass{}}
}

// blockFor returns the class size serving bytes, or 0 when too large.
func blockFor(bytes int64) int64 {
	if bytes > slabMaxBlock {
		return 0
	}
	b := int64(slabMinBlock)
	for b < bytes {
		b <<= 1
	}
	return b
}

// alloc returns a block of at least bytes (bytes <= slabMaxBlock), the
// size of the block, and whether a slab was taken from the driver for it.
func (s *slabAllocator) alloc(bytes int64) (Ptr, int64, bool, error) {
	var p [1]Ptr
	bs, grew, err := s.allocMany(bytes, p[:])
	return p[0], bs, grew, err
}

// allocMany fills dst with blocks of at least bytes each (bytes <=
// slabMaxBlock) under one lock, in address order within a slab; it returns
// the blocks' size and whether a slab was taken from the driver.
func (s *slabAllocator) allocMany(bytes int64, dst []Ptr) (int64, bool, error) {
	bs := blockFor(bytes)
	if bs == 0 {
		return 0, false, fmt.Errorf("cuda: slab allocation of %d bytes", bytes)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.classes[bs]
	if c == nil {
		c = &slabClass{block: bs}
		s.classes[bs] = c
	}
	grew := false
	// A bulk request (a sequence's run of pages: KVCache.Hold) that the
	// free blocks on top cannot serve side by side: a fresh slab's blocks go
	// on top, so that the run lies in one slab, its blocks one stride apart.
	// A run of more than a quarter of a slab gets a slab of its own size
	// (the blocks a slab of the usual size would leave after such runs
	// could go unused); the blocks left below serve later requests.
	if n := len(dst); n >= slabBulk && c.run(n) < n {
		bytes := int64(slabBytes)
		if int64(n)*bs > slabBytes/4 {
			bytes = int64(n) * bs
		}
		if err := s.grow(c, bytes); err != nil {
			return 0, false, err
		}
		grew = true
	}
	for i := range dst {
		if len(c.free) == 0 {
			if err := s.grow(c, slabBytes); err != nil {
				for _, q := range dst[:i] { // nothing taken on failure
					c.free = append(c.free, q)
				}
				return 0, grew, err
			}
			grew = true
		}
		dst[i] = c.free[len(c.free)-1]
		c.free = c.free[:len(c.free)-1]
	}
	return bs, grew, nil
}

// run is how many of the blocks on top of c's free list, up to n, are
// handed out one block apart in address order (one slab's, side by side).
func (c *slabClass) run(n int) int {
	f := len(c.free)
	if f == 0 {
		return 0
	}
	k := 1
	for k < n && k < f && c.free[f-1-k] == c.free[f-k].Add(c.block) {
		k++
	}
	return k
}

// slabBulk is the fewest blocks of a request that allocMany serves from
// one slab where it can.
const slabBulk = 64

// grow takes a slab of bytes (a multiple of c's block) from the driver
// for class c, its blocks pushed on top of c's free list in reverse, so
// that they are handed out in address order. s.mu is held.
func (s *slabAllocator) grow(c *slabClass, bytes int64) error {
	p, err := s.d.Alloc(bytes)
	if err != nil {
		return err
	}
	s.slabs = append(s.slabs, p)
	if bytes != slabBytes {
		if s.sizes == nil {
			s.sizes = map[Ptr]int64{}
		}
		s.sizes[p] = bytes
	}
	for j := bytes/c.block - 1; j >= 0; j-- {
		c.free = append(c.free, p.Add(j*c.block))
	}
	return nil
}

// size is the bytes of the slab at p.
func (s *slabAllocator) size(p Ptr) int64 {
	if n, ok := s.sizes[p]; ok {
		return n
	}
	return slabBytes
}

// release returns a block of class bs to its free list.
func (s *slabAllocator) release(p Ptr, bs int64) {
	s.mu.Lock()
	s.classes[bs].free = append(s.classes[bs].free, p)
	s.mu.Unlock()
}

// close frees every slab.
func (s *slabAllocator) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.slabs {
		_ = s.d.Free(p)
	}
	s.slabs, s.sizes = nil, nil
	s.classes = map[int64]*slabClass{}
}

// trim gives back to the driver every slab none of whose blocks is in use.
func (s *slabAllocator) trim() {
	s.mu.Lock()
	defer s.mu.Unlock()
	bases := slices.Clone(s.slabs)
	slices.Sort(bases)
	base := func(p Ptr) Ptr { // the slab holding p
		i, found := slices.BinarySearch(bases, p)
		if !found {
			i--
		}
		return bases[i]
	}
	empty := map[Ptr]bool{}
	for bs, c := range s.classes {
		free := map[Ptr]int64{}
		for _, p := range c.free {
			free[base(p)]++
		}
		kept := c.free[:0]
		for _, p := range c.free {
			if b := base(p); free[b] < s.size(b)/bs {
				kept = append(kept, p)
			}
		}
		c.free = kept
		for p, n := range free {
			if n == s.size(p)/bs {
				empty[p] = true
			}
		}
	}
	if len(empty) == 0 {
		return
	}
	left := s.slabs[:0]
	for _, p := range s.slabs {
		if empty[p] {
			_ = s.d.Free(p)
			delete(s.sizes, p)
		} else {
			left = append(left, p)
		}
	}
	s.slabs = left
}
