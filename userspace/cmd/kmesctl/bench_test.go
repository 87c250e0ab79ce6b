//go:build linux && amd64

package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/userspace/kmestest"
)

func TestBenchPayload(t *testing.T) {
	for _, n := range []int{1, 2, 31, 32, 33, 34, 64, 256, 257, 258, 65537, 65538, 65539, 100000} {
		p := benchPayload(n)
		if len(p) != n {
			t.Errorf("benchPayload(%d): %d bytes", n, len(p))
		}
		if err := kmes.ValidatePayload(p, 0); err != nil {
			t.Errorf("benchPayload(%d): %v", n, err)
		}
	}
}

func TestBenchTable(t *testing.T) {
	var buf bytes.Buffer
	err := writeBenchTable(&buf, []benchResult{
		{name: "emit", events: 1000, bytes: 106000, elapsed: time.Second / 2},
		{name: "drain", events: 10, bytes: 1000, elapsed: 0, note: "timed out"},
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(buf.String(), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "phase") ||
		strings.Join(strings.Fields(lines[1]), " ") != "emit 1000 0.500 2000 0.2" ||
		strings.Join(strings.Fields(lines[2]), " ") != "drain 10 0.000 0 0.0 timed out" {
		t.Errorf("table:\n%s", buf.String())
	}
}

func TestDrain(t *testing.T) {
	for _, c := range []struct {
		name        string
		n0, n1      int    // bench events emitted on cpu 0 and 1
		want        uint64 // drain's want
		events      uint64
		noteContain string
	}{
		{"all", 100, 50, 150, 150, ""},
		{"stops at want", 100, 50, 120, 120, ""},
		{"every byte the rings hold", 100, 50, 1000, 150, "overwritten before the drain"},
		// 64 KiB rings hold about 640 of these events.
		{"lapped", 3000, 10, 6000, 0, "overwritten before the drain"}, // events checked apart
	} {
		t.Run(c.name, func(t *testing.T) {
			src, err := kmestest.NewSource(2, 65536)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			con, err := kmes.NewConsumer(&kmes.Options{FromEnd: true, Source: src})
			if err != nil {
				t.Fatal(err)
			}
			defer con.Close()
			payload := benchPayload(64)
			for i := 0; i < c.n0; i++ {
				src.Producer(0).Emit(0, benchType, payload)
				if i%10 == 0 {
					src.Producer(0).Emit(1, "other", []byte{0xc0})
				}
			}
			for i := 0; i < c.n1; i++ {
				src.Producer(1).Emit(0, benchType, payload)
			}
			var avail uint64
			for i := range 2 {
				p := src.Producer(i)
				avail += p.WritePos() - p.TailPos()
			}
			r, err := drain(con, c.want, avail, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if c.name == "lapped" {
				// Only what survives from tail_pos on can be read.
				if r.bytes != avail || r.events == 0 || r.events >= uint64(c.n0) {
					t.Errorf("lapped: read %d events, %d bytes; the rings hold %d bytes", r.events, r.bytes, avail)
				}
			} else if r.events != c.events {
				t.Errorf("drained %d bench events, want %d", r.events, c.events)
			}
			if c.want >= uint64(c.n0+c.n1) && r.bytes != avail {
				t.Errorf("read %d bytes, the rings hold %d", r.bytes, avail)
			}
			if !strings.Contains(r.note, c.noteContain) || (c.noteContain == "" && r.note != "") {
				t.Errorf("note %q, want %q", r.note, c.noteContain)
			}
			if r.elapsed <= 0 || r.elapsed > drainTimeout {
				t.Errorf("elapsed %v", r.elapsed)
			}
		})
	}
}
