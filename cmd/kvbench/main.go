// Command kvbench benchmarks and evaluates KV-cache policies of long-context
// LLM inference. Run "kvbench help" for the commands.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
)

func main() {
	if v := os.Getenv("KVBENCH_CUDA_FAKE"); v != "" && v != "0" && v != "off" {
		fmt.Fprintln(os.Stderr, "kvbench: KVBENCH_CUDA_FAKE is set: the CUDA device is a fake that computes nothing; timings are the host's share alone and every other number is meaningless")
	}
	stop := startProfile()
	err := run(os.Stdout, os.Stderr, os.Args[1:])
	stop()
	// With KVBENCH_PHASES, the passes no command printed (a suite's prompts
	// and decode steps, say): the host's time in each part of a pass.
	runtime.WritePhases(os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	var ex exitError
	if errors.As(err, &ex) {
		os.Exit(int(ex))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kvbench:", err)
		os.Exit(1)
	}
}

// exitError ends the program with its status and no message.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// command is one subcommand of the CLI.
type command struct {
	summary string
	run     func(stdout, stderr io.Writer, args []string) error
}

var commands = map[string]command{}

func register(name, summary string, fn func(stdout, stderr io.Writer, args []string) error) {
	commands[name] = command{summary, fn}
}

// run executes the command line args (without the program name).
func run(stdout, stderr io.Writer, args []string) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		usage(stderr)
		if len(args) == 0 {
			return exitError(2)
		}
		return nil
	}
	if args[0] == "--version" || args[0] == "-version" {
		args = append([]string{"version"}, args[1:]...)
	}
	cmd, ok := commands[args[0]]
	if !ok {
		names := make([]string, 0, len(commands))
		for n := range commands {
			names = append(names, n)
		}
		msg := fmt.Sprintf("unknown command %q", args[0])
		// A near name that starts alike (or a long word off by a few letters).
		typed := strings.TrimLeft(args[0], "-")
		if c := policies.Closest(typed, names); c != "" && typed != "" && (c[0] == typed[0] || len(typed) >= 6) {
			msg += fmt.Sprintf("; did you mean %s?", c)
		}
		return fmt.Errorf("%s (kvbench help lists the commands)", msg)
	}
	return cmd.run(stdout, stderr, args[1:])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "kvbench: benchmark and evaluate KV-cache policies of long-context LLM inference")
	fmt.Fprintln(w, "\nUsage: kvbench COMMAND [flags]   (kvbench COMMAND --help for its flags)")
	fmt.Fprintln(w, "\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
}

// newFlags returns a flag set that returns errors instead of exiting; its
// usage (--help) goes to stderr.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kvbench %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and rejects positional arguments beyond want. A
// bad flag is an error that main prints once, without the usage (which
// --help prints).
func parseFlags(fs *flag.FlagSet, args []string, want int) error {
	out, usage := fs.Output(), fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.SetOutput(out)
	fs.Usage = usage
	if errors.Is(err, flag.ErrHelp) {
		fs.Usage()
		return err
	}
	if err != nil {
		return fmt.Errorf("%s: %v (kvbench %s --help lists the flags)", fs.Name(), err, fs.Name())
	}
	if fs.NArg() > want {
		return fmt.Errorf("%s: unexpected arguments: %s", fs.Name(), strings.Join(fs.Args()[want:], " "))
	}
	return nil
}
