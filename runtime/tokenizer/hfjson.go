package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// BPE is a byte-pair-encoding tokenizer read from a Hugging Face
// tokenizer.json: byte-level (GPT-2, Llama-3, Qwen2) or SentencePiece-style
// with byte fallback (Llama-2 converted). Added tokens are matched verbatim
// before normalization; merges apply by rank.
type BPE struct {
	vocab   map[string]int32
	tokens  []string // id → token string, "" when the id is unused
	special []bool   // id → special added token (left out of Decode)
	merges  map[uint64]mergeRule

	added        []addedToken
	addedByFirst map[byte][]int // indices into added by first byte, longest first

	normalizers   []normalizer
	preTokenizers []preTokenizer
	decoders      []decoder

	unk          int32 // -1 if none
	fuseUnk      bool
	byteFallback bool
	ignoreMerges bool
	prefix       string     // continuing_subword_prefix
	suffix       string     // end_of_word_suffix
	byteID       [256]int32 // <0xHH> tokens, -1 when absent

	bos, eos int

	mu    sync.Mutex
	cache map[string][]int32 // word → ids
}

type mergeRule struct{ rank, id int32 }

type addedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Special    bool   `json:"special"`
}

type hfFile struct {
	AddedTokens  []addedToken    `json:"added_tokens"`
	Normalizer   json.RawMessage `json:"normalizer"`
	PreTokenizer json.RawMessage `json:"pre_tokenizer"`
	Model        json.RawMessage `json:"model"`
	Decoder      json.RawMessage `json:"decoder"`
}

type hfModel struct {
	Type                    string          `json:"type"`
	Vocab                   json.RawMessage `json:"vocab"`
	Merges                  json.RawMessage `json:"merges"`
	UnkToken                *string         `json:"unk_token"`
	ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string         `json:"end_of_word_suffix"`
	FuseUnk                 bool            `json:"fuse_unk"`
	ByteFallback            bool            `json:"byte_fallback"`
	IgnoreMerges            bool            `json:"ignore_merges"`
}

// cacheLimit bounds the word cache; it is emptied when full.
const cacheLimit = 1 << 16

// LoadHFJSON reads a Hugging Face tokenizer.json whose model is BPE. BOS and
// EOS come from a tokenizer_config.json beside it when there is one
// (bos_token, eos_token), else from added tokens with the usual names
// (<|begin_of_text|>, <s>; <|end_of_text|>, </s>, <|endoftext|>, <|im_end|>).
func LoadHFJSON(path string) (*BPE, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", path, err)
	}
	cfg, err := os.ReadFile(filepath.Join(filepath.Dir(path), "tokenizer_config.json"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("tokenizer %s: %w", path, err)
	}
	return parseHFJSON(path, data, cfg)
}

// parseHFJSON decodes a tokenizer.json and an optional tokenizer_config.json;
// name is used in errors.
func parseHFJSON(name string, data, config []byte) (*BPE, error) {
	unsupported := func(format string, args ...any) error {
		return fileError(name, "unsupported tokenizer.json: %s", fmt.Sprintf(format, args...))
	}
	var f hfFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fileError(name, "invalid JSON: %v", err)
	}
	if isNull(f.Model) {
		return nil, fileError(name, "no model")
	}
	var m hfModel
	if err := json.Unmarshal(f.Model, &m); err != nil {
		return nil, fileError(name, "model: %v", err)
	}
	if m.Type == "" && !isNull(m.Merges) {
		m.Type = "BPE"
	}
	if m.Type != "BPE" {
		return nil, unsupported("model type %q (only BPE)", m.Type)
	}
	b := &BPE{unk: -1, bos: -1, eos: -1}
	var err error
	if err = json.Unmarshal(m.Vocab, &b.vocab); err != nil || b.vocab == nil {
		return nil, fileError(name, "model.vocab is not an object of token ids: %v", err)
	}
	maxID := int32(-1)
	for tok, id := range b.vocab {
		if id < 0 || int(id) > len(data) {
			return nil, fileError(name, "vocab token %q has id %d, out of range", tok, id)
		}
		maxID = max(maxID, id)
	}
	for i, a := range f.AddedTokens {
		if a.ID < 0 || a.ID > len(data) {
			return nil, fileError(name, "added token %d %q has id %d, out of range", i, a.Content, a.ID)
		}
		maxID = max(maxID, int32(a.ID))
	}
	if maxID < 0 {
		return nil, fileError(name, "empty vocabulary")
	}
	b.tokens = make([]string, maxID+1)
	b.special = make([]bool, maxID+1)
	for tok, id := range b.vocab {
		b.tokens[id] = tok
	}
	b.setAdded(f.AddedTokens)
	if m.ContinuingSubwordPrefix != nil {
		b.prefix = *m.ContinuingSubwordPrefix
	}
	if m.EndOfWordSuffix != nil {
		b.suffix = *m.EndOfWordSuffix
	}
	if err := b.setMerges(m.Merges); err != nil {
		return nil, fileError(name, "%v", err)
	}
	if m.UnkToken != nil {
		id, ok := b.vocab[*m.UnkToken]
		if !ok {
			return nil, fileError(name, "unk_token %q is not in the vocabulary", *m.UnkToken)
		}
		b.unk = id
	}
	b.fuseUnk, b.byteFallback, b.ignoreMerges = m.FuseUnk, m.ByteFallback, m.IgnoreMerges
	for i := range b.byteID {
		b.byteID[i] = -1
		if id, ok := b.vocab[bytePieceName(byte(i))]; ok {
			b.byteID[i] = id
		}
	}
	if b.normalizers, err = parseNormalizers(f.Normalizer); err != nil {
		return nil, unsupported("normalizer: %v", err)
	}
	if b.preTokenizers, err = parsePreTokenizers(f.PreTokenizer); err != nil {
		return nil, unsupported("pre_tokenizer: %v", err)
	}
	if b.decoders, err = parseDecoders(f.Decoder); err != nil {
		return nil, unsupported("decoder: %v", err)
	}
	if err := b.setSpecialIDs(config); err != nil {
		return nil, fileError(name, "tokenizer_config.json: %v", err)
	}
	return b, nil
}

// setAdded records the added tokens and indexes them for matching.
func (b *BPE) setAdded(added []addedToken) {
	b.addedByFirst = make(map[byte][]int)
	for _, a := range added {
		b.tokens[a.ID] = a.Content
		b.special[a.ID] = a.Special
		if a.Content == "" {
			continue
		}
		b.added = append(b.added, a)
		k := len(b.added) - 1
		b.addedByFirst[a.Content[0]] = append(b.addedByFirst[a.Content[0]], k)
	}
	for _, l := range b.addedByFirst {
		sort.SliceStable(l, func(i, j int) bool { return len(b.added[l[i]].Content) > len(b.added[l[j]].Content) })
	}
}

// setMerges reads merges as "a b" strings or ["a", "b"] pairs.
func (b *BPE) setMerges(raw json.RawMessage) error {
	if isNull(raw) {
		b.merges = map[uint64]mergeRule{}
		return nil
	}
	var pairs [][2]string
	var strs []string
	if err := json.Unmarshal(raw, &strs); err == nil {
		pairs = make([][2]string, len(strs))
		for i, s := range strs {
			l, r, ok := strings.Cut(s, " ")
			if !ok {
				return fmt.Errorf("merge %d %q is not two tokens separated by a space", i, s)
			}
			pairs[i] = [2]string{l, r}
		}
	} else {
		var lists [][]string
		if err := json.Unmarshal(raw, &lists); err != nil {
			return fmt.Errorf("model.merges is neither a list of strings nor of pairs: %v", err)
		}
		pairs = make([][2]string, len(lists))
		for i, l := range lists {
			if len(l) != 2 {
				return fmt.Errorf("merge %d has %d parts, want 2", i, len(l))
			}
			pairs[i] = [2]string{l[0], l[1]}
		}
	}
	b.merges = make(map[uint64]mergeRule, len(pairs))
	for i, p := range pairs {
		right := p[1]
		if b.prefix != "" {
			right = strings.TrimPrefix(right, b.prefix)
		}
		ids := [3]int32{}
		for k, tok := range [3]string{p[0], p[1], p[0] + right} {
			id, ok := b.vocab[tok]
			if !ok {
				return fmt.Errorf("merge %d (%q %q): token %q is not in the vocabulary", i, p[0], p[1], tok)
			}
			ids[k] = id
		}
		b.merges[pairKey(ids[0], ids[1])] = mergeRule{rank: int32(i), id: ids[2]}
	}
	return nil
}

func pairKey(l, r int32) uint64 { return uint64(uint32(l))<<32 | uint64(uint32(r)) }

// BOS and EOS names tried, in order, when no tokenizer_config.json says.
var (
	bosNames = []string{"<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>"}
	eosNames = []string{"<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>"}
)

// setSpecialIDs sets BOS and EOS from tokenizer_config.json, else by name.
func (b *BPE) setSpecialIDs(config []byte) error {
	addedID := func(content string) int {
		for _, a := range b.added {
			if a.Content == content {
				return a.ID
			}
		}
		return -1
	}
	byName := func(names []string) int {
		for _, n := range names {
			if id := addedID(n); id >= 0 {
				return id
			}
		}
		return -1
	}
	b.bos, b.eos = byName(bosNames), byName(eosNames)
	if len(config) == 0 {
		return nil
	}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(config, &cfg); err != nil {
		return err
	}
	for key, dst := range map[string]*int{"bos_token": &b.bos, "eos_token": &b.eos} {
		raw, ok := cfg[key]
		if !ok {
			continue
		}
		if isNull(raw) {
			*dst = -1
			continue
		}
		var content string
		if err := json.Unmarshal(raw, &content); err != nil {
			var obj struct {
				Content string `json:"content"`
			}
			if err := json.Unmarshal(raw, &obj); err != nil {
				return fmt.Errorf("%s is neither a string nor an object with content", key)
			}
			content = obj.Content
		}
		id := addedID(content)
		if id < 0 {
			if v, ok := b.vocab[content]; ok {
				id = int(v)
			}
		}
		if id < 0 {
			return fmt.Errorf("%s %q is not a token", key, content)
		}
		*dst = id
	}
	return nil
}

// BOS returns the beginning-of-sequence id, or -1.
func (b *BPE) BOS() int { return b.bos }

// EOS returns the end-of-sequence id, or -1.
func (b *BPE) EOS() int { return b.eos }

// VocabSize returns the largest token id plus one (vocabulary and added
// tokens).
func (b *BPE) VocabSize() int { return len(b.tokens) }

// IDToToken returns the token string of id as stored in the file (byte-level
// characters, ▁, <0xHH>), or "" when id is out of range.
func (b *BPE) IDToToken(id int) string {
	if id < 0 || id >= len(b.tokens) {
		return ""
	}
	return b.tokens[id]
}

// Encode returns the ids of text: added tokens matched verbatim, then each
// remaining segment normalized, pre-tokenized and merged. Invalid UTF-8 bytes
// are read as U+FFFD.
func (b *BPE) Encode(text string) []int {
	text = validUTF8(text)
	e := &bpeEncoder{b: b, out: make([]int, 0, len(text)/3+1)}
	last := 0
	for i := 0; i < len(text); i++ {
		cands := b.addedByFirst[text[i]]
		if len(cands) == 0 {
			continue
		}
		for _, k := range cands {
			a := &b.added[k]
			end := i + len(a.Content)
			if !strings.HasPrefix(text[i:], a.Content) || (a.SingleWord && !singleWord(text, i, end)) {
				continue
			}
			start := i
			if a.LStrip {
				for start > last {
					r, n := utf8.DecodeLastRuneInString(text[last:start])
					if !unicode.IsSpace(r) {
						break
					}
					start -= n
				}
			}
			if a.RStrip {
				for end < len(text) {
					r, n := utf8.DecodeRuneInString(text[end:])
					if !unicode.IsSpace(r) {
						break
					}
					end += n
				}
			}
			e.segment(text[last:start], last == 0)
			e.out = append(e.out, a.ID)
			last = end
			i = end - 1
			break
		}
	}
	e.segment(text[last:], last == 0)
	return e.out
}

// singleWord reports whether text[start:end] is not inside a word.
func singleWord(text string, start, end int) bool {
	isWord := func(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }
	if start > 0 {
		if r, _ := utf8.DecodeLastRuneInString(text[:start]); isWord(r) {
			return false
		}
	}
	if end < len(text) {
		if r, _ := utf8.DecodeRuneInString(text[end:]); isWord(r) {
			return false
		}
	}
	return true
}

// bpeEncoder holds the state of one Encode call.
type bpeEncoder struct {
	b   *BPE
	m   merger
	out []int
}

// segment encodes text between added tokens; first says it starts the input.
func (e *bpeEncoder) segment(s string, first bool) {
	if s == "" {
		return
	}
	for _, n := range e.b.normalizers {
		s = n(s)
	}
	pieces := []pretok{{s: s, first: first}}
	for _, p := range e.b.preTokenizers {
		pieces = p(pieces)
	}
	for _, p := range pieces {
		e.word(p.s)
	}
}

// cacheWordLen is the longest word kept in the cache.
const cacheWordLen = 64

func (e *bpeEncoder) pairOf(l, r *symbol) (int32, float32, bool) {
	m, ok := e.b.merges[pairKey(l.id, r.id)]
	if !ok {
		return 0, 0, false
	}
	return m.id, -float32(m.rank), true
}

// word appends the ids of one pre-tokenized word.
func (e *bpeEncoder) word(w string) {
	b := e.b
	if w == "" {
		return
	}
	if b.ignoreMerges {
		if id, ok := b.vocab[w]; ok {
			e.out = append(e.out, int(id))
			return
		}
	}
	if len(w) <= cacheWordLen {
		b.mu.Lock()
		ids, ok := b.cache[w]
		b.mu.Unlock()
		if ok {
			for _, id := range ids {
				e.out = append(e.out, int(id))
			}
			return
		}
	}
	m := &e.m
	m.reset()
	pos := int32(0)
	add := func(id int32) {
		m.add(pos, pos+1, id)
		pos++
	}
	pendingUnk := false
	flushUnk := func() {
		if pendingUnk {
			add(b.unk)
			pendingUnk = false
		}
	}
	for i, r := range w {
		n := utf8.RuneLen(r)
		if n < 0 {
			n = 1
		}
		ch := w[i : i+n]
		key := ch
		if b.prefix != "" && i > 0 {
			key = b.prefix + key
		}
		if b.suffix != "" && i+n == len(w) {
			key += b.suffix
		}
		if id, ok := b.vocab[key]; ok {
			flushUnk()
			add(id)
			continue
		}
		if b.byteFallback && b.hasBytes(ch) {
			flushUnk()
			for j := 0; j < len(ch); j++ {
				add(b.byteID[ch[j]])
			}
			continue
		}
		if b.unk >= 0 {
			if !b.fuseUnk {
				flushUnk()
			}
			pendingUnk = true
		}
	}
	flushUnk()
	start := len(e.out)
	for i := m.run(e.pairOf); i >= 0; i = m.syms[i].next {
		e.out = append(e.out, int(m.syms[i].id))
	}
	if len(w) <= cacheWordLen {
		ids := make([]int32, len(e.out)-start)
		for i, id := range e.out[start:] {
			ids[i] = int32(id)
		}
		b.mu.Lock()
		if b.cache == nil || len(b.cache) >= cacheLimit {
			b.cache = make(map[string][]int32)
		}
		b.cache[w] = ids
		b.mu.Unlock()
	}
}

// hasBytes reports whether every byte of s has a <0xHH> token.
func (b *BPE) hasBytes(s string) bool {
	for i := 0; i < len(s); i++ {
		if b.byteID[s[i]] < 0 {
			return false
		}
	}
	return true
}

// decode runs the decoder chain; without decoders tokens are joined with
// spaces, as Hugging Face does.
func (b *BPE) decode(toks []string, start, streaming bool) string {
	if len(b.decoders) == 0 {
		return strings.Join(toks, " ")
	}
	for _, d := range b.decoders {
		toks = d(toks, start, streaming)
	}
	return strings.Join(toks, "")
}

// Decode returns the text of ids: special added tokens are left out, the
// others go through the decoder chain, and invalid UTF-8 becomes U+FFFD.
func (b *BPE) Decode(ids []int) string {
	toks := make([]string, 0, len(ids))
	for _, id := range ids {
		if id < 0 || id >= len(b.tokens) || b.special[id] || b.tokens[id] == "" {
			continue
		}
		toks = append(toks, b.tokens[id])
	}
	if len(toks) == 0 {
		return ""
	}
	return validUTF8(b.decode(toks, true, false))
}

// Piece returns the text of id for streaming output after prev: its bytes
// (possibly partial UTF-8), with the decoder's leading-space strip applied
// only when prev is BOS. Special added tokens give "".
func (b *BPE) Piece(prev, id int) string {
	if id < 0 || id >= len(b.tokens) || b.special[id] {
		return ""
	}
	return b.decode([]string{b.tokens[id]}, prev == b.bos && b.bos >= 0, true)
}
