package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/kmes-project/kmes/userspace/kmes"
)

const tailUsage = `Usage: kmesctl tail [--type T] [--origin N] [--cpu N] [--from-start] [--count N]

Print KMES events as they arrive, one JSON object a line, in timestamp
order across CPUs (kmes_attach, which needs CAP_AUDIT_READ):

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
and "payload_base64" (its bytes). Lost events (overwritten before they
were read, or dropped before the ring) are reported on standard error.
SIGINT or SIGTERM stops it.
`

// tsFormat is RFC 3339 with always nine digits of nanoseconds.
const tsFormat = "2006-01-02T15:04:05.000000000Z07:00"

// tailFilter selects the events tail prints. -1 and "" match anything.
type tailFilter struct {
	typ    string
	origin int
	cpu    int
}

func (f tailFilter) match(r *kmes.Record) bool {
	return (f.typ == "" || r.Type == f.typ) &&
		(f.origin < 0 || int(r.Origin) == f.origin) &&
		(f.cpu < 0 || r.CPU == f.cpu)
}

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

// gapReporter reports the growth of the consumer's Lost and Dropped
// counts.
type gapReporter struct {
	mu   sync.Mutex
	w    io.Writer
	prev map[int]kmes.Stats
}

func (g *gapReporter) update(stats []kmes.Stats) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.prev == nil {
		g.prev = make(map[int]kmes.Stats)
	}
	for _, s := range stats {
		p := g.prev[s.CPU]
		g.prev[s.CPU] = s
		// A count that went down was reset (by a new ring): a new base.
		var lost, dropped uint64
		if s.Lost > p.Lost {
			lost = s.Lost - p.Lost
		}
		if s.Dropped > p.Dropped {
			dropped = s.Dropped - p.Dropped
		}
		if lost > 0 || dropped > 0 {
			fmt.Fprintf(g.w, "kmesctl tail: cpu %d: lost %d events (overwritten), dropped %d (before the ring)\n",
				s.CPU, lost, dropped)
		}
	}
}

var errEnough = errors.New("enough events")

func runTail(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("tail")
	f := tailFilter{}
	fs.StringVar(&f.typ, "type", "", "print only events of type `T`")
	fs.IntVar(&f.origin, "origin", -1, "print only events of origin class `N` (0 userspace, 1 KMES)")
	fs.IntVar(&f.cpu, "cpu", -1, "print only events of CPU `N`")
	fromStart := fs.Bool("from-start", false, "start at the oldest event in the rings, not at the newest")
	count := fs.Uint64("count", 0, "exit after printing `N` events (0: never)")
	pos, help, err := parseFlags(fs, args, tailUsage, stdout)
	if help || err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("kmesctl tail: unexpected argument %q: run 'kmesctl tail --help'", pos[0])
	}
	if f.origin > 255 || f.origin < -1 {
		return usagef("kmesctl tail: --origin %d is not an origin class (0..255)", f.origin)
	}
	if f.cpu < -1 {
		return usagef("kmesctl tail: --cpu %d is not a CPU", f.cpu)
	}

	errw := &lockedWriter{w: stderr}
	c, err := kmes.NewConsumer(&kmes.Options{
		FromEnd: !*fromStart,
		Source:  ringSource,
		OnError: func(err error) { fmt.Fprintf(errw, "kmesctl tail: %v\n", err) },
	})
	if err != nil {
		return fmt.Errorf("kmesctl tail: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	done := make(chan struct{})
	gaps := &gapReporter{w: errw}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				c.Close()
				return
			case <-done:
				return
			case <-tick.C:
				gaps.update(c.Stats())
			}
		}
	}()

	out := bufio.NewWriter(stdout)
	var line []byte
	var printed uint64
	lastSeq := make(map[int]uint64)
	err = c.ReadMerged(func(r *kmes.Record) error {
		// A sequence gap is lost events: say so next to where they
		// were lost.
		if last, ok := lastSeq[r.CPU]; ok && r.Sequence != last+1 {
			gaps.update(c.Stats())
		}
		lastSeq[r.CPU] = r.Sequence
		if !f.match(r) {
			return nil
		}
		line = appendRecord(line[:0], r)
		out.Write(line)
		if err := out.Flush(); err != nil {
			return fmt.Errorf("write event: %w", err)
		}
		printed++
		if *count > 0 && printed >= *count {
			return errEnough
		}
		return nil
	})
	close(done)
	wg.Wait()
	gaps.update(c.Stats())
	if cerr := c.Close(); err == nil && cerr != nil && !errors.Is(cerr, kmes.ErrClosed) {
		err = cerr
	}
	if err != nil && !errors.Is(err, errEnough) {
		return fmt.Errorf("kmesctl tail: %w", err)
	}
	return nil
}
