package cuda

import "github.com/kvbench/kvbench/runtime"

// Test hooks of package cuda, compiled only with its tests.

// TableWords is the page tables' pool size in words, the words handed out
// from it, and those in live tables' regions and in the free lists.
func (b *Backend) TableWords() (size, top, live, free int64) { return b.tableWords() }

// ReadTable downloads the key and value page lists the device holds for
// the sequence with ID id (nil, nil when it has none).
func (b *Backend) ReadTable(id uint64) (k, v []uint64) { return b.readTable(id) }

// PagePtr is the device address of a KV page.
func (b *Backend) PagePtr(x runtime.Buffer) uint64 {
	p, _ := b.kvPage(x)
	return uint64(p)
}

// SetFakeSums turns the fake device's pseudo-random attention sums
// (KVBENCH_FAKE_SUMS=random) on or off; the returned function restores it.
func SetFakeSums(on bool) (restore func()) {
	old := fakeSums
	fakeSums = on
	return func() { fakeSums = old }
}

// SetFakeShared sets the shared memory a block of fake devices made after
// it may opt in to and a multiprocessor's; the returned function restores
// them.
func SetFakeShared(optin, perSM int32) (restore func()) {
	o, p := fakeSharedOptin, fakeSharedPerSM
	fakeSharedOptin, fakeSharedPerSM = optin, perSM
	return func() { fakeSharedOptin, fakeSharedPerSM = o, p }
}

// SetFakeMemory sets the fake device's memory clock (kHz) and bus width
// (bits) for the backends made after it (an H200's by default); the
// returned function restores them.
func SetFakeMemory(clockKHz, busBits int32) (restore func()) {
	c, w := fakeMemClockKHz, fakeMemBusBits
	fakeMemClockKHz, fakeMemBusBits = clockKHz, busBits
	return func() { fakeMemClockKHz, fakeMemBusBits = c, w }
}

// SetTablePoolMin sets the smallest size of a page tables' pool, in words,
// for the pools made or grown after it; the returned function restores it.
func SetTablePoolMin(words int64) (restore func()) {
	old := tablePoolMin
	tablePoolMin = words
	return func() { tablePoolMin = old }
}

// SetTableIdleCalls sets how many calls a page table may go unused before
// the pool may drop it; the returned function restores it.
func SetTableIdleCalls(calls uint64) (restore func()) {
	old := tableIdleCalls
	tableIdleCalls = calls
	return func() { tableIdleCalls = old }
}

// Tables is the number of sequences the backend keeps page tables for.
func (b *Backend) Tables() int { return len(b.pt.seqs) }

// Epoch counts the host's waits for the device (each restarts the staging
// arena).
func (b *Backend) Epoch() int { return b.epoch }

// StagingBytes is the size of the staging arena.
func (b *Backend) StagingBytes() int64 { return b.st.size }

// OnBatchMeta sets a function that sees the ints AttendBatch built for its
// calls, each call's (base, header) offsets in them, and the parts it built
// them in (nil: none).
func (b *Backend) OnBatchMeta(f func(ints, bases []int32, parts int)) { b.onBatchMeta = f }

// SetMetaCallsPerPart sets the fewest calls AttendBatch builds the metadata
// of on a goroutine of their own; the returned function restores it.
func SetMetaCallsPerPart(n int) (restore func()) {
	old := metaCallsPerPart
	metaCallsPerPart = n
	return func() { metaCallsPerPart = old }
}

// SetTableChecks turns AttendBatch's check of its calls' page tables off
// (every call's tables refreshed one after another, as before it) or on;
// the returned function restores it.
func SetTableChecks(on bool) (restore func()) {
	old := tableChecks
	tableChecks = on
	return func() { tableChecks = old }
}

// CurrentCalls counts the calls of the last AttendBatch whose page tables
// checkTables found current.
func (b *Backend) CurrentCalls() int {
	n := 0
	for i := range b.bt.calls {
		if b.bt.calls[i].current {
			n++
		}
	}
	return n
}

// SetAccRawMax sets the most bytes of kept scores a block of an attention
// call's rows may need (accrows.go); the returned function restores it.
func SetAccRawMax(n int64) (restore func()) {
	old := accRawMax
	accRawMax = n
	return func() { accRawMax = old }
}

// EarlyCalls is how many attention launches have read early (RH_EARLY).
func (b *Backend) EarlyCalls() int64 { return b.split.earlyN }

// PageValues reads n elements of a KV page back as float32 (bf16 pages
// widened), after the queued work.
func (b *Backend) PageValues(x runtime.Buffer, n int) []float32 {
	p, t := b.kvPage(x)
	out := make([]float32, n)
	if t == kvBF16 {
		u := make([]uint16, n)
		get(b, u, p)
		for i, v := range u {
			out[i] = runtime.BF16ToF32(v)
		}
		return out
	}
	get(b, out, p)
	return out
}

// HeaderSelWord is the split-KV header's first word of RH_SEL (a device
// selection's address, which differs between backends).
const HeaderSelWord = rhSel

// HeaderPBaseWord is the header's first word of RH_PBASE (the address the
// descriptors' page offsets count from: each backend's own).
const HeaderPBaseWord = rhPBase

// SetAccTail turns attendAccTail on or off (KVBENCH_ACC_TAIL) and returns
// what puts it back.
func (b *Backend) SetAccTail(on bool) (restore func()) {
	old := b.noAccTail
	b.noAccTail = !on
	return func() { b.noAccTail = old }
}

// SetAccCols turns the tensor-core sums of prompt chunks whose every row
// adds to Acc on or off (KVBENCH_ACC_COLS), returning the old setting's
// restore.
func (b *Backend) SetAccCols(on bool) (restore func()) {
	old := b.noAccCols
	b.noAccCols = !on
	return func() { b.noAccCols = old }
}

// SetAccColsMT picks acc_cols's variant (KVBENCH_ACC_COLS_MT), returning
// the old setting's restore.
func (b *Backend) SetAccColsMT(mt int) (restore func()) {
	old := b.accColsMT
	b.accColsMT = mt
	return func() { b.accColsMT = old }
}

// ScoreBytes is the size of the scratch that keeps the split-KV path's raw
// scores (and be_attend's).
func (b *Backend) ScoreBytes() int64 { return b.scores.bytes }
