package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseDropped(t *testing.T) {
	m, err := parseDropped(strings.NewReader("0 0\n1 17\n\n3 18446744073709551615\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 3 || m[0] != 0 || m[1] != 17 || m[3] != 18446744073709551615 {
		t.Errorf("parseDropped: %v", m)
	}
	for _, bad := range []string{"0\n", "0 1 2\n", "x 1\n", "0 -1\n", "-1 0\n"} {
		if _, err := parseDropped(strings.NewReader(bad)); err == nil {
			t.Errorf("parseDropped(%q) took it", bad)
		}
	}
}

func TestStatTable(t *testing.T) {
	dropped := map[int]uint64{0: 3}
	stats := []ringStat{
		statOf(0, 1, 65536, 100, 5000, dropped),
		statOf(1, 2, 65536, 0, 0, dropped),
		statOf(2, 1, 65536, 10, 200000, nil), // moved on while read
	}
	if stats[0].InUse != 4900 || *stats[0].Dropped != 3 || stats[1].Dropped != nil || stats[2].InUse != 65536 {
		t.Errorf("statOf: %+v", stats)
	}
	var buf bytes.Buffer
	if err := writeStatTable(&buf, stats); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"  cpu  generation  capacity  write_pos  tail_pos  in use  dropped\n" +
		"    0           1     65536       5000       100    4900        3\n" +
		"    1           2     65536          0         0       0        -\n" +
		"    2           1     65536     200000        10   65536        -\n"
	if got := buf.String(); got != want {
		t.Errorf("got\n%swant\n%s", got, want)
	}
}
