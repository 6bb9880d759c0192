package runtime

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestInspectModel(t *testing.T) {
	// Loadable: each is also opened by Load, so the two agree.
	good := hfWriteDir(t, hfTestConfig(), hfTestTensors(hfTiny))
	stWrite(t, good, "tokenizer.json", []byte("{}"))
	l2cDir := t.TempDir()
	l2c := stWrite(t, l2cDir, "model.bin", l2cEncode(l2cTinyHeader, l2cFloats(l2cTinyHeader)))
	for _, c := range []struct{ path, tok string }{
		{"synthetic:tiny", ""},
		{"synthetic:small@7", ""},
		{good, filepath.Join(good, "tokenizer.json")},
		{l2c, ""},
	} {
		tok, err := InspectModel(c.path)
		require.NoError(t, err, c.path)
		assert.Equal(t, c.tok, tok, c.path)
		_, err = Load(c.path)
		require.NoError(t, err, c.path)
	}

	// Not loadable: InspectModel says why, as Load would, without reading
	// the weights.
	noConfig := t.TempDir()
	badConfig := hfTestConfig()
	badConfig["rope_scaling"] = map[string]any{"type": "ntk-by-parts", "factor": 2.0}
	scaled := hfWriteDir(t, badConfig, hfTestTensors(hfTiny))
	noWeights := t.TempDir()
	hfWriteConfig(t, noWeights, hfTestConfig())
	notST := t.TempDir()
	hfWriteConfig(t, notST, hfTestConfig())
	stWrite(t, notST, "model.safetensors", []byte("this is not a safetensors file at all"))
	sharded := t.TempDir()
	hfWriteConfig(t, sharded, hfTestConfig())
	stWrite(t, sharded, "model.safetensors.index.json", []byte(`{"weight_map": {"model.norm.weight": "model-00001.safetensors"}}`))
	short := stWrite(t, l2cDir, "short.bin", l2cEncode(l2cTinyHeader, l2cFloats(l2cTinyHeader)-3))
	text := stWrite(t, l2cDir, "notes.txt", []byte("hello"))
	for _, c := range []struct{ path, want string }{
		{"synthetic:tiniest", `unknown synthetic model "tiniest"`},
		{"synthetic:tiny@x", `bad seed "x"`},
		{filepath.Join(l2cDir, "missing"), "missing: no such file or directory"},
		{noConfig, "a folder without config.json"},
		{scaled, "rope_scaling"},
		{noWeights, "neither model.safetensors nor model.safetensors.index.json found"},
		{notST, "not a safetensors file?"},
		{sharded, "model-00001.safetensors: no such file or directory"},
		{short, "header implies"},
		{text, "too short for the 28-byte header"},
	} {
		_, err := InspectModel(c.path)
		if assert.Error(t, err, c.path) {
			assert.Contains(t, err.Error(), c.want, c.path)
		}
		_, lerr := Load(c.path)
		assert.Error(t, lerr, "Load(%s) succeeds where InspectModel fails", c.path)
	}
}
