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

func (f *full) BeforeAttend(l int, a *runtime.AttnArgs) {
	f.begin(l, a)
	f.finish(l, a, 0)
}

func (f *full) AfterAttend(l int, a *runtime.AttnArgs) { f.end(l, a) }
