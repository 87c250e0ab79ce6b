//go:build linux && amd64

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmes-project/kmes/userspace/internal/ringsim"
	"github.com/kmes-project/kmes/userspace/kmes"
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
// cpu 0 "a" from KMES with no payload (which is no msgpack value); cpu 1 a dropped event, then "c"
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
	// at is the "ts" and "ts_ns" fields of an event µs after base.
	at := func(µs int) string {
		return base.Format("2006-01-02T15:04:05.000") + fmt.Sprintf(`%03d000Z","ts_ns":"%d`, µs, base.UnixNano()+int64(µs)*1000)
	}
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
		k: `{"cpu":0,"seq":2,"ts":"` + at(3) + `","origin":1,"type":"a"}` + "\n",
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
		"  cpu  generation  capacity  write_pos  tail_pos  in use  dropped  page size\n" +
		"    0           1     65536         64         0      64        0       4KiB\n" +
		"    1           1     65536         64         0      64        1       4KiB\n"
	if out != want {
		t.Errorf("stat:\n%swant\n%s", out, want)
	}
	out, _, err = runArgs(t, "", "stat", "--json")
	wantJSON := `[{"cpu":0,"generation":1,"capacity":65536,"page_size":4096,"write_pos":64,"tail_pos":0,"in_use":64,"dropped":0},` +
		`{"cpu":1,"generation":1,"capacity":65536,"page_size":4096,"write_pos":64,"tail_pos":0,"in_use":64,"dropped":1}]` + "\n"
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
	wantJSON = `[{"cpu":0,"generation":2,"capacity":131072,"page_size":4096,"write_pos":64,"tail_pos":0,"in_use":64,"dropped":7},` +
		`{"cpu":1,"generation":1,"capacity":65536,"page_size":4096,"write_pos":64,"tail_pos":0,"in_use":64,"dropped":1}]` + "\n"
	if err != nil || out != wantJSON {
		t.Errorf("stat --json after a swap: %v\n%s\nwant\n%s", err, out, wantJSON)
	}
}

// The page size column shows which ring fell back: each ring's
// data_page_size, "-" (0 in JSON) where the kernel does not say.
func TestStatPageSize(t *testing.T) {
	src := withSimRings(t, 3)
	src.Producer(0).SetPageSize(2 << 20)
	src.Producer(2).SetPageSize(0)
	out, errOut, err := runArgs(t, "", "stat")
	want := "" +
		"  cpu  generation  capacity  write_pos  tail_pos  in use  dropped  page size\n" +
		"    0           1     65536          0         0       0        0       2MiB\n" +
		"    1           1     65536          0         0       0        0       4KiB\n" +
		"    2           1     65536          0         0       0        0          -\n"
	if err != nil || errOut != "" || out != want {
		t.Errorf("stat: %v, stderr %q\n%swant\n%s", err, errOut, out, want)
	}
	out, _, err = runArgs(t, "", "stat", "--json")
	wantJSON := `[{"cpu":0,"generation":1,"capacity":65536,"page_size":2097152,"write_pos":0,"tail_pos":0,"in_use":0,"dropped":0},` +
		`{"cpu":1,"generation":1,"capacity":65536,"page_size":4096,"write_pos":0,"tail_pos":0,"in_use":0,"dropped":0},` +
		`{"cpu":2,"generation":1,"capacity":65536,"page_size":0,"write_pos":0,"tail_pos":0,"in_use":0,"dropped":0}]` + "\n"
	if err != nil || out != wantJSON {
		t.Errorf("stat --json: %v\n%s\nwant\n%s", err, out, wantJSON)
	}
}

// lateMapped maps rings that a swap already replaced: kmes_attach found
// them just before the swap, the mmap came after it.
type lateMapped struct {
	*ringsim.Source
	rings []*ringsim.Ring
}

func (s lateMapped) Rings() ([]*kmes.Ring, error) { return ringsim.Readers(s.rings) }

// A ring mapped after the swap that replaced it shows its own generation,
// the one of its capacity and positions, not the new ring's.
func TestStatOfARingMappedAfterItsSwap(t *testing.T) {
	src := withSimRings(t, 1)
	old := src.Producer(0)
	old.Emit(0, "a", nil)
	if err := src.SetCapacity(131072); err != nil {
		t.Fatal(err)
	}
	ringSource = lateMapped{src, []*ringsim.Ring{old}}
	out, _, err := runArgs(t, "", "stat", "--json")
	want := `[{"cpu":0,"generation":1,"capacity":65536,"page_size":4096,"write_pos":30,"tail_pos":0,"in_use":30,"dropped":0}]` + "\n"
	if err != nil || out != want {
		t.Errorf("stat --json: %v\n%s\nwant\n%s", err, out, want)
	}
	if n := src.Replaced(); n != 0 {
		t.Errorf("%d replaced rings still mapped after stat", n)
	}
}

// setCapacity swaps every simulated ring, retrying while a reader has not
// followed the last swap yet (EBUSY).
func setCapacity(t *testing.T, src *ringsim.Source, capacity uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := src.SetCapacity(capacity)
		if err == nil {
			return
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			t.Fatalf("set capacity %d: %v", capacity, err)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// tail follows swaps of the rings: every event once, in sequence on each
// CPU, and no loss reported.
func TestTailFollowsASwap(t *testing.T) {
	const per = 5 // events per CPU between swaps
	src := withSimRings(t, 2)
	emit := func(round int) {
		for cpu := range 2 {
			for range per {
				src.Emit(cpu, 0, "x", []byte{byte(round)})
			}
			src.Emit(cpu, 0, "other", []byte{0xc0})
		}
	}
	lines := func(out *syncBuffer) int { return strings.Count(out.String(), "\n") }
	var out, errOut syncBuffer
	done := make(chan error, 1)
	emit(0)
	go func() {
		done <- run([]string{"tail", "--from-start", "--type", "x", "--count", fmt.Sprint(3 * 2 * per)}, strings.NewReader(""), &out, &errOut)
	}()
	deadline := time.Now().Add(10 * time.Second)
	waitLines := func(n int) {
		t.Helper()
		for lines(&out) < n {
			if time.Now().After(deadline) {
				t.Fatalf("tail printed %d lines, want %d:\n%s", lines(&out), n, out.String())
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitLines(2 * per)
	setCapacity(t, src, 131072)
	emit(1)
	waitLines(4 * per)
	setCapacity(t, src, 65536) // after tail followed the first swap
	emit(2)
	if err := <-done; err != nil {
		t.Fatalf("tail: %v", err)
	}
	last := map[int]int{}
	for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		var cpu, seq, round int
		if _, err := fmt.Sscanf(l, `{"cpu":%d,"seq":%d,`, &cpu, &seq); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if _, err := fmt.Sscanf(l[strings.Index(l, `"payload":`):], `"payload":%d}`, &round); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		// Each round's per events on a CPU, then an event of another
		// type, which tail leaves out.
		want := last[cpu] + 1
		if last[cpu]%(per+1) == per {
			want++
		}
		if seq != want || round != (seq-1)/(per+1) {
			t.Errorf("cpu %d: sequence %d of round %d after %d; want %d", cpu, seq, round, last[cpu], want)
		}
		last[cpu] = seq
	}
	if last[0] != 3*(per+1)-1 || last[1] != 3*(per+1)-1 {
		t.Errorf("tail stopped at sequences %v; output:\n%s", last, out.String())
	}
	if errOut.String() != "" {
		t.Errorf("tail reported: %s", errOut.String())
	}
	if n := src.Replaced(); n != 0 {
		t.Errorf("%d replaced rings still mapped after tail ended", n)
	}
}

// stat shows the new rings after a swap, and leaves nothing mapped that
// would refuse the next one.
func TestStatAcrossSwaps(t *testing.T) {
	src := withSimRings(t, 2)
	src.Producer(1).Drop()
	for i, capacity := range []uint64{131072, 65536, 131072} {
		if err := src.SetCapacity(capacity); err != nil {
			t.Fatalf("swap %d: %v (stat kept a ring mapped)", i+1, err)
		}
		out, _, err := runArgs(t, "", "stat", "--json")
		want := fmt.Sprintf(`[{"cpu":0,"generation":%d,"capacity":%d,"page_size":4096,"write_pos":0,"tail_pos":0,"in_use":0,"dropped":0},`+
			`{"cpu":1,"generation":%[1]d,"capacity":%[2]d,"page_size":4096,"write_pos":0,"tail_pos":0,"in_use":0,"dropped":1}]`+"\n", i+2, capacity)
		if err != nil || out != want {
			t.Errorf("stat --json after swap %d: %v\n%s\nwant\n%s", i+1, err, out, want)
		}
	}
}
