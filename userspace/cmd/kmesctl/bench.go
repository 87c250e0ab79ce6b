package main

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/userspace/kmes/abi"
)

const benchUsage = `Usage: kmesctl bench [--events N] [--size B] [--batch K]

Measure KMES throughput (needs CAP_AUDIT_WRITE and CAP_AUDIT_READ), in
events/s and MB/s of whole events (header, type and payload; 1 MB = 10^6
bytes):
  emit   N events, one kmes_emit each
  batch  N events, K a kmes_emit_batch call
  drain  a consumer, started at the end of the rings before the emits,
         reading what they left in the rings until it has seen N of them
         (or every one it can, or for 10 s)
Without CAP_SYS_ADMIN the per-process rate limit
(kernel.kmes.max_emit_rate_per_process) stops the emits with EAGAIN.
`

// benchType is the type of the events bench emits.
const benchType = "kmesctl.bench"

// drainTimeout bounds the drain phase.
const drainTimeout = 10 * time.Second

// benchPayload returns a msgpack payload of exactly size bytes: nil for
// one byte, else a str of the length that fills it.
func benchPayload(size int) []byte {
	var b []byte
	switch n := size; {
	case n < 1:
		return nil
	case n == 1:
		return []byte{0xc0}
	case n-1 <= 31:
		b = []byte{0xa0 | byte(n-1)}
	case n-2 <= 0xff:
		b = []byte{0xd9, byte(n - 2)}
	case n-3 <= 0xffff:
		b = []byte{0xda, byte((n - 3) >> 8), byte(n - 3)}
	default:
		m := uint32(n - 5)
		b = []byte{0xdb, byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)}
	}
	for len(b) < size {
		b = append(b, 'a'+byte(len(b)%26))
	}
	return b
}

// benchResult is one phase's measurement.
type benchResult struct {
	name    string
	events  uint64
	bytes   uint64
	elapsed time.Duration
	note    string
}

func (r benchResult) rates() (eventsPerSec, mbPerSec float64) {
	s := r.elapsed.Seconds()
	if s <= 0 {
		return 0, 0
	}
	return float64(r.events) / s, float64(r.bytes) / s / 1e6
}

func writeBenchTable(w io.Writer, results []benchResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "phase\tevents\tseconds\tevents/s\tMB/s\t\n")
	for _, r := range results {
		eps, mbps := r.rates()
		fmt.Fprintf(tw, "%s\t%d\t%.3f\t%.0f\t%.1f\t%s\n", r.name, r.events, r.elapsed.Seconds(), eps, mbps, r.note)
	}
	return tw.Flush()
}

// progress prints, every second while a phase runs, how far it got: runs
// shorter than a second print nothing.
type progress struct {
	w     io.Writer
	total uint64
	done  atomic.Uint64
	stop  chan struct{}
	wg    sync.WaitGroup
}

func startProgress(w io.Writer, phase string, total uint64) *progress {
	p := &progress{w: w, total: total, stop: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
				fmt.Fprintf(w, "kmesctl bench: %s: %d of %d events\n", phase, p.done.Load(), total)
			}
		}
	}()
	return p
}

func (p *progress) end() {
	close(p.stop)
	p.wg.Wait()
}

func runBench(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench")
	events := fs.Uint64("events", 100000, "`N` events for each phase")
	size := fs.Int("size", 64, "payload size in `B`ytes")
	batch := fs.Int("batch", abi.EmitBatchMax, fmt.Sprintf("`K` events a kmes_emit_batch call (1..%d)", abi.EmitBatchMax))
	pos, help, err := parseFlags(fs, args, benchUsage, stdout)
	if help || err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return usagef("kmesctl bench: unexpected argument %q: run 'kmesctl bench --help'", pos[0])
	case *events == 0:
		return usagef("kmesctl bench: --events must be at least 1")
	case *size < 1:
		return usagef("kmesctl bench: --size must be at least 1")
	case *batch < 1 || *batch > abi.EmitBatchMax:
		return usagef("kmesctl bench: --batch must be 1..%d", abi.EmitBatchMax)
	}
	payload := benchPayload(*size)
	eventSize := uint64(abi.HdrBaseSize + len(benchType) + len(payload))
	n := *events

	// Started before the emits, at the end of the rings: it reads exactly
	// what the bench emits (and what others emit meanwhile).
	c, err := kmes.NewConsumer(&kmes.Options{FromEnd: true})
	if err != nil {
		return fmt.Errorf("kmesctl bench: %w", err)
	}
	defer c.Close()
	// The rings' own view tells the drain how many bytes it will find.
	rings, err := kmes.Attach()
	if err != nil {
		return fmt.Errorf("kmesctl bench: %w", err)
	}
	defer func() {
		for _, r := range rings {
			r.Close()
		}
	}()
	starts := make([]uint64, len(rings))
	for i, r := range rings {
		starts[i] = r.WritePos()
	}

	var results []benchResult

	p := startProgress(stderr, "emit", n)
	start := time.Now()
	for i := uint64(0); i < n; i++ {
		if err := kmes.Emit(benchType, payload); err != nil {
			p.end()
			return fmt.Errorf("kmesctl bench: emit event %d: %w", i, err)
		}
		p.done.Store(i + 1)
	}
	results = append(results, benchResult{name: "emit", events: n, bytes: n * eventSize, elapsed: time.Since(start)})
	p.end()

	batchEvents := make([]kmes.Event, *batch)
	for i := range batchEvents {
		batchEvents[i] = kmes.Event{Type: benchType, Payload: payload}
	}
	p = startProgress(stderr, "batch", n)
	start = time.Now()
	for done := uint64(0); done < n; {
		k := min(uint64(*batch), n-done)
		emitted, err := kmes.EmitBatch(batchEvents[:k])
		done += uint64(emitted)
		p.done.Store(done)
		if err != nil {
			p.end()
			return fmt.Errorf("kmesctl bench: emit batch at event %d: %w", done, err)
		}
	}
	results = append(results, benchResult{name: "batch", events: n, bytes: n * eventSize, elapsed: time.Since(start)})
	p.end()

	// What the drain can find: from where it started, or from where the
	// oldest surviving event is if the emits overwrote the start.
	var avail uint64
	for i, r := range rings {
		tail := r.TailPos()
		if w, from := r.WritePos(), max(starts[i], tail); w > from {
			avail += w - from
		}
	}
	r, err := drain(c, n, avail, stderr)
	if err != nil {
		return fmt.Errorf("kmesctl bench: drain: %w", err)
	}
	results = append(results, r)
	return writeBenchTable(stdout, results)
}

// drain reads c until it has seen want bench events or avail bytes of
// events (all that the rings hold since it started), or for drainTimeout.
func drain(c *kmes.Consumer, want, avail uint64, stderr io.Writer) (benchResult, error) {
	if avail == 0 {
		return benchResult{name: "drain", note: "nothing to read"}, nil
	}
	var seen, bytes atomic.Uint64
	var endOnce sync.Once
	var end time.Time
	p := startProgress(stderr, "drain", want)
	defer p.end()

	var timedOut atomic.Bool
	finished := make(chan struct{})
	go func() {
		timeout := time.NewTimer(drainTimeout)
		defer timeout.Stop()
		select {
		case <-finished:
		case <-timeout.C:
			timedOut.Store(true)
			c.Close()
		}
	}()

	start := time.Now()
	err := c.ReadPerCPU(func(r *kmes.Record) error {
		size := uint64(abi.HdrBaseSize + len(r.Type) + len(r.Payload))
		b := bytes.Add(size)
		var s uint64
		if r.Type == benchType {
			s = seen.Add(1)
			p.done.Store(s)
		}
		if s >= want || b >= avail {
			endOnce.Do(func() { end = time.Now() })
			return errEnough
		}
		return nil
	})
	close(finished)
	if err != nil && !errors.Is(err, errEnough) {
		return benchResult{}, err
	}
	endOnce.Do(func() { end = time.Now() })
	// Another ring's reader may count an event or two while the first to
	// reach want stops them all: want is what was asked for.
	r := benchResult{name: "drain", events: min(seen.Load(), want), bytes: bytes.Load(), elapsed: end.Sub(start)}
	var lost uint64
	for _, s := range c.Stats() {
		lost += s.Lost
	}
	switch {
	case timedOut.Load():
		r.note = fmt.Sprintf("timed out after %v with %d of %d bytes read; %d lost", drainTimeout, r.bytes, avail, lost)
	case r.events < want:
		r.note = fmt.Sprintf("the rest of the %d emitted were overwritten before the drain", 2*want)
	}
	return r, nil
}
