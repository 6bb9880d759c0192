package main

import (
	"fmt"
	"io"

	"github.com/kvbench/kvbench/bench"
	"github.com/kvbench/kvbench/runtime"
)

// openBackend returns the backend named by --backend (auto, cpu, cuda) and a
// function that releases it; auto notes on stderr why it chose the CPU.
func openBackend(name string, threads int, stderr io.Writer) (runtime.Backend, func(), error) {
	return openBackendAt(name, threads, "", stderr)
}

// openBackendAt is openBackend at a compute precision ("": the backend's
// default).
func openBackendAt(name string, threads int, precision string, stderr io.Writer) (runtime.Backend, func(), error) {
	chosen, reason, err := bench.SelectBackend(name)
	if err != nil {
		return nil, nil, err
	}
	if reason != "" && name != "auto" {
		fmt.Fprintln(stderr, "kvbench:", reason)
	}
	spec, err := runtime.LookupBackend(chosen)
	if err != nil {
		return nil, nil, err
	}
	be, err := spec.Open(threads, precision)
	if err != nil {
		return nil, nil, fmt.Errorf("backend %s: %w", chosen, err)
	}
	release := func() {
		switch c := be.(type) {
		case runtime.Closer:
			c.Close()
		case interface{ Close() error }:
			_ = c.Close()
		}
	}
	return be, release, nil
}
