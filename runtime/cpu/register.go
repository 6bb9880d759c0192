package cpu

import "github.com/kvbench/kvbench/runtime"

func init() {
	runtime.RegisterBackend(runtime.BackendSpec{
		Name:      "cpu",
		Available: func() (bool, string) { return true, "" },
		New: func(threads int) (runtime.Backend, error) {
			if poolErr != nil {
				return nil, poolErr
			}
			return New(threads), nil
		},
	})
}
