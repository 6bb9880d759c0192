package tasks

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ReadText returns the text at path: a file, or every .txt file of a folder
// concatenated in name order and separated by a blank line. Project Gutenberg
// licence headers and footers are stripped, a byte-order mark dropped and
// CRLF line ends turned into LF.
func ReadText(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("text %s: %w", path, err)
	}
	files := []string{path}
	if st.IsDir() {
		files, err = filepath.Glob(filepath.Join(path, "*.txt"))
		if err != nil {
			return "", fmt.Errorf("text %s: %w", path, err)
		}
		if len(files) == 0 {
			return "", fmt.Errorf("text %s: folder holds no .txt files", path)
		}
		sort.Strings(files)
	}
	var b strings.Builder
	for i, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("text %s: %w", f, err)
		}
		if i > 0 {
			b.WriteString("\n\n")
		}
		b.WriteString(CleanText(string(data)))
	}
	return b.String(), nil
}

// CleanText drops a byte-order mark, turns CRLF into LF and keeps only what
// lies between Project Gutenberg's "*** START OF" and "*** END OF" lines when
// they are present.
func CleanText(s string) string {
	s = strings.TrimPrefix(s, "\ufeff")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	if i := strings.Index(s, "*** START OF"); i >= 0 {
		if j := strings.Index(s[i:], "\n"); j >= 0 {
			s = s[i+j+1:]
		}
	}
	if i := strings.Index(s, "*** END OF"); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}
