package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"reflect"
	"runtime/debug"
	"strings"
	"syscall"

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

// notifySignals delivers SIGINT and SIGTERM, which stop tail and stat
// --watch, until stop is called. Tests replace it to send their own.
var notifySignals = func() (sigs <-chan os.Signal, stop func()) {
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	return ch, func() { signal.Stop(ch) }
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
	{"tail", "print events as they arrive: JSON lines, pretty JSON or short lines", runTail},
	{"stat", "show the state of every CPU's ring, once or --watch", runStat},
	{"bench", "measure emit, batch emit and drain throughput", runBench},
	{"query", "print the events kmesd stored, as tail prints them", runQuery},
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
	fmt.Fprint(w, "\nRun 'kmesctl COMMAND --help' for a command's flags, 'kmesctl --version'\nfor the version. Flags may come before or after a command's arguments.\n")
}

// version is the module version kmesctl was built as, or for a build from
// a source tree the commit it was built from ("+dirty" with local changes).
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown (no build information)"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision":
			rev = s.Value
		case s.Key == "vcs.modified" && s.Value == "true":
			dirty = "+dirty"
		}
	}
	if rev == "" {
		return "(devel)"
	}
	return "(devel) commit " + rev[:min(len(rev), 12)] + dirty
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
	case "-version", "--version", "version":
		fmt.Fprintf(stdout, "kmesctl %s\n", version())
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

// parseFlags parses args, flags before, between or after the positional
// arguments (kmesctl emit app.x --raw), which it returns; after "--"
// everything is positional. For -h or --help it prints usage and the
// flags, as they are typed, to stdout and returns help = true; a bad flag
// is a *usageError of one line.
func parseFlags(fs *flag.FlagSet, args []string, usage string, stdout io.Writer) (pos []string, help bool, err error) {
	for {
		err = fs.Parse(args)
		if err != nil {
			break
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		// The flag package stops at the first positional argument, or
		// after a "--" it consumed.
		if len(rest) < len(args) && args[len(args)-len(rest)-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage)
		printFlags(stdout, fs)
		return nil, true, nil
	}
	if err != nil {
		return nil, false, usagef("%s: %v: run '%s --help'", fs.Name(), err, fs.Name())
	}
	return pos, false, nil
}

// printFlags lists fs's flags as they are typed: -x for a one-letter
// name, --name for a longer one, aliases of one variable on one line
// (-o, --output MODE), then what the flag does and its default.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	var lines [][]*flag.Flag
	index := map[any]int{} // a flag's variable: its line
	fs.VisitAll(func(f *flag.Flag) {
		key := any(f)
		if v := reflect.ValueOf(f.Value); v.Kind() == reflect.Pointer {
			key = v.Pointer()
		}
		if i, ok := index[key]; ok {
			lines[i] = append(lines[i], f)
			return
		}
		index[key] = len(lines)
		lines = append(lines, []*flag.Flag{f})
	})
	if len(lines) > 0 {
		fmt.Fprint(w, "\nFlags:\n")
	}
	for _, fl := range lines {
		// The shortest name first: VisitAll sorts -o before --output.
		f := fl[0]
		names := make([]string, len(fl))
		for i, a := range fl {
			names[i] = flagName(a.Name)
		}
		name, usage := flag.UnquoteUsage(f)
		line := "  " + strings.Join(names, ", ")
		if name != "" {
			line += " " + name
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	}
}

// flagName is a flag as it is typed: -o, --output.
func flagName(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}
