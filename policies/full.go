package policies

import "github.com/kvbench/kvbench/runtime"

// full keeps and attends to every token: the baseline.
type full struct{ base }

func init() {
	Register(Spec{Name: "full", Doc: "exact attention over every cached token (the baseline)",
		New: func(p Params) (Policy, error) {
			out, err := newReader("full", p).done()
			if err != nil {
				return nil, err
			}
			return &full{base{name: "full", params: out}}, nil
		}})
}

func (f *full) Start(r *runtime.Runner) error { return f.bind(r, f) }

// LaneSafe: its hooks touch only its cache and its own state (runtime.LaneSafe).
func (f *full) LaneSafe() {}

func (f *full) BeforeAttend(l int, a *runtime.AttnArgs) {
	f.begin(l, a)
	f.finish(l, a, 0)
}

func (f *full) AfterAttend(l int, a *runtime.AttnArgs) { f.end(l, a) }
