package bench

import (
	"slices"

	"github.com/kvbench/kvbench/results"
)

// Keys of a record's Detail that say what the cell's policy really held and
// attended (from its streams' policies.Stats), so that cells of different
// policies compare at the memory they used, not only at the budget they
// were given.
const (
	// DetailHeld is the tokens held per layer and KV head when a stream's
	// last decode step ended, averaged over layers and KV heads (the most
	// of any stream). A bounded policy's budget; pyramidkv's mean over its
	// layers; the whole context for policies that keep everything (full,
	// quest, oracle), and snapkv's budget plus the tokens decoded since.
	DetailHeld = "tokens_held"
	// DetailHeldMax is the most tokens any layer's KV head held when a
	// decode step ended.
	DetailHeldMax = "tokens_held_max"
	// DetailAttended is the tokens attended per layer and query head in a
	// stream's last decode step, averaged (the most of any stream).
	DetailAttended = "tokens_attended"
	// DetailAttendedMax is the most tokens any head attended in a decode
	// step (the record's kv.max_attended too).
	DetailAttendedMax = "tokens_attended_max"
	// DetailBudgets lists the budgets the streams resolved from a ratio
	// when they differ (prompts of different lengths); when they agree the
	// record's budget is that one.
	DetailBudgets = "budgets"
	// DetailNotApplicable is why the policy had nothing to act on in any of
	// the cell's streams, so that it ran as full attention (snapkv and
	// pyramidkv in a stream without a prompt: "no prompt"); absent when it
	// acted. Tables mark such a cell "n/a (...)" instead of its numbers.
	DetailNotApplicable = results.DetailNotApplicable
)

// describeEffective adds to rec what the engine's closed streams held and
// attended, the budget a ratio resolved to, and whether the policy applied.
func (e *Engine) describeEffective(rec *results.Record) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.stats) == 0 {
		return
	}
	if rec.Detail == nil {
		rec.Detail = map[string]any{}
	}
	var held, attended float64
	var heldMax, attendedMax int
	var budgets []int
	na := e.stats[0].NotApplicable
	for i := range e.stats {
		st := &e.stats[i]
		held = max(held, st.Held)
		heldMax = max(heldMax, st.MaxHeld)
		attended = max(attended, st.MeanAttended())
		attendedMax = max(attendedMax, st.MaxAttended)
		if st.Budget > 0 && !slices.Contains(budgets, st.Budget) {
			budgets = append(budgets, st.Budget)
		}
		if st.NotApplicable != na {
			na = "" // it acted in some stream
		}
	}
	if heldMax > 0 {
		rec.Detail[DetailHeld] = held
		rec.Detail[DetailHeldMax] = heldMax
		rec.Detail[DetailAttended] = attended
		rec.Detail[DetailAttendedMax] = attendedMax
	}
	if rec.Budget == 0 {
		// A ratio: the budget its prompt gave.
		slices.Sort(budgets)
		switch {
		case len(budgets) == 1:
			rec.Budget = budgets[0]
		case len(budgets) > 1:
			rec.Detail[DetailBudgets] = budgets
		}
	}
	if na != "" {
		rec.Detail[DetailNotApplicable] = na
	}
}
