package tasks

// The prompt generators of the RULER tasks. Each draws everything random of
// a trial (keys, values, words, positions) once, then builds the prompt for
// any haystack size n; BuildRuler searches for the largest n that fits.
// Positions are kept as shares of the context, so a larger n moves them in
// proportion and the token count grows with n.

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/kvbench/kvbench/runtime/tokenizer"
)

// The fixed text of RULER's prompts (the protocol's wording).
const (
	// RulerNoise is the noise sentence of the noise haystack (passkey's filler).
	RulerNoise = PasskeyFiller

	rulerNeedleFormat = "One of the special magic %s for %s is: %s."

	rulerVTIntro    = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
	rulerVTQuestion = "\nQuestion: Find all variables that are assigned the value %d in the text above." +
		" Answer: According to the chain(s) of variable assignment in the text above, %d variables are assigned the value %d, they are: "

	rulerCWEIntro    = "Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones that appear most often.\n"
	rulerCWEQuestion = "\nQuestion: What are the 10 most common words in the above list?" +
		" Answer: The top 10 words that appear most often in the list are:"

	rulerFWEIntro    = "Read the following coded text and track the frequency of each coded word. Find the three most frequently appeared coded words. "
	rulerFWEQuestion = "\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What are the three most frequently appeared words in the above coded text?" +
		" Answer: According to the coded text above, the three most frequently appeared words are:"
)

// RulerNIAHTemplate returns the text before and after the context of a NIAH
// prompt asking for the values (of kind "numbers", "uuids" or "words") of
// query: RULER's template with its answer prefix, in the singular when one
// value is asked ("A special magic number is hidden ...").
func RulerNIAHTemplate(valueKind, query string, singular bool) (intro, question string) {
	if singular {
		t := strings.TrimSuffix(valueKind, "s")
		return "A special magic " + t + " is hidden within the following text. Make sure to memorize it. I will quiz you about the " + t + " afterwards.\n",
			"\nWhat is the special magic " + t + " for " + query + " mentioned in the provided text? The special magic " + t + " for " + query + " mentioned in the provided text is"
	}
	t := valueKind
	return "Some special magic " + t + " are hidden within the following text. Make sure to memorize it. I will quiz you about the " + t + " afterwards.\n",
		"\nWhat are all the special magic " + t + " for " + query + " mentioned in the provided text? The special magic " + t + " for " + query + " mentioned in the provided text are"
}

// RulerNeedle is the NIAH needle sentence: "One of the special magic
// numbers for KEY is: VALUE."
func RulerNeedle(valueKind, key, value string) string {
	return fmt.Sprintf(rulerNeedleFormat, valueKind, key, value)
}

// rulerQuery joins queried keys as RULER does: "a", or "a, b, and c".
func rulerQuery(keys []string) string {
	if len(keys) == 1 {
		return keys[0]
	}
	return strings.Join(keys[:len(keys)-1], ", ") + ", and " + keys[len(keys)-1]
}

// rulerText is a generated prompt with its answers and landmarks.
type rulerText struct {
	prompt                 string
	contextStart, question int
	answers                []string
	needles                []int
}

// rulerGen builds the prompts of one trial for any haystack size.
type rulerGen interface {
	// sizes is the range of haystack sizes the generator accepts.
	sizes() (lo, hi int)
	build(n int) rulerText
}

func newRulerGen(tok tokenizer.Tokenizer, spec *rulerSpec, o RulerOptions) (rulerGen, error) {
	switch spec.kind {
	case rulerNIAH:
		return newNIAHGen(spec, o)
	case rulerVT:
		return newVTGen(tok, spec, o), nil
	case rulerCWE:
		return newCWEGen(spec, o), nil
	case rulerFWE:
		return newFWEGen(spec, o)
	}
	return nil, fmt.Errorf("task %s: no generator", spec.name)
}

// rulerDraw draws a key or value of a kind: a 7-digit number, a UUID or an
// adjective-noun word.
func rulerDraw(r *rand.Rand, kind string) string {
	switch kind {
	case rulerNumbers:
		return strconv.Itoa(1_000_000 + r.IntN(9_000_000))
	case rulerUUIDs:
		return RulerUUID(r)
	}
	return RulerKeyWord(r)
}

// RulerUUID draws a random (version 4) UUID in its lower-case text form.
func RulerUUID(r *rand.Rand) string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], r.Uint64())
	binary.LittleEndian.PutUint64(b[8:], r.Uint64())
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// rulerDepths are RULER's 40 needle depths, in percent: 0 to 100 evenly
// spaced, rounded.
func rulerDepths() []int {
	out := make([]int, 40)
	for i := range out {
		out[i] = int(math.Round(float64(i) * 100 / 39))
	}
	return out
}

// rulerSlot places an insertion among n haystack units: before unit
// slot, n meaning after the last. A fixed depth rounds; a random share
// floors.
type rulerSlot struct {
	frac  float64
	round bool
}

func (s rulerSlot) at(n int) int {
	x := s.frac * float64(n)
	if s.round {
		x = math.Round(x)
	} else {
		x = math.Floor(x)
	}
	return min(max(int(x), 0), n)
}

// ---------------------------------------------------------------------------
// NIAH

// niahGen builds the needle-in-a-haystack prompts of one trial.
type niahGen struct {
	spec            *rulerSpec
	intro, question string
	needles         []string // in insertion order (shuffled)
	holds           []bool   // needle i holds an expected value
	slots           []rulerSlot
	answers         []string
	essay           []string // haystack words (essay haystack)
	endsSentence    []bool   // essay[i] ends a sentence
	hay             *niahHay // distractor needles (needle haystack)
}

func newNIAHGen(spec *rulerSpec, o RulerOptions) (*niahGen, error) {
	r := rulerRand(o.Seed, spec.name, o.Trial, "keys")
	nk := max(spec.keys, spec.queries)
	used := map[string]bool{}
	draw := func(kind string) string {
		for {
			if v := rulerDraw(r, kind); !used[v] {
				used[v] = true
				return v
			}
		}
	}
	keys := make([]string, nk)
	values := make([][]string, nk)
	type needle struct {
		text string
		key  int
	}
	var ns []needle
	for k := range keys {
		keys[k] = draw(spec.keyKind)
		for range spec.values {
			v := draw(spec.valueKind)
			values[k] = append(values[k], v)
			ns = append(ns, needle{RulerNeedle(spec.valueKind, keys[k], v), k})
		}
	}
	r.Shuffle(len(ns), func(i, j int) { ns[i], ns[j] = ns[j], ns[i] })
	asked := r.Perm(nk)[:spec.queries]
	g := &niahGen{spec: spec}
	var qkeys []string
	isAsked := map[int]bool{}
	for _, k := range asked {
		qkeys = append(qkeys, keys[k])
		g.answers = append(g.answers, values[k]...)
		isAsked[k] = true
	}
	g.intro, g.question = RulerNIAHTemplate(spec.valueKind, rulerQuery(qkeys), spec.queries*spec.values == 1)

	pr := rulerRand(o.Seed, spec.name, o.Trial, "positions")
	depths := rulerDepths()
	pr.Shuffle(len(depths), func(i, j int) { depths[i], depths[j] = depths[j], depths[i] })
	for i, nd := range ns {
		g.needles = append(g.needles, nd.text)
		g.holds = append(g.holds, isAsked[nd.key])
		var s rulerSlot
		switch {
		case o.Depth >= 0 && isAsked[nd.key]:
			s = rulerSlot{frac: o.Depth, round: true}
		case spec.haystack == rulerHayEssay:
			s = rulerSlot{frac: float64(depths[i%len(depths)]) / 100}
		default:
			s = rulerSlot{frac: pr.Float64()}
		}
		g.slots = append(g.slots, s)
	}

	switch spec.haystack {
	case rulerHayEssay:
		g.essay = strings.Fields(o.Haystack)
		if len(g.essay) == 0 {
			return nil, fmt.Errorf("task %s: the haystack holds no words", spec.name)
		}
		g.endsSentence = make([]bool, len(g.essay))
		for i, w := range g.essay {
			g.endsSentence[i] = rulerEndsSentence(w)
		}
	case rulerHayNeedle:
		g.hay = &niahHay{r: rulerRand(o.Seed, spec.name, o.Trial, "haystack"), spec: spec, avoid: used}
	}
	return g, nil
}

// rulerEndsSentence reports whether a word ends a sentence: its last
// character, after closing quotes and brackets, is '.', '!' or '?'.
func rulerEndsSentence(w string) bool {
	w = strings.TrimRight(w, "\"')]}’”")
	return w != "" && strings.ContainsRune(".!?", rune(w[len(w)-1]))
}

func (g *niahGen) sizes() (int, int) { return 0, math.MaxInt32 }

func (g *niahGen) build(n int) rulerText {
	var b strings.Builder
	b.WriteString(g.intro)
	t := rulerText{contextStart: b.Len(), answers: g.answers}
	if g.spec.haystack == rulerHayEssay {
		g.buildEssay(&b, n, &t)
	} else {
		g.buildLines(&b, n, &t)
	}
	t.question = b.Len()
	b.WriteString(g.question)
	t.prompt = b.String()
	return t
}

// placed returns the needles at each slot 0..units, in needle order.
func (g *niahGen) placed(units int) [][]int {
	at := make([][]int, units+1)
	for i, s := range g.slots {
		k := s.at(units)
		at[k] = append(at[k], i)
	}
	return at
}

// buildLines writes n noise sentences or distractor needles, one a line,
// with the needles inserted between them.
func (g *niahGen) buildLines(b *strings.Builder, n int, t *rulerText) {
	var hay []string
	if g.hay != nil {
		hay = g.hay.take(n)
	}
	first := true
	line := func() {
		if !first {
			b.WriteByte('\n')
		}
		first = false
	}
	for k, idx := range g.placed(n) {
		for _, i := range idx {
			line()
			if g.holds[i] {
				t.needles = append(t.needles, b.Len())
			}
			b.WriteString(g.needles[i])
		}
		if k < n {
			s := RulerNoise
			if hay != nil {
				s = hay[k]
			}
			line()
			b.WriteString(s)
		}
	}
}

// buildEssay writes the first n words of the essays (repeated when short),
// joined by spaces, with the needles inserted between sentences.
func (g *niahGen) buildEssay(b *strings.Builder, n int, t *rulerText) {
	// Sentence starts among the n words.
	starts := []int{0}
	for i := 0; i < n-1; i++ {
		if g.endsSentence[i%len(g.essay)] {
			starts = append(starts, i+1)
		}
	}
	if n == 0 {
		starts = nil
	}
	first := true
	sep := func() {
		if !first {
			b.WriteByte(' ')
		}
		first = false
	}
	for k, idx := range g.placed(len(starts)) {
		for _, i := range idx {
			sep()
			if g.holds[i] {
				t.needles = append(t.needles, b.Len())
			}
			b.WriteString(g.needles[i])
		}
		if k < len(starts) {
			end := n
			if k+1 < len(starts) {
				end = starts[k+1]
			}
			for w := starts[k]; w < end; w++ {
				sep()
				b.WriteString(g.essay[w%len(g.essay)])
			}
		}
	}
}

// niahHay is a stream of distractor needles: random keys (never one of the
// trial's own) with random values. A prefix does not depend on how long
// the stream grows.
type niahHay struct {
	r     *rand.Rand
	spec  *rulerSpec
	avoid map[string]bool
	lines []string
}

func (h *niahHay) take(n int) []string {
	for len(h.lines) < n {
		k := rulerDraw(h.r, h.spec.keyKind)
		v := rulerDraw(h.r, h.spec.valueKind)
		if h.avoid[k] || h.avoid[v] {
			continue
		}
		h.lines = append(h.lines, RulerNeedle(h.spec.valueKind, k, v))
	}
	return h.lines[:n]
}

// ---------------------------------------------------------------------------
// Variable tracking

// vtExampleTokens is the size of vt's worked example (RULER's 500 tokens).
const vtExampleTokens = 500

// vtGen builds the variable tracking prompts of one trial.
type vtGen struct {
	example  string // a solved example and "\n", or "" (the example itself)
	vars     [][]string
	lines    []string // every chain's lines, chain by chain
	chain    []int    // the chain of each line
	slots    []rulerSlot
	question string
}

// newVTCore draws chains of hops+1 distinct variables of nameLen capital
// letters, each chain's own 5-digit value, and the lines' positions.
func newVTCore(r *rand.Rand, nameLen, hops, chains int) *vtGen {
	g := &vtGen{}
	seen := map[string]bool{}
	usedVal := map[int]bool{}
	var values []int
	for range chains {
		var vs []string
		for len(vs) < hops+1 {
			b := make([]byte, nameLen)
			for i := range b {
				b[i] = byte('A' + r.IntN(26))
			}
			if v := string(b); !seen[v] {
				seen[v] = true
				vs = append(vs, v)
			}
		}
		g.vars = append(g.vars, vs)
		val := 10000 + r.IntN(89999)
		for usedVal[val] {
			val = 10000 + r.IntN(89999)
		}
		usedVal[val] = true
		values = append(values, val)
	}
	for c, vs := range g.vars {
		fr := make([]float64, len(vs))
		for i := range fr {
			fr[i] = r.Float64()
		}
		slices.Sort(fr)
		for j, v := range vs {
			line := "VAR " + v + " = " + strconv.Itoa(values[c])
			if j > 0 {
				line = "VAR " + v + " = VAR " + vs[j-1] + " "
			}
			g.lines = append(g.lines, line)
			g.chain = append(g.chain, c)
			g.slots = append(g.slots, rulerSlot{frac: fr[j]})
		}
	}
	g.question = fmt.Sprintf(rulerVTQuestion, values[0], hops+1, values[0])
	return g
}

func newVTGen(tok tokenizer.Tokenizer, spec *rulerSpec, o RulerOptions) *vtGen {
	hops, chains := o.Hops, o.Chains
	if hops <= 0 {
		hops = 4
	}
	if chains <= 0 {
		chains = 1
	}
	ex := newVTCore(rulerRand(o.Seed, spec.name, o.Trial, "example"), 3, hops, chains)
	count := func(n int) int { return len(tok.Encode(ex.build(n).prompt)) }
	n, _ := rulerSearch(count, vtExampleTokens, 0, 4*vtExampleTokens, -1)
	g := newVTCore(rulerRand(o.Seed, spec.name, o.Trial, "chains"), 5, hops, chains)
	g.example = ex.build(n).prompt + " " + strings.Join(ex.vars[0], " ") + "\n"
	return g
}

func (g *vtGen) sizes() (int, int) { return 0, math.MaxInt32 }

func (g *vtGen) build(n int) rulerText {
	var b strings.Builder
	if g.example != "" {
		b.WriteString(g.example)
		b.WriteByte('\n')
	}
	b.WriteString(rulerVTIntro)
	t := rulerText{contextStart: b.Len(), answers: g.vars[0]}
	// Line i goes before noise sentence slot(i) (never after the last, as
	// RULER inserts), chains in order at a shared slot.
	at := make([][]int, n+1)
	for i, s := range g.slots {
		k := min(s.at(n), max(n-1, 0))
		at[k] = append(at[k], i)
	}
	first := true
	for k, idx := range at {
		slices.SortStableFunc(idx, func(a, c int) int { return g.chain[a] - g.chain[c] })
		for _, i := range idx {
			if !first {
				b.WriteByte('\n')
			}
			first = false
			if g.chain[i] == 0 {
				t.needles = append(t.needles, b.Len())
			}
			b.WriteString(g.lines[i])
		}
		if k < n {
			if !first {
				b.WriteByte('\n')
			}
			first = false
			b.WriteString(RulerNoise)
		}
	}
	t.question = b.Len()
	b.WriteString(g.question)
	t.prompt = b.String()
	return t
}

// ---------------------------------------------------------------------------
// Common words extraction

// cweCommon is how many words are common (the answer).
const cweCommon = 10

// cweGen builds the common words extraction prompts of one trial.
type cweGen struct {
	example      string
	stream       *rulerWordStream
	freqC, freqU int
	seed         uint64
	stream2      uint64
}

// rulerNumbered formats words as RULER's list: "1. w1 2. w2 ...".
func rulerNumbered(words []string) string {
	var b strings.Builder
	for i, w := range words {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Itoa(i + 1))
		b.WriteString(". ")
		b.WriteString(w)
	}
	return b.String()
}

// cweList repeats the first cweCommon words freqC times and the others
// freqU times, shuffled by r.
func cweList(words []string, freqC, freqU int, r *rand.Rand) []string {
	var out []string
	for i, w := range words {
		f := freqU
		if i < cweCommon {
			f = freqC
		}
		for range f {
			out = append(out, w)
		}
	}
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func newCWEGen(spec *rulerSpec, o RulerOptions) *cweGen {
	// RULER's frequencies: below 4K tokens common words 6 times and the
	// others once (example 3/1 over 20 words), else 30/3 (example 10/3
	// over 40 words).
	freqC, freqU, exWords, exC, exU := 30, 3, 40, 10, 3
	if o.Length < 4096 {
		freqC, freqU, exWords, exC, exU = 6, 1, 20, 3, 1
	}
	er := rulerRand(o.Seed, spec.name, o.Trial, "example")
	ex := newRulerWordStream(er).take(exWords)
	exText := rulerCWEIntro + rulerNumbered(cweList(ex, exC, exU, er)) + rulerCWEQuestion + " " + rulerNumbered(ex[:cweCommon])
	g := &cweGen{
		example: exText + "\n",
		stream:  newRulerWordStream(rulerRand(o.Seed, spec.name, o.Trial, "words")),
		freqC:   freqC, freqU: freqU,
		seed: o.Seed, stream2: uint64(o.Trial),
	}
	g.stream.avoid = g.stream.take(cweCommon)
	return g
}

func (g *cweGen) sizes() (int, int) { return cweCommon, rulerMaxWords() }

func (g *cweGen) build(n int) rulerText {
	words := g.stream.take(n)
	r := rand.New(rand.NewPCG(g.seed, g.stream2<<32^uint64(n)))
	var b strings.Builder
	b.WriteString(g.example)
	b.WriteString(rulerCWEIntro)
	t := rulerText{contextStart: b.Len(), answers: words[:cweCommon]}
	b.WriteString(rulerNumbered(cweList(words, g.freqC, g.freqU, r)))
	t.question = b.Len()
	b.WriteString(rulerCWEQuestion)
	t.prompt = b.String()
	return t
}

// ---------------------------------------------------------------------------
// Frequent words extraction

// fweAlpha is the Zipf exponent of fwe's word counts (RULER's alpha).
const fweAlpha = 2.0

// fweGen builds the frequent words extraction prompts of one trial.
type fweGen struct {
	vocab       []string // vocab[0] is "...", the noise
	zeta        float64
	lo          int
	seed, trial uint64
}

func newFWEGen(spec *rulerSpec, o RulerOptions) (*fweGen, error) {
	// RULER's vocabulary: one coded word per 50 tokens of prompt.
	size := (o.Length - o.MaxNew) / 50
	if size < 4 {
		need := 4*50 + o.MaxNew
		return nil, fmt.Errorf("task %s: parameter lengths: %d is too short: the coded vocabulary is one word per 50 tokens and needs 4 words; use lengths of at least %d", spec.name, o.Length, need)
	}
	r := rulerRand(o.Seed, spec.name, o.Trial, "vocab")
	seen := map[string]bool{}
	g := &fweGen{vocab: []string{"..."}, zeta: math.Pi * math.Pi / 6, seed: o.Seed, trial: uint64(o.Trial)}
	for len(g.vocab) < size {
		b := make([]byte, 6)
		for i := range b {
			b[i] = byte('a' + r.IntN(26))
		}
		if w := string(b); !seen[w] {
			seen[w] = true
			g.vocab = append(g.vocab, w)
		}
	}
	// The least count of words for which the answer is clear: ranks 2, 3
	// and 4 appear, each more often than the next rank.
	for n := 1; ; n++ {
		c := g.counts(n)
		ok := c[3] > 0 && c[1] > c[2] && c[2] > c[3]
		if len(c) > 4 {
			ok = ok && c[3] > c[4]
		}
		if ok {
			g.lo = n
			break
		}
	}
	return g, nil
}

// counts gives each vocabulary word's count for n words drawn: n k^-alpha /
// zeta(alpha) for rank k, rounded down.
func (g *fweGen) counts(n int) []int {
	c := make([]int, len(g.vocab))
	for k := range c {
		c[k] = int(float64(n) * math.Pow(float64(k+1), -fweAlpha) / g.zeta)
	}
	return c
}

func (g *fweGen) sizes() (int, int) { return g.lo, math.MaxInt32 }

func (g *fweGen) build(n int) rulerText {
	var words []string
	for k, c := range g.counts(n) {
		for range c {
			words = append(words, g.vocab[k])
		}
	}
	r := rand.New(rand.NewPCG(g.seed, g.trial<<32^uint64(n)))
	r.Shuffle(len(words), func(i, j int) { words[i], words[j] = words[j], words[i] })
	var b strings.Builder
	b.WriteString(rulerFWEIntro)
	t := rulerText{contextStart: b.Len(), answers: g.vocab[1:4]}
	b.WriteString(strings.Join(words, " "))
	t.question = b.Len()
	b.WriteString(rulerFWEQuestion)
	t.prompt = b.String()
	return t
}
