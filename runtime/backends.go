package runtime

import (
	"fmt"
	"sort"
	"strings"
)

// BackendSpec registers a backend by name: how to tell whether this machine
// can run it, and how to make one.
type BackendSpec struct {
	Name string
	// Available reports whether the backend can run here, and why not.
	Available func() (bool, string)
	// New returns a backend using threads host threads (0: the default).
	New func(threads int) (Backend, error)
	// Precisions lists the compute precisions the backend offers, its
	// default first; NewAt makes one at a given precision. A backend without
	// them computes in float32 only.
	Precisions []string
	NewAt      func(threads int, precision string) (Backend, error)
}

// Open makes a backend of spec at precision ("" is the backend's default),
// or says which precisions it offers.
func (s BackendSpec) Open(threads int, precision string) (Backend, error) {
	if precision == "" {
		return s.New(threads)
	}
	have := s.Precisions
	if len(have) == 0 {
		have = []string{"f32"}
	}
	for _, p := range have {
		if p == precision {
			if s.NewAt == nil {
				return s.New(threads)
			}
			return s.NewAt(threads, precision)
		}
	}
	return nil, fmt.Errorf("backend %s computes in %s, not %q", s.Name, strings.Join(have, " or "), precision)
}

var backends = map[string]BackendSpec{}

// RegisterBackend adds a backend; it panics on a repeated name.
func RegisterBackend(s BackendSpec) {
	if _, dup := backends[s.Name]; dup {
		panic("runtime: backend " + s.Name + " registered twice")
	}
	backends[s.Name] = s
}

// BackendNames lists the registered backends.
func BackendNames() []string {
	n := make([]string, 0, len(backends))
	for k := range backends {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// LookupBackend returns a registered backend, or an error listing them.
func LookupBackend(name string) (BackendSpec, error) {
	s, ok := backends[name]
	if !ok {
		return BackendSpec{}, fmt.Errorf("unknown backend %q (have %s)", name, strings.Join(BackendNames(), ", "))
	}
	return s, nil
}

// Closer is a Backend that holds resources (threads, device memory) to free.
type Closer interface{ Close() }
