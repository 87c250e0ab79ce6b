package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/kmes-project/kmes/userspace/kmes"
)

// ringSource gives tail and stat their rings; nil means the kernel's.
// Tests set simulated rings.
var ringSource kmes.RingSource

// attachRings maps every CPU's ring.
func attachRings() ([]*kmes.Ring, error) {
	if ringSource != nil {
		return ringSource.Rings()
	}
	return kmes.Attach()
}

// usageError is a command line kmesctl cannot run: exit status 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// command is one subcommand. Its run function gets the arguments after the
// subcommand's name.
type command struct {
	name    string
	summary string
	run     func(args []string, stdin io.Reader, stdout, stderr io.Writer) error
}

var commands = []command{
	{"emit", "emit one event with a JSON or msgpack payload", runEmit},
	{"tail", "print events as JSON lines as they arrive", runTail},
	{"stat", "show the state of every CPU's ring", runStat},
	{"bench", "measure emit, batch emit and drain throughput", runBench},
}

const topUsage = `Usage: kmesctl COMMAND [FLAGS] [ARGS]

kmesctl emits, reads and inspects KMES events (per-CPU kernel event rings).

Commands:
`

func printTopUsage(w io.Writer) {
	fmt.Fprint(w, topUsage)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-6s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\nRun 'kmesctl COMMAND --help' for a command's flags.\n")
}

// run is kmesctl with its arguments (without the program name). Its error
// is the one line to print; a *usageError means exit status 2.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("kmesctl: no command: run 'kmesctl --help'")
	}
	switch name := args[0]; name {
	case "-h", "-help", "--help", "help":
		printTopUsage(stdout)
		return nil
	default:
		for _, c := range commands {
			if c.name == name {
				return c.run(args[1:], stdin, stdout, stderr)
			}
		}
		if strings.HasPrefix(name, "-") {
			return usagef("kmesctl: unknown flag %q: run 'kmesctl --help'", name)
		}
		return usagef("kmesctl: unknown command %q: run 'kmesctl --help'", name)
	}
}

// newFlagSet returns the flag set of a subcommand whose usage is the
// synopsis line and a description. Parse errors are reported by
// parseFlags, so the set itself prints nothing.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("kmesctl "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses args. For -h or --help it prints usage and the flags
// to stdout and returns help = true; a bad flag is a *usageError of one
// line.
func parseFlags(fs *flag.FlagSet, args []string, usage string, stdout io.Writer) (help bool, err error) {
	err = fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage)
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprint(stdout, "\nFlags:\n")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			fs.SetOutput(io.Discard)
		}
		return true, nil
	}
	if err != nil {
		return false, usagef("%s: %v: run '%s --help'", fs.Name(), err, fs.Name())
	}
	return false, nil
}
