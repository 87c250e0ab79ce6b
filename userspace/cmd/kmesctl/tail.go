package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kmes-project/kmes/userspace/kmes"
)

const tailUsage = `Usage: kmesctl tail [-f] [-n N|all] [-o MODE] [--type GLOB]... [--cpu LIST]
                    [--origin N] [--since TIME] [--until TIME] [--count N]

Print the last N (default 10) KMES events the rings hold, in timestamp
order across CPUs, and exit; with -f, go on printing new events as they
come until interrupted (kmes_attach, which needs CAP_AUDIT_READ). The
events present are those stamped before tail started; -n all prints
every one of them, -n 0 none (with -f: only new events, read from the
end of the rings). Output is buffered and written out whenever the rings
run dry. --cpu attaches only those CPUs' rings.
-o json (the default) prints
one JSON object a line:

  {"cpu":0,"seq":1,"ts":"2026-01-02T15:04:05.000000000Z","ts_ns":"1767366245000000000","origin":0,"type":"T","payload":...}

ts is the timestamp in UTC (RFC 3339, nine digits of nanoseconds); ts_ns
is the same as nanoseconds since the epoch, in a string: as a JSON number
it would lose digits in jq or JavaScript. payload is the msgpack payload
as JSON: maps in their order, bin in base64, an ext as "ext(TYPE,BASE64)",
a map key that is not a string as its text (1, true, <nil>, [1 2]), NaN
and infinities as "NaN", "+Inf" and "-Inf", bytes of a str that are not
UTF-8 as U+FFFD. A payload that is not exactly one msgpack value (empty,
truncated, nested deeper than 1000, or with bytes after it) has no
payload field but "payload_error" (what is wrong, at which byte offset)
and "payload_base64" (its bytes). Events of a CPU that were lost
(overwritten before they were read) or dropped (before the ring) are an
object of their own, with no "type", before the CPU's next event:

  {"cpu":1,"lost":0,"dropped":2}

-o json-pretty prints the same objects indented by two spaces, one after
the other. -o short prints a line per event for people: local time to
the microsecond, CPU, sequence number, type (quoted as in Go when it is
not one word of printable characters), then the payload as compact JSON,
"<payload error: WHY>" for one that is not msgpack, nothing for none:

  2026-01-02 16:04:05.000000 cpu 0 seq 1 app.login {"user":"ada"}

and reports losses on standard error:

  kmesctl tail: cpu 1: lost 0 events (overwritten), dropped 2 (before the ring)

--type, --cpu, --origin, --since and --until select events; --type and
--cpu may be repeated, and an event matches any of their values. TIME is
2026-12-05T10:00:00Z (RFC 3339, fraction and zone optional, local time
without a zone), "2026-12-05 10:00:00" (local time, as -o short prints
it), 2026-12-05 (local midnight), now, today, yesterday, tomorrow, or a
time relative to now: -5m, -1h30m, +10s. Both bounds are inclusive; tail
stops at the first event after --until.

SIGINT or SIGTERM stops it after writing out what it has; a second one
while it stops makes it exit at once, with status 1.
`

// tsFormat is RFC 3339 with always nine digits of nanoseconds.
const tsFormat = "2006-01-02T15:04:05.000000000Z07:00"

// appendRecord appends r as tail's JSON line, newline included.
func appendRecord(dst []byte, r *kmes.Record) []byte {
	dst = append(dst, `{"cpu":`...)
	dst = strconv.AppendInt(dst, int64(r.CPU), 10)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, r.Sequence, 10)
	dst = append(dst, `,"ts":"`...)
	dst = time.Unix(0, r.Timestamp).UTC().AppendFormat(dst, tsFormat)
	dst = append(dst, `","ts_ns":"`...)
	dst = strconv.AppendInt(dst, r.Timestamp, 10)
	dst = append(dst, `","origin":`...)
	dst = strconv.AppendUint(dst, uint64(r.Origin), 10)
	dst = append(dst, `,"type":`...)
	dst = appendJSONString(dst, r.Type)
	dst = appendPayloadField(dst, r.Payload)
	return append(dst, "}\n"...)
}

// appendPayloadField appends the payload's fields of an event's JSON
// object, comma first: "payload" with the msgpack payload as JSON, or, for
// a payload that is not one msgpack value, "payload_error" (why, with the
// byte offset) and "payload_base64" (its bytes); nothing for an empty
// payload. A payload's own map keys are inside "payload", so they never
// meet these.
func appendPayloadField(dst []byte, payload []byte) []byte {
	// Kernel emitters may send no payload (KMES.md): no field, no error.
	if len(payload) == 0 {
		return dst
	}
	dst = append(dst, `,"payload":`...)
	out, err := appendPayloadJSON(dst, payload)
	if err == nil {
		return out
	}
	dst = dst[:len(dst)-len(`,"payload":`)]
	dst = append(dst, `,"payload_error":`...)
	dst = appendJSONString(dst, err.Error())
	dst = append(dst, `,"payload_base64":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, payload)
	return append(dst, '"')
}

// lockedWriter serialises the writes of the goroutines that share stderr.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// tailConsumer is what tail reads: a *kmes.Consumer, or a test's.
type tailConsumer interface {
	ReadMerged(fn func(*kmes.Record) error) error
	Stats() []kmes.Stats
	Close() error
}

var newTailConsumer = func(opts *kmes.Options) (tailConsumer, error) {
	c, err := kmes.NewConsumer(opts)
	if err != nil {
		return nil, err
	}
	return c, nil
}

var (
	errEnough           = errors.New("enough events")
	errInterruptedTwice = errors.New("kmesctl tail: interrupted twice, stopping without draining")
)

// defaultLines is -n's default, as for tail(1) and journalctl(1).
const defaultLines = 10

// parseLines parses -n: a count, or "all" (-1).
func parseLines(s string) (int, error) {
	if s == "all" {
		return -1, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, usagef("kmesctl tail: -n %q: want a number of events, 0 or more, or \"all\"", s)
	}
	return n, nil
}

// lastEvents keeps the last n events it is given (all for n < 0), with
// the losses before each, also those before events it did not keep.
type lastEvents struct {
	n      int
	events []*kmes.Record
	// pending is loss on a CPU seen on events that did not match the
	// filters, owed to that CPU's next event kept.
	pending map[int][2]uint64
}

// loss notes r's losses, for an event that is not kept.
func (l *lastEvents) loss(r *kmes.Record) {
	if r.Lost == 0 && r.Dropped == 0 {
		return
	}
	p := l.pending[r.CPU]
	l.pending[r.CPU] = [2]uint64{p[0] + r.Lost, p[1] + r.Dropped}
}

func (l *lastEvents) add(r *kmes.Record) {
	c := r.Clone()
	if p, ok := l.pending[r.CPU]; ok {
		c.Lost, c.Dropped = c.Lost+p[0], c.Dropped+p[1]
		delete(l.pending, r.CPU)
	}
	if l.n == 0 {
		return
	}
	if l.n > 0 && len(l.events) == l.n {
		copy(l.events, l.events[1:])
		l.events = l.events[:l.n-1]
	}
	l.events = append(l.events, c)
}

func runTail(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("tail")
	var ff filterFlags
	ff.define(fs)
	var mode, lines string
	fs.StringVar(&mode, "o", "json", "print events in `MODE`: "+outputModes)
	fs.StringVar(&mode, "output", "json", "the same as -o")
	follow := fs.Bool("f", false, "follow: after the events present, print new ones as they come until interrupted")
	fs.BoolVar(follow, "follow", false, "the same as -f")
	fs.StringVar(&lines, "n", strconv.Itoa(defaultLines), "print the last `N` events present (all: every one; 0: none)")
	fs.StringVar(&lines, "lines", strconv.Itoa(defaultLines), "the same as -n")
	count := fs.Uint64("count", 0, "exit after printing `N` events (0: never)")
	pos, help, err := parseFlags(fs, args, tailUsage, stdout)
	if help || err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("kmesctl tail: unexpected argument %q: run 'kmesctl tail --help'", pos[0])
	}
	n, err := parseLines(lines)
	if err != nil {
		return err
	}
	start := time.Now()
	f, err := ff.parse(start)
	if err != nil {
		return err
	}
	errw := &lockedWriter{w: stderr}
	p, err := newPrinter(mode, stdout, errw)
	if err != nil {
		return err
	}

	// The events present are those stamped up to now: without -f, tail
	// stops at the first one after, or when the rings run dry.
	until := f.until
	if !*follow {
		until = min(until, start.UnixNano())
	}
	last := &lastEvents{n: n, pending: make(map[int][2]uint64)}
	live := false // the events present are printed: the rest go out as they come
	var printed uint64
	show := func(r *kmes.Record) error {
		if r.Lost > 0 || r.Dropped > 0 {
			if err := p.loss(r.CPU, r.Lost, r.Dropped); err != nil {
				return fmt.Errorf("write output: %w", err)
			}
		}
		if err := p.event(r); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		if printed++; *count > 0 && printed >= *count {
			return errEnough
		}
		return nil
	}
	// goLive prints the last events present, once.
	goLive := func() error {
		if live {
			return nil
		}
		live = true
		for _, r := range last.events {
			if err := show(r); err != nil {
				return err
			}
		}
		for cpu, l := range last.pending {
			if err := p.loss(cpu, l[0], l[1]); err != nil {
				return fmt.Errorf("write output: %w", err)
			}
		}
		last = nil
		if !*follow {
			return errEnough
		}
		return nil
	}

	sigs, stopSignals := notifySignals()
	defer stopSignals()
	var cpus []int
	if want := f.cpus(); len(want) > 0 {
		cpus = want
	}
	c, err := newTailConsumer(&kmes.Options{
		// Only new events are wanted: no need to read the old ones.
		FromEnd: n == 0,
		CPUs:    cpus,
		Source:  ringSource,
		OnError: func(err error) { fmt.Fprintf(errw, "kmesctl tail: %v\n", err) },
		OnIdle: func() error {
			if err := goLive(); err != nil {
				return err
			}
			// Output waits in a buffer while events come, and goes out
			// when they stop.
			return p.flush()
		},
	})
	if err != nil {
		if strings.Contains(err.Error(), "no ring of cpu") {
			return usagef("kmesctl tail: --cpu: %v", err)
		}
		return fmt.Errorf("kmesctl tail: %w", err)
	}
	if *follow && f.until != math.MaxInt64 {
		// Stop at --until even when no event comes after it.
		stopAt := time.AfterFunc(time.Until(time.Unix(0, f.until)), func() { c.Close() })
		defer stopAt.Stop()
	}
	done := make(chan error, 1)
	go func() {
		done <- c.ReadMerged(func(r *kmes.Record) error {
			if r.Timestamp > until {
				if err := goLive(); err != nil {
					return err
				}
				return errEnough
			}
			if !live && r.Timestamp > start.UnixNano() {
				// The first event after the start: what came before is
				// what was present.
				if err := goLive(); err != nil {
					return err
				}
			}
			match := f.match(r)
			switch {
			case !live && match:
				last.add(r)
			case !live:
				last.loss(r)
			case match:
				return show(r)
			case r.Lost > 0 || r.Dropped > 0:
				// Loss happened on the CPU, whatever the filters.
				if err := p.loss(r.CPU, r.Lost, r.Dropped); err != nil {
					return fmt.Errorf("write output: %w", err)
				}
			}
			return nil
		})
	}()
	err = awaitRead(done, sigs, c)
	if errors.Is(err, errInterruptedTwice) {
		// The read loop may still be writing: leave the output alone.
		return err
	}
	if errors.Is(err, errEnough) {
		err = nil
	}
	// Stopped before the rings ran dry (a signal, --until in follow
	// mode): what was kept goes out.
	if err == nil {
		if lerr := goLive(); lerr != nil && !errors.Is(lerr, errEnough) {
			err = lerr
		}
	}
	if ferr := p.flush(); err == nil && ferr != nil {
		err = fmt.Errorf("write output: %w", ferr)
	}
	if cerr := c.Close(); err == nil && cerr != nil && !errors.Is(cerr, kmes.ErrClosed) {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("kmesctl tail: %w", err)
	}
	return nil
}

// awaitRead waits for the read loop's result. The first signal closes the
// consumer, after which the loop returns what it has; a second one gives
// up on the loop, which may be stuck.
func awaitRead(done <-chan error, sigs <-chan os.Signal, c tailConsumer) error {
	for stopping := false; ; stopping = true {
		select {
		case err := <-done:
			return err
		case <-sigs:
			if stopping {
				return errInterruptedTwice
			}
			// In the background: a Close that hangs must not keep the
			// second signal from being heard.
			go c.Close()
		}
	}
}
