package policies

// Stats is a policy's accounting over a stream. Byte counts assume the
// cache's element size (float32 on the CPU backend).
type Stats struct {
	Steps            int     // decode steps (single-token forwards)
	ResidentBytes    int64   // KV bytes the cache holds now
	MaxResidentBytes int64   // the most it held at any time: the peak, taken as each layer's new tokens arrive (a dense prompt's whole length, before compression)
	AllocatedBytes   int64   // KV bytes the process holds for the cache (free pages included)
	BytesRead        int64   // KV bytes attention read in the last decode step, metadata included
	TotalBytesRead   int64   // summed over decode steps
	Attended         [][]int // [layer][head] tokens attended in the last decode step
	MaxAttended      int     // the most tokens any head attended in a decode step
	Held             float64 // tokens held per layer and KV head when the last decode step ended, averaged over both
	MaxHeld          int     // the most tokens any layer's KV head held when a decode step ended
	Budget           int     // the policy's budget when the last forward ended (a ratio's, once resolved; 0: none)
	// NotApplicable says why the policy had nothing to act on in this
	// stream, so that it ran as full attention ("no prompt": snapkv and
	// pyramidkv compress a prompt, and a text streamed token by token has
	// none); "" when it acted.
	NotApplicable  string
	RecallSum      float64 // sum of sampled recalls (one per layer, head and sampled step)
	RecallN        int     // number of samples in RecallSum
	RecallByLayer  []float64
	RecallNByLayer []int
}

// NotApplicableNoPrompt is Stats.NotApplicable of a policy that acts on a
// prompt (snapkv, pyramidkv) in a stream that had none.
const NotApplicableNoPrompt = "no prompt"

// MeanRecall is the mean sampled attention recall, or -1 when none was
// sampled.
func (s *Stats) MeanRecall() float64 {
	if s.RecallN == 0 {
		return -1
	}
	return s.RecallSum / float64(s.RecallN)
}

// MeanAttended is the mean over layers and query heads of the tokens
// attended in the last decode step (0 before any).
func (s *Stats) MeanAttended() float64 {
	var sum, n int
	for _, l := range s.Attended {
		for _, a := range l {
			sum += a
			n++
		}
	}
	if n == 0 || s.Steps == 0 {
		return 0
	}
	return float64(sum) / float64(n)
}

// MeanBytesRead is the mean KV bytes read per decode step.
func (s *Stats) MeanBytesRead() float64 {
	if s.Steps == 0 {
		return 0
	}
	return float64(s.TotalBytesRead) / float64(s.Steps)
}
