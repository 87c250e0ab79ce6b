//go:build linux && amd64

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kmes-project/kmes/userspace/internal/ringsim"
)

// withSimRings makes tail and stat read n simulated rings.
func withSimRings(t *testing.T, n int) *ringsim.Source {
	t.Helper()
	src, err := ringsim.NewSource(n, 65536)
	if err != nil {
		t.Fatal(err)
	}
	ringSource = src
	t.Cleanup(func() {
		ringSource = nil
		src.Close()
	})
	return src
}

// sample holds the tail lines of the events emitSample emits.
type sample struct{ b, a, k, c string }

// emitSample emits, in time order: cpu 1 "b" [1]; cpu 0 "a" {"n":1};
// cpu 0 "a" from KMES with no payload; cpu 1 a dropped event, then "c"
// "x". The events are stamped 1 µs apart a little in the future:
// ReadMerged holds back only events within its reorder window of now, so
// they reach tail in time order.
func emitSample(src *ringsim.Source) sample {
	base := time.Now().UTC().Add(200 * time.Millisecond).Truncate(time.Millisecond)
	ts := base.UnixNano()
	now := func() int64 {
		ts += 1000
		return ts
	}
	at := func(µs int) string { return base.Format("2006-01-02T15:04:05.000") + fmt.Sprintf("%03d000Z", µs) }
	p0, p1 := src.Producer(0), src.Producer(1)
	p0.Now, p1.Now = now, now
	p1.Emit(0, "b", []byte{0x91, 0x01})
	p0.Emit(0, "a", []byte{0x81, 0xa1, 'n', 0x01})
	p0.Emit(1, "a", nil)
	p1.Drop()
	p1.Emit(0, "c", []byte{0xa1, 'x'})
	return sample{
		b: `{"cpu":1,"seq":1,"ts":"` + at(1) + `","origin":0,"type":"b","payload":[1]}` + "\n",
		a: `{"cpu":0,"seq":1,"ts":"` + at(2) + `","origin":0,"type":"a","payload":{"n":1}}` + "\n",
		k: `{"cpu":0,"seq":2,"ts":"` + at(3) + `","origin":1,"type":"a","payload":{"raw":""}}` + "\n",
		c: `{"cpu":1,"seq":3,"ts":"` + at(4) + `","origin":0,"type":"c","payload":"x"}` + "\n",
	}
}

const dropLine = "kmesctl tail: cpu 1: lost 0 events (overwritten), dropped 1 (before the ring)\n"

func TestTailSimulated(t *testing.T) {
	for _, c := range []struct {
		args   []string
		out    func(sample) string
		stderr string
	}{
		{[]string{"--from-start", "--count", "4"}, func(s sample) string { return s.b + s.a + s.k + s.c },
			dropLine},
		{[]string{"--from-start", "--count", "2", "--type", "a"}, func(s sample) string { return s.a + s.k }, ""},
		{[]string{"--from-start", "--count", "1", "--origin", "1"}, func(s sample) string { return s.k }, ""},
		{[]string{"--from-start", "--count", "2", "--cpu", "1"}, func(s sample) string { return s.b + s.c },
			dropLine},
		{[]string{"--from-start", "--count", "1", "--type", "c", "--cpu", "1", "--origin", "0"}, func(s sample) string { return s.c },
			dropLine},
	} {
		want := c.out(emitSample(withSimRings(t, 2)))
		out, errOut, err := runArgs(t, "", append([]string{"tail"}, c.args...)...)
		if err != nil {
			t.Errorf("kmesctl tail %q: %v", c.args, err)
		}
		if out != want {
			t.Errorf("kmesctl tail %q:\n%s\nwant\n%s", c.args, out, want)
		}
		// A reader may count the drop on cpu 1 before tail has its events,
		// whatever the filter.
		if errOut != c.stderr && (c.stderr != "" || errOut != dropLine) {
			t.Errorf("kmesctl tail %q: stderr %q, want %q", c.args, errOut, c.stderr)
		}
	}
}

// syncBuffer is a bytes.Buffer that tail's goroutines and the test may
// share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// tail without --count runs until SIGTERM or SIGINT, then exits 0.
func TestTailStopsOnSignal(t *testing.T) {
	// The test's own handler keeps a signal from killing the test binary
	// whatever the timing.
	mine := make(chan os.Signal, 2)
	signal.Notify(mine, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(mine)

	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		src := withSimRings(t, 2)
		smp := emitSample(src)
		var out, errOut syncBuffer
		done := make(chan error, 1)
		go func() {
			done <- run([]string{"tail", "--from-start", "--type", "b"}, strings.NewReader(""), &out, &errOut)
		}()
		deadline := time.Now().Add(10 * time.Second)
		for out.String() == "" && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		// Events after the start go out too.
		src.Producer(1).Emit(0, "b", []byte{0xc0})
		for strings.Count(out.String(), "\n") < 2 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if err := syscall.Kill(os.Getpid(), sig); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("tail after %v: %v", sig, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("tail did not stop on %v", sig)
		}
		if got := out.String(); !strings.HasPrefix(got, smp.b) || !strings.Contains(got, `"type":"b","payload":null}`) {
			t.Errorf("tail printed %q", got)
		}
	}
}

// Without --from-start, tail starts at the end of the rings.
func TestTailFromEnd(t *testing.T) {
	src := withSimRings(t, 1)
	p := src.Producer(0)
	p.Emit(0, "old", []byte{0xc0})
	var out, errOut syncBuffer
	done := make(chan error, 1)
	go func() { done <- run([]string{"tail", "--count", "1"}, strings.NewReader(""), &out, &errOut) }()
	// The consumer may not be attached yet: emit until tail prints.
	deadline := time.Now().Add(10 * time.Second)
	for out.String() == "" && time.Now().Before(deadline) {
		p.Emit(0, "new", []byte{0xc0})
		time.Sleep(5 * time.Millisecond)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.Contains(got, `"type":"new"`) {
		t.Errorf("tail printed %q, want a new event", got)
	}
}

func TestStatSimulated(t *testing.T) {
	src := withSimRings(t, 2)
	emitSample(src) // cpu 1 dropped an event
	out, errOut, err := runArgs(t, "", "stat")
	if err != nil || errOut != "" {
		t.Fatalf("stat: %v, stderr %q", err, errOut)
	}
	want := "" +
		"  cpu  generation  capacity  write_pos  tail_pos  in use  dropped\n" +
		"    0           1     65536         64         0      64        0\n" +
		"    1           1     65536         64         0      64        1\n"
	if out != want {
		t.Errorf("stat:\n%swant\n%s", out, want)
	}
	out, _, err = runArgs(t, "", "stat", "--json")
	wantJSON := `[{"cpu":0,"generation":1,"capacity":65536,"write_pos":64,"tail_pos":0,"in_use":64,"dropped":0},` +
		`{"cpu":1,"generation":1,"capacity":65536,"write_pos":64,"tail_pos":0,"in_use":64,"dropped":1}]` + "\n"
	if err != nil || out != wantJSON {
		t.Errorf("stat --json: %v\n%s\nwant\n%s", err, out, wantJSON)
	}

	// After a swap: the new generation and capacity, the new ring's
	// positions (the events copied from position 0), and the dropped
	// count carried over.
	src.Producer(0).SetDropped(7)
	if _, err := src.Swap(0, 131072); err != nil {
		t.Fatal(err)
	}
	out, _, err = runArgs(t, "", "stat", "--json")
	wantJSON = `[{"cpu":0,"generation":2,"capacity":131072,"write_pos":64,"tail_pos":0,"in_use":64,"dropped":7},` +
		`{"cpu":1,"generation":1,"capacity":65536,"write_pos":64,"tail_pos":0,"in_use":64,"dropped":1}]` + "\n"
	if err != nil || out != wantJSON {
		t.Errorf("stat --json after a swap: %v\n%s\nwant\n%s", err, out, wantJSON)
	}
}
