package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Paths in a suite (model path and tokenizer, include, task path parameters
// such as text and haystack) may name environment variables:
//
//	${NAME}            the value of NAME; an error when NAME is unset or empty
//	${NAME:-FALLBACK}  the value of NAME, or FALLBACK when NAME is unset or empty
//
// NAME is letters, digits and underscores, not starting with a digit. A "$"
// not followed by "{" is kept as written. FALLBACK is taken literally (it
// cannot hold "}" or another variable). After expansion a relative path is
// resolved against the suite file's folder, as before; a variable whose value
// starts the path and is itself relative is taken from the current
// directory, as a shell would. The shipped suites write
// ${KVBENCH_SHARED:-../../shared}/models/...: the fixtures folder named by
// KVBENCH_SHARED, else the folder shared beside the repository.

// lookupEnv reads the environment; tests replace it.
var lookupEnv = os.LookupEnv

// expandVars replaces the ${NAME} and ${NAME:-FALLBACK} of path. The error
// names the variable; the caller adds the file, line and field.
func expandVars(path string) (string, error) {
	if !strings.Contains(path, "${") {
		return path, nil
	}
	var b strings.Builder
	rest := path
	for {
		i := strings.Index(rest, "${")
		if i < 0 {
			b.WriteString(rest)
			break
		}
		b.WriteString(rest[:i])
		atStart := b.Len() == 0
		body, after, ok := strings.Cut(rest[i+2:], "}")
		if !ok {
			return "", fmt.Errorf("%q: ${ without a closing }", path)
		}
		name, fallback, hasFallback := strings.Cut(body, ":-")
		if !validVarName(name) {
			return "", fmt.Errorf("%q: ${%s} is not a variable (want ${NAME} or ${NAME:-FALLBACK}, NAME of letters, digits and _)", path, body)
		}
		if strings.Contains(fallback, "${") {
			return "", fmt.Errorf("%q: the fallback of ${%s} holds another variable (fallbacks are literal)", path, name)
		}
		val, set := lookupEnv(name)
		switch {
		case set && val != "":
			if atStart && !filepath.IsAbs(val) {
				if abs, err := filepath.Abs(val); err == nil {
					val = abs
				}
			}
			b.WriteString(val)
		case hasFallback:
			b.WriteString(fallback)
		default:
			state := "is not set"
			if set {
				state = "is empty"
			}
			return "", fmt.Errorf("%q: environment variable %s %s (set it, or give a fallback: ${%s:-DIR})", path, name, state, name)
		}
		rest = after
	}
	out := b.String()
	if out == "" {
		return "", fmt.Errorf("%q: empty after expanding its variables", path)
	}
	return out, nil
}

func validVarName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
