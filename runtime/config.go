package runtime

import "fmt"

// RopeStyle names how rotary position embedding pairs the channels of a head.
type RopeStyle int

const (
	// RopeHalf is the Hugging Face convention: channel i pairs with i+d/2
	// ("rotate half").
	RopeHalf RopeStyle = iota
	// RopeInterleaved is the llama2.c / original Meta convention: channel 2i
	// pairs with 2i+1.
	RopeInterleaved
)

// String returns the style's name as used in configs and reports.
func (s RopeStyle) String() string {
	switch s {
	case RopeHalf:
		return "half"
	case RopeInterleaved:
		return "interleaved"
	}
	return fmt.Sprintf("RopeStyle(%d)", int(s))
}

// Config is the shape and hyper-parameters of a Llama-family model.
type Config struct {
	Arch           string    // "llama", "qwen2", "synthetic", ...
	Dim            int       // hidden size
	Hidden         int       // MLP intermediate size
	Layers         int       // transformer blocks
	Heads          int       // query heads
	KVHeads        int       // key/value heads (GQA when < Heads)
	HeadDim        int       // channels per head
	Vocab          int       // vocabulary size (rows of the embedding)
	MaxSeq         int       // trained context length
	RopeTheta      float64   // RoPE base
	Rope           RopeStyle // channel pairing of RoPE
	NormEps        float32   // RMSNorm epsilon
	QKVBias        bool      // q/k/v projections carry a bias (Qwen2)
	QKNorm         bool      // queries and keys get an RMSNorm per head before RoPE (Qwen3)
	TiedEmbeddings bool      // the output head is the token embedding
	BOS, EOS       int       // special token ids (-1 when unknown)
	// SlidingWindow is the model's own attention window (Mistral, Phi-3): a
	// query at position p attends only to keys at positions > p -
	// SlidingWindow, whatever the cache policy keeps; 0: no window.
	SlidingWindow int
	// RopeScaling stretches RoPE beyond the trained context; the zero value
	// is plain RoPE.
	RopeScaling RopeScaling
}

// QDim is the width of the query projection, Heads*HeadDim.
func (c Config) QDim() int { return c.Heads * c.HeadDim }

// KVDim is the width of the key and value projections, KVHeads*HeadDim.
func (c Config) KVDim() int { return c.KVHeads * c.HeadDim }

// Validate reports the first inconsistent or out-of-range field.
func (c Config) Validate() error {
	type field struct {
		name string
		v    int
	}
	for _, f := range []field{{"dim", c.Dim}, {"hidden", c.Hidden}, {"layers", c.Layers},
		{"heads", c.Heads}, {"kv_heads", c.KVHeads}, {"head_dim", c.HeadDim}, {"vocab", c.Vocab}} {
		if f.v <= 0 {
			return fmt.Errorf("config: %s must be positive, got %d", f.name, f.v)
		}
		if f.v > 1<<24 {
			return fmt.Errorf("config: %s = %d is implausibly large", f.name, f.v)
		}
	}
	if c.Heads%c.KVHeads != 0 {
		return fmt.Errorf("config: heads (%d) must be a multiple of kv_heads (%d)", c.Heads, c.KVHeads)
	}
	if c.HeadDim%2 != 0 {
		return fmt.Errorf("config: head_dim must be even for RoPE, got %d", c.HeadDim)
	}
	if !(c.RopeTheta > 0) {
		return fmt.Errorf("config: rope_theta must be positive, got %v", c.RopeTheta)
	}
	if !(c.NormEps > 0) || c.NormEps > 1 {
		return fmt.Errorf("config: rms_norm_eps must be in (0, 1], got %v", c.NormEps)
	}
	if c.Rope != RopeHalf && c.Rope != RopeInterleaved {
		return fmt.Errorf("config: unknown rope style %d", int(c.Rope))
	}
	if c.SlidingWindow < 0 {
		return fmt.Errorf("config: sliding_window must not be negative, got %d", c.SlidingWindow)
	}
	return c.RopeScaling.validate(c)
}
