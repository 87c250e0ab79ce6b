//go:build linux && amd64

package kmes_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kmes-project/kmes/userspace/kmes"
)

func newConsumer(t testing.TB, opts *kmes.Options) *kmes.Consumer {
	t.Helper()
	c, err := kmes.NewConsumer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestConsumerPerCPU(t *testing.T) {
	const cpus, perCPU = 4, 5000
	s := newSource(t, cpus, 1<<20) // holds every event: none may be lost
	c := newConsumer(t, &kmes.Options{Source: s})
	var mu sync.Mutex
	last := make([]uint64, cpus)
	count := 0
	done := make(chan error, 1)
	go func() {
		done <- c.ReadPerCPU(func(r *kmes.Record) error {
			checkWhole(t, r)
			mu.Lock()
			defer mu.Unlock()
			if r.Sequence != last[r.CPU]+1 {
				t.Errorf("cpu %d: sequence %d after %d", r.CPU, r.Sequence, last[r.CPU])
			}
			last[r.CPU] = r.Sequence
			if count++; count == cpus*perCPU {
				go c.Close()
			}
			return nil
		})
	}()
	var wg sync.WaitGroup
	for cpu := range cpus {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := s.Producer(cpu)
			for seq := uint64(1); seq <= perCPU; seq++ {
				p.Emit(0, "percpu", payloadFor(seq, 8))
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("read %d of %d events", count, cpus*perCPU)
	}
	for _, st := range c.Stats() {
		if st.Events != perCPU || st.Lost != 0 || st.LastSequence != perCPU {
			t.Errorf("stats %+v", st)
		}
	}
}

func TestConsumerStopsOnHandlerError(t *testing.T) {
	s := newSource(t, 2, testCapacity)
	c := newConsumer(t, &kmes.Options{Source: s})
	s.Producer(1).Emit(0, "x", []byte{0xc0})
	boom := errors.New("boom")
	if err := c.ReadPerCPU(func(*kmes.Record) error { return boom }); err != boom {
		t.Fatalf("ReadPerCPU returned %v, want the handler's error", err)
	}
}

func TestConsumerMergedOrder(t *testing.T) {
	// A backlog stamped long ago comes out in exact order at once; events
	// stamped now are held for the window and come out in order too.
	for _, c := range []struct {
		name string
		age  time.Duration
	}{{"backlog", time.Hour}, {"live", 0}} {
		t.Run(c.name, func(t *testing.T) { testMergedOrder(t, c.age) })
	}
}

func testMergedOrder(t *testing.T, age time.Duration) {
	const cpus = 3
	s := newSource(t, cpus, testCapacity)
	// Timestamps interleave across CPUs; CPU 2 is emitted first but its
	// events are stamped latest, and two events tie on time.
	stamps := [][]int64{{10, 40, 70}, {20, 50, 70}, {30, 60, 90}}
	now := time.Now().Add(-age).UnixNano()
	for cpu := cpus - 1; cpu >= 0; cpu-- {
		p := s.Producer(cpu)
		for _, ts := range stamps[cpu] {
			p.Now = func() int64 { return now + ts }
			p.Emit(0, "m", []byte{0xc0})
		}
	}
	c := newConsumer(t, &kmes.Options{Source: s, ReorderWindow: 50 * time.Millisecond})
	type key struct {
		ts  int64
		cpu int
	}
	var got []key
	err := c.ReadMerged(func(r *kmes.Record) error {
		got = append(got, key{r.Timestamp - now, r.CPU})
		if len(got) == 9 {
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []key{{10, 0}, {20, 1}, {30, 2}, {40, 0}, {50, 1}, {60, 2}, {70, 0}, {70, 1}, {90, 2}}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("merged order %v, want %v", got, want)
		}
	}
}

func TestConsumerMergedBacklogOrder(t *testing.T) {
	// Thousands of old events per CPU, readers racing each other: the
	// merged stream is sorted.
	const cpus, perCPU = 4, 3000
	s := newSource(t, cpus, 1<<20)
	base := time.Now().Add(-time.Hour).UnixNano()
	for cpu := range cpus {
		p := s.Producer(cpu)
		for i := range perCPU {
			p.Now = func() int64 { return base + int64(i*cpus+(cpu*7)%cpus) }
			p.Emit(0, "b", []byte{0xc0})
		}
	}
	c := newConsumer(t, &kmes.Options{Source: s, ReorderWindow: 5 * time.Millisecond})
	var last int64
	n := 0
	err := c.ReadMerged(func(r *kmes.Record) error {
		if r.Timestamp < last {
			t.Errorf("event %d: timestamp %d after %d", n, r.Timestamp-base, last-base)
		}
		last = r.Timestamp
		if n++; n == cpus*perCPU {
			c.Close()
		}
		return nil
	})
	if err != nil || n != cpus*perCPU {
		t.Fatalf("ReadMerged: %v after %d events", err, n)
	}
}

func TestConsumerMergedFlushesOnClose(t *testing.T) {
	s := newSource(t, 2, testCapacity)
	c := newConsumer(t, &kmes.Options{Source: s, ReorderWindow: time.Hour})
	s.Producer(0).Emit(0, "a", []byte{0xc0})
	s.Producer(1).Emit(0, "b", []byte{0xc0})
	time.AfterFunc(100*time.Millisecond, func() { c.Close() })
	var n int
	if err := c.ReadMerged(func(*kmes.Record) error { n++; return nil }); err != nil || n != 2 {
		t.Fatalf("ReadMerged: %v, %d events, want the 2 held back", err, n)
	}
}

func TestConsumerReportsCorruption(t *testing.T) {
	s := newSource(t, 1, testCapacity)
	var mu sync.Mutex
	var reported []error
	c := newConsumer(t, &kmes.Options{Source: s, OnError: func(err error) {
		mu.Lock()
		reported = append(reported, err)
		mu.Unlock()
	}})
	s.Producer(0).WriteRaw(rawEvent(0, 0, 0, 40))
	s.Producer(0).Emit(0, "good", []byte{0xc0})
	var types []string
	go func() {
		time.Sleep(200 * time.Millisecond)
		s.Producer(0).Emit(0, "later", []byte{0xc0})
	}()
	err := c.ReadPerCPU(func(r *kmes.Record) error {
		types = append(types, r.Type)
		c.Close()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	var ce *kmes.CorruptError
	if len(reported) != 1 || !errors.As(reported[0], &ce) {
		t.Fatalf("reported %v, want one CorruptError", reported)
	}
	if len(types) != 1 || types[0] != "later" {
		t.Errorf("read %v after the corruption, want [later]", types)
	}
	if st := c.Stats()[0]; st.Corrupt != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestConsumerMergedKeepsEachCPUInSequenceOrder(t *testing.T) {
	// CPU 0's clock steps back after its first event: its events still
	// come out in sequence order, merged with CPU 1's by their heads. The
	// events are live: all of them are held until the window has passed.
	s := newSource(t, 2, testCapacity)
	now := time.Now().UnixNano()
	for _, ev := range []struct {
		cpu int
		ts  int64
	}{{0, 0}, {0, -1000}, {0, -500}, {1, -700}} {
		p := s.Producer(ev.cpu)
		p.Now = func() int64 { return now + ev.ts }
		p.Emit(0, "m", []byte{0xc0})
	}
	c := newConsumer(t, &kmes.Options{Source: s, ReorderWindow: 100 * time.Millisecond})
	var got []string
	err := c.ReadMerged(func(r *kmes.Record) error {
		if got = append(got, fmt.Sprintf("%d:%d", r.CPU, r.Sequence)); len(got) == 4 {
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "1:1 0:1 0:2 0:3"; strings.Join(got, " ") != want {
		t.Fatalf("merged cpu:sequence %v, want %s", got, want)
	}
}

// mergeInBackground runs c.ReadMerged on another goroutine. next returns
// the sequence number of the next event it hands out, failing the test
// (saying what was awaited) if none comes within 5 s; stop closes c and
// checks that ReadMerged then returned nil.
func mergeInBackground(t *testing.T, c *kmes.Consumer) (next func(what string) uint64, stop func()) {
	got := make(chan uint64, 16)
	done := make(chan error, 1)
	go func() {
		done <- c.ReadMerged(func(r *kmes.Record) error {
			got <- r.Sequence
			return nil
		})
	}()
	next = func(what string) uint64 {
		t.Helper()
		select {
		case seq := <-got:
			return seq
		case <-time.After(5 * time.Second):
			t.Fatalf("ReadMerged did not hand out %s", what)
			return 0
		}
	}
	stop = func() {
		t.Helper()
		c.Close()
		if err := <-done; err != nil {
			t.Fatalf("ReadMerged: %v", err)
		}
	}
	return next, stop
}

func TestConsumerMergedDoesNotWaitForTheWallClock(t *testing.T) {
	// Events stamped an hour ahead (the clock was stepped back since) go
	// out after the reorder window, not in an hour.
	s := newSource(t, 2, testCapacity)
	p := s.Producer(0)
	p.Now = func() int64 { return time.Now().Add(time.Hour).UnixNano() }
	c := newConsumer(t, &kmes.Options{Source: s, ReorderWindow: 20 * time.Millisecond})
	next, stop := mergeInBackground(t, c)
	for range 2 {
		p.Emit(0, "ahead", []byte{0xc0})
		next("an event stamped an hour ahead")
	}
	stop()
}

func TestConsumerMergedBoundsWhatItHolds(t *testing.T) {
	// With an hour's window nothing is ready while CPU 1 is empty: only
	// the bound in bytes lets CPU 0's events out, in order, before Close.
	const n, bound = 200, 10 << 10
	s := newSource(t, 2, 1<<20)
	for seq := uint64(1); seq <= n; seq++ {
		s.Producer(0).Emit(0, "big", payloadFor(seq, 200)) // 205 bytes held
	}
	c := newConsumer(t, &kmes.Options{Source: s, ReorderWindow: time.Hour, MaxHeldBytes: bound})
	released := make(chan struct{})
	var last uint64
	var held atomic.Bool
	go func() {
		select {
		case <-released:
		case <-time.After(5 * time.Second):
			held.Store(true)
		}
		c.Close()
	}()
	err := c.ReadMerged(func(r *kmes.Record) error {
		if r.Sequence != last+1 {
			t.Errorf("sequence %d after %d", r.Sequence, last)
		}
		if last = r.Sequence; last == n-bound/205 {
			close(released)
		}
		return nil
	})
	if err != nil || last != n {
		t.Fatalf("ReadMerged: %v, last sequence %d", err, last)
	}
	if held.Load() {
		t.Fatalf("ReadMerged held more than %d bytes until Close", bound)
	}
}

func TestConsumerRefusesASecondRead(t *testing.T) {
	s := newSource(t, 2, testCapacity)
	c := newConsumer(t, &kmes.Options{Source: s, ReorderWindow: time.Millisecond})
	next, stop := mergeInBackground(t, c)
	s.Producer(0).Emit(0, "first", []byte{0xc0})
	next("the first event") // the first read is running
	noop := func(*kmes.Record) error { return nil }
	reads := map[string]func(func(*kmes.Record) error) error{"ReadMerged": c.ReadMerged, "ReadPerCPU": c.ReadPerCPU}
	for name, read := range reads {
		if err := read(noop); !errors.Is(err, kmes.ErrBusy) {
			t.Errorf("%s during ReadMerged: %v, want ErrBusy", name, err)
		}
	}
	// The first read goes on undisturbed: both rings wake it, and go
	// back to sleep.
	s.Producer(1).Emit(0, "second", []byte{0xc0})
	s.Producer(0).Emit(0, "third", []byte{0xc0})
	next("the second event")
	next("the third event")
	time.Sleep(10 * time.Millisecond) // the readers find their rings empty again
	stop()
	// A Consumer is read once.
	for name, read := range reads {
		if err := read(noop); !errors.Is(err, kmes.ErrClosed) {
			t.Errorf("%s after a read returned: %v, want ErrClosed", name, err)
		}
	}
}

// TestConsumerMergedOnIdle: OnIdle comes once the backlog is handed out
// and every ring was found empty, from fn's goroutine, once per idle
// spell; its error stops ReadMerged.
func TestConsumerMergedOnIdle(t *testing.T) {
	s := newSource(t, 3, testCapacity)
	for i := range 30 {
		s.Emit(i%3, 0, "backlog", payloadFor(uint64(i), 1))
	}
	stop := errors.New("stop")
	var read, idles int
	var readAtIdle []int
	c := newConsumer(t, &kmes.Options{Source: s, ReorderWindow: 5 * time.Millisecond, OnIdle: func() error {
		idles++
		readAtIdle = append(readAtIdle, read)
		if idles == 1 {
			// Events after an idle spell make another one.
			s.Emit(1, 0, "later", payloadFor(99, 1))
			return nil
		}
		return stop
	}})
	err := c.ReadMerged(func(*kmes.Record) error { read++; return nil })
	if err != stop || !slices.Equal(readAtIdle, []int{30, 31}) {
		t.Errorf("ReadMerged: %v, OnIdle after %v events; want stop, after [30 31]", err, readAtIdle)
	}
}

// TestConsumerMergedWithASlowHandler: while fn is slow and the merge lags
// the readers by more than the window, an event stamped before one
// already read, on a ring that was idle, still goes out first: what was
// read goes in before anything goes out, and an idle mark older than the
// event says nothing.
func TestConsumerMergedWithASlowHandler(t *testing.T) {
	s := newSource(t, 2, testCapacity)
	c := newConsumer(t, &kmes.Options{Source: s, ReorderWindow: 10 * time.Millisecond})
	base := time.Now().UnixNano()
	var ts atomic.Int64
	for i := range 2 {
		s.Producer(i).Now = func() int64 { return base + ts.Load() }
	}
	var stamps []int64
	done := make(chan error, 1)
	go func() {
		done <- c.ReadMerged(func(r *kmes.Record) error {
			stamps = append(stamps, r.Timestamp-base)
			time.Sleep(2 * time.Millisecond) // a slow sink
			return nil
		})
	}()
	time.Sleep(50 * time.Millisecond) // both rings found empty
	for i := range 50 {               // a backlog: 100 ms of fn
		ts.Store(int64(i))
		s.Emit(0, 0, "backlog", payloadFor(uint64(i), 2))
	}
	time.Sleep(20 * time.Millisecond)
	ts.Store(1000)
	s.Emit(0, 0, "later", payloadFor(1, 2))
	time.Sleep(time.Millisecond)
	ts.Store(500) // stamped before "later", published after it
	s.Emit(1, 0, "earlier", payloadFor(1, 2))
	time.Sleep(400 * time.Millisecond)
	c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(stamps) != 52 || !slices.IsSorted(stamps) {
		t.Errorf("handed out %d events stamped %v, want 52 in order", len(stamps), stamps)
	}
}
