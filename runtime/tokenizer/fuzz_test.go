package tokenizer

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

// fuzzTexts are seed strings for the Encode side of the fuzz targets.
var fuzzTexts = []string{"", "Hello world", "  lead\ttab\nnl\n\n", "naïve 🙂 日本", "\xff\xfe<0x0A>", "▁▁ ▁", "<s></s><unk>", "<|endoftext|>x<|im_start|>"}

// exercise runs a loaded tokenizer on text; it must not panic and must
// return ids in range.
func exercise(t *testing.T, tok Tokenizer, text string) {
	ids := tok.Encode(text)
	for _, id := range ids {
		if id < 0 || id >= tok.VocabSize() {
			t.Fatalf("Encode(%q) gave id %d outside [0, %d)", text, id, tok.VocabSize())
		}
	}
	_ = tok.Decode(ids)
	_ = tok.Decode([]int{-1, 0, 1, tok.VocabSize(), tok.VocabSize() + 100})
	prev := tok.BOS()
	for _, id := range ids {
		_ = tok.Piece(prev, id)
		prev = id
	}
	_ = tok.Piece(-1, -1)
	_ = tok.Piece(0, tok.VocabSize())
}

// checkLoadError checks that a failed load names the file.
func checkLoadError(t *testing.T, err error, name string) {
	if !strings.HasPrefix(err.Error(), "tokenizer "+name+": ") {
		t.Fatalf("error does not name the file: %v", err)
	}
}

// addShared adds a shared file, whole and truncated, as seeds (when present).
func addShared(f *testing.F, rel string, rest ...any) {
	if dir := sharedDir(); dir != "" {
		if data, err := os.ReadFile(filepath.Join(dir, rel)); err == nil {
			f.Add(append([]any{data}, rest...)...)
			f.Add(append([]any{data[:len(data)*2/3]}, rest...)...)
		}
	}
}

func FuzzSentencePieceModel(f *testing.F) {
	tiny := tinyModel(true, false)
	for _, s := range fuzzTexts {
		f.Add(tiny, s)
	}
	f.Add(tinyModel(false, true), "  a  b  ")
	for _, n := range []int{0, 1, 2, 3, 10, len(tiny) / 2, len(tiny) - 1} {
		f.Add(tiny[:n], "ab")
	}
	f.Add([]byte(pbw(nil).key(1, wireBytes).varint(1<<40)), "x")
	f.Add([]byte(pbw(nil).key(1, wireBytes).varint(^uint64(0))), "x")
	f.Add([]byte{0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, "x")
	f.Add(spModel([]testPiece{{"a", 0, pieceUnused}, {"aa", 1, pieceUnused}, {"<u>", 0, pieceUserDefined}}, spTrainerMsg(2, false), spNormalizerMsg(false, true, false)), "aaa <u> a")
	f.Add(spModel([]testPiece{{"a", float32(negNaN()), pieceNormal}, {"aa", 1, pieceNormal}}, spTrainerMsg(2, true), nil), "aaaa")
	addShared(f, "tokenizers/llama2/tokenizer.model", "Hello world")
	f.Fuzz(func(t *testing.T, data []byte, text string) {
		sp, err := parseSentencePiece("fuzz.model", data)
		if err != nil {
			checkLoadError(t, err, "fuzz.model")
			return
		}
		exercise(t, sp, text)
	})
}

func negNaN() float64 {
	var z float64
	return z / z
}

func FuzzLlama2CTokenizer(f *testing.F) {
	le := binary.LittleEndian
	tiny := llama2cFile(3, []string{"<unk>", "\n<s>\n", "\n</s>\n", " ", "a", " a", "<0x0A>", ""}, []float32{0, 0, 0, -1, -1, 5, 0, 2})
	for _, s := range fuzzTexts {
		f.Add(tiny, s, 0)
	}
	for _, n := range []int{0, 3, 4, 7, 12, len(tiny) - 1} {
		f.Add(tiny[:n], "a", 0)
	}
	f.Add(tiny, "a", 100)
	f.Add(tiny, "a", 2)
	f.Add(tiny, "a", -1)
	f.Add(append(le.AppendUint32(le.AppendUint32(le.AppendUint32(nil, 4), 0), 900), "abc"...), "a", 0)
	f.Add(append(le.AppendUint32(le.AppendUint32(le.AppendUint32(nil, 4), 0), 0xfffffffb), "abc"...), "a", 0)
	f.Add(le.AppendUint32(nil, 0x80000000), "a", 0)
	addShared(f, "models/stories260K/tok512.bin", "Once upon a time", 0)
	f.Fuzz(func(t *testing.T, data []byte, text string, vocab int) {
		tok, err := parseLlama2C("fuzz.bin", data, vocab%1024)
		if err != nil {
			checkLoadError(t, err, "fuzz.bin")
			return
		}
		exercise(t, tok, text)
	})
}

func FuzzHFJSON(f *testing.F) {
	docs := [][]byte{
		byteLevelJSON(f, false), byteLevelJSON(f, true), spStyleJSON(f, false), spStyleJSON(f, true),
		[]byte(`{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"], "unk_token": "a", "fuse_unk": true, "continuing_subword_prefix": "##", "end_of_word_suffix": "</w>"}}`),
		[]byte(`{"model": {"vocab": {"a": 0}, "merges": [["a", "a"]]}}`),
		[]byte(`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "added_tokens": [{"id": 5, "content": "a", "lstrip": true, "rstrip": true, "single_word": true}], "pre_tokenizer": {"type": "Metaspace", "add_prefix_space": true}}`),
		[]byte(`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Split", "pattern": {"String": "a"}, "behavior": "MergedWithNext", "invert": true}, "normalizer": {"type": "Sequence", "normalizers": [{"type": "Lowercase"}, {"type": "Strip", "strip_left": true}, {"type": "NFC"}, {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "}]}}`),
		[]byte(`{"model": {"type": "Unigram"}}`),
		[]byte(`{"model": {"type": "BPE", "vocab": {"a": 4000000000}}}`),
		[]byte(`{`), []byte(`null`), []byte(`[]`),
	}
	for _, d := range docs {
		for _, s := range fuzzTexts {
			f.Add(d, s)
		}
	}
	big := byteLevelJSON(f, true)
	f.Add(big[:len(big)/2], "x")
	f.Fuzz(func(t *testing.T, data []byte, text string) {
		tok, err := parseHFJSON("fuzz.json", data, nil)
		if err != nil {
			checkLoadError(t, err, "fuzz.json")
			return
		}
		exercise(t, tok, text)
	})
}

// fuzzLlama2 loads the Llama-2 model once; a missing file gives
// os.ErrNotExist (the fuzz target skips), a broken one another error.
var fuzzLlama2 = sync.OnceValues(func() (*SentencePiece, error) {
	dir := sharedDir()
	if dir == "" {
		return nil, os.ErrNotExist
	}
	path := filepath.Join(dir, "tokenizers", "llama2", "tokenizer.model")
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	return LoadSentencePiece(path)
})

// FuzzEncode checks the Llama-2 encoder against the naive reference, and that
// Decode(Encode(s)) gives s back, with invalid UTF-8 bytes read as U+FFFD
// and ▁ (U+2581, SentencePiece's space) read as a space.
func FuzzEncode(f *testing.F) {
	for _, s := range fuzzTexts {
		f.Add(s)
	}
	f.Add("The pass key is 35667. Remember it.")
	f.Add(" leading space")
	f.Add("trailing space ")
	f.Add("\x00\x01\x7f")
	f.Fuzz(func(t *testing.T, text string) {
		sp, err := fuzzLlama2()
		if errors.Is(err, os.ErrNotExist) {
			t.Skipf("Llama-2 tokenizer.model not available (set KVBENCH_SHARED to the shared folder): %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		ids := sp.Encode(text)
		if len(text) <= 2000 {
			want := naiveSentencePiece(sp, text)
			if !equalInts(ids, want) {
				t.Fatalf("Encode(%q) = %v, naive reference %v", text, ids, want)
			}
		}
		want := strings.ReplaceAll(validUTF8(text), spaceSymbol, " ")
		if got := sp.Decode(ids); got != want {
			t.Fatalf("Decode(Encode(%q)) = %q, want %q", text, got, want)
		}
		var b strings.Builder
		prev := sp.BOS()
		for _, id := range ids {
			b.WriteString(sp.Piece(prev, id))
			prev = id
		}
		if got := b.String(); got != want || !utf8.ValidString(got) {
			t.Fatalf("streamed pieces of %q = %q, want %q", text, got, want)
		}
	})
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
