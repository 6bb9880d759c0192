package runtime

import (
	"fmt"
	"math"
)

// This file is the runner's check for NaN and infinite outputs. Every
// forward pass scans the logits it returns (or the log-probabilities of a
// LogProbs pass): a few integer operations per value, small beside the
// forward itself. When one is not finite, the step is run again layer by
// layer to find where the first non-finite value appears, and the forward
// returns a *NonFiniteError.

// NonFiniteError reports NaN or infinite logits: the position of the token
// whose output went bad first and the stage of the model where it did.
// After it the runner's stream is unusable (its cache and its policy state
// no longer agree): Reset it.
type NonFiniteError struct {
	Pos   int     // position of the token (its index in the stream)
	Token int     // the token's id
	Value float64 // the first non-finite value found (NaN, +Inf or -Inf)
	// Layer is the first stage whose output is not finite for that token:
	// -1 the token's embedding, 0..Layers-1 a layer, Layers the final norm
	// and output projection; NotReproduced when a re-run of the step
	// without the cache policy is finite everywhere; NotDiagnosed when
	// the step was not re-run (Runner.Greedy on the device).
	Layer  int
	Layers int
}

// NotReproduced is NonFiniteError.Layer when the diagnostic re-run is
// finite: the cache policy's selection or eviction is then the likely cause.
const NotReproduced = -2

func (e *NonFiniteError) Error() string {
	head := fmt.Sprintf("non-finite logits (%v) at token %d of the stream (id %d)", e.Value, e.Pos, e.Token)
	switch {
	case e.Layer == -1:
		return head + ": the token's embedding is not finite (the model's embedding weights?)"
	case e.Layer >= 0 && e.Layer < e.Layers:
		return head + fmt.Sprintf(": layer %d (of %d, counting from 0) is the first whose output is not finite", e.Layer, e.Layers)
	case e.Layer == e.Layers:
		return head + ": every layer's output is finite; the final norm and output projection are not"
	case e.Layer == NotDiagnosed:
		return head + ": found after later steps of a greedy run on the device had run, so the step was not re-run layer by layer (run the stream again with Forward to find the layer)"
	}
	return head + ": a re-run of the step with full attention over the tokens the cache holds is finite in every layer and in the output: the cache policy's selection or eviction is the likely cause"
}

// nonFinite32 returns the index of the first NaN or infinite value of v, or -1.
func nonFinite32(v []float32) int {
	const exp = 0x7f800000
	for i := 0; i < len(v); i += 64 {
		end := min(i+64, len(v))
		var flag uint32
		for _, x := range v[i:end] {
			// The exponent field is all ones only for NaN and ±Inf; adding
			// one to it then carries into bit 31.
			flag |= (math.Float32bits(x)&exp + 0x00800000) & 0x80000000
		}
		if flag != 0 {
			for j := i; j < end; j++ {
				if math.Float32bits(v[j])&exp == exp {
					return j
				}
			}
		}
	}
	return -1
}

// nonFinite64 returns the index of the first NaN or infinite value of v, or -1.
func nonFinite64(v []float64) int {
	for i, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return i
		}
	}
	return -1
}

// checkFinite scans what the step over tokens just produced: out (the logits
// of every row, or of the last), or the rows of a LogProbs pass. On a
// non-finite value it diagnoses the step.
func (r *Runner) checkFinite(tokens []int, out []float32, all bool) error {
	V := r.Model.Config.Vocab
	row := -1
	var val float64
	switch {
	case r.score != nil:
		got := r.score.out[r.score.done-len(tokens) : r.score.done]
		if i := nonFinite64(got); i >= 0 {
			row, val = i, got[i]
		}
	case out != nil:
		if i := nonFinite32(out); i >= 0 {
			row, val = i/V, float64(out[i])
			if !all {
				row = len(tokens) - 1
			}
		}
	}
	if row < 0 {
		return nil
	}
	return r.diagnose(tokens, row, val)
}

// diagnose runs the step over tokens again with a check of every row after
// the embedding and after each layer. The step's keys and values are first
// taken out of the cache (where the policy left them), and the re-run has no
// policy hook: it attends every token the cache holds.
func (r *Runner) diagnose(tokens []int, row int, val float64) error {
	if r.s == nil { // a batch's stream: its scratch is borrowed for the diagnosis
		defer r.releaseScratch()
	}
	c, be, s := r.Model.Config, r.Backend, r.scratch()
	rows := len(tokens)
	p0 := r.pos - rows
	e := &NonFiniteError{Pos: p0 + row, Token: tokens[row], Value: val, Layer: NotReproduced, Layers: c.Layers}

	var drop []int32
	for l := range c.Layers {
		for h, seq := range r.Cache.Seqs(l) {
			drop = drop[:0]
			for i, p := range seq.Pos[:seq.N] {
				if int(p) >= p0 {
					drop = append(drop, int32(i))
				}
			}
			if len(drop) > 0 {
				r.Cache.Evict(l, h, drop)
			}
		}
	}

	hook, onAttend, score := r.Hook, r.OnAttend, r.score
	r.Hook, r.OnAttend, r.score = nil, nil, nil
	defer func() { r.Hook, r.OnAttend, r.score = hook, onAttend, score }()
	x := make([]float32, rows*c.Dim)
	found := false
	// check looks at the residual stream after stage k (-1: the embedding).
	check := func(k int) {
		if found {
			return
		}
		be.Read(x, s.x, 0)
		if i := nonFinite32(x); i >= 0 {
			found = true
			e.Layer, e.Pos, e.Token, e.Value = k, p0+i/c.Dim, tokens[i/c.Dim], float64(x[i])
		}
	}
	r.pos = p0
	r.probe = func(l int) { check(l - 1) }
	r.step(tokens, nil, false)
	r.probe = nil
	check(c.Layers - 1)
	if found {
		return e
	}
	// Every layer is finite: the output head, row by row (into a buffer of
	// its own: the runner's logit buffers are the step's business).
	logits := make([]float32, c.Vocab)
	dev := be.Alloc(c.Vocab)
	for i := range rows {
		be.CopyRows(s.last, s.x, 0, i, 1, c.Dim)
		be.RMSNorm(s.last, s.last, r.w.norm, 1, c.Dim, c.NormEps)
		be.MatMul(dev, s.last, r.w.output, 1, c.Dim, c.Vocab)
		be.Read(logits, dev, 0)
		if j := nonFinite32(logits); j >= 0 {
			e.Layer, e.Pos, e.Token, e.Value = c.Layers, p0+i, tokens[i], float64(logits[j])
			return e
		}
	}
	return e
}
