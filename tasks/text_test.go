package tasks

import (
	"os"
	"path/filepath"
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
	if _, err := ReadText(t.TempDir()); err == nil {
		t.Error("ReadText of an empty folder succeeded")
	}
}
