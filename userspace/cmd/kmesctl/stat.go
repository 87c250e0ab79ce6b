package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"text/tabwriter"
	"time"
)

const statUsage = `Usage: kmesctl stat [--json] [--watch [--interval D]]

Show every CPU's ring (kmes_attach, which needs CAP_AUDIT_READ): its
generation (1 for a CPU's first ring, one more for each ring that
replaced it when kernel.kmes.buffer_capacity changed; the ring's own,
even if a swap replaced it as it was mapped), capacity, write and tail
positions, the bytes in use, the events the kernel dropped on the CPU
since boot (too large for the ring, or emitted where they could not be
written) and the page size, all as the ring's producer page shows them.
The producer page is the kernel's stable mmap ABI: stat needs no
debugfs, and dropped is its u64 at offset 192, which a swap carries over.

The page size is that of the pages the ring's data is on: 2MiB normally,
4KiB for a ring that fell back to 4 KiB pages (a capacity below 2 MiB,
no free 2 MiB page on the CPU's node, or kmes.hugepages=0; the kernel
log says which, in a line "kmes: CPU <n>: ring data on 4 KiB pages:
<reason>"), "-" for a kernel that does not say. --json gives it in
bytes, as page_size, 0 when unknown.

--watch samples the rings every interval until SIGINT or SIGTERM,
attaching afresh each time (a ring left mapped would make the next
capacity change fail with EBUSY), and redraws the table (on a terminal;
elsewhere it appends it after a blank line), or with --json prints one
array a line. Two columns follow the others: bytes/s, what the CPU wrote
to its ring per second since the previous sample (from write_pos; "-"
on the first sample and after the ring was replaced), and +dropped, the
events dropped since the previous sample ("-" on the first); in JSON,
bytes_per_sec and dropped_delta, null when unknown.
`

// ringStat is one CPU's line of kmesctl stat.
type ringStat struct {
	CPU        int    `json:"cpu"`
	Generation uint64 `json:"generation"`
	Capacity   uint64 `json:"capacity"`
	PageSize   uint64 `json:"page_size"` // 0: the kernel does not say
	WritePos   uint64 `json:"write_pos"`
	TailPos    uint64 `json:"tail_pos"`
	InUse      uint64 `json:"in_use"`
	Dropped    uint64 `json:"dropped"`
}

// statRate is a ring's line of stat --watch: its state and what changed
// since the previous sample, nil when unknown.
type statRate struct {
	ringStat
	BytesPerSec  *uint64 `json:"bytes_per_sec"`
	DroppedDelta *uint64 `json:"dropped_delta"`
}

func runStat(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("stat")
	asJSON := fs.Bool("json", false, "print a JSON array instead of a table")
	watch := fs.Bool("watch", false, "sample again every interval, with rates, until SIGINT")
	interval := fs.Duration("interval", time.Second, "with --watch, sample every `D` (500ms, 2s, 1m)")
	pos, help, err := parseFlags(fs, args, statUsage, stdout)
	if help || err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("kmesctl stat: unexpected argument %q: run 'kmesctl stat --help'", pos[0])
	}
	intervalSet := false
	fs.Visit(func(f *flag.Flag) { intervalSet = intervalSet || f.Name == "interval" })
	switch {
	case intervalSet && !*watch:
		return usagef("kmesctl stat: --interval needs --watch")
	case *interval <= 0:
		return usagef("kmesctl stat: --interval %v: must be positive, e.g. 500ms or 2s", *interval)
	}
	if *watch {
		return watchStat(stdout, *asJSON, *interval)
	}
	stats, _, err := sampleStats()
	if err != nil {
		return fmt.Errorf("kmesctl stat: %w", err)
	}
	if *asJSON {
		b, err := json.Marshal(stats)
		if err != nil {
			return fmt.Errorf("kmesctl stat: %w", err)
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	return writeStatTable(stdout, ratesOf(nil, stats, 0), false)
}

// sampleStats attaches to the rings, reads their lines and unmaps them,
// and says when it read them.
func sampleStats() ([]ringStat, time.Time, error) {
	rings, err := attachRings()
	if err != nil {
		return nil, time.Time{}, err
	}
	at := time.Now()
	stats := make([]ringStat, len(rings))
	for i, r := range rings {
		tail := r.TailPos()
		stats[i] = statOf(r.CPU(), r.RingGeneration(), r.Capacity(), r.PageSize(), tail, r.WritePos(), r.Dropped())
	}
	// Unmapped before the output is written, however slow its reader: a
	// mapping of a replaced ring makes the next capacity change fail with
	// EBUSY.
	for _, r := range rings {
		r.Close()
	}
	return stats, at, nil
}

// watchStat is stat --watch: a sample, then one every interval, until a
// signal.
func watchStat(w io.Writer, asJSON bool, interval time.Duration) error {
	sigs, stop := notifySignals()
	defer stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	redraw := isTerminal(w)
	var prev []ringStat
	var prevAt time.Time
	var frame bytes.Buffer
	for n := 0; ; n++ {
		cur, at, err := sampleStats()
		if err != nil {
			return fmt.Errorf("kmesctl stat: %w", err)
		}
		rates := ratesOf(prev, cur, at.Sub(prevAt))
		prev, prevAt = cur, at
		frame.Reset()
		switch {
		case asJSON:
			b, err := json.Marshal(rates)
			if err != nil {
				return fmt.Errorf("kmesctl stat: %w", err)
			}
			frame.Write(append(b, '\n'))
		case redraw:
			frame.WriteString("\x1b[H\x1b[2J") // home, clear the screen
			writeStatTable(&frame, rates, true)
		default:
			if n > 0 {
				frame.WriteString("\n")
			}
			writeStatTable(&frame, rates, true)
		}
		// One write a frame: a terminal never shows half of one.
		if _, err := w.Write(frame.Bytes()); err != nil {
			return fmt.Errorf("kmesctl stat: %w", err)
		}
		select {
		case <-sigs:
			return nil
		case <-tick.C:
		}
	}
}

// isTerminal reports whether w is a terminal (or another character
// device), where --watch redraws rather than appends.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// ratesOf is cur with what changed since prev, elapsed earlier; for a CPU
// not in prev (the first sample), the rates are unknown.
func ratesOf(prev, cur []ringStat, elapsed time.Duration) []statRate {
	before := make(map[int]ringStat, len(prev))
	for _, s := range prev {
		before[s.CPU] = s
	}
	out := make([]statRate, len(cur))
	for i, s := range cur {
		out[i].ringStat = s
		p, ok := before[s.CPU]
		if !ok || elapsed <= 0 {
			continue
		}
		if s.Dropped >= p.Dropped {
			d := s.Dropped - p.Dropped
			out[i].DroppedDelta = &d
		}
		// A new ring's positions start again: no rate across a swap.
		if s.Generation == p.Generation && s.WritePos >= p.WritePos {
			r := uint64(math.Round(float64(s.WritePos-p.WritePos) / elapsed.Seconds()))
			out[i].BytesPerSec = &r
		}
	}
	return out
}

// statOf is one ring's line. tail is read before write so that write >=
// tail; a writer may still have moved both on, so in use is at most the
// capacity.
func statOf(cpu int, gen, capacity, pageSize, tail, write, dropped uint64) ringStat {
	s := ringStat{CPU: cpu, Generation: gen, Capacity: capacity, PageSize: pageSize, WritePos: write, TailPos: tail, Dropped: dropped}
	if write > tail {
		s.InUse = min(write-tail, capacity)
	}
	return s
}

// writeStatTable writes stat's table; withRates adds --watch's columns.
func writeStatTable(w io.Writer, stats []statRate, withRates bool) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	// New columns go last: a script that reads the columns before them
	// by position still finds them where they were.
	fmt.Fprint(tw, "cpu\tgeneration\tcapacity\twrite_pos\ttail_pos\tin use\tdropped\tpage size\t")
	if withRates {
		fmt.Fprint(tw, "bytes/s\t+dropped\t")
	}
	fmt.Fprint(tw, "\n")
	for _, s := range stats {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t", s.CPU, s.Generation, s.Capacity, s.WritePos, s.TailPos, s.InUse, s.Dropped, pageSizeText(s.PageSize))
		if withRates {
			fmt.Fprintf(tw, "%s\t%s\t", orDash(s.BytesPerSec), orDash(s.DroppedDelta))
		}
		fmt.Fprint(tw, "\n")
	}
	return tw.Flush()
}

// orDash is n, or - when unknown.
func orDash(n *uint64) string {
	if n == nil {
		return "-"
	}
	return strconv.FormatUint(*n, 10)
}

// pageSizeText is the table's page size: one word, in the largest binary
// unit that divides it, so that a ring on 4KiB pages stands out among
// 2MiB ones; - when unknown.
func pageSizeText(n uint64) string {
	switch {
	case n == 0:
		return "-"
	case n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprint(n)
}
