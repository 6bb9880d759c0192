package chat

import (
	"fmt"
	"strings"
)

// pos is a place in a template's source, 1-based.
type pos struct{ line, col int }

func (p pos) String() string { return fmt.Sprintf("line %d col %d", p.line, p.col) }

// tokKind is the kind of a token inside a tag.
type tokKind int

const (
	tName tokKind = iota
	tString
	tInt
	tFloat
	tOp
	tEnd // the end of a tag's tokens
)

type token struct {
	kind tokKind
	s    string // name, operator, or the decoded string literal
	i    int
	f    float64
	at   pos
}

// segKind is the kind of a top-level piece of a template.
type segKind int

const (
	segText segKind = iota
	segOutput
	segBlock
)

// segment is literal text, an output tag {{ }} or a block tag {% %}, with
// the tokens of a tag.
type segment struct {
	kind segKind
	text string
	toks []token
	at   pos
}

// wsChars are the characters '-' strips, as Jinja's \s.
const wsChars = " \t\n\r\f\v"

// lexer splits a template into segments, applying whitespace control the
// way transformers configures Jinja: trim_blocks and lstrip_blocks on, the
// template's single trailing newline dropped, and {%- -%} / {{- -}} / {#- -#}
// stripping all whitespace on their side.
type lexer struct {
	name string
	src  string
	i    int
}

func (l *lexer) posAt(i int) pos {
	line := 1 + strings.Count(l.src[:i], "\n")
	col := i - strings.LastIndexByte(l.src[:i], '\n')
	return pos{line, col}
}

func (l *lexer) errorf(i int, format string, args ...any) error {
	return fmt.Errorf("chat template %s: %s: %s", l.name, l.posAt(i), fmt.Sprintf(format, args...))
}

// lex returns the template's segments.
func lex(name, src string) ([]segment, error) {
	src = strings.TrimSuffix(src, "\n")
	l := &lexer{name: name, src: src}
	var segs []segment
	// Whitespace control of the previous tag on the text that follows it.
	prevStripAll, prevTrimNL := false, false
	segStart := 0
	for {
		open := nextOpen(src, l.i)
		textEnd := len(src)
		if open >= 0 {
			textEnd = open
		}
		text := src[segStart:textEnd]
		if prevStripAll {
			text = strings.TrimLeft(text, wsChars)
		} else if prevTrimNL {
			if strings.HasPrefix(text, "\r\n") {
				text = text[2:]
			} else {
				text = strings.TrimPrefix(text, "\n")
			}
		}
		if open < 0 {
			if text != "" {
				segs = append(segs, segment{kind: segText, text: text})
			}
			return segs, nil
		}
		kind := src[open+1] // '{', '%' or '#'
		mod := byte(0)
		if open+2 < len(src) && (src[open+2] == '-' || src[open+2] == '+') {
			mod = src[open+2]
		}
		block := kind == '%' || kind == '#'
		switch {
		case mod == '-':
			text = strings.TrimRight(text, wsChars)
		case block && mod != '+':
			// lstrip_blocks: the tag starts its line after spaces and tabs only.
			lineStart := strings.LastIndexByte(src[:open], '\n') + 1
			if lineStart >= segStart && strings.Trim(src[lineStart:open], " \t") == "" {
				text = strings.TrimRight(text, " \t")
			}
		}
		if text != "" {
			segs = append(segs, segment{kind: segText, text: text})
		}
		start := open + 2
		if mod != 0 {
			start++
		}
		var end int // index just past the closing delimiter
		var closeMod byte
		if kind == '#' {
			j := strings.Index(src[start:], "#}")
			if j < 0 {
				return nil, l.errorf(open, "comment {# is never closed")
			}
			end = start + j + 2
			if start+j > start && (src[start+j-1] == '-' || src[start+j-1] == '+') {
				closeMod = src[start+j-1]
			}
		} else {
			toks, e, cm, err := l.tagTokens(start, kind)
			if err != nil {
				return nil, err
			}
			end, closeMod = e, cm
			sk := segOutput
			if kind == '%' {
				sk = segBlock
			}
			segs = append(segs, segment{kind: sk, toks: toks, at: l.posAt(open)})
		}
		prevStripAll = closeMod == '-'
		prevTrimNL = block && closeMod != '+'
		l.i, segStart = end, end
	}
}

// nextOpen returns the index of the next {{, {% or {# at or after i, or -1.
func nextOpen(src string, i int) int {
	for {
		j := strings.IndexByte(src[i:], '{')
		if j < 0 || i+j+1 >= len(src) {
			return -1
		}
		c := src[i+j+1]
		if c == '{' || c == '%' || c == '#' {
			return i + j
		}
		i += j + 1
	}
}

// tagTokens tokenizes the inside of a tag from start up to its closing
// delimiter (}} or %} at bracket depth 0, outside string literals). It
// returns the tokens, the index past the delimiter and its '-' or '+'.
func (l *lexer) tagTokens(start int, kind byte) ([]token, int, byte, error) {
	src := l.src
	closer := "}}"
	if kind == '%' {
		closer = "%}"
	}
	var toks []token
	depth := 0
	i := start
	for {
		for i < len(src) && strings.IndexByte(wsChars, src[i]) >= 0 {
			i++
		}
		if i >= len(src) {
			return nil, 0, 0, l.errorf(start-2, "tag is never closed (want %s)", closer)
		}
		// The closing delimiter, with an optional - or +.
		if depth == 0 {
			if strings.HasPrefix(src[i:], closer) {
				toks = append(toks, token{kind: tEnd, at: l.posAt(i)})
				return toks, i + 2, 0, nil
			}
			if (src[i] == '-' || src[i] == '+') && strings.HasPrefix(src[i+1:], closer) {
				toks = append(toks, token{kind: tEnd, at: l.posAt(i)})
				return toks, i + 3, src[i], nil
			}
		}
		at := l.posAt(i)
		c := src[i]
		switch {
		case c == '\'' || c == '"':
			s, n, err := l.stringLit(i)
			if err != nil {
				return nil, 0, 0, err
			}
			toks = append(toks, token{kind: tString, s: s, at: at})
			i = n
		case isDigit(c):
			j := i
			for j < len(src) && (isDigit(src[j]) || src[j] == '_') {
				j++
			}
			isFloat := false
			if j+1 < len(src) && src[j] == '.' && isDigit(src[j+1]) {
				isFloat = true
				j++
				for j < len(src) && isDigit(src[j]) {
					j++
				}
			}
			if j < len(src) && (src[j] == 'e' || src[j] == 'E') {
				k := j + 1
				if k < len(src) && (src[k] == '+' || src[k] == '-') {
					k++
				}
				if k < len(src) && isDigit(src[k]) {
					for k < len(src) && isDigit(src[k]) {
						k++
					}
					isFloat, j = true, k
				}
			}
			lit := strings.ReplaceAll(src[i:j], "_", "")
			if isFloat {
				var f float64
				if _, err := fmt.Sscanf(lit, "%g", &f); err != nil {
					return nil, 0, 0, l.errorf(i, "bad number %q", lit)
				}
				toks = append(toks, token{kind: tFloat, f: f, at: at})
			} else {
				var n int
				if _, err := fmt.Sscanf(lit, "%d", &n); err != nil {
					return nil, 0, 0, l.errorf(i, "bad number %q", lit)
				}
				toks = append(toks, token{kind: tInt, i: n, at: at})
			}
			i = j
		case isNameStart(c):
			j := i
			for j < len(src) && (isNameStart(src[j]) || isDigit(src[j])) {
				j++
			}
			toks = append(toks, token{kind: tName, s: src[i:j], at: at})
			i = j
		default:
			op := ""
			for _, o := range []string{"//", "**", "==", "!=", "<=", ">="} {
				if strings.HasPrefix(src[i:], o) {
					op = o
					break
				}
			}
			if op == "" {
				if strings.IndexByte("+-*/%~()[]{},.:|=<>", c) < 0 {
					return nil, 0, 0, l.errorf(i, "unexpected character %q in a tag", c)
				}
				op = string(c)
			}
			switch op {
			case "(", "[", "{":
				depth++
			case ")", "]", "}":
				depth--
			}
			toks = append(toks, token{kind: tOp, s: op, at: at})
			i += len(op)
		}
	}
}

// stringLit decodes the string literal starting at i (Python escapes) and
// returns it and the index past its closing quote.
func (l *lexer) stringLit(i int) (string, int, error) {
	q := l.src[i]
	var b strings.Builder
	j := i + 1
	for j < len(l.src) {
		c := l.src[j]
		switch {
		case c == q:
			return b.String(), j + 1, nil
		case c == '\\' && j+1 < len(l.src):
			e := l.src[j+1]
			j += 2
			switch e {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case '\\', '\'', '"':
				b.WriteByte(e)
			case '\n':
				// a line continuation
			default:
				b.WriteByte('\\')
				b.WriteByte(e)
			}
			continue
		default:
			b.WriteByte(c)
		}
		j++
	}
	return "", 0, l.errorf(i, "string literal is never closed")
}

func isDigit(c byte) bool     { return c >= '0' && c <= '9' }
func isNameStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
