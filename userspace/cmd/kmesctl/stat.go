package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
)

const statUsage = `Usage: kmesctl stat [--json]

Show every CPU's ring (kmes_attach, which needs CAP_AUDIT_READ): its
generation (1 for a CPU's first ring, one more for each ring that
replaced it when kernel.kmes.buffer_capacity changed; the ring's own,
even if a swap replaced it as it was mapped), capacity, write and tail
positions, the bytes in use, the events the kernel dropped on the CPU
since boot (too large for the ring, or emitted where they could not be
written) and the page size, all as the ring's producer page shows them.

The page size is that of the pages the ring's data is on: 2MiB normally,
4KiB for a ring that fell back to 4 KiB pages (a capacity below 2 MiB,
no free 2 MiB page on the CPU's node, or kmes.hugepages=0; the kernel
log says which, in a line "kmes: CPU <n>: ring data on 4 KiB pages:
<reason>"), "-" for a kernel that does not say. --json gives it in
bytes, as page_size, 0 when unknown.
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

func runStat(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("stat")
	asJSON := fs.Bool("json", false, "print a JSON array instead of a table")
	pos, help, err := parseFlags(fs, args, statUsage, stdout)
	if help || err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("kmesctl stat: unexpected argument %q: run 'kmesctl stat --help'", pos[0])
	}
	rings, err := attachRings()
	if err != nil {
		return fmt.Errorf("kmesctl stat: %w", err)
	}
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
	if *asJSON {
		b, err := json.Marshal(stats)
		if err != nil {
			return fmt.Errorf("kmesctl stat: %w", err)
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	return writeStatTable(stdout, stats)
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

func writeStatTable(w io.Writer, stats []ringStat) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	// page size last: a script that reads the columns before it by
	// position still finds them where they were.
	fmt.Fprint(tw, "cpu\tgeneration\tcapacity\twrite_pos\ttail_pos\tin use\tdropped\tpage size\t\n")
	for _, s := range stats {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t\n", s.CPU, s.Generation, s.Capacity, s.WritePos, s.TailPos, s.InUse, s.Dropped, pageSizeText(s.PageSize))
	}
	return tw.Flush()
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
