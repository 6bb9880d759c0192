package runtime

import (
	"fmt"
	"math"
)

// Greedy decoding with the chosen tokens kept on the device: each step's
// argmax is written where the next step's embedding reads it, so the host
// queues step after step without reading logits back in between (one read
// of the tokens at the end). Transformers' decode loop does the same (the
// argmax stays a tensor on the device); a loop that reads every step's
// logits leaves the device idle for the copy, the host's scan and the next
// step's first launches.

// DeviceArgmax is an optional Backend capability for greedy decoding on the
// device. Token slots live in a buffer made by Alloc, GreedySlot words a
// slot, each word an int32's bits: the token (-1: none), then of the
// logits the argmax that chose it read, how many were not finite, the
// first such index and its float32 bits (zeros when all were finite).
type DeviceArgmax interface {
	// Argmax writes into slot i of slots the index of the largest finite
	// value of logits [0, n) (the first on ties; -1 when none is finite),
	// the count of non-finite values and the first one's index and bits.
	Argmax(slots Buffer, i int, logits Buffer, n int)
	// EmbedSlot writes into dst [1, dim] the table row of the token in slot
	// i of slots (zeros where the slot holds no token of the table's rows
	// [0, vocab)).
	EmbedSlot(dst, table, slots Buffer, i, dim, vocab int)
}

// GreedySlot is the words of a DeviceArgmax token slot.
const GreedySlot = 4

// NotDiagnosed is NonFiniteError.Layer when the non-finite logits were found
// after the steps that followed them had run (a greedy run on the device):
// the step was not re-run layer by layer.
const NotDiagnosed = -3

// Greedy feeds first at the next position, then n-1 more tokens, each the
// argmax of the logits before it (the first on ties), and writes into out[k]
// the argmax of the logits after the k-th token fed (out holds n). logits,
// when not nil, receives the last step's logits [vocab]. It is Forward of
// one token n times with the host's argmax between (Argmax; non-finite
// logits are an error), which it is where the backend is no
// DeviceArgmax; on one that is, the first n-1 steps are queued without
// reading anything back and their tokens are read once, before the last
// step, which runs as Forward does (its logits checked and diagnosed).
// Non-finite logits found in the tokens' read are a *NonFiniteError with
// Layer NotDiagnosed; the stream must then be Reset.
func (r *Runner) Greedy(first, n int, out []int, logits []float32) error {
	c := r.Model.Config
	if n < 1 || len(out) < n {
		return fmt.Errorf("greedy: %d tokens asked, room for %d", n, len(out))
	}
	if first < 0 || first >= c.Vocab {
		return fmt.Errorf("greedy: first token %d is outside the vocabulary [0, %d)", first, c.Vocab)
	}
	if logits != nil && len(logits) < c.Vocab {
		return fmt.Errorf("greedy: logits buffer holds %d values, need %d", len(logits), c.Vocab)
	}
	if logits == nil {
		logits = r.greedyLogits()
	}
	tok := first
	done := 0 // tokens of out written
	if da, ok := r.Backend.(DeviceArgmax); ok && n > 1 {
		if err := r.greedyDevice(da, first, n-1, out); err != nil {
			return err
		}
		done, tok = n-1, out[n-2]
	}
	one := []int{0}
	for ; done < n; done++ {
		one[0] = tok
		if err := r.Forward(one, logits); err != nil {
			return err
		}
		tok = Argmax(logits)
		out[done] = tok
	}
	return nil
}

// greedyLogits is a host buffer of one row of logits, kept for Greedy
// calls that do not ask for theirs.
func (r *Runner) greedyLogits() []float32 {
	if len(r.greedyHost) < r.Model.Config.Vocab {
		r.greedyHost = make([]float32, r.Model.Config.Vocab)
	}
	return r.greedyHost
}

// greedyDevice runs m steps from first on the device (out[k]: the argmax of
// step k's logits, the token of step k+1) and reads their tokens back once.
func (r *Runner) greedyDevice(da DeviceArgmax, first, m int, out []int) error {
	be := r.Backend
	words := (m + 1) * GreedySlot
	if r.slots == nil || r.slots.Len() < words { // grown by doubling: the runtime frees nothing
		old := 32 * GreedySlot
		if r.slots != nil {
			old = r.slots.Len()
		}
		r.slots = be.Alloc(max(words, 2*old))
	}
	be.Write(r.slots, 0, []float32{math.Float32frombits(uint32(int32(first))), 0, 0, 0})
	start := r.pos
	for k := range m {
		if err := r.checkWindow(1); err != nil {
			return err
		}
		r.stepAt(greedyToken, nil, false, &greedyAt{da: da, slots: r.slots, i: k})
		r.releaseScratch()
		if err := r.stepDone(greedyToken, nil, false); err != nil {
			return err
		}
	}
	got := make([]float32, words)
	be.Read(got, r.slots, 0)
	prev := first
	for k := range m {
		w := got[(k+1)*GreedySlot:]
		tok, bad := int32(math.Float32bits(w[0])), int32(math.Float32bits(w[1]))
		if bad != 0 {
			return &NonFiniteError{Pos: start + k, Token: prev, Value: float64(w[3]), Layer: NotDiagnosed, Layers: r.Model.Config.Layers}
		}
		if tok < 0 || int(tok) >= r.Model.Config.Vocab {
			return fmt.Errorf("greedy: step %d chose token %d, outside the vocabulary [0, %d)", k, tok, r.Model.Config.Vocab)
		}
		out[k] = int(tok)
		prev = int(tok)
	}
	return nil
}

// greedyAt is a step whose token is in slot i of a DeviceArgmax's slots;
// the argmax of its logits goes to slot i+1 (pass.run, pass.head).
type greedyAt struct {
	da    DeviceArgmax
	slots Buffer
	i     int
}

// greedyToken stands for a step's one token where it is on the device:
// only its count is read.
var greedyToken = []int{-1}

// Argmax is the index of the largest value of v, the first on ties,
// skipping NaN (-1 when v is empty or all NaN): the greedy choice, the
// host's side of DeviceArgmax.Argmax.
func Argmax(v []float32) int {
	best := -1
	for i, x := range v {
		if x != x {
			continue
		}
		if best < 0 || x > v[best] {
			best = i
		}
	}
	return best
}
