package main

import (
	"flag"
	"io"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kmes-project/kmes/userspace/kmes"
)

// parseFilter parses tail's filter flags in args, relative times from
// now.
func parseFilter(args []string, now time.Time) (*filter, error) {
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var ff filterFlags
	ff.define(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return ff.parse(now)
}

// testNow is a Saturday morning an hour east of UTC, the zone that
// stands for the local one.
var testNow = time.Date(2026, 12, 5, 10, 30, 15, 500, time.FixedZone("CET", 3600))

func TestFilterTypes(t *testing.T) {
	for _, c := range []struct {
		globs []string
		typ   string
		want  bool
	}{
		{nil, "anything", true},
		{[]string{"a.b"}, "a.b", true},
		{[]string{"a.b"}, "a.bc", false},
		{[]string{"app.*"}, "app.login", true},
		{[]string{"app.*"}, "app.", true},
		{[]string{"app.*"}, "app", false},
		{[]string{"app.*"}, "xapp.login", false},
		{[]string{"kmes.sys?tl"}, "kmes.sysctl", true},
		{[]string{"kmes.sys?tl"}, "kmes.systl", false},
		{[]string{"[ab].x"}, "a.x", true},
		{[]string{"[ab].x"}, "b.x", true},
		{[]string{"[ab].x"}, "c.x", false},
		{[]string{"[^ab].x"}, "c.x", true},
		{[]string{"[a-c].x"}, "c.x", true},
		{[]string{`\*`}, "*", true},
		{[]string{`\*`}, "a", false},
		{[]string{"*"}, "a/b", false}, // path.Match: * stops at /
		{[]string{"*/*"}, "a/b", true},
		{[]string{"a.*", "b.*"}, "b.y", true},
		{[]string{"a.*", "b.*"}, "c.y", false},
	} {
		var args []string
		for _, g := range c.globs {
			args = append(args, "--type", g)
		}
		f, err := parseFilter(args, testNow)
		if err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		if got := f.match(&kmes.Record{Type: c.typ}); got != c.want {
			t.Errorf("--type %q, type %q: %v, want %v", c.globs, c.typ, got, c.want)
		}
	}
}

func TestFilterCPUsAndOrigin(t *testing.T) {
	for _, c := range []struct {
		args []string
		cpus []int
	}{
		{nil, nil},
		{[]string{"--cpu", "1"}, []int{1}},
		{[]string{"--cpu", "0,2"}, []int{0, 2}},
		{[]string{"--cpu", "2", "--cpu", "0"}, []int{0, 2}},
		{[]string{"--cpu", "3,1,3", "--cpu=1"}, []int{1, 3}},
		{[]string{"--cpu", "0, 2"}, []int{0, 2}},
	} {
		f, err := parseFilter(c.args, testNow)
		if err != nil {
			t.Fatalf("%q: %v", c.args, err)
		}
		if !slices.Equal(f.cpus(), c.cpus) || (c.cpus == nil) != (f.cpus() == nil) {
			t.Errorf("%q: cpus() = %v, want %v", c.args, f.cpus(), c.cpus)
		}
		for cpu := range 4 {
			want := c.cpus == nil || slices.Contains(c.cpus, cpu)
			if got := f.match(&kmes.Record{CPU: cpu}); got != want {
				t.Errorf("%q: cpu %d matches: %v", c.args, cpu, got)
			}
		}
	}
	f, err := parseFilter([]string{"--origin", "1", "--cpu", "2", "--type", "a.*"}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		r    kmes.Record
		want bool
	}{
		{kmes.Record{CPU: 2, Origin: 1, Type: "a.b"}, true},
		{kmes.Record{CPU: 2, Origin: 0, Type: "a.b"}, false},
		{kmes.Record{CPU: 3, Origin: 1, Type: "a.b"}, false},
		{kmes.Record{CPU: 2, Origin: 1, Type: "b.a"}, false},
	} {
		if got := f.match(&c.r); got != c.want {
			t.Errorf("match(%+v) = %v", c.r, got)
		}
	}
}

func TestParseTime(t *testing.T) {
	local := testNow.Location()
	for _, c := range []struct {
		in   string
		want time.Time
	}{
		{"2026-12-05T10:00:00Z", time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)},
		{"2026-12-05T10:00:00.5Z", time.Date(2026, 12, 5, 10, 0, 0, 5e8, time.UTC)},
		{"2026-12-05T10:00:00.123456789+02:00", time.Date(2026, 12, 5, 8, 0, 0, 123456789, time.UTC)},
		{"2026-12-05T10:00:00-05:30", time.Date(2026, 12, 5, 15, 30, 0, 0, time.UTC)},
		{"2026-12-05T10:00:00", time.Date(2026, 12, 5, 10, 0, 0, 0, local)},
		{"2026-12-05T10:00:00.25", time.Date(2026, 12, 5, 10, 0, 0, 25e7, local)},
		{"2026-12-05 10:00:00", time.Date(2026, 12, 5, 10, 0, 0, 0, local)},
		{"2026-12-05 10:00:00.123456", time.Date(2026, 12, 5, 10, 0, 0, 123456000, local)}, // as -o short prints it
		{"2026-12-05", time.Date(2026, 12, 5, 0, 0, 0, 0, local)},
		{"2024-02-29", time.Date(2024, 2, 29, 0, 0, 0, 0, local)},
		{"now", testNow},
		{"today", time.Date(2026, 12, 5, 0, 0, 0, 0, local)},
		{"yesterday", time.Date(2026, 12, 4, 0, 0, 0, 0, local)},
		{"tomorrow", time.Date(2026, 12, 6, 0, 0, 0, 0, local)},
		{"-5m", testNow.Add(-5 * time.Minute)},
		{"-1h30m", testNow.Add(-90 * time.Minute)},
		{"+10s", testNow.Add(10 * time.Second)},
		{"-1.5h", testNow.Add(-90 * time.Minute)},
		{"-250ms", testNow.Add(-250 * time.Millisecond)},
		{"+0s", testNow},
	} {
		got, err := parseTime(c.in, testNow)
		if err != nil || !got.Equal(c.want) {
			t.Errorf("%q: %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	// Midnight of the first of a month, yesterday.
	first := time.Date(2026, 3, 1, 8, 0, 0, 0, local)
	if got, _ := parseTime("yesterday", first); !got.Equal(time.Date(2026, 2, 28, 0, 0, 0, 0, local)) {
		t.Errorf("yesterday on 2026-03-01: %v", got)
	}
}

func TestFilterTimeBounds(t *testing.T) {
	f, err := parseFilter([]string{"--since", "2026-12-05T10:00:00Z", "--until", "2026-12-05T10:00:01Z"}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	since := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC).UnixNano()
	for _, c := range []struct {
		ts        int64
		want, end bool
	}{
		{since - 1, false, false},
		{since, true, false}, // inclusive
		{since + 5e8, true, false},
		{since + 1e9, true, false}, // inclusive
		{since + 1e9 + 1, false, true},
	} {
		r := &kmes.Record{Timestamp: c.ts}
		if got, end := f.match(r), f.pastUntil(r); got != c.want || end != c.end {
			t.Errorf("ts %d: match %v, pastUntil %v; want %v, %v", c.ts, got, end, c.want, c.end)
		}
	}
	// Bounds beyond int64 nanoseconds still order right; no bound is
	// the whole range.
	for _, c := range []struct {
		args         []string
		since, until int64
	}{
		{nil, math.MinInt64, math.MaxInt64},
		{[]string{"--since", "1000-01-01", "--until", "9999-12-31"}, math.MinInt64, math.MaxInt64},
		{[]string{"--since", "1970-01-01T00:00:00Z", "--until", "1970-01-01T00:00:00Z"}, 0, 0},
	} {
		f, err := parseFilter(c.args, testNow)
		if err != nil || f.since != c.since || f.until != c.until {
			t.Errorf("%q: %v, since %d until %d; want %d, %d", c.args, err, f.since, f.until, c.since, c.until)
		}
	}
}

func TestFilterErrors(t *testing.T) {
	forms := ": use " + timeForms
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--type", "["}, `kmesctl tail: --type "[": malformed glob: use *, ?, [abc], [a-z], [^a], and \ before one of them to match it as it is`},
		{[]string{"--type", "a.*", "--type", "app.[x"}, `kmesctl tail: --type "app.[x": malformed glob`},
		{[]string{"--type", `x\`}, `kmesctl tail: --type "x\\": malformed glob`},
		{[]string{"--type", "[]a]"}, `kmesctl tail: --type "[]a]": malformed glob`},
		{[]string{"--type", "[a-"}, `kmesctl tail: --type "[a-": malformed glob`},
		{[]string{"--type", ""}, `kmesctl tail: --type "": empty glob: use '*' for every type`},
		{[]string{"--cpu", "-1"}, `kmesctl tail: --cpu "-1": "-1" is not a CPU number: give CPUs as 0,2 or repeat --cpu`},
		{[]string{"--cpu", "x"}, `kmesctl tail: --cpu "x": "x" is not a CPU number`},
		{[]string{"--cpu", "0,,2"}, `kmesctl tail: --cpu "0,,2": "" is not a CPU number`},
		{[]string{"--cpu", ""}, `kmesctl tail: --cpu "": "" is not a CPU number`},
		{[]string{"--cpu", "1-3"}, `kmesctl tail: --cpu "1-3": "1-3" is not a CPU number`},
		{[]string{"--cpu", "0", "--cpu", "65536"}, `kmesctl tail: --cpu "65536": "65536" is not a CPU number`},
		{[]string{"--origin", "256"}, "kmesctl tail: --origin 256 is not an origin class (0..255)"},
		{[]string{"--origin", "-2"}, "kmesctl tail: --origin -2 is not an origin class (0..255)"},
		{[]string{"--since", "5m"}, `kmesctl tail: --since "5m" is not a time` + forms},
		{[]string{"--since", "-5x"}, `kmesctl tail: --since "-5x" is not a time` + forms},
		{[]string{"--since", "-"}, `kmesctl tail: --since "-" is not a time` + forms},
		{[]string{"--since", ""}, `kmesctl tail: --since "" is not a time` + forms},
		{[]string{"--since", "soon"}, `kmesctl tail: --since "soon" is not a time` + forms},
		{[]string{"--since", "Now"}, `kmesctl tail: --since "Now" is not a time` + forms},
		{[]string{"--until", "2026-13-01"}, `kmesctl tail: --until "2026-13-01" is not a time` + forms},
		{[]string{"--until", "2026-02-30"}, `kmesctl tail: --until "2026-02-30" is not a time` + forms},
		{[]string{"--until", "2026-12-05 25:00:00"}, `kmesctl tail: --until "2026-12-05 25:00:00" is not a time` + forms},
		{[]string{"--until", "2026-12-05 10:00"}, `kmesctl tail: --until "2026-12-05 10:00" is not a time` + forms},
		{[]string{"--until", "12/05/2026"}, `kmesctl tail: --until "12/05/2026" is not a time` + forms},
		{[]string{"--until", "2026-12-05T10:00:00 CET"}, `kmesctl tail: --until "2026-12-05T10:00:00 CET" is not a time` + forms},
		{[]string{"--since", "today", "--until", "yesterday"}, "kmesctl tail: --since today is after --until yesterday: no event can match"},
		{[]string{"--since", "+1s", "--until", "now"}, "kmesctl tail: --since +1s is after --until now: no event can match"},
	} {
		_, err := parseFilter(c.args, testNow)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) || exitCode(err) != 2 {
			t.Errorf("%q: %v (exit %d)\nwant %s", c.args, err, exitCode(err), c.want)
		}
	}
	// What the error lists is what parseTime takes.
	for _, form := range []string{"2026-12-05T10:00:00Z", "2026-12-05 10:00:00", "2026-12-05", "now", "today", "yesterday", "tomorrow", "-5m", "-1h30m", "+10s"} {
		if !strings.Contains(timeForms, form) {
			t.Errorf("timeForms does not list %s", form)
		}
		if _, err := parseTime(form, testNow); err != nil {
			t.Errorf("%s: %v", form, err)
		}
	}
}
