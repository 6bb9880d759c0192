package main

import (
	"fmt"
	"io"
	goruntime "runtime"
	"runtime/debug"

	"github.com/kvbench/kvbench/runtime/cpu"
)

// version and buildRevision are set at build time with -ldflags
// "-X main.version=... -X main.buildRevision=..." (see the Makefile).
var (
	version       = "dev"
	buildRevision = ""
)

func init() {
	register("version", "print the version, build and backends", cmdVersion)
}

// revision returns the VCS revision the binary was built from, if recorded.
func revision() string {
	if buildRevision != "" {
		return buildRevision
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

func cmdVersion(stdout, stderr io.Writer, args []string) error {
	fs := newFlags("version", "version", stderr)
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	be := cpu.New(0)
	defer be.Close()
	fmt.Fprintf(stdout, "kvbench %s (revision %s, %s)\n", version, revision(), goruntime.Version())
	fmt.Fprintf(stdout, "backend cpu: %s\n", be.Device())
	return nil
}
