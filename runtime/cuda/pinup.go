package cuda

import (
	goruntime "runtime"
	"sync"
	"unsafe"
)

// A large upload (a model's weight) goes through two pinned buffers: the
// host copies a piece of the source into one, with several goroutines (the
// source is usually a mapped file whose pages fault in as they are read),
// while the device copies the other to its place. A pageable copy instead
// makes the driver stage every byte itself, one call and one wait a tensor.

// stagePiece is the bytes of one pinned buffer; stageMin the smallest
// upload that is staged (smaller ones are one pageable copy).
const (
	stagePiece = 32 << 20
	stageMin   = 4 << 20
)

// pinnedStager holds the pinned buffers of staged uploads (Backend.pinUp),
// made at the first and kept until Close, and an event per buffer that
// says when the device has read it.
type pinnedStager struct {
	buf  [2]*Pinned
	done [2]*Event
	used [2]bool
	next int
}

// uploadStaged copies src to dst through b.pinUp's pinned buffers. It
// returns once src has been read; the device's copies of the last pieces
// may still run (they are ordered before later work on the stream, and a
// buffer is not refilled before its event).
func (b *Backend) uploadStaged(dst Ptr, src []byte) error {
	s := &b.pinUp
	if s.buf[0] == nil {
		for i := range s.buf {
			p, err := b.D.AllocPinned(stagePiece)
			if err != nil {
				s.free()
				return err
			}
			s.buf[i] = p
			e, err := b.D.NewEvent()
			if err != nil {
				s.free()
				return err
			}
			s.done[i] = e
		}
	}
	for off := 0; off < len(src); off += stagePiece {
		n := min(stagePiece, len(src)-off)
		k := s.next
		s.next ^= 1
		if s.used[k] {
			if err := s.done[k].Wait(); err != nil {
				return err
			}
		}
		copyParallel(s.buf[k].Bytes()[:n], src[off:off+n])
		if err := b.D.CopyHtoDAsync(dst.Add(int64(off)), s.buf[k], 0, int64(n)); err != nil {
			return err
		}
		if err := s.done[k].Record(); err != nil {
			return err
		}
		s.used[k] = true
	}
	return nil
}

// free releases the pinned buffers and events (after the stream's work).
func (s *pinnedStager) free() {
	for i := range s.buf {
		if s.buf[i] != nil {
			_ = s.buf[i].Free()
			s.buf[i] = nil
		}
		if s.done[i] != nil {
			_ = s.done[i].Destroy()
			s.done[i] = nil
		}
		s.used[i] = false
	}
}

// copyParallel copies src into dst (of the same length) in up to one part
// per core, each a multiple of 64 bytes but the last.
func copyParallel(dst, src []byte) {
	parts := min(goruntime.GOMAXPROCS(0), 8, max(1, len(src)/(1<<20)))
	if parts <= 1 {
		copy(dst, src)
		return
	}
	step := (len(src)/parts + 63) &^ 63
	var wg sync.WaitGroup
	for lo := 0; lo < len(src); lo += step {
		hi := min(lo+step, len(src))
		wg.Add(1)
		go func() {
			defer wg.Done()
			copy(dst[lo:hi], src[lo:hi])
		}()
	}
	wg.Wait()
}

// asBytes is the memory of s as bytes.
func asBytes[T any](s []T) []byte {
	p, n := bytesOf(s)
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(p), n)
}
