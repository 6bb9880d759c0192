package bench

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeLlama2C writes a llama2.c checkpoint of zeros with a shared
// classifier: dim 8, hidden 12, 1 layer, 2 heads, 1 KV head, vocab 10,
// seq_len 4.
func writeLlama2C(t *testing.T, path string) {
	t.Helper()
	dim, hidden, layers, heads, kv, vocab, seq := 8, 12, 1, 2, 1, 10, 4
	head := dim / heads
	floats := vocab*dim + layers*(2*dim+2*dim*dim+2*kv*head*dim+3*hidden*dim) + dim + seq*head
	b := make([]byte, 0, 28+4*floats)
	for _, v := range []int{dim, hidden, layers, heads, kv, vocab, seq} {
		b = binary.LittleEndian.AppendUint32(b, uint32(v))
	}
	b = append(b, make([]byte, 4*floats)...)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCheckModels(t *testing.T) {
	dir := t.TempDir()
	writeLlama2C(t, filepath.Join(dir, "lone.bin"))
	if err := os.Mkdir(filepath.Join(dir, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "junk.bin"), []byte("not a checkpoint at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	suite := filepath.Join(dir, "s.yaml")
	text := `name: models
models:
  - {name: syn, path: "synthetic:tiny"}
  - {name: gone, path: nowhere/model}
  - {name: folder, path: empty}
  - {name: junk, path: junk.bin}
  - {name: lone, path: lone.bin}
  - {name: named, path: lone.bin, tokenizer: tok/missing.model}
policies: [full]
tasks:
  - {name: passkey, lengths: [64]}
`
	if err := os.WriteFile(suite, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSuite(suite)
	if err != nil {
		t.Fatalf("models are not checked by LoadSuite: %v", err)
	}
	err = s.CheckModels()
	if err == nil {
		t.Fatal("CheckModels accepted missing and broken models")
	}
	msg := err.Error()
	for _, want := range []string{
		suite + ":4:24: model gone: path: model " + filepath.Join(dir, "nowhere/model") + ": no such file or directory",
		suite + ":5:26: model folder: path: model " + filepath.Join(dir, "empty") + ": a folder without config.json",
		suite + ":6:24: model junk: path: llama2.c " + filepath.Join(dir, "junk.bin") + ": file has 23 bytes, too short",
		suite + ":7:24: model lone: no tokenizer beside " + filepath.Join(dir, "lone.bin"),
		suite + ":8:46: model named: tokenizer: tokenizer " + filepath.Join(dir, "tok/missing.model") + ": no such file or directory",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("CheckModels error lacks\n  %s\nin\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "model syn") {
		t.Errorf("synthetic model reported:\n%s", msg)
	}
	if n := strings.Count(msg, "\n") + 1; n != 5 {
		t.Errorf("%d errors, want 5:\n%s", n, msg)
	}
}
