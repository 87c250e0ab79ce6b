package main

import (
	"bytes"
	"testing"
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
	if err := writeStatTable(&buf, stats); err != nil {
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
