package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
)

const statUsage = `Usage: kmesctl stat [--json]

Show every CPU's ring (kmes_attach, which needs CAP_AUDIT_READ): its
generation, capacity, write and tail positions, the bytes in use, and
the events the kernel dropped before the ring (from
/sys/kernel/debug/kmes/dropped, which needs debugfs and root).
`

// droppedPath lists the kernel's per-CPU dropped counts, one
// "<cpu> <count>" line each; a variable for tests.
var droppedPath = "/sys/kernel/debug/kmes/dropped"

// ringStat is one CPU's line of kmesctl stat.
type ringStat struct {
	CPU        int     `json:"cpu"`
	Generation uint64  `json:"generation"`
	Capacity   uint64  `json:"capacity"`
	WritePos   uint64  `json:"write_pos"`
	TailPos    uint64  `json:"tail_pos"`
	InUse      uint64  `json:"in_use"`
	Dropped    *uint64 `json:"dropped"` // nil when unknown
}

func runStat(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("stat")
	asJSON := fs.Bool("json", false, "print a JSON array instead of a table")
	if help, err := parseFlags(fs, args, statUsage, stdout); help || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("kmesctl stat: unexpected argument %q: run 'kmesctl stat --help'", fs.Arg(0))
	}
	rings, err := attachRings()
	if err != nil {
		return fmt.Errorf("kmesctl stat: %w", err)
	}
	defer func() {
		for _, r := range rings {
			r.Close()
		}
	}()
	dropped, err := readDropped(droppedPath)
	if err != nil {
		fmt.Fprintf(stderr, "kmesctl stat: no dropped counts (%v): as root, mount debugfs at /sys/kernel/debug (mount -t debugfs none /sys/kernel/debug)\n", err)
	}
	stats := make([]ringStat, len(rings))
	for i, r := range rings {
		stats[i] = statOf(r.CPU(), r.Generation(), r.Capacity(), r.TailPos(), r.WritePos(), dropped)
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
func statOf(cpu int, gen, capacity, tail, write uint64, dropped map[int]uint64) ringStat {
	s := ringStat{CPU: cpu, Generation: gen, Capacity: capacity, WritePos: write, TailPos: tail}
	if write > tail {
		s.InUse = min(write-tail, capacity)
	}
	if d, ok := dropped[cpu]; ok {
		s.Dropped = &d
	}
	return s
}

func writeStatTable(w io.Writer, stats []ringStat) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "cpu\tgeneration\tcapacity\twrite_pos\ttail_pos\tin use\tdropped\t\n")
	for _, s := range stats {
		d := "-"
		if s.Dropped != nil {
			d = strconv.FormatUint(*s.Dropped, 10)
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%s\t\n", s.CPU, s.Generation, s.Capacity, s.WritePos, s.TailPos, s.InUse, d)
	}
	return tw.Flush()
}

func readDropped(path string) (map[int]uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseDropped(f)
}

// parseDropped parses "<cpu> <count>" lines.
func parseDropped(r io.Reader) (map[int]uint64, error) {
	m := make(map[int]uint64)
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("parse dropped counts: line %d: %q is not \"<cpu> <count>\"", n, line)
		}
		cpu, err1 := strconv.Atoi(f[0])
		count, err2 := strconv.ParseUint(f[1], 10, 64)
		if err1 != nil || err2 != nil || cpu < 0 {
			return nil, fmt.Errorf("parse dropped counts: line %d: %q is not \"<cpu> <count>\"", n, line)
		}
		m[cpu] = count
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read dropped counts: %w", err)
	}
	return m, nil
}
