package runtime

import (
	"fmt"
	"math"
	"sync/atomic"
	"time"
)

// This file is the Llama-family forward pass: the layer loop, written once
// against the Backend interface so that every backend runs the same model.

// state is the scratch memory of a forward pass over up to maxRows tokens.
type state struct {
	id      uint64 // unique: the owner in ReplayKeys (a replayed sequence runs on these buffers)
	maxRows int
	x       Buffer      // [rows, dim] the residual stream
	xb      Buffer      // [rows, dim] normalised input of a block
	xb2     Buffer      // [rows, dim] output of a block before the residual add
	q       Buffer      // [rows, heads*head_dim] queries
	k       Buffer      // [rows, kv_heads*head_dim] keys of the new tokens
	v       Buffer      // [rows, kv_heads*head_dim] values of the new tokens
	att     Buffer      // [rows, heads*head_dim] attention output
	hb      Buffer      // [rows, hidden] gate projection, then silu(gate)*up
	hb2     Buffer      // [rows, hidden] up projection
	last    Buffer      // [1, dim] the final row, normalised, for last-token logits
	logits  Buffer      // [rows, vocab], made at the first pass that needs every row's logits
	logit1  Buffer      // [1, vocab] the last row's logits
	pos     []int       // [rows] position of each row
	calls   []*AttnArgs // a batch pass's attention calls of one layer (pass.attend)
}

// newState allocates the scratch of a forward pass over up to n rows.
func newState(be Backend, c Config, n, hbRows int) state {
	return state{
		id:      scratchIDs.Add(1),
		maxRows: n,
		x:       be.Alloc(n * c.Dim),
		xb:      be.Alloc(n * c.Dim),
		xb2:     be.Alloc(n * c.Dim),
		q:       be.Alloc(n * c.QDim()),
		k:       be.Alloc(n * c.KVDim()),
		v:       be.Alloc(n * c.KVDim()),
		att:     be.Alloc(n * c.QDim()),
		hb:      be.Alloc(hbRows * c.Hidden),
		hb2:     be.Alloc(hbRows * c.Hidden),
		last:    be.Alloc(c.Dim),
		logit1:  be.Alloc(c.Vocab),
		pos:     make([]int, n),
	}
}

// deviceWeights are the model's weights uploaded to the backend.
type deviceWeights struct {
	embed, norm, output Buffer
	layers              []deviceLayer
	scratch             scratchPool // the runners' own scratch, lent per call
	// rope is the RoPE style of the uploaded queries and keys: the model's,
	// or RopeInterleaved where the upload reordered them (QKInterleaver).
	rope RopeStyle
}

type deviceLayer struct {
	attnNorm, wq, wk, wv, wo, bq, bk, bv, qNorm, kNorm, mlpNorm, gate, up, down Buffer
}

// Hook lets a KV-cache policy act inside the layer loop of a Runner.
type Hook interface {
	// BeforeAttend runs once the new tokens of layer l are in the cache and
	// before attention: it may evict tokens and set the policy fields of a
	// (selection, shifts, score accumulation, recall).
	BeforeAttend(l int, a *AttnArgs)
	// AfterAttend runs after layer l's attention: it may read what attention
	// accumulated and evict tokens.
	AfterAttend(l int, a *AttnArgs)
}

// A Hook that cannot act (bad parameters for the stream) may also implement
// Err() error: Forward returns its error after the step.

// Runner runs a model on a backend, one stream of tokens at a time, with its
// own KV cache. It is not safe for concurrent use. Several runners that
// share a backend can also step together as a Batch.
type Runner struct {
	Model   *Model
	Backend Backend
	Cache   *KVCache
	Hook    Hook // the cache policy; nil keeps every token (full attention)
	// OnAttend, when set, receives the time of each layer's attention
	// (policy hooks excluded) and the rows it computed: wall-clock time on a
	// backend that computes as it is called (the CPU), device time between
	// two timestamps on one that is a DeviceTimer (a GPU), delivered once
	// the step's work is done.
	OnAttend func(layer, rows int, d time.Duration)
	w        *deviceWeights
	s        *state        // scratch of the runner's own passes while one runs (lent by w.scratch)
	opts     RunnerOptions // as given, for Sibling
	maxRows  int           // tokens per pass of the runner's own (prefill chunk)
	hbRows   int           // rows of its scratch's float32 MLP buffers (mlpRows)
	attn     AttnArgs      // the attention call of the layer in progress
	lateAttn []AttnArgs    // [layers] the calls of a pass whose AfterAttend runs late (lateacc.go)
	pass     pass          // the runner's own pass in progress
	seg      [1]segment    // its one segment
	pos      int           // position of the next token
	marks    []int         // device timestamps around each layer's attention
	score    *scoreSink    // set during LogProbs

	probe func(l int) // set by a NaN diagnosis (finite.go): runs before layer l

	// RoPE scaling (nil scaled: plain RoPE from Config.RopeTheta).
	scaled    ScaledRoPE // the backend's scaled RoPE, for models with RopeScaling
	invFreq   []float32  // [head_dim/2] the inverse frequencies of the current step
	freqStage int        // the Config.ropeStage invFreq was made for
	firstRope int        // the stage of the stream's first step; -1 before it
	err       error      // a step's error, returned by forward

	slots      Buffer    // Greedy's token slots on a DeviceArgmax backend (greedy.go)
	greedyHost []float32 // Greedy's logits when its caller wants none
}

// scratchIDs numbers the scratch states (state.id, the owners in ReplayKeys).
var scratchIDs atomic.Uint64

// RunnerOptions shape a Runner: its prefill chunk and its KV cache.
type RunnerOptions struct {
	MaxRows  int   // tokens per forward pass (prefill chunk); default 1
	PageSize int   // KV page slots; default DefaultPageSize
	KVType   DType // KV page element type; default F32 (others need a KVAllocator backend)
	// FitRows lets the backend move MaxRows (by up to a sixteenth) to the
	// rows its prompt passes run best at (RowFitter).
	FitRows bool
	// Weights, when set, are the model's weights already uploaded to the
	// backend (UploadWeights), shared with every other runner that uses
	// them; nil uploads them for this runner.
	Weights *DeviceWeights
}

// NewRunner uploads the model's weights to be and prepares scratch memory for
// forward passes of up to maxRows tokens at once (prefill chunks), with a
// float32 KV cache of DefaultPageSize pages.
func NewRunner(m *Model, be Backend, maxRows int) (*Runner, error) {
	return NewRunnerWith(m, be, RunnerOptions{MaxRows: maxRows})
}

// NewRunnerWith is NewRunner with every option: with o.Weights, the runner
// uses those uploaded weights (no upload of its own).
func NewRunnerWith(m *Model, be Backend, o RunnerOptions) (*Runner, error) {
	if dw := o.Weights; dw != nil {
		if err := dw.usableBy(m, be); err != nil {
			return nil, err
		}
		return newRunner(m, be, dw.w, o)
	}
	dw, err := UploadWeights(m, be)
	if err != nil {
		return nil, err
	}
	r, err := newRunner(m, be, dw.w, o)
	if err != nil {
		dw.Free()
	}
	return r, err
}

// Sibling returns a new runner of r's model on r's backend, with r's options
// and an empty KV cache of its own, that uses r's uploaded weights (no
// second copy): a stream to step beside r in a Batch. It has no Hook or
// OnAttend.
func (r *Runner) Sibling() (*Runner, error) {
	return newRunner(r.Model, r.Backend, r.w, r.opts)
}

// newRunner makes a runner over weights w already uploaded to be. Its
// scratch memory is made at its first own pass (a runner that only steps in
// a Batch never needs it).
func newRunner(m *Model, be Backend, w *deviceWeights, o RunnerOptions) (*Runner, error) {
	maxRows := o.MaxRows
	if maxRows <= 0 {
		maxRows = 1
	}
	c := m.Config
	if o.FitRows {
		maxRows = FitRows(be, maxRows, c.Heads, c.HeadDim)
	}
	cache, err := NewKVCacheOf(be, c, o.PageSize, o.KVType)
	if err != nil {
		return nil, err
	}
	r := &Runner{Model: m, Backend: be, Cache: cache, w: w, opts: o, maxRows: maxRows, hbRows: mlpRows(be, w, c, maxRows), firstRope: -1}
	if c.RopeScaling.Type != "" {
		sr, ok := be.(ScaledRoPE)
		if !ok {
			return nil, fmt.Errorf("model %s has RoPE scaling %s, which the %s backend cannot apply", m.Source, c.RopeScaling, be.Name())
		}
		r.scaled, r.invFreq = sr, c.RopeInvFreq(0)
	}
	return r, nil
}

// MaxRows is the most tokens a pass of the runner takes (its prefill
// chunk, after RunnerOptions.FitRows).
func (r *Runner) MaxRows() int { return r.maxRows }

// scratch returns the scratch of the runner's own passes, borrowed from
// the weights' pool until releaseScratch.
func (r *Runner) scratch() *state {
	if r.s == nil {
		r.s = r.w.scratch.take(r.Backend, r.Model.Config, r.maxRows, r.hbRows)
	}
	return r.s
}

// releaseScratch gives the runner's scratch back to the pool, for the next
// runner's pass (the logits a caller reads are on the host by then).
func (r *Runner) releaseScratch() {
	if r.s != nil {
		r.w.scratch.give(r.Backend, r.s)
		r.s = nil
	}
}

// Pos is the position the next token will take.
func (r *Runner) Pos() int { return r.pos }

// Reset empties the KV cache and starts a new stream at position 0.
func (r *Runner) Reset() {
	r.Cache.Reset()
	r.pos = 0
	r.firstRope = -1
}

// Forward feeds tokens at the next positions and writes the logits of the
// last token into logits [vocab]. Long inputs are processed in chunks of the
// runner's maxRows (prefill); one token is a decode step.
func (r *Runner) Forward(tokens []int, logits []float32) error {
	return r.forward(tokens, logits, false)
}

// ForwardAll is Forward that writes the logits of every token into logits
// [len(tokens), vocab].
func (r *Runner) ForwardAll(tokens []int, logits []float32) error {
	return r.forward(tokens, logits, true)
}

// LogProbs feeds tokens at the next positions, like ForwardAll, and writes
// into out[i] the log-probability of targets[i] under the logits of
// tokens[i] (a scoring pass: the logits stay on the device where the
// backend is a LogProber).
func (r *Runner) LogProbs(tokens, targets []int, out []float64) error {
	if len(targets) != len(tokens) || len(out) < len(tokens) {
		return fmt.Errorf("log probs: %d tokens, %d targets, room for %d results", len(tokens), len(targets), len(out))
	}
	for i, t := range targets {
		if t < 0 || t >= r.Model.Config.Vocab {
			return fmt.Errorf("log probs: target %d at index %d is outside the vocabulary [0, %d)", t, i, r.Model.Config.Vocab)
		}
	}
	r.score = &scoreSink{targets: targets, out: out}
	defer func() { r.score = nil }()
	return r.forward(tokens, nil, true)
}

// scoreSink receives a LogProbs pass's results, chunk by chunk.
type scoreSink struct {
	targets []int
	out     []float64
	done    int       // rows scored so far
	host    []float32 // logits read back where the backend is no LogProber
}

// take scores rows rows of logits [rows, vocab] against the next targets:
// on the device where the backend is a LogProber, else on the host.
func (sc *scoreSink) take(be Backend, logits Buffer, rows, vocab int) {
	dst, tg := sc.out[sc.done:sc.done+rows], sc.targets[sc.done:sc.done+rows]
	if lp, ok := be.(LogProber); ok {
		lp.LogProbs(dst, logits, rows, vocab, tg)
	} else {
		if len(sc.host) < rows*vocab {
			sc.host = make([]float32, rows*vocab)
		}
		be.Read(sc.host[:rows*vocab], logits, 0)
		for i := range rows {
			dst[i] = LogProb(sc.host[i*vocab:(i+1)*vocab], tg[i])
		}
	}
	sc.done += rows
}

func (r *Runner) forward(tokens []int, logits []float32, all bool) error {
	c := r.Model.Config
	if len(tokens) == 0 {
		return fmt.Errorf("forward: no tokens")
	}
	want := c.Vocab
	if all {
		want = len(tokens) * c.Vocab
	}
	if r.score != nil {
		want = 0
	}
	if len(logits) < want {
		return fmt.Errorf("forward: logits buffer holds %d values, need %d", len(logits), want)
	}
	for i, t := range tokens {
		if t < 0 || t >= c.Vocab {
			return fmt.Errorf("forward: token %d at index %d is outside the vocabulary [0, %d)", t, i, c.Vocab)
		}
	}
	defer r.releaseScratch()
	if len(tokens) > r.maxRows {
		r.Cache.Room(len(tokens)) // a long prompt's positions and page lists, grown once
	}
	for start, end := 0, r.firstChunk(len(tokens)); start < len(tokens); start, end = end, min(end+r.maxRows, len(tokens)) {
		chunk := tokens[start:end]
		if err := r.checkWindow(len(chunk)); err != nil {
			return err
		}
		var out []float32
		switch {
		case r.score != nil: // step hands the logits to the score sink
		case all:
			out = logits[start*c.Vocab : (start+len(chunk))*c.Vocab]
		case start+len(chunk) == len(tokens):
			out = logits[:c.Vocab]
		}
		r.step(chunk, out, all)
		if err := r.stepDone(chunk, out, all); err != nil {
			return err
		}
	}
	return nil
}

// minFirstChunk is the fewest rows a remainder needs to go first: fewer
// would make a prompt's first pass one of a handful of rows, or of one (a
// decode step to the policies), for a wave of little blocks.
const minFirstChunk = 16

// firstChunk is the rows of the first pass over n tokens: the remainder of
// n over maxRows when the backend fitted maxRows to its grid's waves
// (RunnerOptions.FitRows), so that of a long prompt's passes the one whose
// attention grid ends in a partly empty wave is the one over the fewest
// keys, the cheapest (at 128K tokens of the 8B shape on an H200, the last
// pass's ninth wave held blocks of up to 1,024 key tiles); maxRows
// otherwise (an asked chunk, the chunked protocol's, stays in order), and
// where the remainder is under minFirstChunk rows.
func (r *Runner) firstChunk(n int) int {
	if rem := n % r.maxRows; r.opts.FitRows && rem >= minFirstChunk {
		return rem
	}
	return min(n, r.maxRows)
}

// checkWindow refuses a pass of rows tokens that reaches the model's sliding
// window on a backend whose attention does not apply it.
func (r *Runner) checkWindow(rows int) error {
	if w := r.Model.Config.SlidingWindow; w > 0 && r.pos+rows-1 >= w {
		if wa, ok := r.Backend.(WindowAttender); !ok || !wa.AttendsWindow() {
			return fmt.Errorf("forward: position %d reaches the model's sliding window (config.json field sliding_window = %d), which the %s backend's attention does not apply", r.pos+rows-1, w, r.Backend.Name())
		}
	}
	return nil
}

// stepDone returns what went wrong in the step that just fed tokens: a
// step's error, the policy's, or non-finite outputs (diagnosed).
func (r *Runner) stepDone(tokens []int, out []float32, all bool) error {
	if err := r.err; err != nil {
		r.err = nil
		return err
	}
	if e, ok := r.Hook.(interface{ Err() error }); ok {
		if err := e.Err(); err != nil {
			return err
		}
	}
	return r.checkFinite(tokens, out, all)
}

// segment is one stream's part of a forward pass: the runner whose cache,
// policy and position it uses, and the rows it feeds.
type segment struct {
	r      *Runner
	tokens []int     // the stream's tokens, rows [row, row+len(tokens)) of the pass
	row    int       // first row of the segment in the pass's buffers
	out    []float32 // where its logits go (see pass.head), or nil
	// The segment's rows of the pass's queries, keys, values and attention
	// output: the pass's buffers themselves for a pass of one segment,
	// views into them (Viewer) otherwise.
	q, k, v, att Buffer
	pos          []int // [rows] the rows' positions
}

// pass is one forward pass over the rows of one stream (a Runner's prefill
// chunk or decode step) or of several (a Batch's decode step): the matrix
// products run once over every row; RoPE, the KV cache, the policy's hooks
// and attention run per stream, each on its own cache.
type pass struct {
	c      Config
	be     Backend
	w      *deviceWeights
	s      *state
	segs   []segment
	tokens []int      // [rows] every segment's tokens in row order
	all    bool       // a single segment's out takes the logits of every row
	score  *scoreSink // the rows' log-probabilities go here instead of out
	owner  uint64     // ReplayKey owner of the pass's replayed parts: its scratch's id
	scale  float32    // attention's score scale
	// minLanes is the fewest streams the pass spreads over goroutines (a
	// batch's; 0: never; lanes.go).
	minLanes int
	clock    phaseClock // the parts' wall times, with KVBENCH_PHASES (phases.go)
	// lateAll: afterAttend runs the hooks of layers lateLo..lateHi-1, in
	// order, on the calls kept aside (lateacc.go); accMarks are the
	// backend's marks of each layer's deferred reads (AccPacer).
	lateAll        bool
	lateLo, lateHi int
	accMarks       []int
	greedy         *greedyAt // the one token is on the device (greedy.go)
}

// step runs the layer loop over rows tokens (rows <= maxRows) and writes the
// logits of every row (all) or of the last row into out, when out is not nil.
func (r *Runner) step(tokens []int, out []float32, all bool) { r.stepAt(tokens, out, all, nil) }

// stepAt is step of one token held on the device where g is not nil
// (greedy.go): its embedding read from g's slot, the argmax of its logits
// written to the next (out may be nil).
func (r *Runner) stepAt(tokens []int, out []float32, all bool, g *greedyAt) {
	s := r.scratch()
	rows := len(tokens)
	r.seg[0] = segment{r: r, tokens: tokens, out: out, q: s.q, k: s.k, v: s.v, att: s.att, pos: s.pos[:rows]}
	r.pass = pass{c: r.Model.Config, be: r.Backend, w: r.w, s: s, segs: r.seg[:], tokens: tokens, all: all, score: r.score, owner: s.id, greedy: g}
	r.pass.run()
}

// run is the layer loop.
func (p *pass) run() {
	c, be, w, s := p.c, p.be, p.w, p.s
	rows := len(p.tokens)
	k := &p.clock
	k.start(be)
	for i := range p.segs {
		g := &p.segs[i]
		for j := range g.tokens {
			g.pos[j] = g.r.pos + j
		}
		g.r.stepFreqs(g.r.pos + len(g.tokens))
	}
	pos := s.pos[:rows]
	// Yarn and longrope scale cos and sin by a factor: scores by its square.
	af := c.RopeScaling.Attention()
	p.scale = float32(af * af / math.Sqrt(float64(c.HeadDim)))

	if g := p.greedy; g != nil {
		g.da.EmbedSlot(s.x, w.embed, g.slots, g.i, c.Dim, c.Vocab)
	} else {
		be.Embed(s.x, w.embed, p.tokens, c.Dim)
	}
	k.mark(phaseStart)
	// A decode step's fixed sequences of operations (same buffers, one row
	// a stream: a runner's step or a batch's) are replayed as a unit where
	// the backend can (a CUDA graph); a prompt's chunks are not.
	rep, _ := be.(Replayer)
	if rows != len(p.segs) || p.owner == 0 {
		rep = nil
	}
	late := false // AfterAttend after the last layer (lateacc.go)
	lag := false  // AfterAttend of each layer after its MLP (lateacc.go)
	for l := range w.layers {
		for i := range p.segs {
			if probe := p.segs[i].r.probe; probe != nil {
				probe(l)
			}
		}
		// Attention block: x += Wo · attention(RoPE(Wq·xb), cache ∪ RoPE(Wk·xb), Wv·xb).
		if rep != nil {
			rep.Replay(ReplayKey{p.owner, l, 0, rows}, func() { p.projectQKV(l, rows) })
		} else {
			p.projectQKV(l, rows)
		}
		k.mark(phaseQKV)
		if r0 := p.segs[0].r; r0.scaled != nil && p.sameFreqs() {
			rope2Freqs(r0.scaled, s.q, s.k, rows, c.Heads, c.KVHeads, c.HeadDim, pos, r0.invFreq, w.rope)
		} else if r0.scaled != nil {
			// Scaled RoPE whose frequencies follow each stream's length
			// (dynamic, longrope): stream by stream.
			for i := range p.segs {
				g := &p.segs[i]
				n := len(g.tokens)
				rope2Freqs(g.r.scaled, g.q, g.k, n, c.Heads, c.KVHeads, c.HeadDim, g.pos, g.r.invFreq, w.rope)
			}
		} else {
			rope2(be, s.q, s.k, rows, c.Heads, c.KVHeads, c.HeadDim, pos, c.RopeTheta, w.rope)
		}
		k.mark(phaseRoPE)
		// Each stream's new keys and values go to its cache and its policy
		// acts; then every stream attends; then every policy sees the result.
		p.beforeAttend(l)
		k.mark(phaseBefore)
		if l == 0 {
			switch {
			case p.lateAcc():
				d := p.be.(AccDeferrer)
				if late = d.DeferAcc(true); late {
					defer d.DeferAcc(false) // also when the pass fails
				}
			case p.lagAcc(): // lateacc.go
				d := p.be.(AccDeferrer)
				if lag = d.DeferAcc(true); lag {
					defer d.DeferAcc(false)
				}
			}
		}
		p.attend(l)
		k.mark(phaseAttend)
		if late || lag {
			p.keepCalls(l)
		} else {
			p.afterAttend(l)
		}
		k.mark(phaseAfter)
		if rep != nil {
			rep.Replay(ReplayKey{p.owner, l, 1, rows}, func() { p.outputAndMLP(l, rows) })
		} else {
			p.outputAndMLP(l, rows)
		}
		k.mark(phaseMLP)
		if lag { // the layer's hooks while the device runs its MLP
			p.lagHooks(l)
			k.mark(phaseAfter)
		}
	}
	if lag {
		p.lagEnd()
	}
	// The head before late hooks that wait for the whole step at once: its
	// kernels follow the last layer's on the device, and its read is the
	// pass's one wait, after which the hooks' FlushAcc finds the sums
	// already landed (the hooks do not need the logits, nor the head the
	// hooks). Paced hooks (AccPacer) run first, beside the device's later
	// layers, and the head's read waits after them.
	defer p.deliverTimes()
	headFirst := late && !p.paced()
	if headFirst {
		p.head()
		k.mark(phaseHead)
	}
	if late {
		p.lateAfter()
		k.mark(phaseAfter)
	}
	if !headFirst {
		p.head()
		k.mark(phaseHead)
	}
	for i := range p.segs {
		g := &p.segs[i]
		g.r.pos += len(g.tokens)
	}
	k.done(len(p.segs), rows, p.marked())
}

// sameFreqs reports whether every segment's stream rotates with the same
// scaled-RoPE frequencies (the same stage: always, for scalings that do not
// vary with the length).
func (p *pass) sameFreqs() bool {
	for i := range p.segs[1:] {
		if p.segs[i+1].r.freqStage != p.segs[0].r.freqStage {
			return false
		}
	}
	return true
}

// beforeAttend stores the segment's keys and values of layer l in its
// stream's cache, builds the stream's attention call and lets its policy act.
func (g *segment) beforeAttend(l int, c Config, scale float32) {
	g.store(l)
	g.prepare(l, c, scale)
}

// store appends the segment's keys and values of layer l to its stream's
// cache.
func (g *segment) store(l int) { g.r.Cache.Append(l, g.k, g.v, len(g.tokens), g.pos) }

// prepare builds the stream's attention call of layer l (its keys stored)
// and lets its policy act.
func (g *segment) prepare(l int, c Config, scale float32) {
	r, rows := g.r, len(g.tokens)
	r.attn = AttnArgs{Out: g.att, Q: g.q, Rows: rows, QPos: g.pos, Heads: c.Heads, KVHeads: c.KVHeads,
		HeadDim: c.HeadDim, Scale: scale, Seqs: r.Cache.Seqs(l), Window: c.SlidingWindow,
		Rope: r.w.rope, Theta: c.RopeTheta}
	if r.scaled != nil {
		r.attn.InvFreq = r.invFreq
	}
	if r.Hook != nil {
		r.Hook.BeforeAttend(l, &r.attn)
		if r.attn.QShift != nil && r.scaled != nil && r.firstRope != r.freqStage && r.err == nil {
			r.err = fmt.Errorf("forward: RoPE scaling %s changes its frequencies with the sequence length (%d tokens now, %d trained), so the keys cached before cannot be re-positioned exactly (the policy shifts positions within the cache); use a policy that keeps positions", c.RopeScaling, r.pos+rows, c.RopeScaling.OriginalMaxSeq)
		}
	}
}

// attend runs the segment's attention of layer l, timed when its runner
// asks.
func (g *segment) attend(l int) {
	r, be := g.r, g.r.Backend
	if dt, ok := be.(DeviceTimer); ok && r.OnAttend != nil {
		a := dt.Mark()
		be.Attend(&r.attn)
		r.marks = append(r.marks, a, dt.Mark())
	} else if r.OnAttend != nil {
		t0 := time.Now()
		be.Attend(&r.attn)
		r.OnAttend(l, len(g.tokens), time.Since(t0))
	} else {
		be.Attend(&r.attn)
	}
}

// headAll runs the final norm and the output head over the pass's first
// rows rows into the full-logit buffer (made on first use).
func (p *pass) headAll(rows int) {
	c, be, w, s := p.c, p.be, p.w, p.s
	if s.logits == nil {
		s.logits = be.Alloc(s.maxRows * c.Vocab)
	}
	normMatMul(be, s.xb, s.x, w.norm, c.NormEps, rows, c.Dim, MatOut{Dst: s.logits, W: w.output, Out: c.Vocab})
}

// head is the output head: the logits of every row (a single segment with
// all set), of every segment's last row, or their log-probabilities (score).
func (p *pass) head() {
	c, be, w, s := p.c, p.be, p.w, p.s
	rows := len(p.tokens)
	if len(p.segs) > 1 {
		// A batch: one row per stream, each the last of its stream.
		need := p.score != nil
		for i := range p.segs {
			need = need || p.segs[i].out != nil
		}
		if !need {
			return
		}
		p.headAll(rows)
		if p.score != nil {
			p.score.take(be, s.logits, rows, c.Vocab)
			return
		}
		for i := range p.segs {
			if g := &p.segs[i]; g.out != nil {
				be.Read(g.out[:c.Vocab], s.logits, g.row*c.Vocab)
			}
		}
		return
	}
	out := p.segs[0].out
	if p.score != nil || (p.all && out != nil) {
		p.headAll(rows)
		if p.score != nil {
			p.score.take(be, s.logits, rows, c.Vocab)
		} else {
			be.Read(out[:rows*c.Vocab], s.logits, 0)
		}
		return
	}
	if out == nil && p.greedy == nil {
		return
	}
	be.CopyRows(s.last, s.x, 0, rows-1, 1, c.Dim)
	be.RMSNorm(s.last, s.last, w.norm, 1, c.Dim, c.NormEps)
	be.MatMul(s.logit1, s.last, w.output, 1, c.Dim, c.Vocab)
	if g := p.greedy; g != nil {
		g.da.Argmax(g.slots, g.i+1, s.logit1, c.Vocab)
	}
	if out != nil {
		be.Read(out[:c.Vocab], s.logit1, 0)
	}
}

// projectQKV computes the queries, keys and values of layer l from the
// residual stream: q, k, v = W·RMSNorm(x) (+ bias).
func (p *pass) projectQKV(l, rows int) {
	c, be, s, lw := p.c, p.be, p.s, &p.w.layers[l]
	q, k, v := MatOut{Dst: s.q, W: lw.wq, Out: c.QDim()}, MatOut{Dst: s.k, W: lw.wk, Out: c.KVDim()}, MatOut{Dst: s.v, W: lw.wv, Out: c.KVDim()}
	if c.QKVBias {
		q.Bias, k.Bias, v.Bias = lw.bq, lw.bk, lw.bv
	}
	normMatMul3(be, s.xb, s.x, lw.attnNorm, c.NormEps, rows, c.Dim, q, k, v)
	if c.QKNorm { // Qwen3: RMSNorm of each head's query and key, [rows*heads, head_dim]
		be.RMSNorm(s.q, s.q, lw.qNorm, rows*c.Heads, c.HeadDim, c.NormEps)
		be.RMSNorm(s.k, s.k, lw.kNorm, rows*c.KVHeads, c.HeadDim, c.NormEps)
	}
}

// stepFreqs sets the RoPE inverse frequencies of a step whose highest
// position is seqLen-1: they change with the length only under dynamic and
// longrope scaling, as transformers recomputes them per call from its
// highest position. firstRope keeps the stage of the stream's first step,
// to tell whether every cached key was rotated with today's frequencies.
func (r *Runner) stepFreqs(seqLen int) {
	if r.scaled == nil {
		return
	}
	c := r.Model.Config
	st := c.ropeStage(seqLen)
	if st != r.freqStage {
		r.invFreq, r.freqStage = c.RopeInvFreq(seqLen), st
	}
	if r.firstRope < 0 {
		r.firstRope = st
	}
}

// outputAndMLP adds the attention output projection and the MLP block of
// layer l to the residual stream:
// x += Wo·att; x += Wdown · (silu(Wgate·xb) ⊙ Wup·xb) with xb = RMSNorm(x).
func (p *pass) outputAndMLP(l, rows int) {
	c, be, s, lw := p.c, p.be, p.s, &p.w.layers[l]
	matMulAdd(be, s.x, s.xb2, s.att, lw.wo, rows, c.QDim(), c.Dim)
	normMLP(be, s.x, s.xb2, s.xb, s.hb, s.hb2, lw.mlpNorm, c.NormEps, lw.gate, lw.up, lw.down, rows, c.Dim, c.Hidden)
}

// marked reports whether a segment's runner has OnAttend's marks to read
// (deliverTimes).
func (p *pass) marked() bool {
	for i := range p.segs {
		if len(p.segs[i].r.marks) > 0 {
			return true
		}
	}
	return false
}

// deliverTimes hands the device times of this pass's attention calls to
// each stream's OnAttend (waiting for the device when the pass read nothing
// back), then forgets the marks.
func (p *pass) deliverTimes() {
	var dt DeviceTimer
	for i := range p.segs {
		g := &p.segs[i]
		r := g.r
		if len(r.marks) == 0 {
			continue
		}
		dt = r.Backend.(DeviceTimer)
		for j := 0; j+1 < len(r.marks); j += 2 {
			r.OnAttend(j/2, len(g.tokens), dt.Elapsed(r.marks[j], r.marks[j+1]))
		}
		r.marks = r.marks[:0]
	}
	if dt != nil {
		dt.ClearMarks()
	}
}
