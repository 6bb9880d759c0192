package cuda

import "github.com/kvbench/kvbench/runtime"

func init() {
	runtime.RegisterBackend(runtime.BackendSpec{
		Name:      "cuda",
		Available: Available,
		New: func(int) (runtime.Backend, error) {
			b, err := NewBackend(0)
			if err != nil {
				return nil, err
			}
			return b, nil
		},
		Precisions: []string{"bf16", "f32"},
		NewAt: func(_ int, precision string) (runtime.Backend, error) {
			b, err := NewBackendAt(0, precision)
			if err != nil {
				return nil, err
			}
			return b, nil
		},
	})
}
