package policies_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// protocol tells a reference checker when the policy under test must evict,
// for a stream that starts with an announced prompt of prompt tokens
// (positions [0, prompt)) and goes on one token at a time.
type protocol struct {
	prompt  int
	chunked bool
}

// before: the forward evicts before attention, as a decode step (under
// PrefillChunked a one-row prompt chunk does too).
func (p protocol) before(a *runtime.AttnArgs) bool {
	return a.Rows == 1 && (a.QPos[0] >= p.prompt || p.chunked)
}

// after: a prompt forward that compresses after its attention: the chunk
// holding the prompt's last row, or under PrefillChunked every chunk.
func (p protocol) after(a *runtime.AttnArgs) bool {
	if p.before(a) || a.QPos[0] >= p.prompt {
		return false
	}
	return p.chunked || a.QPos[a.Rows-1] >= p.prompt-1
}

func (p protocol) String() string {
	if p.chunked {
		return "chunked"
	}
	return "dense"
}

// set applies the protocol to a policy before Start.
func (p protocol) set(pol policies.Policy) {
	if p.chunked {
		pol.SetPrefill(policies.PrefillChunked)
	}
}

// prefillCase is a policy configuration whose prompt protocol is checked.
type prefillCase struct {
	name   string
	policy string
	params policies.Params
}

var prefillCases = []prefillCase{
	{"h2o", "h2o", policies.Params{"heavy": 10, "recent": 6}},
	{"h2o-normalize", "h2o", policies.Params{"heavy": 9, "recent": 7, "normalize": true}},
	{"tova", "tova", policies.Params{"cache": 20}},
	{"window", "window", policies.Params{"window": 24}},
	{"window-reposition", "window", policies.Params{"window": 24, "reposition": true}},
	{"streamingllm", "streamingllm", policies.Params{"sinks": 4, "recent": 20}},
	{"random", "random", policies.Params{"budget": 24, "seed": 5}},
}

// prefillResult is what a stream under a policy produced: the logits after
// the prompt and after the last decode step, the positions each layer and
// KV head held after the prompt and at the end (sorted), and the stats after
// the prompt.
type prefillResult struct {
	Logits    [][]float32 `json:"logits"`
	KeptAfter [][][]int32 `json:"kept_after_prompt"` // [layer][kvHead]
	KeptEnd   [][][]int32 `json:"kept_end"`
	stats     policies.Stats
	scores    [][][]float64 // h2o: [layer][kvHead] score by kept position order (KeptAfter)
}

func keptSets(c *runtime.KVCache, layers int) [][][]int32 {
	out := make([][][]int32, layers)
	for l := range out {
		out[l] = heldPositions(c, l)
		for _, p := range out[l] {
			slices.Sort(p)
		}
	}
	return out
}

// keepAll wraps a policy's hook and fails when a forward of a dense prompt
// other than its last chunk leaves a layer holding fewer tokens than were
// fed (the dense protocol evicts nothing before the prompt is in).
type keepAll struct {
	t      *testing.T
	inner  runtime.Hook
	cache  *runtime.KVCache
	prompt int
	chunks int // prompt chunks seen that had to keep everything
}

func (k *keepAll) BeforeAttend(l int, a *runtime.AttnArgs) { k.inner.BeforeAttend(l, a) }

func (k *keepAll) AfterAttend(l int, a *runtime.AttnArgs) {
	k.inner.AfterAttend(l, a)
	last := a.QPos[a.Rows-1]
	if last >= k.prompt-1 {
		return
	}
	if l == 0 {
		k.chunks++
	}
	for g, s := range k.cache.Seqs(l) {
		if s.N != last+1 {
			k.t.Fatalf("dense prompt: after rows %d..%d layer %d kv head %d holds %d tokens, want all %d", a.QPos[0], last, l, g, s.N, last+1)
		}
	}
}

// runPrefill feeds an announced prompt of prompt tokens, then steps single
// tokens, through a runner of maxRows rows under c's policy and protocol.
// Under the dense protocol it checks that no chunk but the last evicts.
func runPrefill(t *testing.T, c prefillCase, pre policies.Prefill, maxRows, prompt, steps int) prefillResult {
	t.Helper()
	r := tinyRunner(t, "tiny", maxRows)
	p, err := policies.New(c.policy, c.params)
	if err != nil {
		t.Fatal(err)
	}
	p.SetPrefill(pre)
	if err := p.Start(r); err != nil {
		t.Fatal(err)
	}
	var ka *keepAll
	if pre == policies.PrefillDense {
		ka = &keepAll{t: t, inner: r.Hook, cache: r.Cache, prompt: prompt}
		r.Hook = ka
	}
	cfg := r.Model.Config
	toks := streamTokens(prompt+steps, 31)
	logits := make([]float32, cfg.Vocab)
	var res prefillResult
	p.Prompt(prompt)
	if err := r.Forward(toks[:prompt], logits); err != nil {
		t.Fatal(err)
	}
	if want := (prompt - 1) / maxRows; ka != nil && ka.chunks != want {
		t.Fatalf("%d prompt chunks checked, want %d", ka.chunks, want)
	}
	res.Logits = append(res.Logits, slices.Clone(logits))
	res.KeptAfter = keptSets(r.Cache, cfg.Layers)
	res.stats = *p.Stats()
	if sc, ok := p.(interface{ Scores(l, h int) []float64 }); ok {
		res.scores = make([][][]float64, cfg.Layers)
		for l := range res.scores {
			res.scores[l] = make([][]float64, cfg.KVHeads)
			for g, seq := range r.Cache.Seqs(l) {
				byPos := map[int32]float64{}
				for t, v := range sc.Scores(l, g) {
					byPos[seq.Pos[t]] = v
				}
				for _, pos := range res.KeptAfter[l][g] {
					res.scores[l][g] = append(res.scores[l][g], byPos[pos])
				}
			}
		}
	}
	for i := prompt; i < len(toks); i++ {
		if err := r.Forward(toks[i:i+1], logits); err != nil {
			t.Fatal(err)
		}
	}
	res.Logits = append(res.Logits, slices.Clone(logits))
	res.KeptEnd = keptSets(r.Cache, cfg.Layers)
	return res
}

// compareRuns checks that two runs kept the same tokens and gave the same
// logits within tol (relative to the largest logit), and returns the largest
// difference.
func compareRuns(t *testing.T, what string, got, want prefillResult, tol float64) float64 {
	t.Helper()
	if !reflect.DeepEqual(got.KeptAfter, want.KeptAfter) {
		t.Errorf("%s: kept after the prompt\n%v\nwant\n%v", what, got.KeptAfter, want.KeptAfter)
	}
	if !reflect.DeepEqual(got.KeptEnd, want.KeptEnd) {
		t.Errorf("%s: kept at the end\n%v\nwant\n%v", what, got.KeptEnd, want.KeptEnd)
	}
	worst := 0.0
	for i := range want.Logits {
		scale := 0.0
		for _, v := range want.Logits[i] {
			scale = max(scale, math.Abs(float64(v)))
		}
		for j, v := range want.Logits[i] {
			d := math.Abs(float64(got.Logits[i][j])-float64(v)) / scale
			worst = max(worst, d)
			if d > tol {
				t.Errorf("%s: logits %d, value %d: %v, want %v", what, i, j, got.Logits[i][j], v)
				return worst
			}
		}
	}
	return worst
}

// pagesOf is the number of pages n tokens take.
func pagesOf(n, page int) int64 { return int64((n + page - 1) / page) }

// keptPages is the pages a sequence holds after eviction left it n of had
// tokens: n's, and the empty page past them when they fill their pages
// (runtime.KVCache.Evict keeps it for the next token).
func keptPages(n, had, page int) int64 {
	p := pagesOf(n, page)
	if n%page == 0 && p < pagesOf(had, page) {
		p++
	}
	return p
}

// TestPrefillDenseEqualsOneShot: under the dense protocol (the default), a
// prompt several chunks long gives what a one-shot prefill gives (a runner
// whose chunk holds the whole prompt): the same kept tokens, the same H2O
// scores, the same logits to float rounding, and nothing evicted before the
// prompt's last chunk. The peak resident memory is the whole prompt.
func TestPrefillDenseEqualsOneShot(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	c := m.Config
	page := runtime.DefaultPageSize
	pageBytes := int64(2 * page * c.HeadDim * 4)
	const steps = 12
	for _, pc := range prefillCases {
		for _, prompt := range []int{97, 90, 64} {
			t.Run(fmt.Sprintf("%s/%d", pc.name, prompt), func(t *testing.T) {
				one := runPrefill(t, pc, policies.PrefillDense, 256, prompt, steps)
				dense := runPrefill(t, pc, policies.PrefillDense, 16, prompt, steps)
				worst := compareRuns(t, "dense against one-shot", dense, one, 1e-5)
				if one.scores != nil {
					for l := range one.scores {
						for g := range one.scores[l] {
							for i, want := range one.scores[l][g] {
								if got := dense.scores[l][g][i]; math.Abs(got-want) > 1e-5*(1+want) {
									t.Errorf("layer %d kv head %d position %d: score %v, one-shot %v", l, g, one.KeptAfter[l][g][i], got, want)
								}
							}
						}
					}
				}
				// The peak comes as the last chunk's tokens arrive at some
				// layer l: the layers before it are compressed, l holds the
				// whole prompt, the layers after it the prompt before that
				// chunk.
				peak := func(res prefillResult, maxRows int) int64 {
					before := (prompt - 1) / maxRows * maxRows
					best := int64(0)
					for l := 0; l < c.Layers; l++ {
						var pages int64
						for g := 0; g < c.KVHeads; g++ {
							for l2 := 0; l2 < c.Layers; l2++ {
								switch {
								case l2 < l:
									pages += keptPages(len(res.KeptAfter[l2][g]), prompt, page)
								case l2 == l:
									pages += pagesOf(prompt, page)
								default:
									pages += pagesOf(before, page)
								}
							}
						}
						best = max(best, pages*pageBytes)
					}
					return best
				}
				if got, want := dense.stats.MaxResidentBytes, peak(dense, 16); got != want {
					t.Errorf("peak resident %d bytes, want %d (the whole prompt)", got, want)
				}
				if got, want := one.stats.MaxResidentBytes, peak(one, 256); got != want {
					t.Errorf("one-shot peak resident %d bytes, want %d", got, want)
				}
				if full := int64(c.KVHeads) * pageBytes * pagesOf(prompt, page); dense.stats.MaxResidentBytes < full {
					t.Errorf("peak resident %d bytes, less than one layer holding the prompt (%d)", dense.stats.MaxResidentBytes, full)
				}
				if dense.stats.Steps != 0 {
					t.Errorf("the prompt counted %d decode steps", dense.stats.Steps)
				}
				t.Logf("largest logit difference %.2g of the largest logit", worst)
			})
		}
	}
}

// TestPrefillChunkedGolden: prefill: chunked reproduces the chunk-by-chunk
// protocol every evicting policy followed before the dense one became the
// default; testdata/prefill_chunked.json was written by that code (97 prompt
// tokens in chunks of 16, the last chunk one row long, then 8 decode steps).
// -update rewrites it from the chunked protocol as it runs now.
func TestPrefillChunkedGolden(t *testing.T) {
	const maxRows, prompt, steps = 16, 97, 8
	path := filepath.Join("testdata", "prefill_chunked.json")
	got := map[string]prefillResult{}
	for _, c := range prefillCases {
		got[c.name] = runPrefill(t, c, policies.PrefillChunked, maxRows, prompt, steps)
	}
	if *update {
		data, err := goldenJSON(got)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -run TestPrefillChunkedGolden -update writes it)", err)
	}
	var want map[string]prefillResult
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for _, c := range prefillCases {
		w, ok := want[c.name]
		if !ok {
			t.Errorf("%s: no case %s (go test -run TestPrefillChunkedGolden -update adds it)", path, c.name)
			continue
		}
		compareRuns(t, c.name+" chunked against "+path, got[c.name], w, 1e-6)
	}
	// The dense protocol keeps other tokens (for all but the window
	// policies, whose choice depends on positions only).
	differ := 0
	for _, c := range prefillCases {
		d := runPrefill(t, c, policies.PrefillDense, maxRows, prompt, steps)
		if !reflect.DeepEqual(d.KeptAfter, got[c.name].KeptAfter) {
			differ++
		}
	}
	if differ < 3 {
		t.Errorf("only %d cases keep other tokens under the dense protocol than under the chunked one", differ)
	}
}

// TestPrefillChunkedIsPerChunkPrompts: under prefill: chunked a prompt gives
// exactly what announcing each chunk as a prompt of its own does under the
// dense protocol (each compressed once it is in).
func TestPrefillChunkedIsPerChunkPrompts(t *testing.T) {
	const maxRows, prompt, steps = 16, 90, 10
	for _, c := range prefillCases {
		t.Run(c.name, func(t *testing.T) {
			chunked := runPrefill(t, c, policies.PrefillChunked, maxRows, prompt, steps)

			r := tinyRunner(t, "tiny", maxRows)
			p, err := policies.New(c.policy, c.params)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Start(r); err != nil {
				t.Fatal(err)
			}
			cfg := r.Model.Config
			toks := streamTokens(prompt+steps, 31)
			logits := make([]float32, cfg.Vocab)
			var res prefillResult
			for i := 0; i < prompt; i += maxRows {
				n := min(maxRows, prompt-i)
				p.Prompt(n)
				if err := r.Forward(toks[i:i+n], logits); err != nil {
					t.Fatal(err)
				}
			}
			res.Logits = append(res.Logits, slices.Clone(logits))
			res.KeptAfter = keptSets(r.Cache, cfg.Layers)
			for i := prompt; i < len(toks); i++ {
				if err := r.Forward(toks[i:i+1], logits); err != nil {
					t.Fatal(err)
				}
			}
			res.Logits = append(res.Logits, slices.Clone(logits))
			res.KeptEnd = keptSets(r.Cache, cfg.Layers)
			compareRuns(t, "chunked against per-chunk prompts", chunked, res, 0)
		})
	}
}

// goldenJSON writes one case per line, in name order.
func goldenJSON(m map[string]prefillResult) ([]byte, error) {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	out := []byte("{\n")
	for i, n := range names {
		k, _ := json.Marshal(n)
		v, err := json.Marshal(m[n])
		if err != nil {
			return nil, err
		}
		out = append(append(append(append(out, ' '), k...), ": "...), v...)
		if i < len(names)-1 {
			out = append(out, ',')
		}
		out = append(out, '\n')
	}
	return append(out, "}\n"...), nil
}

// selWatch wraps a policy's hook and counts, after the policy has chosen,
// the layers whose attention was given a selection (AttnArgs.Sel) during the
// prompt and during decode.
type selWatch struct {
	inner          runtime.Hook
	prompt         int
	inPrompt, decs int
}

func (w *selWatch) BeforeAttend(l int, a *runtime.AttnArgs) {
	w.inner.BeforeAttend(l, a)
	if a.Sel == nil {
		return
	}
	if a.QPos[0] < w.prompt {
		w.inPrompt++
	} else {
		w.decs++
	}
}

func (w *selWatch) AfterAttend(l int, a *runtime.AttnArgs) { w.inner.AfterAttend(l, a) }

// TestPrefillSelectorsDenseInPrompt: Quest and the oracle select in decode
// only, under both protocols; a prompt (its one-row last chunk included)
// attends in full and gives exactly full attention's logits. SnapKV and
// PyramidKV compress once the prompt is in under both protocols alike.
func TestPrefillSelectorsDenseInPrompt(t *testing.T) {
	const maxRows, prompt, steps = 16, 97, 6
	full := runPrefill(t, prefillCase{"full", "full", nil}, policies.PrefillDense, maxRows, prompt, 0)
	for _, c := range []prefillCase{
		{"quest", "quest", policies.Params{"budget": 16, "page": 4, "dense_layers": 0}},
		{"oracle", "oracle", policies.Params{"budget": 12}},
	} {
		for _, pre := range []policies.Prefill{policies.PrefillDense, policies.PrefillChunked} {
			t.Run(c.name+"/"+pre.String(), func(t *testing.T) {
				r := tinyRunner(t, "tiny", maxRows)
				p, err := policies.New(c.policy, c.params)
				if err != nil {
					t.Fatal(err)
				}
				p.SetPrefill(pre)
				if err := p.Start(r); err != nil {
					t.Fatal(err)
				}
				w := &selWatch{inner: r.Hook, prompt: prompt}
				r.Hook = w
				toks := streamTokens(prompt+steps, 31)
				logits := make([]float32, r.Model.Config.Vocab)
				p.Prompt(prompt)
				if err := r.Forward(toks[:prompt], logits); err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(logits, full.Logits[0]) {
					t.Errorf("logits after the prompt differ from full attention's")
				}
				for i := prompt; i < len(toks); i++ {
					if err := r.Forward(toks[i:i+1], logits); err != nil {
						t.Fatal(err)
					}
				}
				if w.inPrompt != 0 {
					t.Errorf("%d layers of the prompt attended a selection", w.inPrompt)
				}
				if w.decs == 0 {
					t.Errorf("no decode step selected: the check is vacuous")
				}
				if st := p.Stats(); st.Steps != steps {
					t.Errorf("%d decode steps counted, fed %d", st.Steps, steps)
				}
			})
		}
	}
	for _, c := range []prefillCase{
		{"snapkv", "snapkv", policies.Params{"capacity": 40, "window": 8, "kernel": 5}},
		{"pyramidkv", "pyramidkv", policies.Params{"capacity": 40, "window": 8, "kernel": 5}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dense := runPrefill(t, c, policies.PrefillDense, maxRows, prompt, steps)
			chunked := runPrefill(t, c, policies.PrefillChunked, maxRows, prompt, steps)
			compareRuns(t, "chunked against dense", chunked, dense, 0)
			one := runPrefill(t, c, policies.PrefillDense, 256, prompt, steps)
			compareRuns(t, "dense against one-shot", dense, one, 1e-5)
			if n := len(dense.KeptAfter[0][0]); n >= prompt {
				t.Errorf("nothing compressed: %d of %d tokens kept", n, prompt)
			}
		})
	}
}

// TestParsePrefill: names round-trip; "" is dense; a typo is an error with
// a suggestion.
func TestParsePrefill(t *testing.T) {
	for i, n := range policies.PrefillNames {
		p, err := policies.ParsePrefill(n)
		if err != nil || int(p) != i || p.String() != n {
			t.Errorf("ParsePrefill(%q) = %v, %v", n, p, err)
		}
	}
	if p, err := policies.ParsePrefill(""); err != nil || p != policies.PrefillDense {
		t.Errorf(`ParsePrefill("") = %v, %v; want dense`, p, err)
	}
	if _, err := policies.ParsePrefill("chunkd"); err == nil || !strings.Contains(err.Error(), "did you mean chunked") {
		t.Errorf("ParsePrefill(chunkd) error %v, want a suggestion of chunked", err)
	}
}

// optWatch wraps a policy's hook and counts the prompt forwards (layer 0)
// whose attention carries a policy option (QShift, Acc, Sel), which keep a
// backend off its plain prompt kernel, and the decode steps with a QShift.
type optWatch struct {
	inner              runtime.Hook
	prompt             int
	plain, opt, shifts int
}

func (w *optWatch) BeforeAttend(l int, a *runtime.AttnArgs) {
	w.inner.BeforeAttend(l, a)
	if l != 0 {
		return
	}
	switch {
	case a.QPos[0] >= w.prompt:
		if a.QShift != nil {
			w.shifts++
		}
	case a.QShift != nil || a.Acc != nil || a.Sel != nil:
		w.opt++
	default:
		w.plain++
	}
}

func (w *optWatch) AfterAttend(l int, a *runtime.AttnArgs) { w.inner.AfterAttend(l, a) }

// TestPrefillDensePlainChunks: under the dense protocol the chunks of a
// prompt before its last carry no policy option for the position-based
// policies and TOVA (nothing is evicted, no shift, no scoring), so a backend
// runs them on its plain prompt kernel; re-positioning resumes in decode.
func TestPrefillDensePlainChunks(t *testing.T) {
	const maxRows, prompt, steps = 16, 97, 5
	for _, c := range prefillCases {
		t.Run(c.name, func(t *testing.T) {
			r := tinyRunner(t, "tiny", maxRows)
			p, err := policies.New(c.policy, c.params)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Start(r); err != nil {
				t.Fatal(err)
			}
			w := &optWatch{inner: r.Hook, prompt: prompt}
			r.Hook = w
			toks := streamTokens(prompt+steps, 31)
			logits := make([]float32, r.Model.Config.Vocab)
			p.Prompt(prompt)
			if err := r.Forward(toks[:prompt], logits); err != nil {
				t.Fatal(err)
			}
			for i := prompt; i < len(toks); i++ {
				if err := r.Forward(toks[i:i+1], logits); err != nil {
					t.Fatal(err)
				}
			}
			chunks := (prompt + maxRows - 1) / maxRows
			switch c.policy {
			case "h2o":
				// Every prompt row's attention is scored.
				if w.opt != chunks {
					t.Errorf("%d of %d prompt chunks carried options, want all (accumulation)", w.opt, chunks)
				}
			case "tova":
				// Only the last chunk is scored, by its last row.
				if w.opt != 1 || w.plain != chunks-1 {
					t.Errorf("%d plain and %d scored prompt chunks, want %d and 1", w.plain, w.opt, chunks-1)
				}
			default:
				if w.opt != 0 || w.plain != chunks {
					t.Errorf("%d plain and %d prompt chunks with options, want %d and 0", w.plain, w.opt, chunks)
				}
			}
			// StreamingLLM's decode steps re-position; a window's without
			// sinks need not (every kept token and query shifts alike).
			if want := map[bool]int{true: steps}[c.policy == "streamingllm"]; w.shifts != want {
				t.Errorf("%d of %d decode steps re-positioned, want %d", w.shifts, steps, want)
			}
		})
	}
}
