package policies

import (
	"fmt"
	"sort"
	"strings"

	"github.com/kvbench/kvbench/runtime"
)

// Policy is a KV-cache policy bound to one stream of one runner. As a
// runtime.Hook it acts inside the layer loop; it decides what the cache keeps
// (eviction) and what attention reads (selection).
type Policy interface {
	runtime.Hook
	// Name is the registered name ("h2o").
	Name() string
	// Params are the resolved parameters, defaults included.
	Params() Params
	// Budget is the policy's nominal token budget per layer and KV head, as
	// reports show it (0: none, or a ratio that the stream's prompt has not
	// resolved yet; see budget.go).
	Budget() int
	// LayerBudget is what the policy guarantees for layer l at every decode
	// step: at most hold tokens held per KV head when the step ends, and at
	// most attend tokens attended per query head (0: no bound).
	LayerBudget(l int) (hold, attend int)
	// Evicts reports whether the policy removes tokens from the cache.
	Evicts() bool
	// MeasureRecall samples attention recall every n decode steps (0: never).
	// Call before Start.
	MeasureRecall(n int)
	// Start binds the policy to runner r for a new stream: r.Reset() must
	// have been called; the policy installs itself as r.Hook.
	Start(r *runtime.Runner) error
	// SetPrefill chooses the protocol of announced prompts (PrefillDense
	// unless set). Call before Start.
	SetPrefill(p Prefill)
	// Prompt announces that the next n tokens are a prompt fed at once
	// (prefill). Under PrefillDense every policy keeps and attends every
	// prompt token and compresses once the prompt's last row has attended;
	// under PrefillChunked evicting policies evict after every chunk. Rows
	// fed at once without an announcement are compressed after their chunk.
	Prompt(n int)
	// Stats is the policy's accounting so far.
	Stats() *Stats
}

// Spec describes a registered policy.
type Spec struct {
	Name   string
	Doc    string
	Params []ParamDoc
	New    func(p Params) (Policy, error)
}

var registry = map[string]Spec{}

// Register adds a policy to the registry; it panics on a repeated name.
func Register(s Spec) {
	if _, dup := registry[s.Name]; dup {
		panic("policies: " + s.Name + " registered twice")
	}
	registry[s.Name] = s
}

// Names lists the registered policies in order.
func Names() []string {
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Lookup returns the spec of a policy by name, or an error listing the
// policies and the closest name.
func Lookup(name string) (Spec, error) {
	s, ok := registry[name]
	if !ok {
		msg := fmt.Sprintf("unknown policy %q (have %s)", name, strings.Join(Names(), ", "))
		if c := Closest(name, Names()); c != "" {
			msg += fmt.Sprintf("; did you mean %s?", c)
		}
		return Spec{}, fmt.Errorf("%s", msg)
	}
	return s, nil
}

// New returns a fresh policy by name with parameters p.
func New(name string, p Params) (Policy, error) {
	s, err := Lookup(name)
	if err != nil {
		return nil, err
	}
	if p == nil {
		p = Params{}
	}
	return s.New(p)
}
