package tasks

// Batcher is an optional Model capability: streams that decode together,
// one token each per step, as one batch. The matrix products of a step run
// once over every stream's row (on a GPU a step of many streams costs about
// what a step of one costs); attention, the KV cache and the policy stay per
// stream, so each stream's results are those it would have alone.
type Batcher interface {
	// NewBatch starts n independent streams, each with a fresh KV cache and
	// a fresh instance of the cell's policy, as n calls of NewStream would,
	// that can also step together.
	NewBatch(n int) (Batch, error)
}

// Batch is streams of one model that can decode together. It is driven
// from one goroutine.
type Batch interface {
	// Len is the number of streams.
	Len() int
	// Stream returns stream i. Its Prompt, Step, Pos and Stats work as a
	// lone stream's do (a prompt is fed alone); the batch closes it.
	Stream(i int) Stream
	// LogProbs feeds ids[j] to stream streams[j] (distinct indices) as one
	// decode step of each, all in one batch step, and writes into out[j]
	// the log-probability of targets[j] under the logits that follow.
	LogProbs(streams, ids, targets []int, out []float64) error
	// Step feeds ids[j] to stream streams[j] (distinct indices) as one
	// decode step of each, all in one batch step, and writes the logits
	// that follow into logits[j*vocab : (j+1)*vocab].
	Step(streams, ids []int, logits []float32) error
	// Close closes every stream and releases the batch's memory.
	Close()
}

// BatchSizer is an optional Model capability: how many streams of tokens
// tokens each its device can hold at once (at least 1), for tasks that run
// their trials in batches of the size that fits.
type BatchSizer interface {
	BatchRoom(tokens int) int
}
