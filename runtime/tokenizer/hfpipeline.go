package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dlclark/regexp2"
)

// This file holds the steps of a tokenizer.json pipeline: normalizers,
// pre-tokenizers and decoders, each parsed from its JSON node.

// hfNode is any normalizer, pre-tokenizer or decoder node; each type reads
// the fields it needs.
type hfNode struct {
	Type           string            `json:"type"`
	Normalizers    []json.RawMessage `json:"normalizers"`
	PreTokenizers  []json.RawMessage `json:"pretokenizers"`
	Decoders       []json.RawMessage `json:"decoders"`
	Pattern        *hfPattern        `json:"pattern"`
	Content        *string           `json:"content"`
	Behavior       string            `json:"behavior"`
	Invert         bool              `json:"invert"`
	AddPrefixSpace *bool             `json:"add_prefix_space"`
	UseRegex       *bool             `json:"use_regex"`
	Replacement    *string           `json:"replacement"`
	PrependScheme  string            `json:"prepend_scheme"`
	Split          *bool             `json:"split"`
	Prepend        *string           `json:"prepend"`
	Start          int               `json:"start"`
	Stop           int               `json:"stop"`
	StripLeft      bool              `json:"strip_left"`
	StripRight     bool              `json:"strip_right"`
	Individual     bool              `json:"individual_digits"`
}

// hfPattern is a Split or Replace pattern: a literal string or a regex.
type hfPattern struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

// isNull reports whether a JSON value is absent or null.
func isNull(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}

func parseNode(raw json.RawMessage) (*hfNode, error) {
	var n hfNode
	if err := json.Unmarshal(raw, &n); err != nil {
		return nil, err
	}
	return &n, nil
}

// matcher finds the non-empty, non-overlapping matches of a pattern, as byte
// ranges of a valid UTF-8 string.
type matcher struct {
	literal string
	re      *regexp2.Regexp
}

// regexTimeout bounds one regex search, so a hostile pattern cannot hang.
const regexTimeout = 10 * time.Second

func compileRegex(expr string) (*regexp2.Regexp, error) {
	re, err := regexp2.Compile(expr, regexp2.None)
	if err != nil {
		return nil, err
	}
	re.MatchTimeout = regexTimeout
	return re, nil
}

func newMatcher(p *hfPattern) (*matcher, error) {
	switch {
	case p == nil:
		return nil, fmt.Errorf("missing pattern")
	case p.String != nil:
		if *p.String == "" {
			return nil, fmt.Errorf("empty string pattern")
		}
		return &matcher{literal: *p.String}, nil
	case p.Regex != nil:
		re, err := compileRegex(*p.Regex)
		if err != nil {
			return nil, fmt.Errorf("regex %q: %v", *p.Regex, err)
		}
		return &matcher{re: re}, nil
	}
	return nil, fmt.Errorf("pattern has neither String nor Regex")
}

func (m *matcher) find(s string) [][2]int {
	var out [][2]int
	if m.re == nil {
		for i := 0; i < len(s); {
			j := strings.Index(s[i:], m.literal)
			if j < 0 {
				break
			}
			out = append(out, [2]int{i + j, i + j + len(m.literal)})
			i += j + len(m.literal)
		}
		return out
	}
	return regexFind(m.re, s)
}

// regexFind returns the byte ranges of the non-empty matches of re in s.
func regexFind(re *regexp2.Regexp, s string) [][2]int {
	runes := []rune(s)
	off := make([]int, len(runes)+1)
	p := 0
	for i, r := range runes {
		off[i] = p
		p += utf8.RuneLen(r)
	}
	off[len(runes)] = p
	var out [][2]int
	m, err := re.FindRunesMatch(runes)
	for m != nil && err == nil {
		if m.Length > 0 && m.Index >= 0 && m.Index+m.Length <= len(runes) {
			out = append(out, [2]int{off[m.Index], off[m.Index+m.Length]})
		}
		m, err = re.FindNextMatch(m)
	}
	return out
}

// segment is a piece of a split string and whether it matched.
type segment struct {
	start, end int
	match      bool
}

// splitMatches splits s around matches with one of the Hugging Face split
// behaviors and returns the non-empty parts.
func splitMatches(s string, matches [][2]int, behavior string, invert bool) []string {
	var segs []segment
	prev := 0
	for _, m := range matches {
		if m[0] > prev {
			segs = append(segs, segment{prev, m[0], invert})
		}
		segs = append(segs, segment{m[0], m[1], !invert})
		prev = m[1]
	}
	if prev < len(s) {
		segs = append(segs, segment{prev, len(s), invert})
	}
	var out []segment
	switch behavior {
	case "Removed":
		for _, g := range segs {
			if !g.match {
				out = append(out, g)
			}
		}
	case "MergedWithPrevious":
		prevMatch := false
		for _, g := range segs {
			if g.match && !prevMatch && len(out) > 0 {
				out[len(out)-1].end = g.end
			} else {
				out = append(out, g)
			}
			prevMatch = g.match
		}
	case "MergedWithNext":
		prevMatch := false
		for i := len(segs) - 1; i >= 0; i-- {
			g := segs[i]
			if g.match && !prevMatch && len(out) > 0 {
				out[len(out)-1].start = g.start
			} else {
				out = append(out, g)
			}
			prevMatch = g.match
		}
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	case "Contiguous":
		prevMatch := false
		for i, g := range segs {
			if i > 0 && g.match == prevMatch {
				out[len(out)-1].end = g.end
			} else {
				out = append(out, g)
			}
			prevMatch = g.match
		}
	default: // Isolated
		out = segs
	}
	parts := make([]string, 0, len(out))
	for _, g := range out {
		if g.end > g.start {
			parts = append(parts, s[g.start:g.end])
		}
	}
	return parts
}

// charMatches returns each character of s for which f holds as a match.
func charMatches(s string, f func(rune) bool) [][2]int {
	var out [][2]int
	for i, r := range s {
		if f(r) {
			out = append(out, [2]int{i, i + utf8.RuneLen(r)})
		}
	}
	return out
}

func validBehavior(b string) error {
	switch b {
	case "Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous":
		return nil
	}
	return fmt.Errorf("unknown split behavior %q", b)
}

// ---- normalizers ----

// normalizer rewrites the text of a segment before pre-tokenization.
type normalizer func(string) string

func parseNormalizers(raw json.RawMessage) ([]normalizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	n, err := parseNode(raw)
	if err != nil {
		return nil, err
	}
	switch n.Type {
	case "Sequence":
		var out []normalizer
		for _, r := range n.Normalizers {
			s, err := parseNormalizers(r)
			if err != nil {
				return nil, err
			}
			out = append(out, s...)
		}
		return out, nil
	case "Prepend":
		if n.Prepend == nil {
			return nil, fmt.Errorf("Prepend normalizer without prepend")
		}
		p := *n.Prepend
		return []normalizer{func(s string) string {
			if s == "" {
				return s
			}
			return p + s
		}}, nil
	case "Replace":
		m, err := newMatcher(n.Pattern)
		if err != nil {
			return nil, fmt.Errorf("Replace normalizer: %v", err)
		}
		content := ""
		if n.Content != nil {
			content = *n.Content
		}
		return []normalizer{func(s string) string { return replaceMatches(m, s, content) }}, nil
	case "NFC":
		// Text is taken to be in NFC already (no Unicode tables here).
		return nil, nil
	case "Lowercase":
		return []normalizer{strings.ToLower}, nil
	case "Strip":
		left, right := n.StripLeft, n.StripRight
		return []normalizer{func(s string) string {
			if left {
				s = strings.TrimLeftFunc(s, unicode.IsSpace)
			}
			if right {
				s = strings.TrimRightFunc(s, unicode.IsSpace)
			}
			return s
		}}, nil
	}
	return nil, fmt.Errorf("normalizer type %q is not supported", n.Type)
}

// replaceMatches replaces every match of m in s with content.
func replaceMatches(m *matcher, s, content string) string {
	if m.re == nil {
		return strings.ReplaceAll(s, m.literal, content)
	}
	matches := m.find(s)
	if len(matches) == 0 {
		return s
	}
	var b strings.Builder
	prev := 0
	for _, r := range matches {
		b.WriteString(s[prev:r[0]])
		b.WriteString(content)
		prev = r[1]
	}
	b.WriteString(s[prev:])
	return b.String()
}

// ---- pre-tokenizers ----

// pretok is a piece of text after pre-tokenization; first marks the piece
// that starts the input text.
type pretok struct {
	s     string
	first bool
}

// preTokenizer splits pieces into smaller pieces.
type preTokenizer func([]pretok) []pretok

// splitEach applies f to every piece; only the first part of a first piece
// stays first.
func splitEach(in []pretok, f func(p pretok) []string) []pretok {
	out := make([]pretok, 0, len(in))
	for _, p := range in {
		for i, s := range f(p) {
			out = append(out, pretok{s: s, first: p.first && i == 0})
		}
	}
	return out
}

// gpt2Pattern is GPT-2's pre-tokenization regex, used by ByteLevel with
// use_regex.
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

var gpt2Regex = sync.OnceValue(func() *regexp2.Regexp {
	re, err := compileRegex(gpt2Pattern)
	if err != nil {
		panic(fmt.Sprintf("tokenizer: GPT-2 pattern does not compile: %v", err))
	}
	return re
})

func parsePreTokenizers(raw json.RawMessage) ([]preTokenizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	n, err := parseNode(raw)
	if err != nil {
		return nil, err
	}
	switch n.Type {
	case "Sequence":
		var out []preTokenizer
		for _, r := range n.PreTokenizers {
			s, err := parsePreTokenizers(r)
			if err != nil {
				return nil, err
			}
			out = append(out, s...)
		}
		return out, nil
	case "Split":
		m, err := newMatcher(n.Pattern)
		if err != nil {
			return nil, fmt.Errorf("Split pre-tokenizer: %v", err)
		}
		if err := validBehavior(n.Behavior); err != nil {
			return nil, fmt.Errorf("Split pre-tokenizer: %v", err)
		}
		behavior, invert := n.Behavior, n.Invert
		return []preTokenizer{func(in []pretok) []pretok {
			return splitEach(in, func(p pretok) []string {
				return splitMatches(p.s, m.find(p.s), behavior, invert)
			})
		}}, nil
	case "ByteLevel":
		addPrefix := n.AddPrefixSpace == nil || *n.AddPrefixSpace
		useRegex := n.UseRegex == nil || *n.UseRegex
		return []preTokenizer{func(in []pretok) []pretok {
			return splitEach(in, func(p pretok) []string {
				s := p.s
				if addPrefix && !strings.HasPrefix(s, " ") {
					s = " " + s
				}
				parts := []string{s}
				if useRegex {
					parts = splitMatches(s, regexFind(gpt2Regex(), s), "Isolated", false)
				}
				for i := range parts {
					parts[i] = byteLevelEncode(parts[i])
				}
				return parts
			})
		}}, nil
	case "Metaspace":
		rep := spaceSymbol
		if n.Replacement != nil {
			rep = *n.Replacement
		}
		if utf8.RuneCountInString(rep) != 1 {
			return nil, fmt.Errorf("Metaspace replacement %q is not one character", rep)
		}
		scheme, err := prependScheme(n)
		if err != nil {
			return nil, err
		}
		split := n.Split == nil || *n.Split
		return []preTokenizer{func(in []pretok) []pretok {
			return splitEach(in, func(p pretok) []string {
				s := strings.ReplaceAll(p.s, " ", rep)
				if !strings.HasPrefix(s, rep) && (scheme == "always" || scheme == "first" && p.first) {
					s = rep + s
				}
				if !split {
					return []string{s}
				}
				return splitMatches(s, (&matcher{literal: rep}).find(s), "MergedWithNext", false)
			})
		}}, nil
	case "Digits":
		behavior := "Contiguous"
		if n.Individual {
			behavior = "Isolated"
		}
		return []preTokenizer{func(in []pretok) []pretok {
			return splitEach(in, func(p pretok) []string {
				return splitMatches(p.s, charMatches(p.s, unicode.IsNumber), behavior, false)
			})
		}}, nil
	case "WhitespaceSplit":
		return []preTokenizer{func(in []pretok) []pretok {
			return splitEach(in, func(p pretok) []string {
				return splitMatches(p.s, charMatches(p.s, unicode.IsSpace), "Removed", false)
			})
		}}, nil
	case "Whitespace":
		re, err := compileRegex(`\w+|[^\w\s]+`)
		if err != nil {
			return nil, err
		}
		return []preTokenizer{func(in []pretok) []pretok {
			return splitEach(in, func(p pretok) []string {
				return splitMatches(p.s, regexFind(re, p.s), "Removed", true)
			})
		}}, nil
	}
	return nil, fmt.Errorf("pre-tokenizer type %q is not supported", n.Type)
}

// prependScheme reads Metaspace's prepend_scheme, or the older
// add_prefix_space flag.
func prependScheme(n *hfNode) (string, error) {
	switch n.PrependScheme {
	case "always", "first", "never":
		return n.PrependScheme, nil
	case "":
		if n.AddPrefixSpace != nil && !*n.AddPrefixSpace {
			return "never", nil
		}
		return "always", nil
	}
	return "", fmt.Errorf("Metaspace prepend_scheme %q is unknown", n.PrependScheme)
}

// ---- decoders ----

// decoder rewrites the token strings on the way back to text. start says
// tokens[0] is the first token of the text; streaming says the call decodes
// one token for Piece.
type decoder func(tokens []string, start, streaming bool) []string

func parseDecoders(raw json.RawMessage) ([]decoder, error) {
	if isNull(raw) {
		return nil, nil
	}
	n, err := parseNode(raw)
	if err != nil {
		return nil, err
	}
	switch n.Type {
	case "Sequence":
		var out []decoder
		for _, r := range n.Decoders {
			s, err := parseDecoders(r)
			if err != nil {
				return nil, err
			}
			out = append(out, s...)
		}
		return out, nil
	case "ByteLevel":
		return []decoder{func(toks []string, _, _ bool) []string {
			var b strings.Builder
			for _, t := range toks {
				b.WriteString(byteLevelDecode(t))
			}
			return []string{b.String()}
		}}, nil
	case "Replace":
		m, err := newMatcher(n.Pattern)
		if err != nil {
			return nil, fmt.Errorf("Replace decoder: %v", err)
		}
		content := ""
		if n.Content != nil {
			content = *n.Content
		}
		return []decoder{func(toks []string, _, _ bool) []string {
			for i, t := range toks {
				toks[i] = replaceMatches(m, t, content)
			}
			return toks
		}}, nil
	case "ByteFallback":
		return []decoder{func(toks []string, _, _ bool) []string {
			for i, t := range toks {
				if b, ok := parseBytePiece(t); ok {
					toks[i] = string([]byte{b})
				}
			}
			return toks
		}}, nil
	case "Fuse":
		return []decoder{func(toks []string, _, _ bool) []string {
			return []string{strings.Join(toks, "")}
		}}, nil
	case "Strip":
		content := " "
		if n.Content != nil {
			content = *n.Content
		}
		if utf8.RuneCountInString(content) != 1 {
			return nil, fmt.Errorf("Strip decoder content %q is not one character", content)
		}
		if n.Start < 0 || n.Stop < 0 {
			return nil, fmt.Errorf("Strip decoder start %d, stop %d: negative", n.Start, n.Stop)
		}
		startN, stopN := n.Start, n.Stop
		return []decoder{func(toks []string, start, streaming bool) []string {
			for i, t := range toks {
				if streaming && !(i == 0 && start) {
					continue
				}
				for k := 0; k < startN && strings.HasPrefix(t, content); k++ {
					t = t[len(content):]
				}
				for k := 0; k < stopN && strings.HasSuffix(t, content); k++ {
					t = t[:len(t)-len(content)]
				}
				toks[i] = t
			}
			return toks
		}}, nil
	case "Metaspace":
		rep := spaceSymbol
		if n.Replacement != nil {
			rep = *n.Replacement
		}
		if utf8.RuneCountInString(rep) != 1 {
			return nil, fmt.Errorf("Metaspace replacement %q is not one character", rep)
		}
		scheme, err := prependScheme(n)
		if err != nil {
			return nil, err
		}
		return []decoder{func(toks []string, start, _ bool) []string {
			for i, t := range toks {
				if i == 0 && start && scheme != "never" {
					t = strings.TrimPrefix(t, rep)
				}
				toks[i] = strings.ReplaceAll(t, rep, " ")
			}
			return toks
		}}, nil
	}
	return nil, fmt.Errorf("decoder type %q is not supported", n.Type)
}
