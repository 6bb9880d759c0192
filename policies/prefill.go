package policies

import (
	"fmt"

	"github.com/kvbench/kvbench/runtime"
)

// Prefill is the protocol a policy follows for an announced prompt
// (Policy.Prompt).
type Prefill int

const (
	// PrefillDense is the papers' protocol and the default (H2O, TOVA,
	// SnapKV, PyramidKV, StreamingLLM, kvpress): while the prompt runs, the
	// policy keeps every token and attention is dense and causal, so every
	// prompt token sees every earlier one; the runner still computes the
	// prompt in chunks of its MaxRows, but nothing is evicted between them.
	// Statistics (H2O's accumulated attention, TOVA's last-query scores,
	// SnapKV's observation window) are those of a one-shot prefill, and the
	// policy compresses to its budget right after the prompt's last row has
	// attended, layer by layer. Meanwhile the cache holds the whole prompt,
	// as the references' does; Stats.MaxResidentBytes reports that peak.
	PrefillDense Prefill = iota
	// PrefillChunked evicts after every forward chunk of a prompt (and a
	// one-row chunk before its attention, as a decode step), so later
	// prompt tokens never see the evicted ones and the cache stays near the
	// budget during the prompt. Statistics are per chunk (TOVA scores each
	// chunk by its last row; H2O ranks by the attention received so far).
	// Policies that compress only once the prompt is in (snapkv, pyramidkv)
	// and those that never evict (full, quest, oracle) run as under
	// PrefillDense.
	PrefillChunked
)

// PrefillNames are the protocols' names, as a suite's `prefill` key takes
// them, in Prefill order.
var PrefillNames = []string{"dense", "chunked"}

// String is the protocol's name ("dense", "chunked").
func (p Prefill) String() string {
	if p >= 0 && int(p) < len(PrefillNames) {
		return PrefillNames[p]
	}
	return fmt.Sprintf("Prefill(%d)", int(p))
}

// ParsePrefill maps a protocol's name to its value; "" is the default,
// dense. An unknown name is an error listing the names and the closest.
func ParsePrefill(s string) (Prefill, error) {
	if s == "" {
		return PrefillDense, nil
	}
	for i, n := range PrefillNames {
		if s == n {
			return Prefill(i), nil
		}
	}
	msg := fmt.Sprintf("%q is not one of dense, chunked", s)
	if c := Closest(s, PrefillNames); c != "" {
		msg += fmt.Sprintf("; did you mean %s?", c)
	}
	return 0, fmt.Errorf("%s", msg)
}

// promptState follows announced prompts through the runner's forwards, for
// every policy the same way (it is part of base): where the prompt in
// progress starts and ends, and what the forward in progress is to the
// policy.
type promptState struct {
	prefill  Prefill
	pending  int  // length of an announced prompt not yet begun
	inPrompt bool // an announced prompt is in progress
	lo, hi   int  // its first and last positions

	// Set by place at layer 0 for the forward in progress.

	decode    bool // a decode step: one token outside an announced prompt
	prompting bool // holds rows of an announced prompt
	promptEnd bool // holds the announced prompt's last row
	// stepEvict: evict as a decode step does (a window or H2O before
	// attention, TOVA after it). promptEvict: compress to the budget after
	// this forward's attention. Under PrefillDense neither is set for the
	// chunks of a prompt before its last.
	stepEvict, promptEvict bool
}

// announce records a prompt of n tokens fed by the next forwards.
func (s *promptState) announce(n int) { s.pending = n }

// restart forgets a prompt in progress (a new stream); a prompt announced
// and not yet begun stays announced.
func (s *promptState) restart() {
	s.inPrompt, s.decode, s.prompting, s.promptEnd = false, false, false, false
}

// place classifies the forward whose layer-0 attention a describes.
func (s *promptState) place(a *runtime.AttnArgs) {
	first, last := a.QPos[0], a.QPos[a.Rows-1]
	if s.pending > 0 {
		s.inPrompt, s.lo, s.hi, s.pending = true, first, first+s.pending-1, 0
	}
	if s.inPrompt && first > s.hi {
		s.inPrompt = false // the prompt ended in forwards the policy did not see
	}
	s.prompting = s.inPrompt
	s.promptEnd = s.prompting && last >= s.hi
	if s.promptEnd {
		s.inPrompt = false
	}
	s.decode = a.Rows == 1 && !s.prompting
	switch {
	case s.decode:
		s.stepEvict, s.promptEvict = true, false
	case s.prefill == PrefillChunked:
		// Every chunk is evicted, a one-row chunk before its attention.
		s.stepEvict, s.promptEvict = a.Rows == 1, a.Rows > 1
	case s.prompting:
		s.stepEvict, s.promptEvict = false, s.promptEnd
	default:
		// Rows fed at once without an announcement: a prompt of their own,
		// whose length only this forward knows (the runner's chunks of a
		// longer unannounced input are compressed one by one).
		s.stepEvict, s.promptEvict = false, true
	}
}

// promptRest is the tokens of the announced prompt still to come after the
// forward a places (0 outside a prompt), and its answer's first
// runtime.HoldTail: room a policy's per-token state may take at once.
func (s *promptState) promptRest(a *runtime.AttnArgs) int {
	if !s.prompting || s.promptEnd {
		return 0
	}
	return s.hi - a.QPos[a.Rows-1] + runtime.HoldTail
}

// promptLen is the length of the announced prompt the forward in progress
// belongs to (valid while prompting).
func (s *promptState) promptLen() int { return s.hi - s.lo + 1 }
