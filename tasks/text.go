package tasks

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf8"
)

// ReadText returns the text at the paths, in order: each a file, or a folder
// whose .txt files are taken in name order; the files are concatenated and
// separated by a blank line. Project Gutenberg licence headers and footers
// are stripped, a byte-order mark dropped and CRLF line ends turned into LF.
// A file that is not UTF-8 text (a NUL byte, or bytes that are not UTF-8) is
// an error naming it and the offset.
func ReadText(paths ...string) (string, error) {
	if len(paths) == 0 {
		return "", fmt.Errorf("text: no path given")
	}
	var files []string
	for _, p := range paths {
		fs, err := textFiles(p)
		if err != nil {
			return "", err
		}
		files = append(files, fs...)
	}
	var b strings.Builder
	for i, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("text %s: %w", f, err)
		}
		if err := CheckText(data); err != nil {
			return "", fmt.Errorf("text %s: %w", f, err)
		}
		if i > 0 {
			b.WriteString("\n\n")
		}
		b.WriteString(CleanText(string(data)))
	}
	return b.String(), nil
}

// textFiles lists the files ReadText reads for path, in order.
func textFiles(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("text %s: %w", path, err)
	}
	files := []string{path}
	if st.IsDir() {
		files, err = filepath.Glob(filepath.Join(path, "*.txt"))
		if err != nil {
			return nil, fmt.Errorf("text %s: %w", path, err)
		}
		if len(files) == 0 {
			return nil, fmt.Errorf("text %s: folder holds no .txt files", path)
		}
		sort.Strings(files)
	}
	return files, nil
}

// sniffBytes is how much of each file SniffText reads.
const sniffBytes = 64 << 10

// SniffText is a quick form of ReadText's checks for validating a suite:
// the paths exist, a folder holds .txt files, and the first 64 KiB of each
// file is UTF-8 text without NUL bytes. Errors name the file.
func SniffText(paths ...string) error {
	var files []string
	for _, p := range paths {
		fs, err := textFiles(p)
		if err != nil {
			return err
		}
		files = append(files, fs...)
	}
	buf := make([]byte, sniffBytes)
	for _, f := range files {
		n, err := readHead(f, buf)
		if err != nil {
			return fmt.Errorf("text %s: %w", f, err)
		}
		head := buf[:n]
		if n == len(buf) {
			// Drop a character cut at the end of the window.
			for k := 1; k < utf8.UTFMax && k <= n; k++ {
				if utf8.RuneStart(head[n-k]) {
					if !utf8.FullRune(head[n-k:]) {
						head = head[:n-k]
					}
					break
				}
			}
		}
		if err := CheckText(head); err != nil {
			return fmt.Errorf("text %s: %w", f, err)
		}
	}
	return nil
}

// readHead reads up to len(buf) bytes from the start of the file at path.
func readHead(path string, buf []byte) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := io.ReadFull(f, buf)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = nil
	}
	return n, err
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

// CheckText returns an error when data is not UTF-8 text: it holds a NUL
// byte (a binary file: a model, an archive, UTF-16 text) or a byte sequence
// that is not UTF-8 (a binary file, or text in another encoding). The error
// gives the byte offset.
func CheckText(data []byte) error {
	if i := bytes.IndexByte(data, 0); i >= 0 {
		return fmt.Errorf("not a text file: NUL byte at offset %d (a binary file, or text in UTF-16?)", i)
	}
	for i := 0; i < len(data); {
		if data[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n <= 1 {
			return fmt.Errorf("not UTF-8 text: byte 0x%02x at offset %d is not UTF-8 (a binary file, or text in another encoding: convert it to UTF-8)", data[i], i)
		}
		i += n
	}
	return nil
}
