package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/kvbench/kvbench/bench"
	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/results"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/tasks"
)

func init() {
	register("validate", "check a suite file and print its cells", cmdValidate)
	register("run", "run a suite: every cell, resumable, results to DIR/results.jsonl", cmdRun)
	register("list", "list the policies, tasks and backends with their parameters", cmdList)
	register("report", "write report.md, CSV tables, plots and index.html for a results DIR", cmdReport)
}

func cmdValidate(stdout, stderr io.Writer, args []string) error {
	fs := newFlags("validate", "validate SUITE.yaml [--no-models]", stderr)
	noModels := fs.Bool("no-models", false, "do not check that the models' files exist and are loadable formats")
	// Flags may follow the suite file.
	var suite string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		suite, args = args[0], args[1:]
	}
	if err := parseFlags(fs, args, 1); err != nil {
		return err
	}
	if suite == "" && fs.NArg() == 1 {
		suite = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return fmt.Errorf("validate: unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if suite == "" {
		return fmt.Errorf("validate: give one suite file")
	}
	s, err := bench.LoadSuite(suite)
	if err != nil {
		return err
	}
	checked := "models checked"
	if *noModels {
		checked = "models not checked"
	} else if err := s.CheckModels(); err != nil {
		return err
	}
	for _, line := range s.HubStatus() {
		fmt.Fprintln(stdout, line) // nothing is downloaded here
	}
	cells := s.Cells()
	fmt.Fprintf(stdout, "%s: suite %q is valid: %d cells (%s)\n", suite, s.Name, len(cells), checked)
	return nil
}

func cmdRun(stdout, stderr io.Writer, args []string) error {
	fs := newFlags("run", "run SUITE.yaml [--out DIR] [--dry-run] [--quiet] [--retry-failed] [--force-resume]", stderr)
	out := fs.String("out", "", "results directory (default: out/<suite name>)")
	dry := fs.Bool("dry-run", false, "print the cells and an estimate of the work, run nothing")
	quiet := fs.Bool("quiet", false, "no progress output")
	retry := fs.Bool("retry-failed", false, "rerun cells recorded as failed")
	force := fs.Bool("force-resume", false, "reuse DIR's records even when DIR/manifest.json says another configuration (binary, suite, settings) produced them")
	backendFlag := fs.String("backend", "", "override the suite's backend: auto, cpu or cuda")
	precision := fs.String("precision", "", "override the suite's compute precision: bf16 or f32")
	// Flags may follow the suite file: parse what comes after it too.
	var suite string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		suite, args = args[0], args[1:]
	}
	if err := parseFlags(fs, args, 1); err != nil {
		return err
	}
	if suite == "" && fs.NArg() == 1 {
		suite = fs.Arg(0)
	}
	if suite == "" {
		return fmt.Errorf("run: give a suite file")
	}
	s, err := bench.LoadSuite(suite)
	if err != nil {
		return err
	}
	if *backendFlag != "" {
		s.Backend = *backendFlag
	}
	switch *precision {
	case "":
	case "bf16", "f32":
		s.Precision = *precision
	default:
		return fmt.Errorf("run: --precision %q is not bf16 or f32", *precision)
	}
	cells := s.Cells()
	if *dry {
		est := bench.Estimate(cells)
		for _, c := range cells {
			fmt.Fprintln(stdout, c.Key)
		}
		fmt.Fprintln(stdout, est.String())
		return nil
	}
	dir := *out
	if dir == "" {
		dir = filepath.Join("out", s.Name)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	tty := false
	if f, ok := stderr.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	sum, err := bench.Run(ctx, s, bench.RunOptions{Out: dir, Quiet: *quiet, Retry: *retry, Progress: stderr, TTY: tty,
		Version: version, Revision: buildRevision, ForceResume: *force})
	var mis *results.MismatchError
	if errors.As(err, &mis) {
		return fmt.Errorf("%w\nTo start afresh, run with another --out DIR or delete the directory %s; to keep its records anyway, rerun with --force-resume (%s notes the override)",
			err, dir, filepath.Join(dir, results.ManifestName))
	}
	if err != nil {
		return err
	}
	// failed counts the cells of DIR whose record is failed, those of
	// earlier runs included, not only this run's.
	fmt.Fprintf(stdout, "%s: %d cells (%d already done, %d run, %d failed) on %s; results in %s\n",
		s.Name, sum.Cells, sum.Skipped, sum.Ran, len(sum.FailedCells), sum.Backend, filepath.Join(dir, results.FileName))
	if len(sum.FailedCells) == 0 {
		return nil
	}
	earlier := 0
	for _, c := range sum.FailedCells {
		if c.Earlier {
			earlier++
		}
	}
	fmt.Fprintf(stdout, "\nFailed cells of %s (%d; %d recorded by earlier runs):\n", dir, len(sum.FailedCells), earlier)
	for _, c := range sum.FailedCells {
		var notes []string
		if c.Earlier {
			notes = append(notes, "earlier run")
		}
		if !c.InSuite {
			notes = append(notes, "not in this suite")
		}
		note := ""
		if len(notes) > 0 {
			note = " [" + strings.Join(notes, ", ") + "]"
		}
		fmt.Fprintf(stdout, "  %s%s: %s\n", c.Key, note, firstLine(c.Error, 300))
	}
	noun := "cells"
	if len(sum.FailedCells) == 1 {
		noun = "cell"
	}
	return fmt.Errorf("run: %d %s of %s failed (listed above; the full errors are in %s; --retry-failed reruns them)",
		len(sum.FailedCells), noun, dir, filepath.Join(dir, results.FileName))
}

// firstLine is the first line of s, cut to at most n bytes.
func firstLine(s string, n int) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " ..."
	}
	if len(s) > n {
		cut := n - 3
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	if s == "" {
		s = "(no reason recorded)"
	}
	return s
}

func cmdList(stdout, stderr io.Writer, args []string) error {
	fs := newFlags("list", "list", stderr)
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "Policies:")
	for _, n := range policies.Names() {
		s, _ := policies.Lookup(n)
		fmt.Fprintf(stdout, "  %-13s %s\n", n, s.Doc)
		for _, p := range s.Params {
			def := p.Default
			if def == "" {
				def = "required"
			}
			fmt.Fprintf(stdout, "      %-14s %-9s %s\n", p.Name, def, p.Doc)
		}
	}
	fmt.Fprintln(stdout, "\nTasks:")
	for _, n := range tasks.Names() {
		t, _ := tasks.Lookup(n)
		var ms []string
		for _, m := range t.Metrics() {
			ms = append(ms, m.Name)
		}
		fmt.Fprintf(stdout, "  %-13s version %d, metrics: %s\n", n, t.Version(), strings.Join(ms, ", "))
		ps := t.Params()
		sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
		for _, p := range ps {
			def := p.Default
			if def == "" {
				def = "required"
			}
			fmt.Fprintf(stdout, "      %-14s %-9s %s\n", p.Name, def, p.Doc)
		}
	}
	fmt.Fprintln(stdout, "\nBackends:")
	for _, name := range []string{"cpu", "cuda"} {
		spec, err := runtime.LookupBackend(name)
		switch {
		case err != nil:
			fmt.Fprintf(stdout, "  %-13s not in this build\n", name)
		default:
			if ok, why := spec.Available(); ok {
				fmt.Fprintf(stdout, "  %-13s usable here\n", name)
			} else {
				fmt.Fprintf(stdout, "  %-13s not usable here: %s\n", name, why)
			}
		}
	}
	auto, reason, _ := bench.SelectBackend("auto")
	if reason == "" {
		reason = "uses " + auto
	}
	fmt.Fprintf(stdout, "  %-13s %s\n", "auto", reason)
	fmt.Fprintf(stdout, "\nModels: a Hugging Face directory, a GGUF file, a llama2.c .bin, or synthetic:%s\n", strings.Join(runtime.SyntheticNames(), ", synthetic:"))
	return nil
}

func cmdReport(stdout, stderr io.Writer, args []string) error {
	fs := newFlags("report", "report DIR", stderr)
	if err := parseFlags(fs, args, 1); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("report: give a results directory")
	}
	dir := fs.Arg(0)
	recs, warn, err := results.LoadWarn(dir)
	if err != nil {
		return err
	}
	for _, w := range warn {
		fmt.Fprintln(stderr, "kvbench:", w)
	}
	if len(recs) == 0 {
		return fmt.Errorf("report: %s holds no records", dir)
	}
	files, err := results.Report(dir, recs)
	if err != nil {
		return err
	}
	for _, w := range files.Warnings {
		fmt.Fprintln(stderr, "kvbench: report:", w)
	}
	fmt.Fprintf(stdout, "report: %s, %d tables, %d plots; open %s\n", files.Markdown, len(files.CSV), len(files.Plots), files.HTML)
	return nil
}
