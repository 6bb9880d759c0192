package bench

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/kvbench/kvbench/runtime"
)

// Devices are the backends of a run: one per backend configuration (name,
// threads, precision), opened at the first cell that needs it, each holding
// the uploaded weights of the model its cells run. Every stream and every
// cell of a model on a device shares that one upload. Cells end by giving
// back everything else they held (runtime.WorkReleaser); a device whose
// release reports a fault is closed, and the next cell opens it anew.
type Devices struct {
	mu     sync.Mutex
	devs   map[devKey]*device
	closed bool
	// onOpen, when set, sees each backend as it is opened (tests).
	onOpen func(runtime.Backend)
}

// devKey is a backend configuration.
type devKey struct {
	name      string
	threads   int
	precision string
}

// device is one open backend and the weights uploaded to it. mu serialises
// its use: a Backend runs one call at a time, so the streams of a cell take
// turns (a batch of streams takes one turn per step).
type device struct {
	mu      sync.Mutex
	key     devKey
	be      runtime.Backend
	weights map[*runtime.Model]*runtime.DeviceWeights
	inUse   map[*runtime.Model]int // engines using each model's weights now
	users   int                    // engines using the device now
}

// NewDevices returns an empty set of devices.
func NewDevices() *Devices { return &Devices{devs: map[devKey]*device{}} }

// acquire returns the device of configuration k, opened if needed, with m's
// weights uploaded to it (uploaded: by this call), and counts one more
// engine using both; the device's memory peaks restart when that engine is
// its only one. Weights of other models that no engine uses are given back
// before m's are uploaded, so a device holds one model's weights at a time
// when cells run one after another.
func (ds *Devices) acquire(k devKey, m *runtime.Model) (d *device, w *runtime.DeviceWeights, uploaded bool, err error) {
	ds.mu.Lock()
	if ds.closed {
		ds.mu.Unlock()
		return nil, nil, false, errors.New("devices: closed")
	}
	d = ds.devs[k]
	if d == nil {
		spec, err := runtime.LookupBackend(k.name)
		if err != nil {
			ds.mu.Unlock()
			return nil, nil, false, err
		}
		be, err := spec.Open(k.threads, k.precision)
		if err != nil {
			ds.mu.Unlock()
			return nil, nil, false, fmt.Errorf("backend %s: %w", k.name, err)
		}
		if ds.onOpen != nil {
			ds.onOpen(be)
		}
		d = &device{key: k, be: be, weights: map[*runtime.Model]*runtime.DeviceWeights{}, inUse: map[*runtime.Model]int{}}
		ds.devs[k] = d
	}
	d.users++
	d.inUse[m]++
	ds.mu.Unlock()

	d.mu.Lock()
	w = d.weights[m]
	if w == nil {
		if w, err = d.upload(m); err != nil {
			d.mu.Unlock()
			ds.release(d, m)
			return nil, nil, false, err
		}
		uploaded = true
	}
	ds.mu.Lock()
	sole := d.users == 1
	ds.mu.Unlock()
	if mr, ok := d.be.(runtime.MemoryReporter); ok && sole {
		mr.ResetMemoryPeak() // the peaks of the cell that starts
	}
	d.mu.Unlock()
	return d, w, uploaded, nil
}

// upload gives back the weights no engine uses, then uploads m's; d.mu is
// held. A device error (a panic of the backend) is returned as an error.
func (d *device) upload(m *runtime.Model) (w *runtime.DeviceWeights, err error) {
	defer func() {
		if p := recover(); p != nil {
			w, err = nil, fmt.Errorf("upload of %s to %s: device error: %v", m.Source, d.be.Name(), p)
		}
	}()
	for other, ow := range d.weights {
		if d.inUse[other] == 0 {
			ow.Free()
			delete(d.weights, other)
		}
	}
	if w, err = runtime.UploadWeights(m, d.be); err != nil {
		return nil, fmt.Errorf("model %s on %s: %w", m.Source, d.be.Name(), err)
	}
	d.weights[m] = w
	return w, nil
}

// release counts one engine of model m fewer on d. When no engine is left,
// everything but the weights is given back (runtime.WorkReleaser); a device
// that reports a fault then is closed and forgotten, so that the next cell
// opens it afresh. The error is that fault.
func (ds *Devices) release(d *device, m *runtime.Model) error {
	ds.mu.Lock()
	d.users--
	if d.inUse[m]--; d.inUse[m] <= 0 {
		delete(d.inUse, m)
	}
	last := d.users == 0
	ds.mu.Unlock()
	if !last {
		return nil
	}
	d.mu.Lock()
	err := releaseWork(d.be)
	d.mu.Unlock()
	if err == nil {
		return nil
	}
	ds.mu.Lock()
	if ds.devs[d.key] == d && d.users == 0 {
		delete(ds.devs, d.key)
		ds.mu.Unlock()
		d.close()
	} else {
		ds.mu.Unlock()
	}
	return err
}

// releaseWork gives back what a backend holds besides the weights, turning
// a panic of the backend into the error.
func releaseWork(be runtime.Backend) (err error) {
	rel, ok := be.(runtime.WorkReleaser)
	if !ok {
		return nil
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("device error: %v", p)
		}
	}()
	return rel.ReleaseWork()
}

// close frees the device's weights and closes its backend. A backend that
// fails as it closes (a device already in trouble) is left as it is.
func (d *device) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	defer func() { _ = recover() }()
	d.weights = nil
	closeBackend(d.be) // frees the weights with the rest
}

// Close closes every device. Engines must be done with them.
func (ds *Devices) Close() {
	ds.mu.Lock()
	devs := make([]*device, 0, len(ds.devs))
	for _, d := range ds.devs {
		devs = append(devs, d)
	}
	ds.devs = map[devKey]*device{}
	ds.closed = true
	ds.mu.Unlock()
	for _, d := range devs {
		d.close()
	}
}

// backends lists the open backends, by configuration (tests).
func (ds *Devices) backends() []runtime.Backend {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	keys := make([]devKey, 0, len(ds.devs))
	for k := range ds.devs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.name != b.name {
			return a.name < b.name
		}
		if a.threads != b.threads {
			return a.threads < b.threads
		}
		return a.precision < b.precision
	})
	out := make([]runtime.Backend, len(keys))
	for i, k := range keys {
		out[i] = ds.devs[k].be
	}
	return out
}
