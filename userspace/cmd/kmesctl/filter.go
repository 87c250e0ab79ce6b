package main

import (
	"errors"
	"flag"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kmes-project/kmes/userspace/kmes"
)

// filter selects the events tail prints; an empty list matches anything.
type filter struct {
	types  []string // globs (path.Match); an event matches any
	origin int      // -1: any
	cpuSet []int    // sorted, once each; nil: every CPU
	// since and until bound the event timestamp in ns, both inclusive:
	// math.MinInt64 and math.MaxInt64 when unbounded. The merged rings
	// are in timestamp order, so the read loop can stop at the first
	// event pastUntil.
	since, until int64
}

func (f *filter) match(r *kmes.Record) bool {
	if f.origin >= 0 && int(r.Origin) != f.origin {
		return false
	}
	// Until the read loop attaches only the rings of cpus().
	if !f.wantCPU(r.CPU) {
		return false
	}
	if r.Timestamp < f.since || r.Timestamp > f.until {
		return false
	}
	if len(f.types) == 0 {
		return true
	}
	for _, g := range f.types {
		// The globs were checked when parsed: no error here.
		if ok, _ := path.Match(g, r.Type); ok {
			return true
		}
	}
	return false
}

// cpus returns the CPUs whose rings to read, in order; nil means all.
func (f *filter) cpus() []int { return f.cpuSet }

// wantCPU reports whether cpu's events (and losses) are wanted.
func (f *filter) wantCPU(cpu int) bool {
	_, ok := slices.BinarySearch(f.cpuSet, cpu)
	return f.cpuSet == nil || ok
}

// pastUntil reports whether r is later than --until.
func (f *filter) pastUntil(r *kmes.Record) bool {
	return r.Timestamp > f.until
}

// listFlag is a flag that may be given several times, each value kept.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// optionalFlag is a string flag that knows whether it was given, so that
// --since "" is an error rather than no bound.
type optionalFlag struct {
	s   string
	set bool
}

func (o *optionalFlag) String() string     { return o.s }
func (o *optionalFlag) Set(s string) error { o.s, o.set = s, true; return nil }

// filterFlags are tail's and query's filter flags as typed; parse checks
// them.
type filterFlags struct {
	cmd          string // the command, for errors; "" is tail
	types, cpus  listFlag
	origin       int
	since, until optionalFlag
}

// command is the command the flags are of, for errors.
func (ff *filterFlags) command() string {
	if ff.cmd == "" {
		return "tail"
	}
	return ff.cmd
}

func (ff *filterFlags) define(fs *flag.FlagSet) {
	fs.Var(&ff.types, "type", "print only events whose type matches `GLOB` (*, ?, [a-z], \\ as in Go's path.Match);\nrepeat it for any of several")
	fs.IntVar(&ff.origin, "origin", -1, "print only events of origin class `N` (0 userspace, 1 KMES)")
	fs.Var(&ff.cpus, "cpu", "print only the events of the CPUs in `LIST` (0,2; or repeat it)")
	fs.Var(&ff.since, "since", "print only events at or after `TIME` (see above)")
	fs.Var(&ff.until, "until", "print only events at or before `TIME` (see above); stop at the first after it")
}

// timeForms is what --since and --until accept, for their errors.
const timeForms = `2026-12-05T10:00:00Z (RFC 3339, fraction and zone optional), "2026-12-05 10:00:00", 2026-12-05, now, today, yesterday, tomorrow, or -5m, -1h30m, +10s from now`

// parse checks the flags; relative times count from now.
func (ff *filterFlags) parse(now time.Time) (*filter, error) {
	f := &filter{origin: ff.origin, since: math.MinInt64, until: math.MaxInt64}
	if f.origin > 255 || f.origin < -1 {
		return nil, usagef("kmesctl %s: --origin %d is not an origin class (0..255)", ff.command(), f.origin)
	}
	for _, g := range ff.types {
		if g == "" {
			return nil, usagef("kmesctl %s: --type \"\": empty glob: use '*' for every type", ff.command())
		}
		if _, err := path.Match(g, ""); err != nil {
			return nil, usagef("kmesctl %s: --type %q: malformed glob: use *, ?, [abc], [a-z], [^a], and \\ before one of them to match it as it is", ff.command(), g)
		}
	}
	f.types = ff.types
	for _, list := range ff.cpus {
		for s := range strings.SplitSeq(list, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 0 || n > 65535 {
				return nil, usagef("kmesctl %s: --cpu %q: %q is not a CPU number: give CPUs as 0,2 or repeat --cpu", ff.command(), list, s)
			}
			f.cpuSet = append(f.cpuSet, n)
		}
	}
	slices.Sort(f.cpuSet)
	f.cpuSet = slices.Compact(f.cpuSet)
	if ff.since.set {
		t, err := parseTime(ff.since.s, now)
		if err != nil {
			return nil, usagef("kmesctl %s: --since %q is not a time: use %s", ff.command(), ff.since.s, timeForms)
		}
		f.since = unixNano(t)
	}
	if ff.until.set {
		t, err := parseTime(ff.until.s, now)
		if err != nil {
			return nil, usagef("kmesctl %s: --until %q is not a time: use %s", ff.command(), ff.until.s, timeForms)
		}
		f.until = unixNano(t)
	}
	if f.since > f.until {
		return nil, usagef("kmesctl %s: --since %s is after --until %s: no event can match", ff.command(), ff.since.s, ff.until.s)
	}
	return f, nil
}

// unixNano is t in ns since the epoch, clamped to int64's range: far
// bounds such as 9999-01-01 still order right.
func unixNano(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// parseTime reads a time as journalctl's --since does, in now's zone
// (the local one) unless it names one.
func parseTime(s string, now time.Time) (time.Time, error) {
	day := func(d int) time.Time {
		y, m, dd := now.Date()
		return time.Date(y, m, dd+d, 0, 0, 0, 0, now.Location())
	}
	switch s {
	case "now":
		return now, nil
	case "today":
		return day(0), nil
	case "yesterday":
		return day(-1), nil
	case "tomorrow":
		return day(1), nil
	}
	// A sign tells a relative time from a date (and "5m" from a typo).
	if s != "" && (s[0] == '-' || s[0] == '+') {
		d, err := time.ParseDuration(s)
		if err != nil {
			return time.Time{}, err
		}
		return now.Add(d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	// Fractional seconds are accepted after the seconds of any layout.
	for _, layout := range []string{"2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, now.Location()); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errors.New("not a time")
}
