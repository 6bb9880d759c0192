package runtime

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// DeviceWeights are a model's weights uploaded to one backend: made once per
// model and device and shared by every Runner of that model on that backend
// (RunnerOptions.Weights), whatever the number of streams and cells.
type DeviceWeights struct {
	model   *Model
	be      Backend
	w       *deviceWeights
	bufs    []Buffer // every distinct buffer, for Free
	bytes   int64
	tensors int
	freed   bool
}

// uploads counts UploadWeights calls that uploaded a model, process-wide.
var uploads atomic.Int64

// WeightUploads is the number of times a model's weights were uploaded to a
// backend in this process (UploadWeights, and every Runner made without
// shared weights): a run that shares weights uploads once per model and
// device.
func WeightUploads() int64 { return uploads.Load() }

// UploadWeights uploads every tensor of m to be, kept in its stored type.
// On a backend that copies weights (WeightCopier, a GPU) the host drops
// each file-backed tensor's pages once it is uploaded (ReleaseHost), so the
// process does not hold the model twice, nor at once. When an upload fails,
// the tensors uploaded before it are given back (where be is a
// BufferFreer) and the error names the tensor. Where be is a
// QKInterleaver that asks for it, the query and key rows go up in
// interleaved RoPE order (interleaveHeads).
func UploadWeights(m *Model, be Backend) (*DeviceWeights, error) {
	if m == nil || be == nil {
		return nil, fmt.Errorf("upload weights: no model or no backend")
	}
	d := &DeviceWeights{model: m, be: be, w: &deviceWeights{rope: m.Config.Rope}}
	copies := false
	if wc, ok := be.(WeightCopier); ok {
		copies = wc.CopiesWeights()
	}
	// The tensors whose heads go up reordered: the queries' and keys'.
	reorder := map[*Tensor]bool{}
	if interleavesQK(m, be) {
		d.w.rope = RopeInterleaved
		for i := range m.Weights.Layers {
			l := &m.Weights.Layers[i]
			for _, t := range []*Tensor{l.Wq, l.Wk, l.Bq, l.Bk, l.QNorm, l.KNorm} {
				if t != nil {
					reorder[t] = true
				}
			}
		}
	}
	done := map[*Tensor]Buffer{}
	up := func(t *Tensor) (Buffer, error) {
		if t == nil {
			return nil, nil
		}
		if b, ok := done[t]; ok { // a tied head: the embedding's buffer
			return b, nil
		}
		src := t
		if reorder[t] {
			var err error
			if src, err = interleaveHeads(t, m.Config.HeadDim); err != nil {
				return nil, fmt.Errorf("upload %s: %w", t.Name, err)
			}
		}
		b, err := be.Upload(src)
		if err != nil {
			return nil, fmt.Errorf("upload %s: %w", t.Name, err)
		}
		done[t] = b
		d.bufs = append(d.bufs, b)
		d.bytes += t.Bytes()
		d.tensors++
		if copies {
			ReleaseHost(t)
		}
		return b, nil
	}
	if err := d.upload(up); err != nil {
		d.Free()
		return nil, err
	}
	uploads.Add(1)
	return d, nil
}

// upload fills d.w through up, tensor by tensor.
func (d *DeviceWeights) upload(up func(*Tensor) (Buffer, error)) (err error) {
	m, w := d.model, d.w
	if w.embed, err = up(m.Weights.Embed); err != nil {
		return err
	}
	if w.norm, err = up(m.Weights.Norm); err != nil {
		return err
	}
	if w.output, err = up(m.Weights.Output); err != nil {
		return err
	}
	w.layers = make([]deviceLayer, m.Config.Layers)
	if len(m.Weights.Layers) != len(w.layers) {
		return fmt.Errorf("upload weights: model %s has %d layers of weights, config says %d", m.Source, len(m.Weights.Layers), len(w.layers))
	}
	for i := range w.layers {
		src, dst := &m.Weights.Layers[i], &w.layers[i]
		for _, p := range []struct {
			dst *Buffer
			src *Tensor
		}{{&dst.attnNorm, src.AttnNorm}, {&dst.wq, src.Wq}, {&dst.wk, src.Wk}, {&dst.wv, src.Wv},
			{&dst.wo, src.Wo}, {&dst.bq, src.Bq}, {&dst.bk, src.Bk}, {&dst.bv, src.Bv},
			{&dst.qNorm, src.QNorm}, {&dst.kNorm, src.KNorm},
			{&dst.mlpNorm, src.MLPNorm}, {&dst.gate, src.Gate}, {&dst.up, src.Up}, {&dst.down, src.Down}} {
			if *p.dst, err = up(p.src); err != nil {
				return err
			}
		}
	}
	return nil
}

// Model is the model whose weights these are.
func (d *DeviceWeights) Model() *Model { return d.model }

// Backend is the backend that holds them.
func (d *DeviceWeights) Backend() Backend { return d.be }

// Bytes is the size of the uploaded weights as stored (a tied head counted
// once).
func (d *DeviceWeights) Bytes() int64 { return d.bytes }

// Tensors is the number of distinct tensors uploaded.
func (d *DeviceWeights) Tensors() int { return d.tensors }

// Free gives the weights' buffers back where the backend is a BufferFreer
// (a GPU); no Runner may use them after. It is safe to call twice.
func (d *DeviceWeights) Free() {
	if d.freed {
		return
	}
	d.freed = true
	if f, ok := d.be.(BufferFreer); ok {
		for _, b := range d.bufs {
			f.Free(b)
		}
	}
	d.bufs = nil
}

// Freed reports whether Free was called.
func (d *DeviceWeights) Freed() bool { return d.freed }

// ReleaseHost lets the host drop the resident pages of a tensor whose data
// is a mapped file (ReadSafetensors maps them): the data stays readable,
// read again from the file if it is touched again, but no longer counts in
// the process's resident memory. A tensor on the heap is left as it is.
func ReleaseHost(t *Tensor) {
	if t == nil {
		return
	}
	mp, ok := t.mem.(*mapping)
	if !ok {
		return
	}
	var p unsafe.Pointer
	n := int(t.Bytes())
	switch {
	case t.DType == F32 && len(t.F32) > 0:
		p = unsafe.Pointer(unsafe.SliceData(t.F32))
	case t.DType != F32 && len(t.U16) > 0:
		p = unsafe.Pointer(unsafe.SliceData(t.U16))
	default:
		return
	}
	mp.drop(p, n)
}

// usableBy reports why a runner of m on be cannot use d, or nil.
func (d *DeviceWeights) usableBy(m *Model, be Backend) error {
	switch {
	case d.freed:
		return fmt.Errorf("runner: the uploaded weights of %s were freed", d.model.Source)
	case d.model != m:
		return fmt.Errorf("runner: weights uploaded for model %s, not %s", d.model.Source, m.Source)
	case d.be != be:
		return fmt.Errorf("runner: weights of %s uploaded to another %s backend", m.Source, d.be.Name())
	}
	return nil
}
