package runtime

import (
	"fmt"
	"math"
)

// maxBatchRows is the most rows one pass of a Batch feeds: enough for the
// matrix products to read each weight once for many streams, few enough
// that the scratch (the logits above all: rows x vocab) stays small.
var maxBatchRows = 256

// Viewer is an optional Backend capability: a buffer that aliases part of
// another. A Batch of several streams needs it, to hand each stream's
// attention call its own rows of the batch's queries, keys, values and
// output without copying them.
type Viewer interface {
	// View returns a float32 buffer whose element i is element off+i of
	// the float32 buffer b, for i < n: writes through either are seen by
	// both. It panics (a programmer error) when [off, off+n) is not
	// within b.
	View(b Buffer, off, n int) Buffer
}

// Batch steps the streams of several Runners together, one token each: the
// matrix products of a decode step (queries, keys and values, the output
// projection, the MLP and the output head) run once over every stream's row,
// which on a GPU costs about what one stream's step costs, while RoPE, the
// KV cache, the policy's hooks and attention stay per stream, each on its
// own cache with its own Hook, as when the runner steps alone. A stream's
// results are those of the same tokens fed to its runner alone, to the
// rounding of the backend's matrix kernels over one row or several (the
// same evictions; logits within 1e-5 relative on the CPU).
//
// A step of more than maxBatchRows streams runs as several passes of at
// most that many rows (the batch's scratch is sized by it, not by the
// streams). The runners share the model and the backend; each keeps its Hook,
// OnAttend and position, and may still be fed alone between batch steps (a
// prompt, say). A Batch is not safe for concurrent use, nor is a runner
// while the batch steps it.
type Batch struct {
	runners []*Runner
	be      Backend
	c       Config
	s       state // [min(len(runners), maxBatchRows) rows] the batch's scratch
	tokens  []int // [rows] the step's tokens
	segs    []segment
	p       pass
	sc      scoreSink
	used    []bool // which runners the step feeds
	// Views of row i of the batch's buffers, made once: q, k, v, att.
	views [][4]Buffer
	// minLanes is the fewest streams a step spreads over goroutines
	// ($KVBENCH_LANES, read by NewBatch; 0: never).
	minLanes int
}

// NewBatch returns a batch over runners: distinct runners of one model on
// one backend (Sibling makes them). The batch uses the first runner's
// weights. On a backend that is no Viewer a batch step feeds its streams
// one after another, each through its own runner (the same results, without
// the shared matrix products).
func NewBatch(runners ...*Runner) (*Batch, error) {
	if len(runners) == 0 {
		return nil, fmt.Errorf("batch: no runners")
	}
	r0 := runners[0]
	seen := map[*Runner]int{}
	for i, r := range runners {
		if r == nil {
			return nil, fmt.Errorf("batch: runner %d is nil", i)
		}
		if j, dup := seen[r]; dup {
			return nil, fmt.Errorf("batch: runners %d and %d are the same runner", j, i)
		}
		seen[r] = i
		if r.Model != r0.Model {
			return nil, fmt.Errorf("batch: runner %d runs model %s, runner 0 %s: a batch runs one model", i, r.Model.Source, r0.Model.Source)
		}
		if r.Backend != r0.Backend {
			return nil, fmt.Errorf("batch: runner %d is on another %s backend than runner 0: a batch runs on one backend (make its runners with Sibling)", i, r.Backend.Name())
		}
	}
	be, c := r0.Backend, r0.Model.Config
	n := len(runners)
	minLanes, err := minLaneStreams()
	if err != nil {
		return nil, fmt.Errorf("batch: %w", err)
	}
	b := &Batch{runners: runners, be: be, c: c, used: make([]bool, n), minLanes: minLanes}
	if vw, ok := be.(Viewer); ok {
		n = min(n, maxBatchRows)
		b.s = newState(be, c, n, mlpRows(be, runners[0].w, c, n))
		b.views = make([][4]Buffer, n)
		for i := range b.views {
			b.views[i] = [4]Buffer{
				vw.View(b.s.q, i*c.QDim(), c.QDim()),
				vw.View(b.s.k, i*c.KVDim(), c.KVDim()),
				vw.View(b.s.v, i*c.KVDim(), c.KVDim()),
				vw.View(b.s.att, i*c.QDim(), c.QDim()),
			}
		}
	}
	return b, nil
}

// Len is the number of runners.
func (b *Batch) Len() int { return len(b.runners) }

// Runner returns runner i.
func (b *Batch) Runner(i int) *Runner { return b.runners[i] }

// Step feeds tokens[j] to runner streams[j] (distinct indices; a subset of
// the batch, in any order) as one decode step of each, and writes the
// logits of runner streams[j] into logits[j*vocab : (j+1)*vocab] (logits nil:
// none are read back).
func (b *Batch) Step(streams, tokens []int, logits []float32) error {
	if logits != nil && len(logits) < len(streams)*b.c.Vocab {
		return fmt.Errorf("batch step: logits buffer holds %d values, need %d", len(logits), len(streams)*b.c.Vocab)
	}
	return b.step(streams, tokens, logits, nil, nil)
}

// LogProbs feeds tokens[j] to runner streams[j], as Step does, and writes
// into out[j] the log-probability of targets[j] under the logits that
// follow (computed where the logits are when the backend is a LogProber,
// as Runner.LogProbs does).
func (b *Batch) LogProbs(streams, tokens, targets []int, out []float64) error {
	if len(targets) != len(streams) || len(out) < len(streams) {
		return fmt.Errorf("batch log probs: %d streams, %d targets, room for %d results", len(streams), len(targets), len(out))
	}
	for j, t := range targets {
		if t < 0 || t >= b.c.Vocab {
			return fmt.Errorf("batch log probs: target %d of stream %d is outside the vocabulary [0, %d)", t, streams[j], b.c.Vocab)
		}
	}
	return b.step(streams, tokens, nil, targets, out)
}

// step checks a step's streams and tokens, then feeds them in passes of at
// most maxBatchRows rows: with logits, or scored against targets into out
// when targets is not nil. On an error the streams of the passes before
// (and of the failing one) have stepped.
func (b *Batch) step(streams, tokens []int, logits []float32, targets []int, out []float64) error {
	c := b.c
	if len(streams) == 0 {
		return fmt.Errorf("batch step: no streams")
	}
	if len(tokens) != len(streams) {
		return fmt.Errorf("batch step: %d tokens for %d streams", len(tokens), len(streams))
	}
	clear(b.used)
	for j, i := range streams {
		if i < 0 || i >= len(b.runners) {
			return fmt.Errorf("batch step: stream %d of a batch of %d", i, len(b.runners))
		}
		if b.used[i] {
			return fmt.Errorf("batch step: stream %d given twice", i)
		}
		b.used[i] = true
		if t := tokens[j]; t < 0 || t >= c.Vocab {
			return fmt.Errorf("batch step: token %d of stream %d is outside the vocabulary [0, %d)", t, i, c.Vocab)
		}
		if err := b.runners[i].checkWindow(1); err != nil {
			return fmt.Errorf("stream %d: %w", i, err)
		}
	}
	if b.views == nil {
		return b.stepEach(streams, tokens, logits, targets, out)
	}
	V := c.Vocab
	for lo := 0; lo < len(streams); lo += b.s.maxRows {
		hi := min(lo+b.s.maxRows, len(streams))
		var lg []float32
		if logits != nil {
			lg = logits[lo*V : hi*V]
		}
		var score *scoreSink
		if targets != nil {
			b.sc = scoreSink{targets: targets[lo:hi], out: out[lo:hi], host: b.sc.host}
			score = &b.sc
		}
		if err := b.pass(streams[lo:hi], tokens[lo:hi], lg, score); err != nil {
			return err
		}
	}
	return nil
}

// pass runs one forward pass over the rows of streams (at most the batch's
// scratch rows).
func (b *Batch) pass(streams, tokens []int, logits []float32, score *scoreSink) error {
	c := b.c
	rows := len(streams)
	b.tokens = append(b.tokens[:0], tokens...)
	b.segs = b.segs[:0]
	for j, i := range streams {
		g := segment{r: b.runners[i], tokens: b.tokens[j : j+1], row: j, pos: b.s.pos[j : j+1]}
		if rows == 1 {
			g.q, g.k, g.v, g.att = b.s.q, b.s.k, b.s.v, b.s.att
		} else {
			g.q, g.k, g.v, g.att = b.views[j][0], b.views[j][1], b.views[j][2], b.views[j][3]
		}
		if logits != nil {
			g.out = logits[j*c.Vocab : (j+1)*c.Vocab]
		}
		b.segs = append(b.segs, g)
	}
	b.p = pass{c: c, be: b.be, w: b.runners[0].w, s: &b.s, segs: b.segs, tokens: b.tokens, score: score, owner: b.s.id, minLanes: b.minLanes}
	b.p.run()
	for j := range b.segs {
		g := &b.segs[j]
		if err := b.segDone(g, j, score); err != nil {
			return fmt.Errorf("stream %d: %w", streams[j], err)
		}
	}
	return nil
}

// segDone is stepDone for a batch's segment j: the step's and the policy's
// errors, then a check of its logits or log-probability (diagnosed on the
// stream's runner alone).
func (b *Batch) segDone(g *segment, j int, score *scoreSink) error {
	r := g.r
	if score == nil {
		return r.stepDone(g.tokens, g.out, false)
	}
	if err := r.stepDone(g.tokens, nil, false); err != nil {
		return err
	}
	if v := score.out[j]; math.IsNaN(v) || math.IsInf(v, 0) {
		return r.diagnose(g.tokens, 0, v)
	}
	return nil
}

// stepEach is a batch step on a backend that is no Viewer: each stream's
// token through its own runner, one after another.
func (b *Batch) stepEach(streams, tokens []int, logits []float32, targets []int, out []float64) error {
	V := b.c.Vocab
	for j, i := range streams {
		r, one := b.runners[i], tokens[j:j+1]
		var err error
		switch {
		case targets != nil:
			err = r.LogProbs(one, targets[j:j+1], out[j:j+1])
		case logits != nil:
			err = r.Forward(one, logits[j*V:(j+1)*V])
		default: // no logits wanted (the window was checked)
			r.step(one, nil, false)
			err = r.stepDone(one, nil, false)
			r.releaseScratch()
		}
		if err != nil {
			return fmt.Errorf("stream %d: %w", i, err)
		}
	}
	return nil
}
