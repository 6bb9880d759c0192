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
	})
}
