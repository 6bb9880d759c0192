package tokenizer

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLoadDispatch(t *testing.T) {
	sp := tinyModel(true, false)
	l2c := llama2cFile(2, []string{"<unk>", "<s>", "</s>", " ", "a", " a"}, []float32{0, 0, 0, -1, -1, 5})
	hf := byteLevelJSON(t, false)
	cases := []struct {
		name string
		data []byte
		want any
	}{
		{"tokenizer.model", sp, &SentencePiece{}},
		{"tok.bin", l2c, &Llama2C{}},
		{"tokenizer.json", hf, &BPE{}},
		{"sp-noext", sp, &SentencePiece{}},
		{"l2c-noext", l2c, &Llama2C{}},
		{"hf-noext", hf, &BPE{}},
	}
	for _, c := range cases {
		tok, err := Load(writeTemp(t, c.name, c.data))
		require.NoError(t, err, c.name)
		assert.IsType(t, c.want, tok, c.name)
	}
	tok, err := Load(writeTemp(t, "tok.bin", l2c))
	require.NoError(t, err)
	assert.Equal(t, []int{5}, tok.Encode("a"))

	missing := filepath.Join(t.TempDir(), "nope.model")
	_, err = Load(missing)
	require.ErrorContains(t, err, missing)
	_, err = Load(filepath.Join(t.TempDir(), "nope"))
	require.ErrorContains(t, err, "nope")
}

func TestLoadSharedFiles(t *testing.T) {
	for _, rel := range []string{"tokenizers/llama2/tokenizer.model", "models/stories260K/tok512.bin", "models/gutenberg-llama-25m/tokenizer.model"} {
		path := sharedFile(t, rel)
		tok, err := Load(path)
		require.NoError(t, err, rel)
		assert.Equal(t, 1, tok.BOS())
		assert.Equal(t, 2, tok.EOS())
		assert.Equal(t, "Hello world", tok.Decode(tok.Encode("Hello world")))
	}
}

func TestCorruptSentencePiece(t *testing.T) {
	tiny := tinyModel(true, false)
	piece := func(p testPiece) []byte { return pbw(nil).bytesField(1, spPieceMsg(p)) }
	bpe := pbw(nil).bytesField(2, spTrainerMsg(2, false))
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "empty file"},
		{"truncated", tiny[:len(tiny)/2], "exceeds remaining"},
		{"truncated key", append(tiny, 0x80), "truncated varint"},
		{"huge length", pbw(nil).key(1, wireBytes).varint(1 << 40), "length 1099511627776 exceeds remaining 0 bytes"},
		{"negative length", pbw(nil).key(1, wireBytes).varint(^uint64(0)), "exceeds remaining"},
		{"varint overflow", []byte{0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, "varint overflows"},
		{"group", pbw(nil).key(7, 3), "unsupported wire type 3"},
		{"field zero", []byte{0x02, 0x00}, "invalid field number 0"},
		{"piece wire type", pbw(nil).varintField(1, 5), "piece 0: offset 1: piece has wire type 0, want 2"},
		{"score wire type", pbw(nil).bytesField(1, pbw(nil).bytesField(1, []byte("a")).varintField(2, 1)), "score has wire type 0"},
		{"unigram", spModel(tinyPieces(), spTrainerMsg(1, false), nil), "model type UNIGRAM is not supported"},
		{"default unigram", spModel(tinyPieces(), nil, nil), "model type UNIGRAM"},
		{"charsmap", spModel(tinyPieces(), spTrainerMsg(2, true), pbw(nil).bytesField(1, []byte("nmt_nfkc")).bytesField(2, []byte{1, 2, 3})), `normalizer "nmt_nfkc" has a 3-byte precompiled_charsmap`},
		{"no pieces", bpe, "no pieces"},
		{"empty piece", append(piece(testPiece{"", 0, 1}), bpe...), "piece 0 is empty"},
		{"duplicate", append(append(piece(testPiece{"a", 0, 1}), piece(testPiece{"a", 0, 1})...), bpe...), `piece 1 "a" is already defined`},
		{"bad byte piece", append(piece(testPiece{"<0xZZ>", 0, pieceByte}), bpe...), "not of the form <0xHH>"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeTemp(t, "corrupt.model", c.data)
			_, err := LoadSentencePiece(path)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "tokenizer "+path+": ")
			assert.Contains(t, err.Error(), c.want)
		})
	}
}

func TestCorruptSharedSentencePiece(t *testing.T) {
	data, err := os.ReadFile(sharedFile(t, "tokenizers/llama2/tokenizer.model"))
	require.NoError(t, err)
	for _, n := range []int{1, 2, 100, 1000, len(data) / 2, len(data) - 1} {
		_, err := parseSentencePiece("tokenizer.model", data[:n])
		require.Error(t, err, "truncated to %d bytes", n)
		assert.Contains(t, err.Error(), "tokenizer tokenizer.model: ")
	}
}

func TestCorruptLlama2C(t *testing.T) {
	good := llama2cFile(3, []string{"<unk>", "<s>", "</s>", "abc"}, []float32{0, 0, 0, 1})
	le := binary.LittleEndian
	withLen := func(n int32) []byte {
		b := le.AppendUint32(nil, 3)
		b = le.AppendUint32(b, 0)
		return append(le.AppendUint32(b, uint32(n)), "abcdefghijkl"...)
	}
	cases := []struct {
		name  string
		data  []byte
		vocab int
		want  string
	}{
		{"empty", nil, 0, "file is 0 bytes, too short"},
		{"short header", []byte{1, 2}, 0, "file is 2 bytes"},
		{"header only", le.AppendUint32(nil, 7), 0, "no tokens"},
		{"negative max length", le.AppendUint32(nil, 0xffffffff), 0, "negative max_token_length -1"},
		{"truncated token header", good[:len(good)-5], 0, "token 3: 6 bytes left at offset 40, need 8"},
		{"truncated token bytes", good[:len(good)-1], 0, "token 3: length 3 exceeds remaining 2 bytes"},
		{"truncated score", append(good, 1, 2, 3), 0, "token 4: 3 bytes left"},
		{"oversized length", withLen(900), 0, "token 0: length 900 exceeds remaining 12 bytes"},
		{"negative length", withLen(-5), 0, "token 0: negative length -5"},
		{"vocab larger than file", good, 5, "token 4: 0 bytes left"},
		{"negative vocab", good, -1, "negative vocabulary size -1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeTemp(t, "tok512.bin", c.data)
			_, err := LoadLlama2C(path, c.vocab)
			require.Error(t, err)
			assert.True(t, strings.HasPrefix(err.Error(), "tokenizer "+path+": "), err.Error())
			assert.Contains(t, err.Error(), c.want)
		})
	}
}
