package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/kvbench/kvbench/results"
)

func init() {
	register("compare", "compare two results DIRs (or DIRs of repeated runs); exit 1 on a regression or an incomplete NEW", cmdCompare)
}

const compareSynopsis = `compare BASE NEW [--max-regress metric=value,...] [--alpha 0.05] [--allow-missing] [--gobench FILE]

BASE and NEW are each a results directory (one run of a suite) or a directory
of results directories, one per repeated run (DIR/1, DIR/2, ...). Values are
medians over the runs. Task metrics and the cache figures are gated by their
change; timings (latency_p50, tokens_per_s) by a change beyond the threshold
that is also significant over the runs (exact Mann-Whitney on one value per
run, Holm-corrected): they need repeated runs, ideally interleaved, BASE and
NEW alternately (6 per side for the 12 cells of configs/ci-gate.yaml).

Default gates: a fraction (accuracy, score) may drop by 0.02; any other
metric a task declares, kv_max_resident and kv_bytes_read may worsen by 5%;
latency_p50 by 10%; tokens_per_s is not gated. --max-regress sets the gates
it names and keeps the others ("ppl=0.02,latency_p50=off").

Exit status 1 on a regression, or when NEW lacks cells or metrics of BASE,
holds failed cells (--allow-missing allows these), holds no records, or
reports metrics its task does not declare.`

func cmdCompare(stdout, stderr io.Writer, args []string) error {
	fs := newFlags("compare", compareSynopsis, stderr)
	maxRegress := fs.String("max-regress", "", "gates by metric name, merged with the defaults (e.g. accuracy=0.02,ppl=5%,latency_p50=0.10,nll=off)")
	alpha := fs.Float64("alpha", results.DefaultAlpha, "family-wise significance level of the timing tests")
	allowMissing := fs.Bool("allow-missing", false, "let NEW lack cells or metrics of BASE and hold failed cells")
	bench := fs.String("gobench", "", "also write NEW's attention latency in Go benchmark format to this file (one line per run and cell)")
	var dirs []string
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		dirs, args = append(dirs, args[0]), args[1:]
	}
	if err := parseFlags(fs, args, 2-len(dirs)); err != nil {
		return err
	}
	dirs = append(dirs, fs.Args()...)
	if len(dirs) != 2 {
		return fmt.Errorf("compare: give BASE and NEW (results directories, or directories of repeated runs)")
	}
	th, err := results.ParseThresholds(*maxRegress)
	if err != nil {
		return fmt.Errorf("compare: --max-regress: %w", err)
	}
	var sides [2][]results.Run
	for i, dir := range dirs {
		runs, warn, err := results.LoadRuns(dir)
		for _, w := range warn {
			fmt.Fprintln(stderr, "kvbench:", w)
		}
		if err != nil {
			return fmt.Errorf("compare: %s: %w", [2]string{"BASE", "NEW"}[i], err)
		}
		sides[i] = runs
	}
	cmp, err := results.Compare(sides[0], sides[1], results.Options{Thresholds: th, Alpha: *alpha, AllowMissing: *allowMissing})
	if err != nil {
		return err
	}
	if err := cmp.Markdown(stdout); err != nil {
		return err
	}
	if *bench != "" {
		var recs []results.Record
		for _, r := range sides[1] {
			recs = append(recs, r.Records...)
		}
		f, err := os.Create(*bench)
		if err != nil {
			return fmt.Errorf("compare: --gobench: %w", err)
		}
		if err := results.WriteGoBench(f, recs); err != nil {
			f.Close()
			return fmt.Errorf("compare: --gobench %s: %w", *bench, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("compare: --gobench %s: %w", *bench, err)
		}
	}
	if !cmp.Failed() {
		return nil
	}
	for _, p := range cmp.Problems {
		fmt.Fprintln(stderr, "problem:", p)
	}
	for _, r := range cmp.Regressions() {
		fmt.Fprintln(stderr, "regression:", r)
	}
	return exitError(1)
}
