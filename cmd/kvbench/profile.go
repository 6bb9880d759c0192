package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// startProfile writes a CPU profile of the whole command to the file
// KVBENCH_CPUPROFILE names, when set (for finding host-side time in a run;
// read it with go tool pprof). It returns the function that stops it.
func startProfile() func() {
	path := os.Getenv("KVBENCH_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kvbench: KVBENCH_CPUPROFILE=%s: %v\n", path, err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
