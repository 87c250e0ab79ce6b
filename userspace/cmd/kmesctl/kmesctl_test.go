package main

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
)

// runArgs runs kmesctl with args and empty standard input.
func runArgs(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	err = run(args, strings.NewReader(stdin), &o, &e)
	return o.String(), e.String(), err
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		out, _, err := runArgs(t, "", args...)
		if err != nil || !strings.HasPrefix(out, "Usage: kmesctl COMMAND") {
			t.Errorf("kmesctl %v: %v, output %q", args, err, out)
		}
		for _, c := range commands {
			if !strings.Contains(out, "  "+c.name+" ") {
				t.Errorf("kmesctl %v does not list %s", args, c.name)
			}
		}
	}
	for _, c := range commands {
		for _, h := range []string{"--help", "-h"} {
			out, errOut, err := runArgs(t, "", c.name, h)
			if err != nil || errOut != "" {
				t.Errorf("kmesctl %s %s: %v, stderr %q", c.name, h, err, errOut)
			}
			if !strings.HasPrefix(out, "Usage: kmesctl "+c.name) {
				t.Errorf("kmesctl %s %s: usage %q", c.name, h, out)
			}
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "kmesctl: no command: run 'kmesctl --help'"},
		{[]string{"x"}, `kmesctl: unknown command "x": run 'kmesctl --help'`},
		{[]string{"--bogus"}, `kmesctl: unknown flag "--bogus": run 'kmesctl --help'`},
		{[]string{"emit"}, "kmesctl emit: no event type: run 'kmesctl emit --help'"},
		{[]string{"emit", "t", "1", "2"}, "kmesctl emit: too many arguments: run 'kmesctl emit --help'"},
		{[]string{"emit", "--raw", "t", "1"}, "kmesctl emit: --raw reads the payload from standard input, not from an argument"},
		{[]string{"emit", "--bogus", "t"}, "kmesctl emit: flag provided but not defined: -bogus: run 'kmesctl emit --help'"},
		{[]string{"emit", "t", `{"a":`}, "kmesctl emit: payload is not JSON: unexpected end of JSON input"},
		{[]string{"emit", "t", `[1,]`}, "kmesctl emit: payload is not JSON: invalid character ']' looking for beginning of value"},
		{[]string{"emit", "t", `1 2`}, "kmesctl emit: payload is not JSON: more than one JSON value"},
		{[]string{"emit", "t"}, "kmesctl emit: payload is not JSON: no JSON value"},
		{[]string{"emit", "t", "1e999"}, "kmesctl emit: payload is not JSON: number 1e999 is out of range"},
		{[]string{"tail", "--count", "x"}, `kmesctl tail: invalid value "x" for flag -count: parse error: run 'kmesctl tail --help'`},
		{[]string{"tail", "--origin", "256"}, "kmesctl tail: --origin 256 is not an origin class (0..255)"},
		{[]string{"tail", "--cpu", "-2"}, `kmesctl tail: --cpu "-2": "-2" is not a CPU number: give CPUs as 0,2 or repeat --cpu`},
		{[]string{"tail", "-o", "xml"}, "kmesctl tail: -o xml: unknown output mode (json, json-pretty, short)"},
		{[]string{"tail", "--output=yaml"}, "kmesctl tail: -o yaml: unknown output mode (json, json-pretty, short)"},
		{[]string{"tail", "--type", "a.[b"}, `kmesctl tail: --type "a.[b": malformed glob: use *, ?, [abc], [a-z], [^a], and \ before one of them to match it as it is`},
		{[]string{"tail", "--since", "soon"}, `kmesctl tail: --since "soon" is not a time: use ` + timeForms},
		{[]string{"tail", "--until", "-5m", "--since", "now"}, "kmesctl tail: --since now is after --until -5m: no event can match"},
		{[]string{"stat", "--interval", "2s"}, "kmesctl stat: --interval needs --watch"},
		{[]string{"stat", "--watch", "--interval", "0s"}, "kmesctl stat: --interval 0s: must be positive, e.g. 500ms or 2s"},
		{[]string{"stat", "--watch", "--interval", "-1s"}, "kmesctl stat: --interval -1s: must be positive, e.g. 500ms or 2s"},
		{[]string{"stat", "--watch", "--interval", "1"}, `kmesctl stat: invalid value "1" for flag -interval: parse error: run 'kmesctl stat --help'`},
		{[]string{"tail", "now"}, `kmesctl tail: unexpected argument "now": run 'kmesctl tail --help'`},
		{[]string{"stat", "--yaml"}, "kmesctl stat: flag provided but not defined: -yaml: run 'kmesctl stat --help'"},
		{[]string{"bench", "--batch", "257"}, "kmesctl bench: --batch must be 1..256"},
		{[]string{"bench", "--events", "0"}, "kmesctl bench: --events must be at least 1"},
		{[]string{"bench", "--size", "0"}, "kmesctl bench: --size must be at least 1"},
	} {
		out, errOut, err := runArgs(t, "", c.args...)
		if err == nil || err.Error() != c.want {
			t.Errorf("kmesctl %q: %v\nwant %s", c.args, err, c.want)
		}
		if code := exitCode(err); code != 2 {
			t.Errorf("kmesctl %q: exit status %d, want 2", c.args, code)
		}
		if out != "" || errOut != "" {
			t.Errorf("kmesctl %q wrote %q, %q; the error is its only output", c.args, out, errOut)
		}
	}
}

func TestExitCode(t *testing.T) {
	if c := exitCode(nil); c != 0 {
		t.Errorf("exitCode(nil) = %d", c)
	}
	if c := exitCode(errors.New("x")); c != 1 {
		t.Errorf("exitCode(runtime error) = %d", c)
	}
	if c := exitCode(usagef("x")); c != 2 {
		t.Errorf("exitCode(usage error) = %d", c)
	}
}

func skipWithKMES(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/proc/sys/kernel/kmes"); err == nil {
		t.Skip("the kernel has KMES; this test needs one without it")
	}
}

func TestEmitRuntimeErrors(t *testing.T) {
	skipWithKMES(t)
	for _, c := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"", []string{"emit", "t", `{"a":[1,2.5,"x",null,true]}`},
			"kmesctl emit: kmes_emit: function not implemented (the kernel lacks KMES: "},
		{`{"from":"stdin"}`, []string{"emit", "t"},
			"kmesctl emit: kmes_emit: function not implemented (the kernel lacks KMES: "},
		{"\xc0", []string{"emit", "--raw", "t"},
			"kmesctl emit: kmes_emit: function not implemented (the kernel lacks KMES: "},
		{"\xc1", []string{"emit", "--raw", "t"},
			"kmesctl emit: kmes_emit: invalid argument (invalid payload: msgpack: never used type byte 0xc1 at offset 0)"},
		{"", []string{"emit", "", "1"},
			"kmesctl emit: kmes_emit: invalid argument (invalid event type: empty)"},
	} {
		_, _, err := runArgs(t, c.stdin, c.args...)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("kmesctl %q: %v\nwant %s", c.args, err, c.want)
		}
		if code := exitCode(err); code != 1 {
			t.Errorf("kmesctl %q: exit status %d, want 1", c.args, code)
		}
	}
	for _, cmd := range []string{"tail", "stat", "bench"} {
		_, _, err := runArgs(t, "", cmd)
		want := "kmesctl " + cmd + ": kmes_attach: function not implemented (the kernel lacks KMES: "
		if err == nil || !strings.HasPrefix(err.Error(), want) || exitCode(err) != 1 {
			t.Errorf("kmesctl %s: %v (exit %d), want %s...", cmd, err, exitCode(err), want)
		}
	}
}

// Flags may follow a command's arguments, and --help lists them as they
// are typed.
func TestFlagsAfterArguments(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"emit", "t", "--raw", "1"}, "kmesctl emit: --raw reads the payload from standard input, not from an argument"},
		{[]string{"emit", "t", "1", "--raw"}, "kmesctl emit: --raw reads the payload from standard input, not from an argument"},
		{[]string{"emit", "t", "1", "--bogus"}, "kmesctl emit: flag provided but not defined: -bogus: run 'kmesctl emit --help'"},
		{[]string{"emit", "--", "t", "1", "--raw"}, "kmesctl emit: too many arguments: run 'kmesctl emit --help'"},
		{[]string{"stat", "x", "--json"}, `kmesctl stat: unexpected argument "x": run 'kmesctl stat --help'`},
		{[]string{"tail", "--count", "1", "x"}, `kmesctl tail: unexpected argument "x": run 'kmesctl tail --help'`},
	} {
		_, _, err := runArgs(t, "", c.args...)
		if err == nil || err.Error() != c.want {
			t.Errorf("kmesctl %q: %v, want %q", c.args, err, c.want)
		}
	}
	out, _, err := runArgs(t, "", "tail", "--help")
	if err != nil || !strings.Contains(out, "\n  --type GLOB\n") || !strings.Contains(out, "\n  -o, --output MODE\n") || strings.Contains(out, "\n  -type") {
		t.Errorf("kmesctl tail --help: %v, flags not listed as typed:\n%s", err, out)
	}
}

func TestVersion(t *testing.T) {
	out, _, err := runArgs(t, "", "--version")
	if err != nil || !strings.HasPrefix(out, "kmesctl ") || strings.Count(out, "\n") != 1 {
		t.Errorf("kmesctl --version: %v, %q", err, out)
	}
}

// syncBuffer is a bytes.Buffer that tail's goroutines and the test may
// share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
