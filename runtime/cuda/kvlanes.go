package cuda

import "github.com/kvbench/kvbench/runtime"

// kvLane is one lane of KV copies (runtime.KVLaner): the StoreKV and
// MoveKV calls of the streams one goroutine serves during a batch step,
// kept in order as a list of kvBatch rounds (a copy that depends on the
// last round in a way forwarding does not resolve starts the next one).
// JoinKVLanes launches round r of every lane together, rounds in order: the
// lanes write disjoint pages (each stream's cache owns its pages), so
// copies of different lanes never depend on each other.
type kvLane struct {
	b      *Backend
	rounds []kvBatch
	used   int // rounds holding copies
}

func (l *kvLane) StoreKV(kPage, vPage runtime.Buffer, slot int, k, v runtime.Buffer, row, head, headDim, kvDim int) {
	l.add(l.b.storeOp(kPage, vPage, slot, k, v, row, head, headDim, kvDim))
}

func (l *kvLane) MoveKV(dstK, dstV runtime.Buffer, dstSlot int, srcK, srcV runtime.Buffer, srcSlot, headDim int) {
	l.add(l.b.moveOp(dstK, dstV, dstSlot, srcK, srcV, srcSlot, headDim))
}

func (l *kvLane) StoreKVAt(kPage, vPage uint64, slot int, k, v runtime.Buffer, row, head, headDim, kvDim int) {
	l.add(l.b.storeOpAt(kPage, vPage, slot, k, v, row, head, headDim, kvDim))
}

func (l *kvLane) MoveKVAt(dstK, dstV uint64, dstSlot int, srcK, srcV uint64, srcSlot, headDim int) {
	l.add(l.b.moveOpAt(dstK, dstV, dstSlot, srcK, srcV, srcSlot, headDim))
}

// add queues a copy in the lane's last round, or in a new one.
func (l *kvLane) add(dk, dv, sk, sv Ptr, mode, hd int) {
	if l.used > 0 && l.rounds[l.used-1].add(dk, dv, sk, sv, mode, hd) {
		return
	}
	if l.used == len(l.rounds) {
		l.rounds = append(l.rounds, newKVBatch())
	}
	l.used++
	if !l.rounds[l.used-1].add(dk, dv, sk, sv, mode, hd) {
		panic("cuda: a KV copy refused by an empty lane round")
	}
}

// KVLanes returns n lanes (runtime.KVLaner), emptied by the last
// JoinKVLanes.
func (b *Backend) KVLanes(n int) []runtime.KVOps {
	for len(b.lanes) < n {
		b.lanes = append(b.lanes, &kvLane{b: b})
		b.laneOps = append(b.laneOps, b.lanes[len(b.lanes)-1])
	}
	return b.laneOps[:n]
}

// JoinKVLanes launches the lanes' copies behind the operations queued
// before: round r of every lane in one be_kv_ops, r = 0, 1, ...
func (b *Backend) JoinKVLanes() {
	b.flushKV() // the main queue and the pages' clears first
	joinRounds(b.lanes, func(ops []uint64, hd int) {
		if len(b.kv.ops) > 0 && b.kv.hd != hd {
			b.flushKV() // one head dim a launch
		}
		if len(b.kv.ops) == 0 {
			b.kv.hd = hd
		}
		// Disjoint pages: no copy of another lane depends on these, so
		// they join the launch without the batch's tracking.
		b.kv.ops = append(b.kv.ops, ops...)
	}, b.flushKV)
}

// joinRounds hands add the copies of round r of every lane (5 words each,
// and their head dim), then calls launch, for r = 0, 1, ... while a lane
// has round r; the lanes are empty after.
func joinRounds(lanes []*kvLane, add func(ops []uint64, hd int), launch func()) {
	for r := 0; ; r++ {
		any := false
		for _, l := range lanes {
			if r >= l.used {
				continue
			}
			any = true
			rd := &l.rounds[r]
			add(rd.ops, rd.hd)
			rd.reset()
		}
		if !any {
			break
		}
		launch()
	}
	for _, l := range lanes {
		l.used = 0
	}
}

var _ runtime.KVLaner = (*Backend)(nil)
