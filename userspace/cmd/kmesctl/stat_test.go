package main

import (
	"bytes"
	"testing"
	"time"
)

func TestStatTable(t *testing.T) {
	stats := []ringStat{
		statOf(0, 1, 4194304, 2097152, 100, 5000, 3),
		statOf(1, 2, 65536, 4096, 0, 0, 0),                       // fell back
		statOf(2, 1, 65536, 0, 10, 200000, 18446744073709551615), // an older kernel; moved on while read
	}
	if stats[0].InUse != 4900 || stats[0].Dropped != 3 || stats[0].PageSize != 2097152 || stats[1].InUse != 0 || stats[2].InUse != 65536 {
		t.Errorf("statOf: %+v", stats)
	}
	var buf bytes.Buffer
	if err := writeStatTable(&buf, ratesOf(nil, stats, 0), false); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"  cpu  generation  capacity  write_pos  tail_pos  in use               dropped  page size\n" +
		"    0           1   4194304       5000       100    4900                     3       2MiB\n" +
		"    1           2     65536          0         0       0                     0       4KiB\n" +
		"    2           1     65536     200000        10   65536  18446744073709551615          -\n"
	if got := buf.String(); got != want {
		t.Errorf("got\n%swant\n%s", got, want)
	}
}

// stat --watch's rates: bytes/s from write_pos, none across a swap (a new
// generation) or on the first sample; the drops since the last sample.
func TestStatRates(t *testing.T) {
	prev := []ringStat{
		statOf(0, 1, 65536, 4096, 0, 1000, 5),
		statOf(1, 1, 65536, 4096, 0, 64, 0),
		statOf(2, 1, 65536, 4096, 0, 900, 2),
	}
	cur := []ringStat{
		statOf(0, 1, 65536, 4096, 0, 4000, 7), // 3000 bytes in 2 s
		statOf(1, 1, 65536, 4096, 0, 64, 0),   // idle
		statOf(2, 2, 131072, 4096, 0, 300, 2), // swapped: positions start again
		statOf(3, 1, 65536, 4096, 0, 100, 1),  // not in the last sample
	}
	rates := ratesOf(prev, cur, 2*time.Second)
	var buf bytes.Buffer
	if err := writeStatTable(&buf, rates, true); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"  cpu  generation  capacity  write_pos  tail_pos  in use  dropped  page size  bytes/s  +dropped\n" +
		"    0           1     65536       4000         0    4000        7       4KiB     1500         2\n" +
		"    1           1     65536         64         0      64        0       4KiB        0         0\n" +
		"    2           2    131072        300         0     300        2       4KiB        -         0\n" +
		"    3           1     65536        100         0     100        1       4KiB        -         -\n"
	if got := buf.String(); got != want {
		t.Errorf("got\n%swant\n%s", got, want)
	}
	for i, r := range ratesOf(nil, cur, time.Second) {
		if r.BytesPerSec != nil || r.DroppedDelta != nil || r.ringStat != cur[i] {
			t.Errorf("first sample: %+v", r)
		}
	}
}
