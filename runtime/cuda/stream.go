package cuda

import (
	"fmt"
	"unsafe"

	"github.com/ebitengine/purego"
)

// Pinned is page-locked host memory: the source or destination of copies
// that run on the device's stream without the host waiting for them.
type Pinned struct {
	d     *Device
	p     unsafe.Pointer
	bytes int64
}

// AllocPinned allocates bytes of page-locked host memory.
func (d *Device) AllocPinned(bytes int64) (*Pinned, error) {
	if bytes <= 0 {
		return nil, fmt.Errorf("cuda: pinned allocation of %d bytes", bytes)
	}
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer leave()
	h := &Pinned{d: d, bytes: bytes}
	if err := d.api.check(fmt.Sprintf("cuMemAllocHost_v2(%d bytes)", bytes), d.api.cuMemAllocHost(&h.p, uint64(bytes))); err != nil {
		return nil, err
	}
	return h, nil
}

// Bytes is the pinned memory as a byte slice.
func (h *Pinned) Bytes() []byte { return unsafe.Slice((*byte)(h.p), h.bytes) }

// Len is the size in bytes.
func (h *Pinned) Len() int64 { return h.bytes }

// Free releases the memory (after the stream's work, which may read it).
func (h *Pinned) Free() error {
	if h.p == nil {
		return nil
	}
	if err := h.d.Sync(); err != nil {
		return err
	}
	if err := h.d.enter(); err != nil {
		return err
	}
	defer leave()
	err := h.d.api.check("cuMemFreeHost", h.d.api.cuMemFreeHost(h.p))
	h.p, h.bytes = nil, 0
	return err
}

func (h *Pinned) span(off, bytes int64, call string) (unsafe.Pointer, error) {
	if off < 0 || bytes < 0 || off+bytes > h.bytes {
		return nil, fmt.Errorf("cuda: %s of %d bytes at %d in pinned memory of %d", call, bytes, off, h.bytes)
	}
	return unsafe.Add(h.p, off), nil
}

// CopyHtoDAsync enqueues a copy of bytes from h at off to dst on the stream.
// The host must not change those bytes until the stream has run the copy.
func (d *Device) CopyHtoDAsync(dst Ptr, h *Pinned, off, bytes int64) error {
	src, err := h.span(off, bytes, "CopyHtoDAsync")
	if err != nil || bytes == 0 {
		return err
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer leave()
	d.serialise()
	if fk := d.api.fake; fk != nil {
		fk.copies.Add(1)
		return nil
	}
	r, _, _ := purego.SyscallN(d.api.rawHtoDAsync, uintptr(dst), uintptr(src), uintptr(bytes), d.stream)
	return d.api.check("cuMemcpyHtoDAsync_v2", int32(r))
}

// CopyDtoHAsync enqueues a copy of bytes from src to h at off on the stream;
// the bytes are there once the stream has run it (Sync).
func (d *Device) CopyDtoHAsync(h *Pinned, off int64, src Ptr, bytes int64) error {
	dst, err := h.span(off, bytes, "CopyDtoHAsync")
	if err != nil || bytes == 0 {
		return err
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer leave()
	d.serialise()
	return d.api.check("cuMemcpyDtoHAsync_v2", d.api.cuMemcpyDtoHAsync(dst, uint64(src), uint64(bytes), d.stream))
}

// Graph is a captured sequence of the stream's work, instantiated for replay.
type Graph struct {
	d       *Device
	g, exec uintptr
}

// streamCaptureRelaxed is CU_STREAM_CAPTURE_MODE_RELAXED: launches of this
// package may come from any OS thread during a capture.
const streamCaptureRelaxed = 2

// BeginCapture starts recording the work enqueued on the stream into a graph
// instead of running it; EndCapture ends it.
func (d *Device) BeginCapture() error {
	if err := d.enter(); err != nil {
		return err
	}
	defer leave()
	if err := d.api.check("cuStreamBeginCapture_v2", d.api.cuStreamBeginCapture(d.stream, streamCaptureRelaxed)); err != nil {
		return err
	}
	d.capturing.Store(true)
	return nil
}

// EndCapture ends a capture and instantiates the recorded graph.
func (d *Device) EndCapture() (*Graph, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer leave()
	g := &Graph{d: d}
	d.capturing.Store(false)
	if err := d.api.check("cuStreamEndCapture", d.api.cuStreamEndCapture(d.stream, &g.g)); err != nil {
		return nil, err
	}
	if err := d.api.check("cuGraphInstantiateWithFlags", d.api.cuGraphInstantiateWithFlags(&g.exec, g.g, 0)); err != nil {
		d.api.cuGraphDestroy(g.g)
		return nil, err
	}
	return g, nil
}

// Launch enqueues one replay of the graph on the stream.
func (g *Graph) Launch() error {
	if err := g.d.enter(); err != nil {
		return err
	}
	defer leave()
	g.d.serialise() // the work after a replay waits for all of it
	if t := g.d.clockStart(); t != 0 {
		defer g.d.clockEnd("graph", t)
	}
	return g.d.api.check("cuGraphLaunch", g.d.api.cuGraphLaunch(g.exec, g.d.stream))
}

// Destroy releases the graph.
func (g *Graph) Destroy() error {
	if err := g.d.enter(); err != nil {
		return err
	}
	defer leave()
	err1 := g.d.api.check("cuGraphExecDestroy", g.d.api.cuGraphExecDestroy(g.exec))
	err2 := g.d.api.check("cuGraphDestroy", g.d.api.cuGraphDestroy(g.g))
	if err1 != nil {
		return err1
	}
	return err2
}
