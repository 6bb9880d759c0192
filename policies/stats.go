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
	RecallSum        float64 // sum of sampled recalls (one per layer, head and sampled step)
	RecallN          int     // number of samples in RecallSum
	RecallByLayer    []float64
	RecallNByLayer   []int
}

// MeanRecall is the mean sampled attention recall, or -1 when none was
// sampled.
func (s *Stats) MeanRecall() float64 {
	if s.RecallN == 0 {
		return -1
	}
	return s.RecallSum / float64(s.RecallN)
}

// MeanBytesRead is the mean KV bytes read per decode step.
func (s *Stats) MeanBytesRead() float64 {
	if s.Steps == 0 {
		return 0
	}
	return float64(s.TotalBytesRead) / float64(s.Steps)
}
