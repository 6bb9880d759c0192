package bench

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

const hubTestCommit = "0123456789abcdef0123456789abcdef01234567"

// hubTestFiles is a tiny Llama (1 layer, hidden 8, vocab 16) with a
// tokenizer.json, as a Hub repository holds it.
func hubTestFiles(t *testing.T) map[string][]byte {
	cfg, err := json.Marshal(map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama",
		"hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 1,
		"num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 16,
		"max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
		"hidden_act": "silu", "tie_word_embeddings": true,
	})
	if err != nil {
		t.Fatal(err)
	}
	shapes := []struct {
		name  string
		shape []int
	}{
		{"model.embed_tokens.weight", []int{16, 8}}, {"model.norm.weight", []int{8}},
		{"model.layers.0.input_layernorm.weight", []int{8}}, {"model.layers.0.post_attention_layernorm.weight", []int{8}},
		{"model.layers.0.self_attn.q_proj.weight", []int{8, 8}}, {"model.layers.0.self_attn.k_proj.weight", []int{4, 8}},
		{"model.layers.0.self_attn.v_proj.weight", []int{4, 8}}, {"model.layers.0.self_attn.o_proj.weight", []int{8, 8}},
		{"model.layers.0.mlp.gate_proj.weight", []int{12, 8}}, {"model.layers.0.mlp.up_proj.weight", []int{12, 8}},
		{"model.layers.0.mlp.down_proj.weight", []int{8, 12}},
	}
	header := map[string]any{}
	var data []byte
	for _, s := range shapes {
		start, n := len(data), 1
		for _, d := range s.shape {
			n *= d
		}
		for i := range n {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(float32(i%5)/16))
		}
		header[s.name] = map[string]any{"dtype": "F32", "shape": s.shape, "data_offsets": []int{start, len(data)}}
	}
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	st := append(binary.LittleEndian.AppendUint64(nil, uint64(len(h))), h...)
	return map[string][]byte{
		"config.json":       cfg,
		"tokenizer.json":    []byte(`{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}}`),
		"model.safetensors": append(st, data...),
	}
}

// hubTestServer answers the Hub's resolve endpoint for org/tiny (branch
// main) from files; it counts the requests.
func hubTestServer(t *testing.T, files map[string][]byte, requests *atomic.Int32) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		rest, ok := strings.CutPrefix(r.URL.Path, "/org/tiny/resolve/")
		rev, file, _ := strings.Cut(rest, "/")
		if !ok || (rev != "main" && rev != hubTestCommit) {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("X-Repo-Commit", hubTestCommit)
		b, ok := files[file]
		if !ok {
			http.Error(w, "Entry not found", http.StatusNotFound)
			return
		}
		w.Header().Set("ETag", fmt.Sprintf(`"blob-%d-%s"`, len(b), strings.ReplaceAll(file, ".", "-")))
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		if r.Method == http.MethodGet {
			w.Write(b)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestHubModel: hf: models are kept by the suite parser (syntax checked,
// named after the repository), not downloaded by CheckModels (HubStatus
// says so), downloaded by OpenModel through the Hub's resolve endpoint into
// HF_HUB_CACHE and loaded from the snapshot with the tokenizer beside it;
// then validate finds them cached.
func TestHubModel(t *testing.T) {
	var requests atomic.Int32
	srv := hubTestServer(t, hubTestFiles(t), &requests)
	cache := t.TempDir()
	t.Setenv("HF_ENDPOINT", srv.URL)
	t.Setenv("HF_HUB_CACHE", cache)
	t.Setenv("HF_HUB_OFFLINE", "")
	t.Setenv("HF_TOKEN", "")

	dir := t.TempDir()
	suite := filepath.Join(dir, "s.yaml")
	write := func(models string) {
		text := "name: hub\nmodels:\n" + models + "policies: [full]\ntasks:\n  - {name: passkey, lengths: [64]}\n"
		if err := os.WriteFile(suite, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("  - {name: bad, path: \"hf:org/tiny@\"}\n")
	_, err := LoadSuite(suite)
	if err == nil || !strings.Contains(err.Error(), suite+":3:23: model bad: path: \"hf:org/tiny@\": empty revision") {
		t.Fatalf("bad hf: reference: got %v", err)
	}
	write("  - hf:org/tiny\n  - {name: pinned, path: \"hf:org/tiny@" + hubTestCommit + "\"}\n")
	s, err := LoadSuite(suite)
	if err != nil {
		t.Fatal(err)
	}
	if s.Models[0].Name != "tiny" || s.Models[0].Path != "hf:org/tiny" || s.Models[1].Path != "hf:org/tiny@"+hubTestCommit {
		t.Fatalf("models %+v", s.Models)
	}
	if err := s.CheckModels(); err != nil {
		t.Fatalf("CheckModels of uncached hf: models: %v", err)
	}
	st := s.HubStatus()
	if len(st) != 2 || !strings.Contains(st[0], "model tiny: hf:org/tiny is not cached") || !strings.Contains(st[0], "kvbench run downloads it") {
		t.Fatalf("HubStatus before the download: %q", st)
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("validation made %d requests", n)
	}

	m, tok, err := OpenModel("hf:org/tiny", "")
	if err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(cache, "models--org--tiny", "snapshots", hubTestCommit)
	if m.Config.Layers != 1 || m.Config.Vocab != 16 || tok.VocabSize() != 2 || m.Tokenizer != filepath.Join(snap, "tokenizer.json") {
		t.Fatalf("model from the Hub: layers %d vocab %d tokenizer %s (%d tokens)", m.Config.Layers, m.Config.Vocab, m.Tokenizer, tok.VocabSize())
	}
	requests.Store(0)
	st = s.HubStatus()
	if len(st) != 2 || st[0] != "model tiny: hf:org/tiny is cached in "+snap || st[1] != "model pinned: hf:org/tiny@"+hubTestCommit+" is cached in "+snap {
		t.Fatalf("HubStatus after the download: %q", st)
	}
	if err := s.CheckModels(); err != nil {
		t.Fatalf("CheckModels of cached hf: models: %v", err)
	}
	if _, _, err := OpenModel("hf:org/tiny@"+hubTestCommit, ""); err != nil {
		t.Fatal(err)
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("cached models made %d requests", n)
	}

	_, _, err = OpenModel("hf:org/missing", "")
	if err == nil || !strings.Contains(err.Error(), "hf:org/missing: file config.json not found at revision main") {
		t.Fatalf("missing repository: got %v", err)
	}
	t.Setenv("HF_HUB_OFFLINE", "1")
	_, _, err = OpenModel("hf:org/other", "")
	if err == nil || !strings.Contains(err.Error(), "HF_HUB_OFFLINE is set") {
		t.Fatalf("offline, not cached: got %v", err)
	}
}
