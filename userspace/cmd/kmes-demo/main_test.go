//go:build linux

package main

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want config
		bad  bool
	}{
		{args: nil, want: config{interval: 500 * time.Millisecond}},
		// What 'make run' passes (vm/guest.DemoPlan).
		{args: []string{"-interval", "500ms"}, want: config{interval: 500 * time.Millisecond}},
		{args: []string{"-interval", "10ms", "-count", "3"}, want: config{interval: 10 * time.Millisecond, count: 3}},
		{args: []string{"-interval", "0s"}, bad: true},
		{args: []string{"-count", "-1"}, bad: true},
		{args: []string{"extra"}, bad: true},
	} {
		got, err := parseFlags(io.Discard, tc.args)
		if tc.bad {
			if err == nil {
				t.Errorf("parseFlags(%q) = %+v, want an error", tc.args, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseFlags(%q) = %+v, %v; want %+v", tc.args, got, err, tc.want)
		}
	}
}

// The payload is the msgpack map the README and 'make run' show.
func TestTickPayload(t *testing.T) {
	b, err := msgpack.Marshal(NewTick(3, 7))
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0x83,
		0xa3, 'c', 'p', 'u', 0x03,
		0xa1, 'n', 0x07,
		0xa3, 'm', 's', 'g', 0xb0}
	want = append(want, "hello from cpu 3"...)
	if !bytes.Equal(b, want) {
		t.Errorf("payload % x, want % x", b, want)
	}
}

func TestOnlineCPUs(t *testing.T) {
	cpus, err := onlineCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if len(cpus) == 0 {
		t.Fatal("no CPU")
	}
	for i := 1; i < len(cpus); i++ {
		if cpus[i] <= cpus[i-1] {
			t.Errorf("CPUs %v not in increasing order", cpus)
		}
	}
}
