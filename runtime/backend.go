package runtime

import "time"

// Buffer is memory owned by a Backend: float32 activations, a KV page, or a
// weight held as stored. Only the backend that made a Buffer may use it.
type Buffer interface {
	// Len is the number of elements.
	Len() int
}

// Backend runs the kernels of the forward pass on one device. Matrices are
// row-major; a weight w used by MatMul is stored [out, in]. Methods panic only
// on programmer errors (mismatched sizes), with the sizes in the message.
type Backend interface {
	// Name is the backend's short name ("cpu", "cuda").
	Name() string
	// Device describes the hardware ("2 cores, linux/amd64, avx2").
	Device() string
	// Upload makes a weight available to the kernels, kept in its stored type.
	Upload(t *Tensor) (Buffer, error)
	// Alloc returns a zeroed float32 buffer of n elements.
	Alloc(n int) Buffer
	// Write copies src into dst starting at element off.
	Write(dst Buffer, off int, src []float32)
	// Read copies len(dst) elements of src starting at element off into dst.
	Read(dst []float32, src Buffer, off int)
	// CopyRows copies rows rows of width elements from src (starting at row
	// srcRow) to dst (starting at row dstRow).
	CopyRows(dst, src Buffer, dstRow, srcRow, rows, width int)

	// Embed writes the table rows of tokens into dst [len(tokens), dim].
	Embed(dst, table Buffer, tokens []int, dim int)
	// RMSNorm writes x / rms(x) * w row by row: dst, x [rows, dim], w [dim].
	RMSNorm(dst, x, w Buffer, rows, dim int, eps float32)
	// MatMul computes dst[r, o] = sum_i x[r, i] * w[o, i]: dst [rows, out],
	// x [rows, in], w [out, in].
	MatMul(dst, x, w Buffer, rows, in, out int)
	// AddBias adds b [n] to every row of x [rows, n].
	AddBias(x, b Buffer, rows, n int)
	// RoPE rotates each head of x [rows, heads*headDim] by the angle of the
	// row's position pos[row], pairing channels as style says.
	RoPE(x Buffer, rows, heads, headDim int, pos []int, theta float64, style RopeStyle)
	// SwiGLU sets gate = silu(gate) * up over n elements.
	SwiGLU(gate, up Buffer, n int)
	// Add sets dst += x over n elements.
	Add(dst, x Buffer, n int)

	// StoreKV copies head head of row row of k and v [rows, kvHeads*headDim]
	// into slot slot of the pages kPage and vPage [pageSize, headDim].
	StoreKV(kPage, vPage Buffer, slot int, k, v Buffer, row, head, headDim, kvDim int)
	// MoveKV moves the key and value in slot srcSlot of pages srcK/srcV to
	// slot dstSlot of pages dstK/dstV (cache compaction after eviction):
	// the source slot holds nothing after it (the cache's source is past
	// the sequence's end), so a backend may skip a store into it that the
	// move alone reads.
	MoveKV(dstK, dstV Buffer, dstSlot int, srcK, srcV Buffer, srcSlot, headDim int)
	// Attend computes attention for every query row and head of a.
	Attend(a *AttnArgs)
}

// AttnArgs describes one layer's attention call. Query row r at position
// QPos[r] attends to the tokens of its KV head whose position is <= QPos[r].
type AttnArgs struct {
	Out     Buffer  // [rows, heads*headDim]
	Q       Buffer  // [rows, heads*headDim], RoPE applied
	Rows    int     // query rows
	QPos    []int   // [rows] position of each query
	Heads   int     // query heads
	KVHeads int     // key/value heads; query head h reads KV head h/(Heads/KVHeads)
	HeadDim int     // channels per head
	Scale   float32 // softmax scale: 1/sqrt(HeadDim), times the square of the RoPE attention factor (yarn, longrope)
	Seqs    []KVSeq // [KVHeads] the cached tokens of each KV head
	// Window is the model's sliding window (Config.SlidingWindow): query
	// row r also ignores keys at positions <= QPos[r]-Window; 0: none. Only
	// a WindowAttender applies it.
	Window int

	// Set by a cache policy (runtime.Hook); zero values mean plain attention.

	// Rope and Theta describe the model's RoPE, for re-positioned keys;
	// InvFreq [HeadDim/2], when set, are its inverse frequencies (scaled
	// RoPE, see ScaledRoPE) and take the place of Theta.
	Rope    RopeStyle
	Theta   float64
	InvFreq []float32
	// QShift [rows]: position of query row r minus its position in the cache,
	// up to the constant of KVSeq.Shift.
	// With KVSeq.Shift, scores are those of keys and queries rotated at their
	// cache positions (StreamingLLM): since RoPE scores depend only on the
	// distance, the kernel rotates the query by Shift[t]-QShift[r] instead.
	QShift []int
	// Sel [heads]: the token indices query head h attends to; nil (or a nil
	// entry) attends to every cached token of its KV head.
	Sel [][]int32
	// Chosen, when set, takes the place of Sel (then nil): a selection held
	// in the backend's memory, made by its PageChooser for this call.
	Chosen Chosen
	// Acc [heads]: when set, the softmax probability of every token is added
	// to Acc[h][t] for each query row whose position is >= AccFrom.
	Acc     [][]float32
	AccFrom int
	// AccZero says the sums start from zero whatever Acc holds: the backend
	// overwrites Acc[h][:n] (n: head h's KV head's tokens) without reading
	// it (no upload; the caller need not clear it).
	AccZero bool
	// AccView lets the backend hand the sums back as slices of its own
	// memory, replacing Acc[h] (its first n values as before), instead of
	// copying them into the caller's. They hold until the backend's next
	// attention call (Attend or AttendBatch, on any stream): the caller reads
	// them before that (a policy's AfterAttend) and arms Acc with its own
	// buffers every call. A backend may ignore it and write into Acc[h] as
	// without it.
	AccView bool
	// AccGroup (with AccZero, without Sel or Chosen, on an AccGrouper)
	// makes Acc one slice a KV head [KVHeads] holding its group's sums: for
	// each token the float32 sum of its query heads' sums in head order
	// (their own sums as above), what the caller would add itself from
	// per-head slices.
	AccGroup bool
	// Ref [KVHeads] and Recall [rows*heads]: when set, Recall[r*heads+h]
	// receives the share of full attention's probability mass (over the
	// tokens of Ref, which holds token p at index p) that falls on the tokens
	// the query attends to.
	Ref    []KVSeq
	Recall []float32
}

// KVSeq is the cached tokens of one layer and KV head: N tokens stored in
// pages of PageSize slots (token t in page t/PageSize, slot t%PageSize), and
// the position of each.
type KVSeq struct {
	K, V     []Buffer // pages, each [PageSize, headDim]
	N        int      // tokens held
	PageSize int      // slots per page
	Pos      []int32  // [N] position of each token
	Shift    []int32  // [N] position minus cache position, up to a constant shared with AttnArgs.QShift (only Shift[t]-QShift[r] counts); nil: no re-positioning
	// ShiftSpan, when positive, says Shift[t] is 0 for every t >= ShiftSpan:
	// a backend may read Shift[:ShiftSpan] alone (StreamingLLM's shifts are
	// nonzero for the sinks only, in the first slots). 0: unknown. The
	// policy that writes Shift sets it; KVCache clears it when tokens move.
	ShiftSpan int
	// ShiftEqual, with ShiftSpan positive, says Shift[t] is ShiftAll for
	// every t < ShiftSpan (StreamingLLM's sinks all shift alike): a backend
	// may write the run without reading Shift. The policy that sets
	// ShiftSpan sets both; KVCache clears ShiftEqual with ShiftSpan.
	ShiftEqual bool
	ShiftAll   int32
	// Bounded says MaxPos is at least every position in Pos (KVCache keeps
	// it; a sequence built elsewhere leaves it false). A backend may then
	// skip the positions of a call whose queries all lie at MaxPos or past.
	Bounded bool
	MaxPos  int32
	// Ascending says Pos[:N] ascends (KVCache keeps it; false: unknown).
	Ascending bool
	// ID and Gen let a backend keep its own copy of the page lists (a GPU's
	// device-resident page table) and send only the pages appended since
	// it last looked. ID, when not 0, names this sequence uniquely in the
	// process; Gen changes whenever K or V change other than by appending
	// pages (pages removed or replaced). While ID and Gen stay the same, the
	// lists only grow: K[i] and V[i] stay the pages they were. KVCache
	// keeps both; a sequence built elsewhere has ID 0 and is read whole.
	ID, Gen uint64
	// Writes counts the KV writes into the sequence's slots over its life
	// (every token appended or moved one; never lowered, not even by a
	// reset), in the order they were asked of the backend. A backend that
	// saw the sequence at Writes w and N n, and now sees w+1 and n+1, knows
	// that the only write since was the store of token n: every other slot
	// holds what it held then. KVCache keeps it.
	Writes uint64
	// Slot is the backend's own index of its copy of the lists (0: none
	// yet), written by the backend so that it finds them without a lookup
	// by ID, thousands a decode step. A copy of the sequence may carry a
	// stale one: the backend checks it against ID.
	Slot int32
	// addr holds KVCache's page addresses (KVAddresser) beside K and V:
	// K[i]'s at 2i, V[i]'s at 2i+1, or fewer (a sequence built elsewhere,
	// a backend without addresses): then the copies take the buffers.
	addr []uint64
	// blk is the run of pages KVCache.Hold gave the sequence, one
	// allocation's, in order; its first used pages are the first pages of
	// K, the rest set aside for its next tokens. The sequence keeps it
	// across Reset, so that its lists stay one stride apart as they grow,
	// prompt after prompt.
	blk  []kvPage
	used int
}

// PageAddrs returns the sequence's page addresses (KVAddresser's: K[i]'s at
// 2i, V[i]'s at 2i+1), or nil where they are not whole: a backend's way to
// its pages without a lookup a page.
func (s *KVSeq) PageAddrs() []uint64 {
	if len(s.K) == 0 || len(s.addr) != 2*len(s.K) {
		return nil
	}
	return s.addr
}

// ScaledRoPE is an optional Backend capability: RoPE with inverse
// frequencies the caller gives (a scaled RoPE, Config.RopeInvFreq) instead of
// ones derived from a base, in RoPEFreqs and, through AttnArgs.InvFreq, in
// Attend's re-positioned keys. The Runner needs it for models with
// RopeScaling.
type ScaledRoPE interface {
	// RoPEFreqs is RoPE with inv [headDim/2] as the inverse frequencies: pair
	// i of row r turns by the angle pos[r]*inv[i].
	RoPEFreqs(x Buffer, rows, heads, headDim int, pos []int, inv []float32, style RopeStyle)
}

// WindowAttender is an optional Backend capability: Attend (and QK, where
// the backend is a Scorer) honours AttnArgs.Window, a model's sliding
// window. The Runner refuses to run a position the window reaches on a
// backend without it.
type WindowAttender interface {
	// AttendsWindow reports whether Attend applies AttnArgs.Window.
	AttendsWindow() bool
}

// Scorer is an optional Backend capability the selection policies use: raw
// attention scores and per-channel key bounds over cached tokens.
type Scorer interface {
	// QK writes q·k·Scale of query row r, head h of a against every token of
	// its KV head's sequence into out [N] (tokens masked causally, or by
	// the model's window, get -Inf).
	QK(a *AttnArgs, r, h int, out []float32)
	// KeyBounds writes the per-channel minimum and maximum of the keys of
	// tokens [t0, t1) of seq into lo and hi [headDim].
	KeyBounds(seq *KVSeq, t0, t1 int, lo, hi []float32)
}

// PageScorer is an optional Backend capability for Quest-style selection:
// per-page key bounds kept where the keys are, and pages scored there, one
// call per layer for every head (on a GPU: one synchronisation per layer,
// not one per KV head). A backend without it can still serve such a policy
// through NewHostPageBounds over its Scorer.
type PageScorer interface {
	// NewPageBounds returns empty bounds for kvHeads sequences of keys of
	// headDim channels split into pages of page tokens (token t in page
	// t/page, whatever the cache's own page size).
	NewPageBounds(kvHeads, headDim, page int) PageBounds
}

// PageBounds are the per-channel minimum m and maximum M of the keys of each
// page of every KV head of one layer, extended as tokens are appended.
type PageBounds interface {
	// Extend folds the tokens appended to seqs[g] (KV head g) since the last
	// call into its pages' bounds; a sequence shorter than what was folded
	// is folded again from scratch. len(seqs) is kvHeads.
	Extend(seqs []KVSeq)
	// Score writes into out[h] [pages of KV head h/(a.Heads/a.KVHeads)] the
	// score of each page p of that head's folded tokens for query head h of
	// query row 0 of a: sum over channels i = 0..headDim-1, in that order,
	// in float64, of max(q_i*m_i, q_i*M_i) with q_i, m_i, M_i widened to
	// float64 (the products are exact, so every backend gets the same bits).
	// len(out) is a.Heads; an empty out[h] skips head h.
	Score(a *AttnArgs, out [][]float64)
	// Reset forgets every folded token (a new stream), keeping the memory.
	Reset()
	// Free releases the bounds' memory; they are not used after.
	Free()
}

// PageChooser is an optional PageBounds capability: Quest's choice of
// pages made where the bounds are, so that neither the page scores nor the
// selection cross to the host (on a GPU: no wait for the device per layer).
type PageChooser interface {
	// Choose makes, for query row 0 of a, the choice Quest makes from
	// Score's scores, and sets a.Chosen to it (a.Sel to nil): every query
	// head whose KV head's folded tokens fill more than k pages attends the
	// tokens of the k-1 pages of highest score but the last (ties to the
	// lower page) and of the last page, in page order; every other head
	// attends every token. With no head over k pages a.Chosen is nil. The
	// selection is valid until the next Choose on the same bounds.
	Choose(a *AttnArgs, k int)
}

// Chosen is a selection of tokens per query head held in a backend's memory
// (PageChooser.Choose); only that backend's Attend reads it.
type Chosen interface {
	// Count is the number of tokens query head h attends; -1: every token
	// of its KV head.
	Count(h int) int
	// Covered is the number of distinct tokens the query heads of KV head
	// g attend together (the tokens attention reads once for the group),
	// or its token count when they attend every token. It may wait for the
	// device.
	Covered(g int) int
	// Tokens reads back query head h's token indices (nil: every token);
	// it waits for the device (tests, diagnostics).
	Tokens(h int) []int32
}

// KVAllocator is an optional Backend capability: KV pages stored in a type
// other than float32 (bf16 halves the cache's memory and the bytes attention
// reads). Pages hold keys and values rounded to the type; attention computes
// in float32 over them. StoreKV, MoveKV, Attend and the Scorer methods accept
// such pages wherever they accept float32 ones.
type KVAllocator interface {
	// KVTypes lists the page types AllocKV accepts.
	KVTypes() []DType
	// AllocKV returns a zeroed page buffer of n elements of type t.
	AllocKV(n int, t DType) Buffer
}

// KVPageAllocator is an optional KVAllocator capability: many pages in one
// call. A prompt's chunk of 4,096 tokens takes 512 page buffers (256 of
// keys, 256 of values) a KV head and layer; taken one by one they cost the
// host milliseconds a layer.
type KVPageAllocator interface {
	// AllocKVPages fills dst with zeroed page buffers of n elements of
	// type t, as AllocKV would one by one.
	AllocKVPages(n int, t DType, dst []Buffer)
}

// DeviceTimer is an optional Backend capability: timestamps taken on the
// device's queue, for timing work that the host only enqueues (a GPU). The
// Runner uses it to time attention when the backend has it.
type DeviceTimer interface {
	// Mark queues a timestamp behind the work enqueued so far and returns
	// its index.
	Mark() int
	// Elapsed waits for marks a and b and returns the device time between.
	Elapsed(a, b int) time.Duration
	// ClearMarks forgets every mark; their indices are reused.
	ClearMarks()
}

// Replayer is an optional Backend capability: a sequence of operations that
// runs with the same buffers and sizes every time its key comes back is
// recorded and replayed as one unit afterwards (a CUDA graph), which saves
// the host the cost of issuing each operation. ops may only call the
// Backend's kernel methods on fixed buffers: no Write, Read, Attend, RoPE,
// Embed or KV copies (they take host data). Scratch memory of the backend's
// own that those methods use is the backend's to keep valid (the CUDA
// backend records a sequence again after such scratch moved).
type Replayer interface {
	Replay(key ReplayKey, ops func())
}

// ReplayKey names a replayed sequence: its owner (the unique id of the
// scratch the pass runs on: a runner borrows its scratch from a pool, so a
// runner's id would not name fixed buffers), a layer, a part of the layer
// and the rows of the pass (a batch's streams).
type ReplayKey struct {
	Owner uint64
	Layer int
	Part  int
	Rows  int
}

// RoPEPairer is an optional Backend capability: RoPE of a layer's queries
// and keys, which turn by the same positions, as one operation.
type RoPEPairer interface {
	// RoPE2 is RoPE(q, rows, heads, ...) and RoPE(k, rows, kvHeads, ...).
	RoPE2(q, k Buffer, rows, heads, kvHeads, headDim int, pos []int, theta float64, style RopeStyle)
}

// ScaledRoPEPairer is RoPEPairer for a scaled RoPE (ScaledRoPE): a layer's
// queries and keys turned in one operation (Llama 3.1's llama3 scaling,
// YaRN, ...).
type ScaledRoPEPairer interface {
	// RoPE2Freqs is RoPEFreqs(q, rows, heads, ...) and RoPEFreqs(k, rows,
	// kvHeads, ...).
	RoPE2Freqs(q, k Buffer, rows, heads, kvHeads, headDim int, pos []int, inv []float32, style RopeStyle)
}

// FusedMatMul is an optional Backend capability: a decode step's matrix
// products together with what follows them, in fewer kernels. Each method
// leaves dst with the values of the Backend calls it names (scratch
// buffers, named so, are left undefined); the forward pass reaches it
// through fused.go, which makes those calls on other backends.
type FusedMatMul interface {
	// MatMul3 is MatMul(m.Dst, x, m.W, rows, in, m.Out) for m = a, b, c
	// (a layer's query, key and value projections), then AddBias(m.Dst,
	// m.Bias, rows, m.Out) for each m with a Bias.
	MatMul3(x Buffer, rows, in int, a, b, c MatOut)
	// MatMulAdd is MatMul(tmp, x, w, rows, in, out), then Add(dst, tmp,
	// rows*out); tmp is scratch.
	MatMulAdd(dst, tmp, x, w Buffer, rows, in, out int)
	// MatMulSwiGLU is MatMul(gate, x, wg, ...), MatMul(up, x, wu, ...), then
	// SwiGLU(gate, up, rows*out); up is scratch.
	MatMulSwiGLU(gate, up, x, wg, wu Buffer, rows, in, out int)
}

// FusedMLP is an optional Backend capability: a layer's MLP block in one
// call, its intermediates the backend's own (a GPU keeps them in bf16).
type FusedMLP interface {
	// MLP adds down·(silu(gate·xb) ⊙ up·xb) to x ([rows, dim]; gate and up
	// [hidden, dim], down [dim, hidden]) and reports true, or does nothing
	// and reports false where it does not serve (the caller then runs
	// MatMulSwiGLU and MatMulAdd).
	MLP(x, xb, gate, up, down Buffer, rows, dim, hidden int) bool
	// MLPFrom is the fewest rows MLP serves for these weights (it then
	// serves every pass of as many rows or more), or 0 where it serves none:
	// the runner sizes the scratch of the fallback by it.
	MLPFrom(gate, up, down Buffer, dim, hidden int) int
}

// RowFitter is a Backend whose prompt passes run best at some row counts:
// a GPU's, where the prefill attention's blocks (row tiles x query heads)
// fill whole waves of its multiprocessors' block slots.
type RowFitter interface {
	// FitRows is the rows a prompt pass of about rows tokens (at most a
	// sixteenth away) runs best at, for a model of heads query heads of
	// headDim channels: rows itself where none is better.
	FitRows(rows, heads, headDim int) int
}

// FitRows is be's FitRows where it is a RowFitter, else rows.
func FitRows(be Backend, rows, heads, headDim int) int {
	if f, ok := be.(RowFitter); ok {
		return f.FitRows(rows, heads, headDim)
	}
	return rows
}

// NormedProducts is a Backend that runs an RMSNorm and the products of its
// result as one operation (a GPU's prompt rows: the norm writes the GEMMs'
// bf16 input itself, with no float32 row and no rounding pass between
// them). Each method reports true, or does nothing and reports false where
// it does not serve (the caller then runs RMSNorm and the products).
type NormedProducts interface {
	// NormMatMul3 sets each o.Dst [rows, o.Out] = RMSNorm(x)·o.Wᵀ (+ o.Bias)
	// of the products a, b and c (x [rows, in]; norm the norm's weights,
	// eps its epsilon, as RMSNorm).
	NormMatMul3(x, norm Buffer, eps float32, rows, in int, a, b, c MatOut) bool
	// NormMatMul is NormMatMul3 of one product.
	NormMatMul(x, norm Buffer, eps float32, rows, in int, a MatOut) bool
	// NormMLP adds down·(silu(gate·n) ⊙ up·n), n = RMSNorm(x), to x ([rows,
	// dim]).
	NormMLP(x, norm Buffer, eps float32, gate, up, down Buffer, rows, dim, hidden int) bool
}

// MatOut is one product of FusedMatMul.MatMul3: Dst [rows, Out] = x·Wᵀ,
// plus Bias [Out] on every row where it is not nil (as AddBias: Qwen2's
// query, key and value biases).
type MatOut struct {
	Dst, W Buffer
	Out    int
	Bias   Buffer
}

// LogProber is an optional Backend capability: the log-probabilities of
// chosen tokens computed where the logits are, so that a scoring pass over
// many rows reads back one number a row instead of the whole vocabulary.
type LogProber interface {
	// LogProbs writes into dst[r] log softmax(logits[r, :])[targets[r]] for
	// r < rows, logits [rows, vocab], in float64 as LogProb does.
	LogProbs(dst []float64, logits Buffer, rows, vocab int, targets []int)
}

// KVAppender is an optional Backend capability: the keys and values of many
// rows of one KV head stored into consecutive slots of a page list in one
// operation (a prompt chunk), instead of one StoreKV per row.
type KVAppender interface {
	// AppendKV stores head head of rows rows of k and v [rows, kvDim] as
	// tokens first, first+1, ... of the page lists kPages and vPages (token
	// t in page t/pageSize, slot t%pageSize); the pages those tokens fall in
	// exist.
	AppendKV(kPages, vPages []Buffer, first, pageSize int, k, v Buffer, rows, head, headDim, kvDim int)
}
