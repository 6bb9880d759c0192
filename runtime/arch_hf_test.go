package runtime

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hfFuse replaces, in every layer of ts, the tensors named parts (in
// order) by one tensor name whose rows are theirs, one after the other.
func hfFuse(t *testing.T, ts []stTestTensor, layers int, name string, parts ...string) []stTestTensor {
	t.Helper()
	for l := range layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		var fused stTestTensor
		var names []string
		for i, part := range parts {
			idx := slices.IndexFunc(ts, func(x stTestTensor) bool { return x.name == p+part })
			require.GreaterOrEqual(t, idx, 0, p+part)
			x := ts[idx]
			if i == 0 {
				fused = stTestTensor{name: p + name, dtype: x.dtype, shape: []int{0, x.shape[1]}}
			}
			require.Equal(t, fused.shape[1], x.shape[1])
			fused.shape[0] += x.shape[0]
			fused.data = append(fused.data, x.data...)
			names = append(names, p+part)
		}
		ts = append(hfWithout(ts, names...), fused)
	}
	return ts
}

// TestHFPhi3 loads Phi-3's fused projections split into the layout of the
// others: q, k, v from qkv_proj's rows in that order, gate and up from
// gate_up_proj's.
func TestHFPhi3(t *testing.T) {
	for _, dtype := range []string{"F32", "BF16"} {
		t.Run(dtype, func(t *testing.T) {
			s := hfTiny
			s.head, s.dtype = true, dtype
			ts := hfTestTensors(s)
			fused := hfFuse(t, ts, s.layers, "self_attn.qkv_proj.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight")
			fused = hfFuse(t, fused, s.layers, "mlp.gate_up_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight")
			cfg := hfTestConfig()
			cfg["model_type"] = "phi3"
			cfg["architectures"] = []string{"Phi3ForCausalLM"}
			cfg["tie_word_embeddings"] = false
			cfg["original_max_position_embeddings"] = 64 // unused without rope scaling
			cfg["sliding_window"] = 96
			delete(cfg, "rms_norm_eps")
			dir := hfWriteDir(t, cfg, fused)
			m, err := Load(dir)
			require.NoError(t, err)
			c := m.Config
			assert.Equal(t, "phi3", c.Arch)
			assert.Equal(t, float32(1e-5), c.NormEps) // Phi-3's default
			assert.Equal(t, 96, c.SlidingWindow)
			assert.False(t, c.QKVBias)
			assert.False(t, c.QKNorm)
			assert.Equal(t, RopeScaling{}, c.RopeScaling)
			for l := range s.layers {
				p := fmt.Sprintf("model.layers.%d.", l)
				w := m.Weights.Layers[l]
				for part, got := range map[string]*Tensor{
					"self_attn.q_proj.weight": w.Wq, "self_attn.k_proj.weight": w.Wk, "self_attn.v_proj.weight": w.Wv,
					"mlp.gate_proj.weight": w.Gate, "mlp.up_proj.weight": w.Up,
				} {
					assert.Equal(t, hfTensorF32(t, ts, p+part), hfF32(got), part)
					assert.Equal(t, dtype, got.DType.String())
				}
				assert.Equal(t, p+"self_attn.qkv_proj.weight[k]", w.Wk.Name)
				assert.Equal(t, p+"mlp.gate_up_proj.weight[up]", w.Up.Name)
			}
			// The split shares the checkpoint's memory and counts once.
			assert.Equal(t, m.ParamCount(), int64(2*32*16+16+s.layers*(16+16*16+2*8*16+16*16+16+3*24*16)))
		})
	}
	t.Run("fused rows wrong", func(t *testing.T) {
		s := hfTiny
		s.head = true
		ts := hfTestTensors(s)
		fused := hfFuse(t, ts, s.layers, "self_attn.qkv_proj.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight")
		fused = hfFuse(t, fused, s.layers, "mlp.gate_up_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight")
		cfg := hfTestConfig()
		cfg["model_type"] = "phi3"
		cfg["tie_word_embeddings"] = false
		dir := hfWriteDir(t, cfg, hfWithout(fused, "model.layers.0.self_attn.v_proj.weight", "model.layers.1.self_attn.v_proj.weight"))
		_, err := LoadHF(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "tensor model.layers.0.self_attn.qkv_proj.weight in "+filepath.Join(dir, "model.safetensors")+" has shape [24 16], config.json implies [32 16]")
	})
	t.Run("unfused", func(t *testing.T) {
		cfg := hfTestConfig()
		cfg["model_type"] = "phi3"
		_, err := LoadHF(hfWriteDir(t, cfg, hfTestTensors(hfTiny)))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "tensor model.layers.0.self_attn.qkv_proj.weight missing")
	})
}

// TestHFQwen3 loads the per-head query and key norms.
func TestHFQwen3(t *testing.T) {
	s := hfTiny
	ts := hfTestTensors(s)
	for l := range s.layers {
		p := fmt.Sprintf("model.layers.%d.self_attn.", l)
		ts = append(ts, stF32(p+"q_norm.weight", []float32{1, 2, 3, 4}, 4), stF32(p+"k_norm.weight", []float32{5, 6, 7, 8}, 4))
	}
	cfg := hfTestConfig()
	cfg["model_type"] = "qwen3"
	cfg["architectures"] = []string{"Qwen3ForCausalLM"}
	cfg["use_sliding_window"] = false
	cfg["sliding_window"] = 16 // ignored while use_sliding_window is false
	cfg["max_window_layers"] = 2
	dir := hfWriteDir(t, cfg, ts)
	m, err := Load(dir)
	require.NoError(t, err)
	c := m.Config
	assert.Equal(t, "qwen3", c.Arch)
	assert.True(t, c.QKNorm)
	assert.False(t, c.QKVBias)
	assert.Equal(t, 0, c.SlidingWindow)
	assert.Equal(t, []float32{5, 6, 7, 8}, m.Weights.Layers[1].KNorm.F32)
	assert.Equal(t, []float32{1, 2, 3, 4}, m.Weights.Layers[0].QNorm.F32)

	t.Run("missing norm", func(t *testing.T) {
		dir := hfWriteDir(t, cfg, hfWithout(ts, "model.layers.1.self_attn.k_norm.weight"))
		_, err := LoadHF(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "tensor model.layers.1.self_attn.k_norm.weight missing")
	})
	t.Run("norms in a llama", func(t *testing.T) {
		_, err := LoadHF(hfWriteDir(t, hfTestConfig(), ts))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "does not account for: model.layers.0.self_attn.k_norm.weight")
	})
	t.Run("check", func(t *testing.T) {
		m.Weights.Layers[0].QNorm = nil
		assert.ErrorContains(t, m.Check(), "layer 0 q norm")
	})
}

// TestHFMistralWindow reads Mistral's window: given, transformers' default
// of 4096 when the field is absent, none when it is null.
func TestHFMistralWindow(t *testing.T) {
	for _, c := range []struct {
		name string
		w    any // "absent": no field
		want int
	}{
		{"given", 8, 8},
		{"absent", "absent", 4096},
		{"null", nil, 0},
		{"longer than the context", 4096, 4096},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := hfTestConfig()
			cfg["model_type"] = "mistral"
			if c.w != "absent" {
				cfg["sliding_window"] = c.w
			}
			m, err := LoadHF(hfWriteDir(t, cfg, hfTestTensors(hfTiny)))
			require.NoError(t, err)
			assert.Equal(t, c.want, m.Config.SlidingWindow)
		})
	}
}
