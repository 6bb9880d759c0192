package cuda

import (
	"fmt"
	"os"
	"strconv"
	"sync"

	kernelsrc "github.com/kvbench/kvbench/cuda"
	"github.com/kvbench/kvbench/runtime"
)

// buf is a Backend buffer: float32 activations, a KV page (F32 or BF16), or
// a weight kept as stored.
type buf struct {
	p     Ptr
	n     int
	block int64 // slab block size; 0: an allocation of its own
	bytes int64
	live  int32 // its index in Backend.live plus one; 0: not live
	dtype runtime.DType
	kind  runtime.MemKind // what it counts as in Memory (memory.go)
}

// bufBytes is a buf's size, its fields so ordered: a 128K prompt of the 8B
// shape makes 4 M of them, one a KV page (TestBufSize).
const bufBytes = 40

func (b *buf) Len() int { return b.n }

// Backend is runtime.Backend (and runtime.Scorer, runtime.PageScorer) on one
// CUDA GPU. Buffers live in device memory; the host only sees them through
// Write and Read.
// Kernels run in order on the device's stream; Read waits for them. Like the
// CPU backend it is not safe for concurrent use.
type Backend struct {
	D     *Device
	mod   Modules
	fns   map[string]*Function
	slab  *slabAllocator
	mu    sync.Mutex
	live  []*buf       // the buffers not yet freed (buf.live: each one's index)
	pinUp pinnedStager // pinned buffers of large uploads (pinup.go)
	now   int64        // bytes held by live buffers (as asked for)
	peak  int64

	// Per-call scratch on the device, grown as needed (pscore: the page
	// scores of PageBounds.Score).
	scores, full, recall, small, part, ml, pscore scratch
	lse, qbf                                      scratch // a prompt chunk's lse and bf16 queries for its sums on the tensor cores (acccols.go)
	accWork                                       scratch // a batch's accumulated probabilities: raw scores, maxima and sums, the sums (accbatch.go)
	// The split-KV attention's chunk, occupancies and last plan (splitkv.go).
	split splitState
	trace traceState // the split-KV attention's trace (SetAttnTrace; attntrace.go)
	// Host building space for the per-call metadata.
	hInts     []int32
	noLanes   bool // KVBENCH_LANES=off: AttendBatch builds its calls' metadata on one goroutine
	metaCalls int  // KVBENCH_META_CALLS: batchMeta's fewest calls a part (0: metaCallsPerPart)
	// KVBENCH_BATCH_ATTN=off: AttendBatch runs every call through Attend,
	// Quest's work is launched at once (read once: Quest queues per call).
	batchOff bool
	// onBatchMeta, when set (tests), sees the ints of each AttendBatch.
	onBatchMeta func(ints, bases []int32, parts int)
	hPtrs       []uint64
	hAcc        []float32
	accq        accQueue   // AttendBatch's queued reads of Acc values (accbatch.go)
	qq          questQueue // Quest's queued bounds and choices (questbatch.go)
	accOn       bool       // attendSplit queues its Acc read in accq
	late        lateAccs   // a pass's Acc reads deferred to FlushAcc (lateacc.go)
	hGrp        []float32  // a head's sums before its group's (accFromProbs)
	noAccDefer  bool       // KVBENCH_ACC_DEFER=off: DeferAcc defers nothing
	noAccGroup  bool       // KVBENCH_ACC_GROUP=off: Acc is never summed by group (AccGroups)
	noAccTail   bool       // KVBENCH_ACC_TAIL=off: a call whose rows add to Acc only from a later row on runs as one (accTail)
	noAccCols   bool       // KVBENCH_ACC_COLS=off: a prompt chunk whose every row adds to Acc stays on the split-KV path (acccols.go)
	accColsMT   int        // KVBENCH_ACC_COLS_MT: acc_cols's variant (accColsShapes)
	noAccPace   bool       // KVBENCH_ACC_PACE=off: a pass's deferred reads are waited for at once (AccMark)
	noWideKV    bool       // KVBENCH_KV_WIDE=off: a prompt's KV rows stored a channel a thread (be_kv_append), not four
	noLists     bool       // KVBENCH_QUEST_LISTS=off: Quest's calls gather their chosen tokens (no page lists, questlists.go)
	noQuestFuse bool       // KVBENCH_QUEST_FUSE=off: Quest's Extends launched apart, before the scores (questbatch.go)
	accSide     bool       // KVBENCH_ACC_STREAM=on: deferred reads copy on the side stream (lateacc.go)
	hRec        []float32
	hF64        []float64
	desc        string
	kvt         int32 // page type of the call being built (kvF32, kvBF16)
	st          stager
	kv          kvBatch
	lanes       []*kvLane // KV copies made on lanes (kvlanes.go)
	laneOps     []runtime.KVOps
	allocKV     sync.Mutex // AllocKV, called from lanes
	zeros       []uint64   // buffers to clear before the next operation: pointer, float32 words
	events      []*Event
	marks       int
	blas        *BLAS // nil when cuBLAS could not be loaded (blasErr says why)
	blasErr     error
	mem         memAcct // memory by kind (memory.go), guarded by mu
	gemm        string  // KVBENCH_GEMM: bf16 (default under bf16 precision), f32 or off
	// prec is the compute precision (KVBENCH_PRECISION): "bf16" (default:
	// bf16 GEMMs and tensor-core prefill attention, float32 accumulation)
	// or "f32" (float32 GEMMs and attention, the CPU's results to rounding).
	prec     string
	flash    flashShape      // the prefill attention variant (KVBENCH_FLASH)
	flash64  flashShape      // the same for head dim 64
	tma      tmaPages        // the KV pages' range and tensor maps (TMA-fed prefill, flashtma.go)
	gemmRows int             // smallest MatMul on cuBLAS (KVBENCH_GEMM_MIN_ROWS, default gemmMinRows)
	shared   map[string]bool // kernels allowed more than 48 KiB of dynamic shared memory
	epoch    int             // counts arena restarts (wait)
	retired  []retired       // freed at the next wait (retire)
	rope     struct {
		v     []int32
		p     Ptr
		epoch int
		// The inverse frequencies of theta and hd (bits), computed once.
		theta float64
		hd    int
		inv   []int32
	}
	graphs    map[runtime.ReplayKey]*replay
	replayGen uint64    // bumped when the scratch replayed products use (wide, narrow) moves
	capturing bool      // inside Replay's capture: no host data, no waiting
	poll      pollState // the polled merge (pollmerge.go)
	noGraphs  bool      // KVBENCH_GRAPHS=off: Replay runs the operations directly
	allGraphs bool      // KVBENCH_GRAPHS=on: one-row steps replay from graphs too (graphsFor)
	noBox     bool      // KVBENCH_RT_BOX=off: the split-KV calls' ints are always uploaded
	noKVBox   bool      // KVBENCH_KV_BOX=off: KV copies are always uploaded (be_kv_ops, not be_kv_box)
	kvBox     []uint64  // KvBox: a batch of KV copies by value (flushKV)
	noRopeKV  bool      // KVBENCH_ROPE_KV=off: a step's RoPE and KV stores are separate launches (ropeCall)
	ropeAt    ropeCall  // the last RoPE launch, pending until the next flushKV for a decode step
	normMax   int       // the most threads of an RMSNorm block ($KVBENCH_NORM_THREADS)
	noMVRope  bool      // KVBENCH_MV_ROPE=off: a step's q/k/v products and its RoPE are separate launches (qkvCall)
	qkvAt     qkvCall   // a one-row step's q/k/v products, pending until its RoPE takes them or the next flushKV
	box       []int32   // RtBox: the words' count, then a call's ints by value (rtBox)
	bbox      []int32   // RtbBox: the words' count, a pad, then a batched launch's table and ints by value (rtbBox)
	pbox      []int32   // the same, a piece of a batch's metadata for attn_rtb_put (putCarried)
	xbox      []int32   // RtbXBox: the larger box, for a batch's metadata too long for bbox (nil: none, rtbXBoxWords)
	// putLaunches is the most attn_rtb_put launches that carry a batch's
	// metadata ($KVBENCH_RTB_PUT; 0: uploaded by a copy).
	putLaunches int
	mvKernel    string  // be_mv_r4 or be_mv_r8 ($KVBENCH_MV_ROWS)
	wide        scratch // float32 copy of a bf16/f16 weight for an f32 GEMM
	narrow      scratch // bf16/f16 copy of the activations for a bf16/f16 GEMM
	mlp         scratch // bf16 gate and up products of a prompt's MLP (MLP)

	pt pageTables // the KV sequences' page lists on the device (pagetable.go)
	cs chosenCall // the device selection of the attention call being built (backend_quest.go)
	bt batchAttn  // AttendBatch's building space on the host (batchattn.go)
	// releases counts ReleaseWork calls (runtime.WorkCounter).
	releases uint64
}

// The prefill attention variants used unless KVBENCH_FLASH names another:
// on Hopper (sm_90a) flashWG for both head dims: the tiles brought by the
// TMA, 128-key tiles, a producer warpgroup and the consumers' products
// beside their softmax (the H200, 32/8 at 32K: d128 16.5 ms against SDPA
// flash's 25.2 and cuDNN's 14.3, d64 10.9 against 14.2 and 9.2;
// docs/benchmarks.md); where the TMA cannot serve (tmaMap) the cp.async
// variants flashCopy and flashCopy64; flashMMA elsewhere, and for float32
// pages on Hopper.
const (
	flashWG     = "p2n128"
	flashWG64   = "p2n128"
	flashCopy   = "g3n64w"
	flashCopy64 = "g2n64kw"
	flashMMA    = "w4m2n64"
)

// gemmMinRows is the smallest MatMul that goes to cuBLAS; fewer rows (decode)
// use be_matmul, which reads the weights once for up to 8 rows.
const gemmMinRows = 16

// stager is the metadata upload path: a pinned host arena and a device arena
// of the same size. put copies into the host arena and enqueues the copy of
// the same bytes to the device arena, so the host never waits; the arenas
// are reused from the start after the stream has been synchronised (every
// queued copy and kernel that read them has run).
type stager struct {
	host *Pinned
	dev  Ptr
	size int64
	off  int64
}

// retired is memory queued work may still read (a staging arena or a page
// tables' pool that grew): kept until the host's next wait for the device.
type retired struct {
	dev  Ptr
	host *Pinned
}

// scratch is a growable device buffer.
type scratch struct {
	p     Ptr
	bytes int64
}

// NewBackend opens GPU ordinal and compiles the backend's kernels, at the
// precision KVBENCH_PRECISION names (bf16 when unset).
func NewBackend(ordinal int) (*Backend, error) {
	return NewBackendAt(ordinal, os.Getenv("KVBENCH_PRECISION"))
}

// NewBackendAt is NewBackend at compute precision prec: "bf16" (bf16 GEMMs
// and the tensor-core prefill, float32 accumulation), "f32", or "" (bf16).
func NewBackendAt(ordinal int, prec string) (*Backend, error) {
	d, err := Open(ordinal)
	if err != nil {
		return nil, err
	}
	return newBackendOn(d, prec)
}

// NewFakeBackend is NewBackendAt on the fake device (fake.go), whatever
// KVBENCH_CUDA_FAKE says: the backend's host code with no GPU, for tests
// of that code and for host timings. It computes nothing.
func NewFakeBackend(prec string) (*Backend, error) {
	d, err := openWith(fakeDriver(), 0)
	if err != nil {
		return nil, err
	}
	return newBackendOn(d, prec)
}

// newBackendOn is NewBackendAt on the opened device d.
func newBackendOn(d *Device, prec string) (*Backend, error) {
	stages, err := tcStages() // the kernels are compiled with it (KernelOptions)
	if err != nil {
		d.Close()
		return nil, err
	}
	m, err := d.LoadParts("kvbench.cu", kernelsrc.Source(), KernelOptions(), kernelsrc.Parts)
	if err != nil {
		d.Close()
		return nil, err
	}
	b := &Backend{D: d, mod: m, fns: map[string]*Function{}, slab: newSlabAllocator(d),
		kv: newKVBatch(), graphs: map[runtime.ReplayKey]*replay{}}
	b.split.tcStages, b.split.slowMem = stages, slowMemory(d)
	b.trace.built = traceBuild()
	nv, _, err := NVRTCVersion()
	if err != nil {
		nv = "unknown"
	}
	b.prec = prec
	switch b.prec {
	case "":
		b.prec = "bf16"
	case "bf16", "f32":
	default:
		b.Close()
		return nil, fmt.Errorf("cuda: precision %q is not bf16 or f32", b.prec)
	}
	b.gemm = os.Getenv("KVBENCH_GEMM")
	switch b.gemm {
	case "":
		b.gemm = b.prec
	case "f32", "bf16", "off":
	default:
		b.Close()
		return nil, fmt.Errorf("cuda: KVBENCH_GEMM=%q is not one of f32, bf16, off", b.gemm)
	}
	switch v := os.Getenv("KVBENCH_KERNEL_TIMES"); v {
	case "", "0", "off":
	case "1", "on":
		b.D.StartKernelClock() // KernelTimes
	default:
		b.Close()
		return nil, fmt.Errorf("cuda: KVBENCH_KERNEL_TIMES=%q is not on or off", v)
	}
	b.shared = map[string]bool{}
	b.noLanes = os.Getenv("KVBENCH_LANES") == "off"
	b.batchOff = os.Getenv(batchAttnEnv) == "off"
	b.gemmRows = gemmMinRows
	if v := os.Getenv("KVBENCH_GEMM_MIN_ROWS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Close()
			return nil, fmt.Errorf("cuda: KVBENCH_GEMM_MIN_ROWS=%q is not a positive integer", v)
		}
		b.gemmRows = n
	}
	if v := os.Getenv(metaCallsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Close()
			return nil, fmt.Errorf("cuda: %s=%q is not a positive integer", metaCallsEnv, v)
		}
		b.metaCalls = n
	}
	b.accColsMT = 1
	if v := os.Getenv("KVBENCH_ACC_COLS_MT"); v != "" {
		n, err := strconv.Atoi(v)
		if _, ok := accColsShapes[n]; err != nil || !ok {
			b.Close()
			return nil, fmt.Errorf("cuda: KVBENCH_ACC_COLS_MT=%q is not 1 or 2", v)
		}
		b.accColsMT = n
	}
	if b.flash, err = chooseFlash(os.Getenv("KVBENCH_FLASH"), d.Arch(), 128); err != nil {
		b.Close()
		return nil, err
	}
	b.flash64, _ = chooseFlash(os.Getenv("KVBENCH_FLASH"), d.Arch(), 64) // the name is checked above
	if err := b.initTables(); err != nil {
		b.Close()
		return nil, err
	}
	if b.split.minChunk, err = minChunkOf(); err != nil {
		b.Close()
		return nil, err
	}
	if b.split.waves, err = wavesOf(); err != nil {
		b.Close()
		return nil, err
	}
	if b.split.short, err = shortOf(); err != nil {
		b.Close()
		return nil, err
	}
	if b.normMax, err = normMaxOf(); err != nil {
		b.Close()
		return nil, err
	}
	if b.mvKernel, err = mvKernelOf(); err != nil {
		b.Close()
		return nil, err
	}
	switch v := os.Getenv("KVBENCH_GRAPHS"); v {
	case "":
	case "on":
		b.allGraphs = true
	case "off":
		b.noGraphs = true
	default:
		b.Close()
		return nil, fmt.Errorf("cuda: KVBENCH_GRAPHS=%q is not on or off (unset: graphs for steps of several rows)", v)
	}
	if err := b.readSwitches(); err != nil {
		b.Close()
		return nil, err
	}
	switch v := os.Getenv("KVBENCH_ACC_STREAM"); v {
	case "", "off":
	case "on":
		b.accSide = true
	default:
		b.Close()
		return nil, fmt.Errorf("cuda: KVBENCH_ACC_STREAM=%q is not on or off (unset: off)", v)
	}
	if b.split.tc, err = tcModeOf(); err != nil {
		b.Close()
		return nil, err
	}
	if b.split.tcMin, err = tcMinOf(); err != nil {
		b.Close()
		return nil, err
	}
	if b.split.tcSlots, err = tcSlotsOf(); err != nil {
		b.Close()
		return nil, err
	}
	if b.split.cluster, err = clusterOf(); err != nil {
		b.Close()
		return nil, err
	}
	if b.split.combine, err = combineOf(); err != nil {
		b.Close()
		return nil, err
	}
	b.box = make([]int32, 1+rtBoxWords)
	nb, err := rtbBoxWords()
	if err != nil {
		b.Close()
		return nil, err
	}
	b.bbox, b.pbox = make([]int32, 2+nb), make([]int32, 2+nb)
	if nb, err = rtbXBoxWords(); err != nil {
		b.Close()
		return nil, err
	}
	if nb > 0 {
		b.xbox = make([]int32, 2+nb)
	}
	if b.putLaunches, err = envInt("KVBENCH_RTB_PUT", 4, 0, 64, "a whole number of launches in [0, 64]"); err != nil {
		b.Close()
		return nil, err
	}
	b.kvBox = make([]uint64, 5*kvBoxOps)
	blasNote := ""
	if b.gemm != "off" {
		b.blas, b.blasErr = NewBLAS(d)
		if b.blasErr != nil {
			blasNote = ", no cuBLAS (" + b.blasErr.Error() + ")"
		} else {
			blasNote = fmt.Sprintf(", cuBLAS %s (%s GEMM)", b.blas.Version, b.gemm)
		}
	}
	if b.noGraphs {
		blasNote += ", no graphs"
	} else if b.allGraphs {
		blasNote += ", graphs for one-row steps too"
	}
	b.desc = fmt.Sprintf("%s, %s, NVRTC %s, %s compute%s", d.Name, d.Arch(), nv, b.prec, blasNote)
	return b, nil
}

// KernelTimes returns the device time of every kernel since the last reset
// where KVBENCH_KERNEL_TIMES=1 started the kernel clock (nil otherwise),
// after the queued work has run (Device.KernelTimes).
func (b *Backend) KernelTimes(reset bool) ([]KernelTime, error) {
	b.flushKV()
	return b.D.KernelTimes(reset)
}

// ProfilerRange starts or stops a profiler's range (Device.ProfilerRange)
// after the queued operations (the pending KV copies too) have run.
func (b *Backend) ProfilerRange(on bool) error {
	b.flushKV()
	return b.D.ProfilerRange(on)
}

// Close frees every buffer and releases the device.
func (b *Backend) Close() error {
	b.qq.reset()
	b.flushKV()
	_ = b.D.Sync()
	if b.blas != nil {
		_ = b.blas.Close()
		b.blas = nil
	}
	b.dropReplays()
	b.freeWorkspaces()
	b.pinUp.free()
	for _, e := range b.events {
		_ = e.Destroy()
	}
	b.events = nil
	b.mu.Lock()
	for _, x := range b.live {
		if x.block == 0 {
			_ = b.D.Free(x.p)
		}
		x.live = 0
	}
	b.live = nil
	b.now = 0
	b.mu.Unlock()
	b.slab.close()
	_ = b.mod.Unload()
	return b.D.Close()
}

// Name returns "cuda".
func (b *Backend) Name() string { return "cuda" }

// Device describes the GPU, its architecture and the NVRTC version.
func (b *Backend) Device() string { return b.desc }

// MemStats returns the bytes held by the backend's live buffers now and at
// the peak, as asked for (Device.MemStats counts what was taken from the
// driver: whole slabs for small buffers).
func (b *Backend) MemStats() (now, peak int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.now, b.peak
}

func (b *Backend) fn(name string) *Function {
	if f, ok := b.fns[name]; ok {
		return f
	}
	f, err := b.mod.Function(name)
	if err != nil {
		panic(err)
	}
	b.fns[name] = f
	return f
}

func (b *Backend) launch(name string, grid, block Dim3, args ...any) {
	b.launchSmem(name, grid, block, 0, args...)
}

// launchSmem launches with smem bytes of dynamic shared memory, after the
// pending KV copies.
func (b *Backend) launchSmem(name string, grid, block Dim3, smem int, args ...any) {
	b.flushKV()
	if err := b.fn(name).Launch(grid, block, smem, args...); err != nil {
		panic(err)
	}
}

// launchAfter is launch as a programmatic dependent of the kernel before
// it (Function.LaunchAfter): name must wait (pdl_wait) before it reads what
// that kernel writes or writes what it reads.
func (b *Backend) launchAfter(name string, grid, block Dim3, args ...any) {
	b.flushKV()
	if err := b.fn(name).LaunchAfter(grid, block, 0, args...); err != nil {
		panic(err)
	}
}

// sync waits for the stream (after launching the pending KV copies); the
// staging arenas are free again.
func (b *Backend) sync() {
	b.flushKV()
	b.wait()
}

// wait waits for the stream; the staging arenas are free again.
func (b *Backend) wait() {
	b.notCapturing("a wait for the device")
	if b.qkvAt.pending {
		b.launchQKV()
	}
	if b.ropeAt.pending { // its positions are in the arena this wait frees
		b.launchRope(false)
	}
	must(b.D.Sync())
	b.settled()
}

// settled is the backend after a wait for the stream (and the side stream,
// Device.Sync): the staging arena is free, Quest's epoch moves, memory
// retired is freed, and no side copy out of accWork can still run.
func (b *Backend) settled() {
	b.epoch++
	b.st.off = 0
	b.late.workBusy = false
	must(b.freeRetired())
}

// readSwitches sets the backend's switches that are on by default from
// their variables (envOff): each field is true where its variable is "off".
func (b *Backend) readSwitches() error {
	for _, sw := range []struct {
		name string
		off  *bool
	}{
		{"KVBENCH_RT_BOX", &b.noBox},
		{"KVBENCH_KV_BOX", &b.noKVBox},
		{"KVBENCH_ROPE_KV", &b.noRopeKV},
		{"KVBENCH_MV_ROPE", &b.noMVRope},
		{"KVBENCH_ACC_DEFER", &b.noAccDefer},
		{"KVBENCH_ACC_GROUP", &b.noAccGroup},
		{"KVBENCH_ACC_TAIL", &b.noAccTail},
		{"KVBENCH_ACC_COLS", &b.noAccCols},
		{"KVBENCH_ATTN_EARLY", &b.split.noEarly},
		{"KVBENCH_ATTN_ARITH", &b.split.noArith},
		{"KVBENCH_ATTN_POLL", &b.poll.off},
		{"KVBENCH_ATTN_TC_ACC", &b.split.noTCAcc},
		{"KVBENCH_ATTN_TC_LO", &b.split.noLo},
		{"KVBENCH_ACC_PACE", &b.noAccPace},
		{"KVBENCH_KV_WIDE", &b.noWideKV},
		{"KVBENCH_QUEST_LISTS", &b.noLists},
		{"KVBENCH_QUEST_FUSE", &b.noQuestFuse},
	} {
		off, err := envOff(sw.name)
		if err != nil {
			return err
		}
		*sw.off = off
	}
	return nil
}

// envOff reads a switch that is on by default: whether $name is "off" ("" and
// "on" are on; anything else is an error).
func envOff(name string) (bool, error) {
	switch v := os.Getenv(name); v {
	case "", "on":
		return false, nil
	case "off":
		return true, nil
	default:
		return false, fmt.Errorf("cuda: %s=%q is not on or off", name, v)
	}
}

var (
	_ runtime.Backend     = (*Backend)(nil)
	_ runtime.Scorer      = (*Backend)(nil)
	_ runtime.PageScorer  = (*Backend)(nil)
	_ runtime.KVAllocator = (*Backend)(nil)
	_ runtime.DeviceTimer = (*Backend)(nil)
	_ runtime.Replayer    = (*Backend)(nil)
)

// LogProbs writes into dst[r] the log-probability of targets[r] under the
// logits of row r of logits [rows, vocab] (runtime.LogProber), computed on
// the device so that only rows values come back.
func (b *Backend) LogProbs(dst []float64, logits runtime.Buffer, rows, vocab int, targets []int) {
	if rows == 0 {
		return
	}
	if len(dst) < rows || len(targets) < rows {
		panic(fmt.Sprintf("cuda: LogProbs of %d rows with %d outputs and %d targets", rows, len(dst), len(targets)))
	}
	b.check(logits, 0, rows*vocab, "LogProbs")
	t := make([]int32, rows)
	for i := range t {
		if targets[i] < 0 || targets[i] >= vocab {
			panic(fmt.Sprintf("cuda: LogProbs target %d of row %d outside [0, %d)", targets[i], i, vocab))
		}
		t[i] = int32(targets[i])
	}
	b.flushKV()
	b.reserve(span(int64(rows) * 4))
	tp := put(b, t)
	o := b.grow(&b.small, int64(rows)*8)
	b.launch("be_logprob", Dim3{rows, 1, 1}, Dim3{256, 1, 1}, o, b.f32(logits), tp, int32(vocab))
	get(b, dst[:rows], o)
}

// AppendKV stores the keys and values of rows rows of one KV head into
// consecutive slots of a page list in one kernel (runtime.KVAppender).
func (b *Backend) AppendKV(kPages, vPages []runtime.Buffer, first, pageSize int, k, v runtime.Buffer, rows, head, headDim, kvDim int) {
	if rows == 0 {
		return
	}
	need := (first+rows-1)/pageSize - first/pageSize + 1
	if len(kPages) < need || len(vPages) < need {
		panic(fmt.Sprintf("cuda: AppendKV of %d rows from token %d needs %d pages, got %d and %d", rows, first, need, len(kPages), len(vPages)))
	}
	b.check(k, 0, rows*kvDim, "AppendKV")
	b.check(v, 0, rows*kvDim, "AppendKV")
	b.hPtrs, b.kvt = b.hPtrs[:0], -1
	b.pagePtrs(kPages[:need])
	b.pagePtrs(vPages[:need])
	for _, p := range kPages[:need] {
		b.check(p, 0, pageSize*headDim, "AppendKV page")
	}
	kp, vp := b.f32(k), b.f32(v)
	wide := !b.noWideKV && headDim%4 == 0 && kvDim%4 == 0 && headDim/4 <= 1024 && kp%16 == 0 && vp%16 == 0
	for _, p := range b.hPtrs {
		wide = wide && p%16 == 0
	}
	b.hInts = b.hInts[:0]
	b.flushKV()
	b.reserve(b.metaSpan())
	_, ptrs := b.putMeta()
	if wide {
		threads := max(128, headDim/4)
		per := threads / (headDim / 4)
		b.launch("be_kv_append4", Dim3{(rows + per - 1) / per, 1, 1}, Dim3{threads, 1, 1}, ptrs, ptrs.Add(int64(need)*8),
			int32(first), int32(pageSize), kp, vp, int32(rows), int32(head*headDim), int32(kvDim), int32(headDim), b.pageType())
		return
	}
	b.launch("be_kv_append", Dim3{rows, 1, 1}, Dim3{min(headDim, 128), 1, 1}, ptrs, ptrs.Add(int64(need)*8),
		int32(first), int32(pageSize), kp, vp, int32(head*headDim), int32(kvDim), int32(headDim), b.pageType())
}
