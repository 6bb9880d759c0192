package runtime

import (
	"fmt"
	"math"
)

// The RoPE scaling types, as config.json's rope_type names them.
const (
	RopeLinear   = "linear"   // positions divided by Factor (position interpolation)
	RopeDynamic  = "dynamic"  // NTK-aware: the base grows with the sequence past the trained context
	RopeLlama3   = "llama3"   // Llama 3.1: low frequencies divided by Factor, a smooth band between
	RopeYarn     = "yarn"     // YaRN: a ramp between interpolated and original frequencies, scaled attention
	RopeLongrope = "longrope" // LongRoPE (Phi-3): per-frequency divisors, short or long by sequence length
)

// RopeScaling is how a model stretches RoPE past the context it was
// pre-trained on, computed as transformers computes it
// (modeling_rope_utils.py), with every default resolved by the loader. The
// zero value is plain RoPE.
type RopeScaling struct {
	// Type is "" (plain RoPE) or one of RopeLinear, RopeDynamic,
	// RopeLlama3, RopeYarn and RopeLongrope.
	Type string
	// Factor is the context extension factor (linear, dynamic, llama3,
	// yarn; longrope uses it for the attention factor only).
	Factor float64
	// OriginalMaxSeq is the pre-training context: below it dynamic and
	// longrope use their unscaled or short frequencies; llama3 and yarn
	// place their bands by it.
	OriginalMaxSeq int
	// LowFreqFactor and HighFreqFactor bound llama3's band: wavelengths
	// above OriginalMaxSeq/LowFreqFactor are divided by Factor, those below
	// OriginalMaxSeq/HighFreqFactor are kept.
	LowFreqFactor, HighFreqFactor float64
	// BetaFast and BetaSlow bound yarn's ramp, in rotations over
	// OriginalMaxSeq (32 and 1 by default).
	BetaFast, BetaSlow float64
	// NoTruncate keeps yarn's ramp bounds fractional (truncate: false);
	// by default they are rounded outwards to whole dimensions.
	NoTruncate bool
	// AttnFactor multiplies cos and sin (yarn, longrope), which multiplies
	// attention scores by its square; 0 means 1.
	AttnFactor float64
	// ShortFactor and LongFactor [HeadDim/2] divide longrope's frequencies
	// while the sequence is at most OriginalMaxSeq tokens, and past it.
	ShortFactor, LongFactor []float64
}

// Attention is the factor on cos and sin: AttnFactor, or 1.
func (s RopeScaling) Attention() float64 {
	if s.AttnFactor == 0 {
		return 1
	}
	return s.AttnFactor
}

// String describes the scaling for reports ("none" when there is none).
func (s RopeScaling) String() string {
	switch s.Type {
	case "":
		return "none"
	case RopeLinear:
		return fmt.Sprintf("linear x%g", s.Factor)
	case RopeDynamic:
		return fmt.Sprintf("dynamic x%g from %d", s.Factor, s.OriginalMaxSeq)
	case RopeLlama3:
		return fmt.Sprintf("llama3 x%g from %d (low %g, high %g)", s.Factor, s.OriginalMaxSeq, s.LowFreqFactor, s.HighFreqFactor)
	case RopeYarn:
		return fmt.Sprintf("yarn x%g from %d (beta %g/%g, attention %.4g)", s.Factor, s.OriginalMaxSeq, s.BetaFast, s.BetaSlow, s.Attention())
	case RopeLongrope:
		return fmt.Sprintf("longrope from %d (attention %.4g)", s.OriginalMaxSeq, s.Attention())
	}
	return s.Type
}

// Varies reports whether the frequencies depend on the length of the
// sequence (dynamic, longrope): then a forward step's frequencies are those
// of its highest position, as transformers computes them per call.
func (s RopeScaling) Varies() bool { return s.Type == RopeDynamic || s.Type == RopeLongrope }

// validate checks the scaling against the model's head size.
func (s RopeScaling) validate(c Config) error {
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	positive := func(name string, v float64) error {
		if !(v > 0) || !finite(v) {
			return fmt.Errorf("config: rope scaling %s: %s must be positive, got %v", s.Type, name, v)
		}
		return nil
	}
	switch s.Type {
	case "", RopeLinear, RopeDynamic, RopeLlama3, RopeYarn, RopeLongrope:
	default:
		return fmt.Errorf("config: unknown rope scaling type %q", s.Type)
	}
	if !(s.AttnFactor >= 0) || !finite(s.AttnFactor) {
		return fmt.Errorf("config: rope scaling %s: attention_factor must not be negative, got %v", s.Type, s.AttnFactor)
	}
	if s.Type != "" && s.Type != RopeLinear && s.OriginalMaxSeq <= 0 {
		return fmt.Errorf("config: rope scaling %s: original_max_position_embeddings must be positive, got %d", s.Type, s.OriginalMaxSeq)
	}
	switch s.Type {
	case "":
		return nil
	case RopeLinear:
		return positive("factor", s.Factor)
	case RopeDynamic:
		if c.HeadDim <= 2 {
			return fmt.Errorf("config: rope scaling dynamic needs head_dim > 2, got %d", c.HeadDim)
		}
		return positive("factor", s.Factor)
	case RopeLlama3:
		for _, p := range []struct {
			name string
			v    float64
		}{{"factor", s.Factor}, {"low_freq_factor", s.LowFreqFactor}, {"high_freq_factor", s.HighFreqFactor}} {
			if err := positive(p.name, p.v); err != nil {
				return err
			}
		}
		if s.HighFreqFactor <= s.LowFreqFactor {
			return fmt.Errorf("config: rope scaling llama3: high_freq_factor %v must exceed low_freq_factor %v", s.HighFreqFactor, s.LowFreqFactor)
		}
		return nil
	case RopeYarn:
		for _, p := range []struct {
			name string
			v    float64
		}{{"factor", s.Factor}, {"beta_fast", s.BetaFast}, {"beta_slow", s.BetaSlow}} {
			if err := positive(p.name, p.v); err != nil {
				return err
			}
		}
		if c.RopeTheta == 1 {
			return fmt.Errorf("config: rope scaling yarn needs rope_theta other than 1")
		}
		return nil
	case RopeLongrope:
		for _, l := range []struct {
			name string
			v    []float64
		}{{"short_factor", s.ShortFactor}, {"long_factor", s.LongFactor}} {
			if len(l.v) != c.HeadDim/2 {
				return fmt.Errorf("config: rope scaling longrope: %s has %d entries, head_dim/2 is %d", l.name, len(l.v), c.HeadDim/2)
			}
			for i, v := range l.v {
				if !(v > 0) || !finite(v) {
					return fmt.Errorf("config: rope scaling longrope: %s[%d] must be positive, got %v", l.name, i, v)
				}
			}
		}
	}
	return nil
}

// RopeInvFreq returns RoPE's inverse frequencies [HeadDim/2] for a forward
// step whose highest position is seqLen-1: channel pair i of a token at
// position p turns by the angle p*inv[i]. Only dynamic and longrope scaling
// depend on seqLen. The values are those of transformers to float32
// rounding: it computes in float32, this in float64 from the same float32
// intermediate values, rounded once.
func (c Config) RopeInvFreq(seqLen int) []float32 {
	d, s := c.HeadDim, c.RopeScaling
	inv := make([]float32, d/2)
	// pow is base^(2i/d), the wavelength over 2π of pair i.
	pow := func(base float64, i int) float64 { return math.Pow(base, float64(2*i)/float64(d)) }
	switch s.Type {
	case RopeLinear:
		for i := range inv {
			inv[i] = float32(float64(float32(1/pow(c.RopeTheta, i))) / s.Factor)
		}
	case RopeDynamic:
		// The base grows so that the longest wavelength covers the
		// sequence: theta * (factor*n/orig - (factor-1))^(d/(d-2)).
		n := float64(max(seqLen, s.OriginalMaxSeq))
		base := c.RopeTheta * math.Pow(s.Factor*n/float64(s.OriginalMaxSeq)-(s.Factor-1), float64(d)/float64(d-2))
		for i := range inv {
			inv[i] = float32(1 / pow(base, i))
		}
	case RopeLlama3:
		orig := float64(s.OriginalMaxSeq)
		lowWave, highWave := orig/s.LowFreqFactor, orig/s.HighFreqFactor
		for i := range inv {
			f := float64(float32(1 / pow(c.RopeTheta, i)))
			wave := 2 * math.Pi / f
			switch {
			case wave < highWave: // high frequencies: kept
				inv[i] = float32(f)
			case wave > lowWave: // low frequencies: interpolated
				inv[i] = float32(f / s.Factor)
			default: // between: a linear blend in orig/wavelength
				sm := (orig/wave - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor)
				inv[i] = float32((1-sm)*f/s.Factor + sm*f)
			}
		}
	case RopeYarn:
		lo, hi := yarnRange(s, c.RopeTheta, d)
		for i := range inv {
			p := float64(float32(pow(c.RopeTheta, i)))
			ramp := min(max((float64(i)-lo)/(hi-lo), 0), 1)
			extra := 1 - ramp // the share of the original (extrapolated) frequency
			inv[i] = float32(1/(s.Factor*p)*(1-extra) + 1/p*extra)
		}
	case RopeLongrope:
		ext := s.ShortFactor
		if seqLen > s.OriginalMaxSeq {
			ext = s.LongFactor
		}
		for i := range inv {
			inv[i] = float32(1 / (float64(float32(ext[i])) * float64(float32(pow(c.RopeTheta, i)))))
		}
	default:
		for i := range inv {
			inv[i] = float32(1 / pow(c.RopeTheta, i))
		}
	}
	return inv
}

// yarnRange returns the bounds of yarn's ramp over the frequency pairs:
// pairs below lo turn more than BetaFast times over the original context and
// keep their frequency, pairs above hi turn less than BetaSlow times and are
// interpolated.
func yarnRange(s RopeScaling, theta float64, d int) (lo, hi float64) {
	// dim is the pair index at which a frequency turns rot times over the
	// original context.
	dim := func(rot float64) float64 {
		return float64(d) * math.Log(float64(s.OriginalMaxSeq)/(rot*2*math.Pi)) / (2 * math.Log(theta))
	}
	lo, hi = dim(s.BetaFast), dim(s.BetaSlow)
	if !s.NoTruncate {
		lo, hi = math.Floor(lo), math.Ceil(hi)
	}
	lo, hi = max(lo, 0), min(hi, float64(d-1))
	if lo == hi {
		hi += 0.001 // as transformers does, against a division by zero
	}
	return lo, hi
}

// YarnAttnFactor is yarn's default attention factor for an extension
// factor: 0.1*mscale*ln(factor)+1 (1 when factor <= 1), divided by the same
// with mscaleAllDim when both are set (DeepSeek's form).
func YarnAttnFactor(factor, mscale, mscaleAllDim float64) float64 {
	get := func(m float64) float64 {
		if factor <= 1 {
			return 1
		}
		return 0.1*m*math.Log(factor) + 1
	}
	if mscale != 0 && mscaleAllDim != 0 {
		return get(mscale) / get(mscaleAllDim)
	}
	return get(1)
}

// LongropeAttnFactor is longrope's default attention factor:
// sqrt(1 + ln(factor)/ln(originalMaxSeq)), 1 when factor <= 1.
func LongropeAttnFactor(factor float64, originalMaxSeq int) float64 {
	if factor <= 1 {
		return 1
	}
	return math.Sqrt(1 + math.Log(factor)/math.Log(float64(originalMaxSeq)))
}

// ropeStage names the frequencies a forward step with seqLen tokens (its
// highest position plus one) uses: two steps of a stream share frequencies
// exactly when their stages are equal.
func (c Config) ropeStage(seqLen int) int {
	s := c.RopeScaling
	switch {
	case !s.Varies() || seqLen <= s.OriginalMaxSeq:
		return 0
	case s.Type == RopeLongrope:
		return 1
	}
	return seqLen // dynamic: new frequencies at every length past the context
}
