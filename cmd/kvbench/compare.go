package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/kvbench/kvbench/results"
)

func init() {
	register("compare", "compare two results DIRs; exit 1 on a regression beyond the thresholds", cmdCompare)
}

func cmdCompare(stdout, stderr io.Writer, args []string) error {
	fs := newFlags("compare", "compare BASE_DIR NEW_DIR [--max-regress accuracy=0.02,ppl=0.05,latency_p50=0.10]", stderr)
	maxRegress := fs.String("max-regress", "accuracy=0.02,score=0.02,ppl=0.05,latency_p50=0.10", "thresholds per metric")
	bench := fs.String("gobench", "", "also write NEW_DIR's attention latency in Go benchmark format to this file")
	var dirs []string
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		dirs, args = append(dirs, args[0]), args[1:]
	}
	if err := parseFlags(fs, args, 2-len(dirs)); err != nil {
		return err
	}
	dirs = append(dirs, fs.Args()...)
	if len(dirs) != 2 {
		return fmt.Errorf("compare: give BASE_DIR and NEW_DIR")
	}
	th, err := results.ParseThresholds(*maxRegress)
	if err != nil {
		return err
	}
	base, err := results.Load(dirs[0])
	if err != nil {
		return err
	}
	cur, err := results.Load(dirs[1])
	if err != nil {
		return err
	}
	cmp, err := results.Compare(base, cur, th)
	if err != nil {
		return err
	}
	if err := cmp.Markdown(stdout); err != nil {
		return err
	}
	if *bench != "" {
		f, err := os.Create(*bench)
		if err != nil {
			return err
		}
		if err := results.WriteGoBench(f, cur); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	if regs := cmp.Regressions(); len(regs) > 0 {
		for _, r := range regs {
			fmt.Fprintln(stderr, "regression:", r)
		}
		return exitError(1)
	}
	return nil
}
