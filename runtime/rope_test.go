package runtime

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ropeTestConfig has head_dim 8 and theta 10000, so that plain RoPE's
// inverse frequencies are 10000^(-2i/8) = 10^-i: 1, 0.1, 0.01, 0.001, and
// every scaled value below can be worked out by hand.
func ropeTestConfig(s RopeScaling) Config {
	return Config{Arch: "llama", Dim: 32, Hidden: 64, Layers: 1, Heads: 4, KVHeads: 2, HeadDim: 8, Vocab: 16,
		MaxSeq: 64, RopeTheta: 10000, Rope: RopeHalf, NormEps: 1e-5, RopeScaling: s}
}

// TestRopeInvFreq checks each scaling's inverse frequencies against values
// derived by hand from its formula.
func TestRopeInvFreq(t *testing.T) {
	// llama3 with an original context of 1000 tokens, low 1, high 4: the
	// wavelengths 2π/f are 6.28, 62.8, 628, 6283; pairs below 1000/4 = 250
	// keep their frequency, above 1000/1 it is divided by 8, and 628 is in
	// the band: s = (1000/628.3 - 1)/(4-1), f = ((1-s)/8 + s)*0.01.
	s3 := (1000*0.01/(2*math.Pi) - 1) / 3
	// yarn over 64 original tokens: pair i turns 64*10^-i/(2π) times; the
	// ramp starts where it turns 32 times, d*ln(64/(32*2π))/(2 ln 10000)
	// < 0 (so 0), and ends where it turns once, 8*ln(64/2π)/(2 ln 10000)
	// = 1.008 (rounded up: 2). Pair i keeps the share 1 - clamp(i/2) of
	// its frequency and takes the rest divided by 4.
	hiExact := 8 * math.Log(64/(2*math.Pi)) / (2 * math.Log(10000))
	blend := func(f, keep, factor float64) float64 { return f*keep + f/factor*(1-keep) }
	short := []float64{1, 2, 4, 8}
	long := []float64{2, 4, 8, 16}
	cases := []struct {
		name   string
		s      RopeScaling
		seqLen int
		want   []float64
	}{
		{"plain", RopeScaling{}, 100, []float64{1, 0.1, 0.01, 0.001}},
		{"linear x4", RopeScaling{Type: RopeLinear, Factor: 4}, 100, []float64{0.25, 0.025, 0.0025, 0.00025}},
		{"dynamic within the context", RopeScaling{Type: RopeDynamic, Factor: 2, OriginalMaxSeq: 16}, 16,
			[]float64{1, 0.1, 0.01, 0.001}},
		// At 32 tokens the base is 10000*(2*32/16 - 1)^(8/6) = 10000*3^(4/3),
		// so pair i gets 10^-i * 3^(-i/3).
		{"dynamic at twice the context", RopeScaling{Type: RopeDynamic, Factor: 2, OriginalMaxSeq: 16}, 32,
			[]float64{1, 0.1 * math.Pow(3, -1.0/3), 0.01 * math.Pow(3, -2.0/3), 0.001 / 3}},
		{"llama3", RopeScaling{Type: RopeLlama3, Factor: 8, OriginalMaxSeq: 1000, LowFreqFactor: 1, HighFreqFactor: 4}, 100,
			[]float64{1, 0.1, ((1-s3)/8 + s3) * 0.01, 0.001 / 8}},
		{"yarn", RopeScaling{Type: RopeYarn, Factor: 4, OriginalMaxSeq: 64, BetaFast: 32, BetaSlow: 1}, 100,
			[]float64{1, blend(0.1, 0.5, 4), 0.01 / 4, 0.001 / 4}},
		{"yarn without truncation", RopeScaling{Type: RopeYarn, Factor: 4, OriginalMaxSeq: 64, BetaFast: 32, BetaSlow: 1, NoTruncate: true}, 100,
			[]float64{1, blend(0.1, 1-1/hiExact, 4), 0.01 / 4, 0.001 / 4}},
		{"longrope short", RopeScaling{Type: RopeLongrope, OriginalMaxSeq: 16, ShortFactor: short, LongFactor: long}, 16,
			[]float64{1, 0.1 / 2, 0.01 / 4, 0.001 / 8}},
		{"longrope long", RopeScaling{Type: RopeLongrope, OriginalMaxSeq: 16, ShortFactor: short, LongFactor: long}, 17,
			[]float64{1.0 / 2, 0.1 / 4, 0.01 / 8, 0.001 / 16}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := ropeTestConfig(c.s)
			require.NoError(t, cfg.Validate())
			got := cfg.RopeInvFreq(c.seqLen)
			require.Len(t, got, 4)
			for i, w := range c.want {
				assert.InEpsilon(t, w, float64(got[i]), 2e-7, "pair %d: got %v, want %v", i, got[i], w)
			}
		})
	}
	// Plain RoPE keeps the values the backends derive from the base.
	plain := ropeTestConfig(RopeScaling{}).RopeInvFreq(1)
	for i, f := range plain {
		assert.Equal(t, float32(1/math.Pow(10000, float64(2*i)/8)), f)
	}
}

func TestRopeAttnFactors(t *testing.T) {
	assert.InDelta(t, 0.1*math.Log(4)+1, YarnAttnFactor(4, 0, 0), 1e-15)
	assert.Equal(t, 1.0, YarnAttnFactor(1, 0, 0))
	assert.Equal(t, 1.0, YarnAttnFactor(0.5, 0, 0))
	// DeepSeek's form: (0.1*0.707*ln 40 + 1) / (0.1*0.707*ln 40 + 1) = 1
	// when both are equal, and a ratio otherwise.
	assert.InDelta(t, 1.0, YarnAttnFactor(40, 0.707, 0.707), 1e-15)
	assert.InDelta(t, (0.1*1*math.Log(40)+1)/(0.1*0.5*math.Log(40)+1), YarnAttnFactor(40, 1, 0.5), 1e-15)
	assert.InDelta(t, math.Sqrt(1.5), LongropeAttnFactor(4, 16), 1e-15) // ln 4 / ln 16 = 1/2
	assert.Equal(t, 1.0, LongropeAttnFactor(1, 16))
	assert.Equal(t, 1.0, RopeScaling{}.Attention())
	assert.Equal(t, 1.25, RopeScaling{Type: RopeYarn, AttnFactor: 1.25}.Attention())
}

func TestRopeStages(t *testing.T) {
	dyn := ropeTestConfig(RopeScaling{Type: RopeDynamic, Factor: 2, OriginalMaxSeq: 16})
	assert.Equal(t, dyn.ropeStage(1), dyn.ropeStage(16))
	assert.NotEqual(t, dyn.ropeStage(16), dyn.ropeStage(17))
	assert.NotEqual(t, dyn.ropeStage(17), dyn.ropeStage(18))
	lr := ropeTestConfig(RopeScaling{Type: RopeLongrope, OriginalMaxSeq: 16, ShortFactor: []float64{1, 1, 1, 1}, LongFactor: []float64{1, 1, 1, 1}})
	assert.Equal(t, lr.ropeStage(3), lr.ropeStage(16))
	assert.Equal(t, lr.ropeStage(17), lr.ropeStage(1000))
	assert.NotEqual(t, lr.ropeStage(16), lr.ropeStage(17))
	for _, s := range []RopeScaling{{}, {Type: RopeLinear, Factor: 2}, {Type: RopeYarn, Factor: 2, OriginalMaxSeq: 8, BetaFast: 32, BetaSlow: 1}} {
		c := ropeTestConfig(s)
		assert.False(t, s.Varies())
		assert.Equal(t, c.ropeStage(1), c.ropeStage(100000), s.Type)
	}
}

func TestRopeValidate(t *testing.T) {
	for _, c := range []struct {
		s    RopeScaling
		want string
	}{
		{RopeScaling{Type: "ntk", Factor: 2}, `unknown rope scaling type "ntk"`},
		{RopeScaling{Type: RopeLinear}, "factor must be positive"},
		{RopeScaling{Type: RopeLinear, Factor: math.Inf(1)}, "factor must be positive"},
		{RopeScaling{Type: RopeDynamic, Factor: 2}, "original_max_position_embeddings must be positive"},
		{RopeScaling{Type: RopeLlama3, Factor: 8, OriginalMaxSeq: 8, LowFreqFactor: 4, HighFreqFactor: 1}, "high_freq_factor 1 must exceed low_freq_factor 4"},
		{RopeScaling{Type: RopeYarn, Factor: 4, OriginalMaxSeq: 8, BetaFast: 32}, "beta_slow must be positive"},
		{RopeScaling{Type: RopeLongrope, OriginalMaxSeq: 8, ShortFactor: []float64{1, 1, 1}, LongFactor: []float64{1, 1, 1, 1}}, "short_factor has 3 entries, head_dim/2 is 4"},
		{RopeScaling{Type: RopeLongrope, OriginalMaxSeq: 8, ShortFactor: []float64{1, 1, 1, 1}, LongFactor: []float64{1, 0, 1, 1}}, "long_factor[1] must be positive"},
		{RopeScaling{Type: RopeYarn, Factor: 4, OriginalMaxSeq: 8, BetaFast: 32, BetaSlow: 1, AttnFactor: -1}, "attention_factor must not be negative"},
	} {
		err := ropeTestConfig(c.s).Validate()
		if assert.Error(t, err, c.want) {
			assert.Contains(t, err.Error(), c.want)
		}
	}
	c := ropeTestConfig(RopeScaling{Type: RopeDynamic, Factor: 2, OriginalMaxSeq: 8})
	c.HeadDim = 2
	assert.ErrorContains(t, c.Validate(), "dynamic needs head_dim > 2")
}

// TestHFRopeScaling reads each scaling from config.json, in the
// transformers 4 layout (rope_scaling, rope_theta at the top level) and the
// transformers 5 one (rope_parameters holding everything), with defaults
// resolved as transformers resolves them.
func TestHFRopeScaling(t *testing.T) {
	half := []float64{1, 1.5} // head_dim 4: two pairs
	cases := []struct {
		name   string
		params map[string]any
		edit   func(c map[string]any)
		want   RopeScaling
	}{
		{"linear", map[string]any{"type": "linear", "factor": 8.0}, nil, RopeScaling{Type: RopeLinear, Factor: 8}},
		{"dynamic", map[string]any{"rope_type": "dynamic", "factor": 2.0}, nil,
			RopeScaling{Type: RopeDynamic, Factor: 2, OriginalMaxSeq: 128}},
		{"llama3", map[string]any{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
			"original_max_position_embeddings": 32}, nil,
			RopeScaling{Type: RopeLlama3, Factor: 8, OriginalMaxSeq: 32, LowFreqFactor: 1, HighFreqFactor: 4}},
		{"llama3 without original context", map[string]any{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}, nil,
			RopeScaling{Type: RopeLlama3, Factor: 8, OriginalMaxSeq: 128, LowFreqFactor: 1, HighFreqFactor: 4}},
		{"yarn defaults", map[string]any{"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}, nil,
			RopeScaling{Type: RopeYarn, Factor: 4, OriginalMaxSeq: 32, BetaFast: 32, BetaSlow: 1, AttnFactor: 0.1*math.Log(4) + 1}},
		{"yarn given", map[string]any{"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "beta_fast": 16,
			"beta_slow": 2, "attention_factor": 1.5, "truncate": false}, nil,
			RopeScaling{Type: RopeYarn, Factor: 4, OriginalMaxSeq: 32, BetaFast: 16, BetaSlow: 2, AttnFactor: 1.5, NoTruncate: true}},
		{"yarn mscale", map[string]any{"rope_type": "yarn", "factor": 4.0, "mscale": 1.0, "mscale_all_dim": 0.5}, nil,
			RopeScaling{Type: RopeYarn, Factor: 4, OriginalMaxSeq: 128, BetaFast: 32, BetaSlow: 1, AttnFactor: YarnAttnFactor(4, 1, 0.5)}},
		{"yarn factor from the contexts", map[string]any{"rope_type": "yarn", "original_max_position_embeddings": 32}, nil,
			RopeScaling{Type: RopeYarn, Factor: 4, OriginalMaxSeq: 32, BetaFast: 32, BetaSlow: 1, AttnFactor: 0.1*math.Log(4) + 1}},
		// Phi-3 keeps the original context at the top level and no factor.
		{"longrope phi3", map[string]any{"type": "longrope", "short_factor": half, "long_factor": half}, func(c map[string]any) {
			c["original_max_position_embeddings"] = 16
		}, RopeScaling{Type: RopeLongrope, Factor: 8, OriginalMaxSeq: 16, ShortFactor: half, LongFactor: half, AttnFactor: LongropeAttnFactor(8, 16)}},
		{"longrope su", map[string]any{"type": "su", "short_factor": half, "long_factor": half, "factor": 2.0,
			"original_max_position_embeddings": 64, "attention_factor": 1.1}, nil,
			RopeScaling{Type: RopeLongrope, Factor: 2, OriginalMaxSeq: 64, ShortFactor: half, LongFactor: half, AttnFactor: 1.1}},
	}
	for _, c := range cases {
		for _, layout := range []string{"rope_scaling", "rope_parameters"} {
			t.Run(c.name+" in "+layout, func(t *testing.T) {
				cfg := hfTestConfig()
				p := map[string]any{}
				for k, v := range c.params {
					p[k] = v
				}
				if layout == "rope_parameters" {
					delete(cfg, "rope_theta")
					p["rope_theta"] = 500000.0
				}
				cfg[layout] = p
				if c.edit != nil {
					c.edit(cfg)
				}
				m, err := LoadHF(hfWriteDir(t, cfg, hfTestTensors(hfTiny)))
				require.NoError(t, err)
				assert.Equal(t, 500000.0, m.Config.RopeTheta)
				got := m.Config.RopeScaling
				assert.InDelta(t, c.want.AttnFactor, got.AttnFactor, 1e-12)
				got.AttnFactor = c.want.AttnFactor
				assert.Equal(t, c.want, got)
			})
		}
	}
}

func TestHFRopeScalingErrors(t *testing.T) {
	half := []float64{1, 1.5}
	cases := []struct {
		name string
		edit func(c map[string]any)
		want string
	}{
		{"unknown type", func(c map[string]any) { c["rope_scaling"] = map[string]any{"type": "ntk", "factor": 2.0} },
			"field rope_scaling.rope_type: rope_type ntk not supported"},
		{"no factor", func(c map[string]any) { c["rope_scaling"] = map[string]any{"type": "linear"} },
			"field rope_scaling.factor: missing (rope_type linear needs it)"},
		{"factor string", func(c map[string]any) { c["rope_scaling"] = map[string]any{"type": "linear", "factor": "8"} },
			"field rope_scaling.factor: want a number"},
		{"zero factor", func(c map[string]any) { c["rope_scaling"] = map[string]any{"type": "linear", "factor": 0} },
			"factor must be positive"},
		{"key of another type", func(c map[string]any) {
			c["rope_scaling"] = map[string]any{"type": "linear", "factor": 2.0, "beta_fast": 32}
		}, "field rope_scaling.beta_fast: not supported with rope_type linear"},
		{"unknown key", func(c map[string]any) {
			c["rope_scaling"] = map[string]any{"type": "yarn", "factor": 2.0, "finetuned": true}
		}, "field rope_scaling.finetuned: not supported with rope_type yarn"},
		{"llama3 without low_freq_factor", func(c map[string]any) {
			c["rope_parameters"] = map[string]any{"rope_type": "llama3", "factor": 8.0, "high_freq_factor": 4.0}
		}, "field rope_parameters.low_freq_factor: missing (rope_type llama3 needs it)"},
		{"types disagree", func(c map[string]any) {
			c["rope_scaling"] = map[string]any{"type": "linear", "factor": 2.0}
			c["rope_parameters"] = map[string]any{"rope_type": "dynamic", "factor": 2.0}
		}, "field rope_parameters.rope_type: dynamic disagrees with rope_scaling.rope_type linear"},
		{"factors disagree", func(c map[string]any) {
			c["rope_scaling"] = map[string]any{"type": "linear", "factor": 2.0}
			c["rope_parameters"] = map[string]any{"rope_type": "linear", "factor": 4.0}
		}, "field rope_parameters.factor: 4 disagrees with rope_scaling.factor 2"},
		{"dynamic from another context", func(c map[string]any) {
			c["rope_scaling"] = map[string]any{"type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 64}
		}, "field rope_scaling.original_max_position_embeddings: 64 differs from max_position_embeddings 128"},
		{"original contexts disagree", func(c map[string]any) {
			c["original_max_position_embeddings"] = 16
			c["rope_scaling"] = map[string]any{"type": "longrope", "short_factor": half, "long_factor": half, "original_max_position_embeddings": 32}
		}, "field original_max_position_embeddings: 16 disagrees with rope_scaling.original_max_position_embeddings 32"},
		{"longrope short list", func(c map[string]any) {
			c["rope_scaling"] = map[string]any{"type": "longrope", "short_factor": []float64{1}, "long_factor": half}
		}, "field rope_scaling.short_factor: has 1 entries, want head_dim/2 = 2"},
		{"longrope not a list", func(c map[string]any) {
			c["rope_scaling"] = map[string]any{"type": "longrope", "short_factor": "1", "long_factor": half}
		}, "field rope_scaling.short_factor: want a list of numbers"},
		{"longrope missing list", func(c map[string]any) {
			c["rope_scaling"] = map[string]any{"type": "longrope", "short_factor": half}
		}, "field rope_scaling.long_factor: missing (rope_type longrope needs it)"},
		{"partial rotary", func(c map[string]any) { c["partial_rotary_factor"] = 0.5 },
			"field partial_rotary_factor: 0.5 not supported"},
		{"partial rotary in parameters", func(c map[string]any) {
			c["rope_parameters"] = map[string]any{"rope_type": "default", "partial_rotary_factor": 0.75}
		}, "field rope_parameters.partial_rotary_factor: 0.75 not supported"},
		{"truncate not a bool", func(c map[string]any) {
			c["rope_scaling"] = map[string]any{"type": "yarn", "factor": 2.0, "truncate": "no"}
		}, "field rope_scaling.truncate: want true or false"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := hfTestConfig()
			c.edit(cfg)
			dir := hfWriteDir(t, cfg, hfTestTensors(hfTiny))
			_, err := LoadHF(dir)
			require.Error(t, err)
			assert.Contains(t, err.Error(), filepath.Join(dir, "config.json"))
			assert.Contains(t, err.Error(), c.want)
		})
	}
}
