package hub

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/tokenizer"
)

// Commits of the test repositories.
const (
	commitA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	commitB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// tinyConfig is the config.json of a tiny Llama (2 layers, hidden 16).
func tinyConfig(layers int) []byte {
	b, err := json.Marshal(map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama",
		"hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": layers,
		"num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 32,
		"max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
		"hidden_act": "silu", "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2,
	})
	if err != nil {
		panic(err)
	}
	return b
}

// tinyTensors are the F32 tensors of tinyConfig, each a name and shape.
func tinyTensors(layers int) map[string][]int {
	ts := map[string][]int{"model.embed_tokens.weight": {32, 16}, "model.norm.weight": {16}}
	for l := range layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		for name, shape := range map[string][]int{
			"input_layernorm.weight": {16}, "post_attention_layernorm.weight": {16},
			"self_attn.q_proj.weight": {16, 16}, "self_attn.k_proj.weight": {8, 16},
			"self_attn.v_proj.weight": {8, 16}, "self_attn.o_proj.weight": {16, 16},
			"mlp.gate_proj.weight": {24, 16}, "mlp.up_proj.weight": {24, 16}, "mlp.down_proj.weight": {16, 24},
		} {
			ts[p+name] = shape
		}
	}
	return ts
}

// writeSafetensors encodes the named tensors as F32, element i of a tensor
// being (i%7)/8 plus the tensor's order.
func writeSafetensors(names []string, shapes map[string][]int) []byte {
	header := map[string]any{}
	var data []byte
	for k, name := range names {
		n := 1
		for _, d := range shapes[name] {
			n *= d
		}
		start := len(data)
		for i := range n {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(float32(i%7)/8+float32(k)/64))
		}
		header[name] = map[string]any{"dtype": "F32", "shape": shapes[name], "data_offsets": []int{start, len(data)}}
	}
	h, err := json.Marshal(header)
	if err != nil {
		panic(err)
	}
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	return append(append(out, h...), data...)
}

// shardedModel is a tiny model's files split over two shards with an
// index, a tokenizer.json and tokenizer_config.json (no tokenizer.model,
// generation_config.json or special_tokens_map.json).
func shardedModel(layers int) map[string][]byte {
	shapes := tinyTensors(layers)
	var names []string
	for n := range shapes {
		names = append(names, n)
	}
	sort.Strings(names)
	half := len(names) / 2
	shard := []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
	wm := map[string]string{}
	for i, n := range names {
		wm[n] = shard[min(i/half, 1)]
	}
	idx, _ := json.Marshal(map[string]any{"metadata": map[string]any{}, "weight_map": wm})
	return map[string][]byte{
		"config.json":           tinyConfig(layers),
		"tokenizer.json":        []byte(`{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2}, "merges": []}}`),
		"tokenizer_config.json": []byte(`{"bos_token": null}`),
		indexFile:               idx,
		shard[0]:                writeSafetensors(names[:half], shapes),
		shard[1]:                writeSafetensors(names[half:], shapes),
	}
}

// singleModel is a tiny model in one model.safetensors.
func singleModel(layers int) map[string][]byte {
	shapes := tinyTensors(layers)
	var names []string
	for n := range shapes {
		names = append(names, n)
	}
	sort.Strings(names)
	return map[string][]byte{"config.json": tinyConfig(layers), "tokenizer.json": []byte(`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}`),
		weightsFile: writeSafetensors(names, shapes)}
}

func mustRef(t *testing.T, s string) Ref {
	t.Helper()
	r, err := ParseRef(s)
	require.NoError(t, err)
	return r
}

func TestParseRef(t *testing.T) {
	for _, c := range []struct{ in, repo, rev, str string }{
		{"hf:meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B", "main", "hf:meta-llama/Llama-3.1-8B"},
		{"hf:Qwen/Qwen2.5-0.5B@v1.0", "Qwen/Qwen2.5-0.5B", "v1.0", "hf:Qwen/Qwen2.5-0.5B@v1.0"},
		{"hf:gpt2@refs/pr/1", "gpt2", "refs/pr/1", "hf:gpt2@refs/pr/1"},
		{"hf:org/m_x@" + commitA, "org/m_x", commitA, "hf:org/m_x@" + commitA},
	} {
		r, err := ParseRef(c.in)
		require.NoError(t, err, c.in)
		assert.Equal(t, Ref{c.repo, c.rev}, r)
		assert.Equal(t, c.str, r.String())
	}
	assert.Equal(t, "Llama-3.1-8B", mustRef(t, "hf:meta-llama/Llama-3.1-8B").Name())
	assert.Equal(t, "models--meta-llama--Llama-3.1-8B", mustRef(t, "hf:meta-llama/Llama-3.1-8B").folder())
	for in, want := range map[string]string{
		"meta/x":                        "not a Hub reference",
		"hf:":                           "no repository",
		"hf:a/b/c":                      "more than one '/'",
		"hf:a--b/c":                     `"a--b" is not a valid name`,
		"hf:a/..":                       `".." is not a valid name`,
		"hf:a/b c":                      `"b c" is not a valid name`,
		"hf:a/b@":                       "empty revision",
		"hf:a/b@x/../y":                 "'..' part",
		"hf:a/b@x y":                    "character a git ref cannot",
		"hf:" + strings.Repeat("a", 97): "longer than 96",
	} {
		_, err := ParseRef(in)
		require.Error(t, err, in)
		assert.Contains(t, err.Error(), want, in)
		assert.True(t, strings.Contains(err.Error(), "hf:ORG/NAME[@REVISION]"), in)
	}
}

// TestDownloadSharded downloads a sharded repository, checks the cache
// layout huggingface_hub makes, that a second call makes one HEAD request
// and a commit-pinned one none, and that the model loads from the snapshot.
func TestDownloadSharded(t *testing.T) {
	h := newFakeHub(t)
	files := shardedModel(2)
	h.repos["org/tiny"] = &fakeRepo{refs: map[string]string{"main": commitA}, commits: map[string]map[string][]byte{commitA: files}}
	c := h.client()
	ctx := context.Background()

	dir, err := c.Download(ctx, mustRef(t, "hf:org/tiny"))
	require.NoError(t, err)
	repo := filepath.Join(c.Cache, "models--org--tiny")
	assert.Equal(t, filepath.Join(repo, "snapshots", commitA), dir)
	ref, err := os.ReadFile(filepath.Join(repo, "refs", "main"))
	require.NoError(t, err)
	assert.Equal(t, commitA, string(ref))
	for name, data := range files {
		p := filepath.Join(dir, name)
		got, err := os.ReadFile(p)
		require.NoError(t, err, name)
		assert.Equal(t, data, got, name)
		blob := gitOID(data)
		if isLFS(name) {
			blob = sha256Hex(data)
		}
		target, err := os.Readlink(p)
		require.NoError(t, err, name)
		assert.Equal(t, filepath.Join("..", "..", "blobs", blob), target, name)
	}
	for _, f := range []string{"tokenizer.model", "generation_config.json", "special_tokens_map.json", weightsFile} {
		assert.FileExists(t, filepath.Join(repo, ".no_exist", commitA, f))
		assert.NoFileExists(t, filepath.Join(dir, f))
	}
	ents, err := os.ReadDir(filepath.Join(repo, "blobs"))
	require.NoError(t, err)
	assert.Len(t, ents, len(files), "one blob per file, no .incomplete left")
	log := h.requests()
	assert.Equal(t, 1+5+1+1+2, countPrefix(log, "HEAD "), "config, 5 optional, model.safetensors, index, 2 shards: %v", log)
	assert.Equal(t, len(files), countPrefix(log, "GET "), "%v", log)

	// A branch again: one HEAD to learn the commit, nothing downloaded.
	dir2, err := c.Download(ctx, mustRef(t, "hf:org/tiny@main"))
	require.NoError(t, err)
	assert.Equal(t, dir, dir2)
	assert.Equal(t, []string{"HEAD /org/tiny/resolve/main/config.json"}, h.requests())
	// The commit itself: no request at all.
	dir3, err := c.Download(ctx, mustRef(t, "hf:org/tiny@"+commitA))
	require.NoError(t, err)
	assert.Equal(t, dir, dir3)
	assert.Empty(t, h.requests())
	cached, err := c.Cached(mustRef(t, "hf:org/tiny"))
	require.NoError(t, err)
	assert.Equal(t, dir, cached)

	// The normal loader reads the snapshot folder: config, both shards,
	// the tokenizer beside it.
	m, err := runtime.Load(dir)
	require.NoError(t, err)
	assert.Equal(t, 2, m.Config.Layers)
	assert.Equal(t, 16, m.Config.Dim)
	assert.Equal(t, filepath.Join(dir, "tokenizer.json"), m.Tokenizer)
	tok, err := tokenizer.Load(m.Tokenizer)
	require.NoError(t, err)
	assert.Equal(t, 3, tok.VocabSize())
}

func countPrefix(log []string, p string) int {
	n := 0
	for _, l := range log {
		if strings.HasPrefix(l, p) {
			n++
		}
	}
	return n
}

// TestDownloadMovedBranch: when main moves, the new commit is fetched and
// blobs the commits share are not downloaded again.
func TestDownloadMovedBranch(t *testing.T) {
	h := newFakeHub(t)
	a := singleModel(1)
	b := singleModel(1)
	b["config.json"] = tinyConfig(1)
	b["generation_config.json"] = []byte(`{"do_sample": false}`)
	fr := &fakeRepo{refs: map[string]string{"main": commitA}, commits: map[string]map[string][]byte{commitA: a, commitB: b}}
	h.repos["org/m"] = fr
	c := h.client()
	_, err := c.Download(context.Background(), mustRef(t, "hf:org/m"))
	require.NoError(t, err)
	h.requests()
	before := h.servedBytes()
	fr.refs["main"] = commitB
	dir, err := c.Download(context.Background(), mustRef(t, "hf:org/m"))
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(c.Cache, "models--org--m", "snapshots", commitB), dir)
	assert.FileExists(t, filepath.Join(dir, "generation_config.json"))
	assert.Equal(t, int64(len(b["generation_config.json"])), h.servedBytes()-before, "only the new file's bytes")
	for _, l := range h.requests()[1:] {
		assert.Contains(t, l, "/resolve/"+commitB+"/", "files after the first at the commit config.json came from")
	}
}

// TestDownloadResume: a partial blobs/<sha>.incomplete is resumed with a
// Range request; the server serves only the rest.
func TestDownloadResume(t *testing.T) {
	for _, noRange := range []bool{false, true} {
		t.Run(fmt.Sprintf("noRange=%v", noRange), func(t *testing.T) {
			h := newFakeHub(t)
			files := singleModel(2)
			h.repos["org/m"] = &fakeRepo{refs: map[string]string{"main": commitA}, commits: map[string]map[string][]byte{commitA: files}}
			h.noRange = noRange
			c := h.client()
			w := files[weightsFile]
			blobs := filepath.Join(c.Cache, "models--org--m", "blobs")
			require.NoError(t, os.MkdirAll(blobs, 0o755))
			const have = 1000
			require.NoError(t, os.WriteFile(filepath.Join(blobs, sha256Hex(w)+".incomplete"), w[:have], 0o644))
			dir, err := c.Download(context.Background(), mustRef(t, "hf:org/m"))
			require.NoError(t, err)
			got, err := os.ReadFile(filepath.Join(dir, weightsFile))
			require.NoError(t, err)
			assert.Equal(t, w, got)
			assert.NoFileExists(t, filepath.Join(blobs, sha256Hex(w)+".incomplete"))
			small := int64(len(files["config.json"]) + len(files["tokenizer.json"]))
			if noRange {
				assert.Equal(t, small+int64(len(w)), h.servedBytes(), "the whole file again when Range is ignored")
			} else {
				assert.Equal(t, small+int64(len(w)-have), h.servedBytes(), "only the missing bytes")
				assert.Contains(t, h.ranges, fmt.Sprintf("bytes=%d-", have))
			}
		})
	}
}

// TestDownloadRevisions: @tag and @commit pin what is fetched; refs/<tag>
// records the tag's commit; a commit writes no ref; an unknown revision is
// an error naming it.
func TestDownloadRevisions(t *testing.T) {
	h := newFakeHub(t)
	h.repos["org/m"] = &fakeRepo{refs: map[string]string{"main": commitB, "v1": commitA},
		commits: map[string]map[string][]byte{commitA: singleModel(1), commitB: singleModel(2)}}
	c := h.client()
	ctx := context.Background()
	layers := func(dir string) int {
		m, err := runtime.Load(dir)
		require.NoError(t, err)
		return m.Config.Layers
	}
	dir, err := c.Download(ctx, mustRef(t, "hf:org/m@v1"))
	require.NoError(t, err)
	assert.Equal(t, 1, layers(dir))
	ref, err := os.ReadFile(filepath.Join(c.Cache, "models--org--m", "refs", "v1"))
	require.NoError(t, err)
	assert.Equal(t, commitA, string(ref))
	assert.NoFileExists(t, filepath.Join(c.Cache, "models--org--m", "refs", "main"))

	dir, err = c.Download(ctx, mustRef(t, "hf:org/m@"+commitB))
	require.NoError(t, err)
	assert.Equal(t, 2, layers(dir))
	ents, err := os.ReadDir(filepath.Join(c.Cache, "models--org--m", "refs"))
	require.NoError(t, err)
	assert.Len(t, ents, 1, "a commit revision writes no ref")

	_, err = c.Download(ctx, mustRef(t, "hf:org/m@nope"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "revision nope not found in org/m")
	_, err = c.Download(ctx, mustRef(t, "hf:org/other"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "repository org/other not found")
}

// TestDownloadToken: a gated repository refuses a request without the
// token, saying to set HF_TOKEN; with it the token goes to the Hub, not to
// the CDN.
func TestDownloadToken(t *testing.T) {
	h := newFakeHub(t)
	h.repos["org/gated"] = &fakeRepo{token: "hf_secret", refs: map[string]string{"main": commitA},
		commits: map[string]map[string][]byte{commitA: singleModel(1)}}
	c := h.client()
	_, err := c.Download(context.Background(), mustRef(t, "hf:org/gated"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "HTTP 401")
	assert.Contains(t, err.Error(), "gated")
	assert.Contains(t, err.Error(), "set HF_TOKEN")
	var se *StatusError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, http.StatusUnauthorized, se.Code)

	c.Token = "wrong"
	_, err = c.Download(context.Background(), mustRef(t, "hf:org/gated"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "has no access")

	c.Token = "hf_secret"
	h.auth, h.cdnAuth = nil, nil
	dir, err := c.Download(context.Background(), mustRef(t, "hf:org/gated"))
	require.NoError(t, err)
	assert.FileExists(t, filepath.Join(dir, weightsFile))
	require.NotEmpty(t, h.auth)
	for _, a := range h.auth {
		assert.Equal(t, "Bearer hf_secret", a)
	}
	require.NotEmpty(t, h.cdnAuth)
	for _, a := range h.cdnAuth {
		assert.Empty(t, a, "no token to another host")
	}
}

// TestDownloadOffline: HF_HUB_OFFLINE serves the cached snapshot with no
// request, or says what the cache lacks; an unreachable Hub falls back to
// the cache the same way.
func TestDownloadOffline(t *testing.T) {
	h := newFakeHub(t)
	h.repos["org/m"] = &fakeRepo{refs: map[string]string{"main": commitA}, commits: map[string]map[string][]byte{commitA: singleModel(1)}}
	c := h.client()
	ctx := context.Background()

	c.Offline = true
	_, err := c.Download(ctx, mustRef(t, "hf:org/m"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "HF_HUB_OFFLINE is set")
	assert.Contains(t, err.Error(), "revision main is not in the cache")
	assert.Empty(t, h.requests())

	c.Offline = false
	dir, err := c.Download(ctx, mustRef(t, "hf:org/m"))
	require.NoError(t, err)
	h.requests()
	c.Offline = true
	got, err := c.Download(ctx, mustRef(t, "hf:org/m"))
	require.NoError(t, err)
	assert.Equal(t, dir, got)
	_, err = c.Download(ctx, mustRef(t, "hf:org/m@v2"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "revision v2 is not in the cache")
	assert.Empty(t, h.requests())

	// A snapshot missing a file is not served.
	require.NoError(t, os.Remove(filepath.Join(dir, "tokenizer.json")))
	_, err = c.Download(ctx, mustRef(t, "hf:org/m"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "lacks tokenizer.json")

	// The Hub unreachable: the cache, else an error saying both.
	c.Offline = false
	dead := httptestDeadURL(t)
	c2 := &Client{Endpoint: dead, Cache: c.Cache}
	_, err = c2.Download(ctx, mustRef(t, "hf:org/m"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cannot reach the Hub")
	assert.Contains(t, err.Error(), "lacks tokenizer.json")
	_, err = c.Download(ctx, mustRef(t, "hf:org/m")) // repairs the snapshot
	require.NoError(t, err)
	got, err = c2.Download(ctx, mustRef(t, "hf:org/m"))
	require.NoError(t, err)
	assert.Equal(t, dir, got)
}

// httptestDeadURL is the address of a server that was closed.
func httptestDeadURL(t *testing.T) string {
	h := newFakeHub(t)
	u := h.srv.URL
	h.srv.Close()
	return u
}

// TestDownloadMismatch: a body whose sha256 is not the ETag, or whose size
// is not the announced one, is an error and no blob.
func TestDownloadMismatch(t *testing.T) {
	setup := func(t *testing.T) (*fakeHub, *Client, string) {
		h := newFakeHub(t)
		files := singleModel(1)
		h.repos["org/m"] = &fakeRepo{refs: map[string]string{"main": commitA}, commits: map[string]map[string][]byte{commitA: files}}
		c := h.client()
		return h, c, filepath.Join(c.Cache, "models--org--m", "blobs", sha256Hex(files[weightsFile]))
	}
	t.Run("sha256", func(t *testing.T) {
		h, c, blob := setup(t)
		h.corrupt = true
		_, err := c.Download(context.Background(), mustRef(t, "hf:org/m"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "sha256 mismatch")
		assert.Contains(t, err.Error(), "download model.safetensors")
		assert.NoFileExists(t, blob)
		assert.NoFileExists(t, blob+".incomplete")
		h.corrupt = false
		_, err = c.Download(context.Background(), mustRef(t, "hf:org/m"))
		require.NoError(t, err)
		assert.FileExists(t, blob)
	})
	t.Run("short", func(t *testing.T) {
		h, c, blob := setup(t)
		h.sizeDelta = 10
		_, err := c.Download(context.Background(), mustRef(t, "hf:org/m"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "size mismatch")
		assert.Contains(t, err.Error(), "run again to resume")
		assert.NoFileExists(t, blob)
		assert.FileExists(t, blob+".incomplete")
	})
	t.Run("long", func(t *testing.T) {
		h, c, blob := setup(t)
		h.sizeDelta = -10
		_, err := c.Download(context.Background(), mustRef(t, "hf:org/m"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "size mismatch")
		assert.NoFileExists(t, blob)
		assert.NoFileExists(t, blob+".incomplete")
	})
}

// TestDownloadRequired: config.json and the weights are required; an index
// naming a path outside the snapshot is refused.
func TestDownloadRequired(t *testing.T) {
	h := newFakeHub(t)
	noConfig := singleModel(1)
	delete(noConfig, "config.json")
	noWeights := singleModel(1)
	delete(noWeights, weightsFile)
	evil := singleModel(1)
	delete(evil, weightsFile)
	evil[indexFile] = []byte(`{"weight_map": {"model.norm.weight": "../../../evil.safetensors"}}`)
	for name, files := range map[string]map[string][]byte{"noconfig": noConfig, "noweights": noWeights, "evil": evil} {
		h.repos["org/"+name] = &fakeRepo{refs: map[string]string{"main": commitA}, commits: map[string]map[string][]byte{commitA: files}}
	}
	c := h.client()
	for name, want := range map[string]string{
		"noconfig":  "file config.json not found at revision main",
		"noweights": "neither model.safetensors nor model.safetensors.index.json at revision main",
		"evil":      `"../../../evil.safetensors" is not a plain relative path`,
	} {
		_, err := c.Download(context.Background(), mustRef(t, "hf:org/"+name))
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), want, name)
		assert.Contains(t, err.Error(), "hf:org/"+name, name)
	}
}

// TestDownloadCopyFallback: where a symlink cannot be made the snapshot
// holds a copy.
func TestDownloadCopyFallback(t *testing.T) {
	dir := t.TempDir()
	blob := filepath.Join(dir, "blobs", "x")
	require.NoError(t, os.MkdirAll(filepath.Dir(blob), 0o755))
	require.NoError(t, os.WriteFile(blob, []byte("data"), 0o644))
	require.NoError(t, copyFile(blob, filepath.Join(dir, "copy")))
	got, err := os.ReadFile(filepath.Join(dir, "copy"))
	require.NoError(t, err)
	assert.Equal(t, "data", string(got))
	// link replaces a stale file with a symlink.
	p := filepath.Join(dir, "snapshots", "c", "f")
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, []byte("old"), 0o644))
	require.NoError(t, link(blob, p))
	got, err = os.ReadFile(p)
	require.NoError(t, err)
	assert.Equal(t, "data", string(got))
}

func TestFromEnv(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HF_HOME", home)
	t.Setenv("HF_HUB_CACHE", "")
	t.Setenv("HF_ENDPOINT", "")
	t.Setenv("HF_TOKEN", "")
	t.Setenv("HF_TOKEN_PATH", "")
	t.Setenv("HF_HUB_OFFLINE", "")
	c, err := FromEnv()
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(home, "hub"), c.Cache)
	assert.Equal(t, DefaultEndpoint, c.Endpoint)
	assert.Empty(t, c.Token)
	assert.False(t, c.Offline)

	require.NoError(t, os.WriteFile(filepath.Join(home, "token"), []byte("hf_file\n"), 0o600))
	c, err = FromEnv()
	require.NoError(t, err)
	assert.Equal(t, "hf_file", c.Token)

	t.Setenv("HF_TOKEN", "hf_env")
	t.Setenv("HF_HUB_CACHE", "/elsewhere")
	t.Setenv("HF_ENDPOINT", "http://mirror.local/")
	t.Setenv("HF_HUB_OFFLINE", "True")
	c, err = FromEnv()
	require.NoError(t, err)
	assert.Equal(t, "hf_env", c.Token)
	assert.Equal(t, "/elsewhere", c.Cache)
	assert.Equal(t, "http://mirror.local", c.Endpoint)
	assert.True(t, c.Offline)

	t.Setenv("HF_HOME", "")
	t.Setenv("HF_HUB_CACHE", "")
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	c, err = FromEnv()
	require.NoError(t, err)
	assert.Equal(t, "/xdg/huggingface/hub", c.Cache)
}

// TestResolve: plain paths pass through; hf: references go through the
// environment's client.
func TestResolve(t *testing.T) {
	p, err := Resolve(context.Background(), "models/x")
	require.NoError(t, err)
	assert.Equal(t, "models/x", p)
	_, err = Resolve(context.Background(), "hf:a/b@")
	require.Error(t, err)

	h := newFakeHub(t)
	h.repos["org/m"] = &fakeRepo{refs: map[string]string{"main": commitA}, commits: map[string]map[string][]byte{commitA: singleModel(1)}}
	home := t.TempDir()
	t.Setenv("HF_HOME", home)
	t.Setenv("HF_HUB_CACHE", "")
	t.Setenv("HF_ENDPOINT", h.srv.URL)
	t.Setenv("HF_HUB_OFFLINE", "")
	p, err = Resolve(context.Background(), "hf:org/m")
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(home, "hub", "models--org--m", "snapshots", commitA), p)
}

// TestDownloadMoved: a renamed repository answers with a relative redirect,
// which the HEAD follows (unlike the absolute one to the CDN); the files are
// cached under the name asked for.
func TestDownloadMoved(t *testing.T) {
	h := newFakeHub(t)
	files := singleModel(1)
	h.repos["org/new"] = &fakeRepo{refs: map[string]string{"main": commitA}, commits: map[string]map[string][]byte{commitA: files}}
	h.moved["org/old"] = "org/new"
	c := h.client()
	dir, err := c.Download(context.Background(), mustRef(t, "hf:org/old"))
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(c.Cache, "models--org--old", "snapshots", commitA), dir)
	for name, data := range files {
		got, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err, name)
		assert.Equal(t, data, got, name)
	}
	log := h.requests()
	assert.Contains(t, log, "HEAD /org/old/resolve/main/config.json")
	assert.Contains(t, log, "HEAD /org/new/resolve/main/config.json")
	assert.Contains(t, log, "GET /org/new/resolve/"+commitA+"/config.json")
}
