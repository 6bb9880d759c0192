package tasks

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCleanText(t *testing.T) {
	in := "\ufeffHeader\r\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\r\n\r\nChapter 1\r\nText.\r\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\r\nLicence"
	if got, want := CleanText(in), "Chapter 1\nText."; got != want {
		t.Errorf("CleanText = %q, want %q", got, want)
	}
	if got := CleanText("plain text\n"); got != "plain text" {
		t.Errorf("CleanText(plain) = %q", got)
	}
}

func TestReadTextFolder(t *testing.T) {
	dir := t.TempDir()
	for name, s := range map[string]string{"b.txt": "second", "a.txt": "first", "c.md": "ignored"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ReadText(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := "first\n\nsecond"; got != want {
		t.Errorf("ReadText = %q, want %q", got, want)
	}
	if _, err := ReadText(filepath.Join(dir, "missing")); err == nil {
		t.Error("ReadText of a missing path succeeded")
	}
	// Several paths: their texts in the list's order, a folder's in name order.
	got, err = ReadText(filepath.Join(dir, "b.txt"), dir)
	if want := "second\n\nfirst\n\nsecond"; err != nil || got != want {
		t.Errorf("ReadText(b.txt, folder) = %q, %v; want %q", got, err, want)
	}
	if _, err := ReadText(dir, filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("ReadText with a missing second path: %v", err)
	}
	if err := SniffText(dir, filepath.Join(dir, "missing")); err == nil {
		t.Error("SniffText with a missing second path succeeded")
	}
	if _, err := ReadText(t.TempDir()); err == nil {
		t.Error("ReadText of an empty folder succeeded")
	}
}

func TestReadTextRejectsBinary(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.txt", []byte("Caf\u00e9 na\u00efve \u2014 fine.\n"))
	if _, err := ReadText(good); err != nil {
		t.Errorf("UTF-8 text: %v", err)
	}
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"model.bin", []byte{8, 0, 0, 0, 12, 0, 0, 0, 2}, "NUL byte at offset 1"},
		{"utf16.txt", []byte{0xff, 0xfe, 'h', 0, 'i', 0}, "NUL byte at offset 3"},
		{"latin1.txt", []byte("caf\xe9 au lait"), "byte 0xe9 at offset 3 is not UTF-8"},
		{"cut.txt", []byte("ok \xe2\x80"), "offset 3"},
	} {
		p := write(c.name, c.data)
		_, err := ReadText(p)
		if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ReadText(%s): %v, want an error naming the file and %q", c.name, err, c.want)
		}
	}
	// In a folder, the bad file is named.
	sub := filepath.Join(dir, "books")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sub, "a.txt"), []byte("fine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sub, "b.txt"), []byte("PK\x03\x04\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadText(sub); err == nil || !strings.Contains(err.Error(), filepath.Join(sub, "b.txt")) {
		t.Errorf("folder with a binary .txt: %v", err)
	}
}

func TestSniffTextWindow(t *testing.T) {
	dir := t.TempDir()
	// A two-byte character cut by the end of the 64 KiB window is not an error.
	p := filepath.Join(dir, "cut.txt")
	if err := os.WriteFile(p, []byte(strings.Repeat("a", sniffBytes-1)+"\u00e9 more"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := SniffText(p); err != nil {
		t.Errorf("character across the window: %v", err)
	}
	bad := filepath.Join(dir, "bad.txt")
	if err := os.WriteFile(bad, []byte(strings.Repeat("a", 100)+"\xc3("), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := SniffText(bad); err == nil || !strings.Contains(err.Error(), "offset 100") {
		t.Errorf("bad byte at 100: %v", err)
	}
	if err := SniffText(filepath.Join(dir, "missing.txt")); err == nil {
		t.Error("missing file accepted")
	}
}
