package tasks

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime/tokenizer"
)

// Params are a task's parameters for one cell, by name (the suite's values
// after matrix expansion: scalars, or lists a task takes whole).
type Params map[string]any

// Metric describes one number a task reports. Every record carries its
// task's declarations, and compare gates each metric by them: the direction
// that is better, and the unit, which says how a change is measured (an
// absolute drop for UnitFraction, a relative change otherwise) and whether the
// metric is a noisy timing (a time or a rate, gated only over repeated runs).
type Metric struct {
	Name   string `json:"name"`           // "accuracy", "ppl", ...
	Unit   string `json:"unit,omitempty"` // UnitFraction, "nats", "tokens", "us", ... ("" : a plain number)
	Better string `json:"better"`         // BetterHigher or BetterLower
}

// Directions a Metric can declare.
const (
	BetterHigher = "higher" // accuracy, score
	BetterLower  = "lower"  // perplexity, loss, time
)

// UnitFraction is the unit of a metric that is a share in [0, 1] (accuracy,
// recall): its changes are compared as absolute differences.
const UnitFraction = "fraction"

// Validate checks a declaration: a name without spaces or commas (it is a
// key of compare's --max-regress) and a direction.
func (m Metric) Validate() error {
	switch {
	case m.Name == "" || strings.ContainsAny(m.Name, " \t\n,="):
		return fmt.Errorf("metric %q: the name must be non-empty, without spaces, commas or '='", m.Name)
	case m.Better != BetterHigher && m.Better != BetterLower:
		return fmt.Errorf("metric %s: better is %q, want %q or %q", m.Name, m.Better, BetterHigher, BetterLower)
	}
	return nil
}

// Point is one sample of a curve: X (tokens, length, depth...) and Y.
type Point struct {
	X float64 `json:"x"`
	Y float64 `json:"y"`
}

// Result is what a task returns for one cell.
type Result struct {
	Metrics map[string]float64 `json:"metrics"`          // by Metric.Name
	Curves  map[string][]Point `json:"curves,omitempty"` // e.g. "nll" per bucket of tokens
	// Detail is task-specific extra data for the record (per-trial answers,
	// which tokens were prefilled, ...).
	Detail map[string]any `json:"detail,omitempty"`
	Tokens int            `json:"tokens"` // tokens processed (prefill + decode), for throughput
}

// Model is what a task drives: a model under one cache policy configuration,
// on one backend. The bench package implements it.
type Model interface {
	Tokenizer() tokenizer.Tokenizer
	Vocab() int
	MaxSeq() int
	// NewStream starts an independent stream: a fresh KV cache and a fresh
	// instance of the cell's policy. Streams may run concurrently, each from
	// its own goroutine.
	NewStream() (Stream, error)
}

// Stream is one sequence being processed under the cell's policy.
type Stream interface {
	// Prompt feeds ids at once (prefill, announced to the policy) and writes
	// the logits of the last one into logits [vocab].
	Prompt(ids []int, logits []float32) error
	// Step feeds one token (decode) and writes its logits.
	Step(id int, logits []float32) error
	// Pos is the number of tokens fed so far.
	Pos() int
	// Stats is the policy's accounting of this stream.
	Stats() *policies.Stats
	// Close releases the stream's memory.
	Close()
}

// Task is an evaluation protocol (see TASKS.md).
type Task interface {
	// Name is the registered name ("passkey").
	Name() string
	// Version changes whenever prompts or scoring change.
	Version() int
	// Metrics lists what Run reports; the first is the headline.
	Metrics() []Metric
	// Params documents the parameters and their defaults.
	Params() []policies.ParamDoc
	// Expand lists the parameter names whose list values make separate cells
	// (e.g. lengths, depths); other list values are passed whole.
	Expand() []string
	// Check validates one cell's parameters without running it.
	Check(p Params) error
	// Run executes one cell.
	Run(ctx context.Context, m Model, p Params) (*Result, error)
}

var registry = map[string]Task{}

// Register adds a task; it panics on a repeated name.
func Register(t Task) {
	if _, dup := registry[t.Name()]; dup {
		panic("tasks: " + t.Name() + " registered twice")
	}
	registry[t.Name()] = t
}

// Names lists the registered tasks.
func Names() []string {
	n := make([]string, 0, len(registry))
	for k := range registry {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Lookup returns a task by name, or an error naming the closest one.
func Lookup(name string) (Task, error) {
	t, ok := registry[name]
	if !ok {
		msg := fmt.Sprintf("unknown task %q (have %s)", name, strings.Join(Names(), ", "))
		if c := policies.Closest(name, Names()); c != "" {
			msg += fmt.Sprintf("; did you mean %s?", c)
		}
		return nil, fmt.Errorf("%s", msg)
	}
	return t, nil
}
