package policies

import (
	"fmt"
	"math"
	"strings"
)

// The budget knob. Every budgeted policy (all but full) accepts the same two
// parameters besides its own, so that one number compares them at equal
// memory:
//
//   - budget: KV tokens per layer and KV head that the policy keeps
//     (evicting policies: window, streamingllm, h2o, tova, snapkv,
//     pyramidkv, random) or attends (quest, oracle), sinks, windows and
//     recent tokens included. pyramidkv's is the mean over layers.
//   - ratio: the same as a share of the prompt, in (0, 1]: a prompt of n
//     tokens gives a budget of ⌊ratio·n⌋ tokens, at least 1 (RatioTokens).
//     ratio is the share KEPT: kvpress's compression_ratio is the share
//     removed (it keeps int(n·(1−compression_ratio))), so ratio 0.25 keeps
//     what compression_ratio 0.75 keeps. The budget is resolved by the
//     stream's first announced prompt (Policy.Prompt) and then stays fixed;
//     a stream without one (a text streamed token by token) has nothing to
//     take a share of, and its first forward returns an error saying so.
//
// Giving both is an error. A policy's own budget parameters stay as fine
// controls, mapped so: window: window = budget; streamingllm: recent =
// budget - sinks (4 unless given); h2o: heavy = budget/2 (floored), recent =
// the rest, or the rest of the budget beside a given heavy or recent; tova:
// cache = budget; snapkv, pyramidkv: capacity = budget (the observation
// window included); quest, oracle: tokens attended (quest: budget/page
// pages); random: tokens kept. Given with budget they must agree with it
// (window 64 with budget 128 is an error), and with ratio the ones that the
// ratio sets may not be given. Resolved Params always hold budget (once a
// ratio is resolved) beside the policy's own parameters.

// knob is the budget knob as given: at most one of the two is set.
type knob struct {
	budget int     // tokens (0: not given)
	ratio  float64 // share of the prompt kept (0: not given)
}

// tokens reports whether the budget was given in tokens.
func (k knob) tokens() bool { return k.budget > 0 }

// share reports whether the budget was given as a share of the prompt.
func (k knob) share() bool { return k.ratio > 0 }

// knob reads budget (an integer of at least lo) and ratio (in (0, 1]). The
// resolved budget (r.out["budget"]) is left to the policy, which knows its
// composition.
func (r *paramReader) knob(lo int) knob {
	var k knob
	hasB, hasR := r.has("budget"), r.has("ratio")
	r.used["budget"], r.used["ratio"] = true, true
	if hasB {
		k.budget = r.Int("budget", 0, lo, 1<<30)
	}
	if hasR {
		f, ok := r.number("ratio")
		switch {
		case !ok:
		case f != f || f <= 0 || f > 1:
			r.fail("ratio", "%v is out of range (0, 1]: the share of the prompt kept (1 - kvpress's compression_ratio)", f)
		default:
			k.ratio = f
			r.out["ratio"] = f
		}
	}
	if hasB && hasR {
		r.fail("ratio", "give the budget in tokens (budget) or as a share of the prompt (ratio), not both")
	}
	return k
}

// alias reads name, a policy's own name for the whole budget (window's
// window, tova's cache, snapkv's capacity): with budget it may be given only
// with the same value; with ratio not at all (the ratio sets it); alone it
// is read as an integer in [lo, 2^30] with default def.
func (r *paramReader) alias(name string, k knob, def, lo int) int {
	switch {
	case k.share():
		r.forbid(name, "ratio")
		return 0
	case k.tokens():
		if r.has(name) {
			v := r.Int(name, def, lo, 1<<30)
			if r.err == nil && v != k.budget {
				r.fail(name, "%d differs from budget %d: for %s they are the same number (give one of them)", v, k.budget, r.policy)
			}
		}
		r.used[name] = true
		r.out[name] = k.budget
		return k.budget
	}
	return r.Int(name, def, lo, 1<<30)
}

// forbid reports name as an error when given beside by (ratio), which sets
// it; either way name counts as known.
func (r *paramReader) forbid(name, by string) {
	if r.has(name) {
		r.fail(name, "%s sets %s from the prompt's length; give one of them", by, name)
	}
	r.used[name] = true
}

// RatioTokens is the budget that ratio gives a prompt of n tokens:
// ⌊ratio·n⌋ (with a tolerance of 1e-9 token, so that 0.29 of 100 tokens is
// 29, as kvpress's int(100·(1−0.71)) is), at least 1 and at most n.
func RatioTokens(ratio float64, n int) int {
	k := int(math.Floor(ratio*float64(n) + 1e-9))
	return max(1, min(k, n))
}

// knobDocs documents budget and ratio for a policy whose budget in tokens
// means what (e.g. "tokens kept per layer and KV head, window included").
func knobDocs(what string) []ParamDoc {
	return []ParamDoc{
		{"budget", "256", what},
		{"ratio", NoDefault, "the budget as a share of the prompt, (0, 1]: ⌊ratio·n⌋ tokens of an n-token prompt (the share kept, 1 - kvpress's compression_ratio; instead of budget; needs a prompt)"},
	}
}

// NoDefault is the documented default of a parameter that has none and is
// not required: it applies only when given (ratio).
const NoDefault = "none"

// ratioBudget makes the policy's budget a share of the prompt: Start puts
// the stream in waiting (Budget 0, the keys set by resolve removed from
// Params), and the first announced prompt of n tokens calls set with
// RatioTokens(ratio, n). set fixes the policy's own parameters, b.budget and
// b.params (keys among them), or returns why that budget cannot work (the
// stream's forwards then return that error). what names the share in
// errors ("ratio 0.25").
func (b *base) ratioBudget(what string, keys []string, set func(n int) error) {
	b.ratioOf, b.ratioKeys, b.resolve = what, keys, set
	b.budget = 0 // unknown until a prompt
}

// shareOf is the usual resolve of a ratio: kept tokens of a prompt of n.
func (b *base) shareOf(ratio float64, set func(kept, n int) error) func(n int) error {
	return func(n int) error {
		kept := RatioTokens(ratio, n)
		if err := set(kept, n); err != nil {
			return fmt.Errorf("policy %s: ratio %v of a %d-token prompt keeps %d tokens: %w", b.name, ratio, n, kept, err)
		}
		b.params["budget"] = b.budget
		return nil
	}
}

// waitRatio starts a stream (from bind): a ratio budget waits for its
// prompt.
func (b *base) waitRatio() {
	b.halted = false
	if b.resolve == nil {
		return
	}
	b.pending, b.budget = true, 0
	for _, k := range b.ratioKeys {
		delete(b.params, k)
	}
}

// resolveRatio resolves a waiting ratio budget from a prompt of n tokens
// (from Prompt).
func (b *base) resolveRatio(n int) {
	if !b.pending || n <= 0 {
		return
	}
	b.pending = false
	if err := b.resolve(n); err != nil {
		b.halted = true
		if b.err == nil {
			b.err = err
		}
	}
}

// idle reports that the policy cannot act in this stream, and records why
// as the stream's error: its budget is a share of a prompt, and no prompt was
// announced before this forward; or the prompt gave a budget the policy
// cannot use. The policy then leaves the forward alone (attention reads the
// whole cache) and the runner returns the error after it. Every budgeted
// policy calls it first in BeforeAttend and AfterAttend.
func (b *base) idle() bool {
	if b.pending {
		if b.err == nil {
			what := "is a share"
			if strings.Contains(b.ratioOf, " and ") {
				what = "are shares"
			}
			b.err = fmt.Errorf("policy %s: %s %s of the prompt length, but no prompt was announced (a text streamed token by token, as kvbench score and the perplexity task feed it, has none): give the budget in tokens (budget)", b.name, b.ratioOf, what)
		}
		return true
	}
	return b.halted
}
