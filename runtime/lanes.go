package runtime

import (
	"fmt"
	"os"
	goruntime "runtime"
	"runtime/debug"
	"strconv"
	"sync"

	"github.com/kvbench/kvbench/internal/crew"
)

// KVOps is the key/value copies of a backend, or of one of its lanes
// (KVLaner): what a KVCache asks of its backend per token, as Backend's
// StoreKV and MoveKV (a move leaves its source slot empty).
type KVOps interface {
	StoreKV(kPage, vPage Buffer, slot int, k, v Buffer, row, head, headDim, kvDim int)
	MoveKV(dstK, dstV Buffer, dstSlot int, srcK, srcV Buffer, srcSlot, headDim int)
}

// KVMover is an optional capability of a backend's key/value copies
// (KVOps): the copies of one KVCache.Evict given together. They are
// independent (no copy reads a slot another writes, all within one
// sequence's pages), so the backend need not check one against another.
type KVMover interface {
	// MoveKVs is MoveKV(k[d/ps], v[d/ps], d%ps, k[f/ps], v[f/ps], f%ps,
	// headDim) for each (d, f) of moves, ps the page size.
	MoveKVs(k, v []Buffer, moves [][2]int32, pageSize, headDim int)
}

// KVAddrMover is an optional KVOps capability: MoveKVs on a sequence's
// page addresses (KVSeq's, where they are whole: each page's key address,
// then its value address), page i's at addr[2i] and addr[2i+1].
type KVAddrMover interface {
	MoveKVsAt(addr []uint64, moves [][2]int32, pageSize, headDim int)
}

// KVAddresser is an optional Backend capability: KV pages with fixed
// addresses (a device pointer and the page's type, as the backend reads
// them), which its key/value copies also take instead of the page buffers
// (KVAddrOps, on the backend and on its lanes). A KVCache then keeps each
// sequence's page addresses beside its lists and stores and moves through
// them: a batch step's thousands of one-row copies skip a look at each
// page's buffer (a host cache miss each).
type KVAddresser interface {
	KVPageAddr(page Buffer) uint64
}

// KVAddrOps is StoreKV and MoveKV on pages given by their KVAddresser
// addresses.
type KVAddrOps interface {
	StoreKVAt(kPage, vPage uint64, slot int, k, v Buffer, row, head, headDim, kvDim int)
	MoveKVAt(dstK, dstV uint64, dstSlot int, srcK, srcV uint64, srcSlot, headDim int)
}

// KVLaner is an optional Backend capability: the key/value copies of
// several streams made from several goroutines at once. A Batch step then
// appends each stream's keys and values and runs its policy's BeforeAttend
// (evictions) on a goroutine of its own, one lane per goroutine. AllocKV
// (where the backend is a KVAllocator) must be safe to call from the lanes'
// goroutines.
type KVLaner interface {
	// KVLanes returns n lanes (n >= 1), each to be used by one goroutine
	// at a time. A lane's copies take effect once JoinKVLanes queues
	// them; the lanes of one round write disjoint pages (each stream's
	// cache owns its pages).
	KVLanes(n int) []KVOps
	// JoinKVLanes queues every lane's copies, in each lane's order, behind
	// the backend's operations queued before, and empties the lanes.
	JoinKVLanes()
}

// LaneSafe is implemented by a Hook whose BeforeAttend and AfterAttend
// touch only its runner's cache (evictions: the cache's KV copies and page
// allocations), the call's AttnArgs and the hook's own state, no other
// backend call, so that a Batch step may run them for several streams at
// once.
type LaneSafe interface {
	LaneSafe()
}

// LaneAfter is implemented by a LaneSafe hook whose AfterAttend does
// enough work (H2O's and TOVA's scores) to be worth spreading over
// goroutines; the others' run one after another.
type LaneAfter interface {
	LaneAfter()
}

// lanesEnv sets the fewest streams a batch step spreads over goroutines
// (fewer are not worth the goroutines' start; default 8), or turns the
// lanes off. maxLanes is the most goroutines.
const lanesEnv = "KVBENCH_LANES"

var maxLanes = 16

// minLaneStreams reads $KVBENCH_LANES: the fewest streams a batch step
// spreads over goroutines (0: never).
func minLaneStreams() (int, error) {
	switch v := os.Getenv(lanesEnv); v {
	case "", "on":
		return 8, nil
	case "off":
		return 0, nil
	default:
		n, err := strconv.Atoi(v)
		if err != nil || n < 2 {
			return 0, fmt.Errorf("%s=%q: want on, off, or the fewest streams (2 or more) a batch step spreads over goroutines", lanesEnv, v)
		}
		return n, nil
	}
}

// lanes is the goroutines the pass's work before attention (after: after
// it) spreads over: 1 (one after another) unless the backend has lanes, the
// pass is a batch of p.minLanes streams or more, the process may run on
// several threads, and every stream's hook is lane-safe (after attention:
// and a LaneAfter).
func (p *pass) lanes(after bool) int {
	if _, ok := p.be.(KVLaner); !ok || p.minLanes == 0 || len(p.segs) < p.minLanes {
		return 1
	}
	n := min(goruntime.GOMAXPROCS(0), maxLanes, len(p.segs)/2)
	if n <= 1 {
		return 1
	}
	for i := range p.segs {
		h := p.segs[i].r.Hook
		if h == nil {
			if after {
				return 1 // nothing to do after attention
			}
			continue
		}
		if _, ok := h.(LaneSafe); !ok {
			return 1
		}
		if _, ok := h.(LaneAfter); after && !ok {
			return 1
		}
	}
	return n
}

// beforeAttend stores every segment's keys and values of layer l and lets
// its policy act (segment.beforeAttend), on lanes.
func (p *pass) beforeAttend(l int) { p.onLanes(l, false) }

// afterAttend lets every segment's policy see layer l's attention, on lanes.
func (p *pass) afterAttend(l int) { p.onLanes(l, true) }

// laneWork is segment g's share of layer l: its store and policy before
// attention, or its policy's look after.
func (p *pass) laneWork(g *segment, l int, after bool) {
	switch r := g.r; {
	case !after:
		g.beforeAttend(l, p.c, p.scale)
	case r.Hook == nil:
	case p.lateAll: // layers lateLo..lateHi-1, in order, on the calls kept aside (lateacc.go)
		for k := p.lateLo; k < p.lateHi; k++ {
			r.Hook.AfterAttend(k, &r.lateAttn[k])
		}
	default:
		r.Hook.AfterAttend(l, &r.attn)
	}
}

// onLanes runs every segment's laneWork: on lanes() goroutines (the
// caller's one of them), segment j on lane j mod lanes with its cache's KV
// copies on that lane, or one after another. A panic on a lane (a device
// error in an allocation) is raised again on the caller's goroutine, after
// the lanes are joined: an error as an error (wrapped with the layer),
// anything else (a bug) as a message with the lane's stack.
func (p *pass) onLanes(l int, after bool) {
	n := p.lanes(after)
	if n <= 1 && !after {
		// Every stream's keys first, then every policy: a policy that
		// calls the backend (Quest's bounds and choice) finds the batch's
		// KV copies queued together, launched once, not a launch a stream.
		for i := range p.segs {
			p.segs[i].store(l)
		}
		for i := range p.segs {
			p.segs[i].prepare(l, p.c, p.scale)
		}
		return
	}
	if n <= 1 {
		for i := range p.segs {
			p.laneWork(&p.segs[i], l, after)
		}
		return
	}
	kl := p.be.(KVLaner)
	pc, names := StartParts(), &laneParts[boolInt(after)]
	ops := kl.KVLanes(n)
	var mu sync.Mutex
	var failed any
	lane := func(w int) {
		defer func() {
			if e := recover(); e != nil {
				if err, ok := e.(error); !ok || isRuntimeError(err) {
					// A bug, not a device error: its stack is the lane's.
					e = fmt.Sprintf("%v (on a batch step's lane)\n%s", e, debug.Stack())
				}
				mu.Lock()
				if failed == nil {
					failed = e
				}
				mu.Unlock()
			}
		}()
		for j := w; j < len(p.segs); j += n {
			g := &p.segs[j]
			g.r.Cache.ops = ops[w] // reset for every stream after the join
			p.laneWork(g, l, after)
		}
		if w == 0 {
			pc.Mark(names[0])
		}
	}
	crew.Run(n, lane) // lane 0 on the caller's goroutine
	pc.Mark(names[1])
	for i := range p.segs {
		p.segs[i].r.Cache.ops = nil
	}
	kl.JoinKVLanes()
	pc.Mark(names[2])
	if failed != nil {
		if err, ok := failed.(error); ok {
			if p.lateAll {
				panic(fmt.Errorf("batch step, after the last layer: %w", err))
			}
			panic(fmt.Errorf("batch step, layer %d: %w", l, err))
		}
		panic(failed)
	}
}

// laneParts names the parts of onLanes that KVBENCH_PHASES times (before
// attention, after).
var laneParts = [2][3]string{
	{"lanes before attention: the caller's lane", "lanes before attention: waiting for the others", "lanes before attention: join (KV copies queued)"},
	{"lanes after attention: the caller's lane", "lanes after attention: waiting for the others", "lanes after attention: join"},
}

// isRuntimeError says whether err is the Go runtime's (an index out of
// range, a nil dereference: a bug).
func isRuntimeError(err error) bool {
	_, ok := err.(goruntime.Error)
	return ok
}
