//go:build linux && amd64

package kmes_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kmes-project/kmes/userspace/kmes"
)

func newReader(t testing.TB, opts *kmes.Options) *kmes.Reader {
	t.Helper()
	rd, err := kmes.NewReader(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	return rd
}

type readResult struct {
	n   int
	seq uint64
	cpu int
	err error
}

// readInBackground runs ReadEvents on rd, one call per value sent on the
// returned channel, with the results on the other.
func readInBackground(rd *kmes.Reader) (chan<- struct{}, <-chan readResult) {
	ask, got := make(chan struct{}), make(chan readResult)
	go func() {
		dst := make([]kmes.View, 8)
		for range ask {
			n, err := rd.ReadEvents(dst)
			r := readResult{n: n, err: err}
			if n > 0 {
				r.seq, r.cpu = dst[0].Sequence(), dst[0].CPU()
			}
			got <- r
		}
		close(got)
	}()
	return ask, got
}

// asleep gives a reader that found its rings empty time to go past its
// spin into its futex wait.
func asleep() { time.Sleep(20 * time.Millisecond) }

func expect(t *testing.T, got <-chan readResult, what string) readResult {
	t.Helper()
	select {
	case r := <-got:
		return r
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the read did not return in 10 s", what)
		return readResult{}
	}
}

// TestReaderWaitsOnEveryRing: one Reader over more rings than one
// futex_waitv takes (127 and the Reader's own word) sleeps on all of
// them, and an event on any ring, in any order, wakes it: the rings of
// the first group wake its own wait, the others a watcher's.
func TestReaderWaitsOnEveryRing(t *testing.T) {
	const rings = 2*127 + 9
	s := newSource(t, rings, testCapacity)
	rd := newReader(t, &kmes.Options{Source: s})
	ask, got := readInBackground(rd)
	defer close(ask)
	order := rand.Perm(rings)
	// The first wakes come from every group; then a sample of the rest.
	order = append([]int{0, 126, 127, 253, 254, rings - 1}, order[:40]...)
	for i, cpu := range order {
		ask <- struct{}{}
		if i%3 != 0 {
			asleep() // mostly a sleeping reader; sometimes one still spinning
		}
		seq := s.Emit(cpu, 0, "wake", payloadFor(uint64(i), 4))
		r := expect(t, got, "event on ring "+strconv.Itoa(cpu))
		if r.err != nil || r.n != 1 || r.cpu != cpu || r.seq != seq {
			t.Fatalf("event %d on ring %d: read %d events (cpu %d, seq %d), %v", seq, cpu, r.n, r.cpu, r.seq, r.err)
		}
	}
	if st := rd.Stats(); len(st) != rings {
		t.Errorf("%d stats for %d rings", len(st), rings)
	}
}

// TestReaderCloseWakesWatchers: Close returns, and the read returns
// ErrClosed, while the Reader and its watchers sleep.
func TestReaderCloseWakesWatchers(t *testing.T) {
	s := newSource(t, 300, testCapacity)
	rd, err := kmes.NewReader(&kmes.Options{Source: s})
	if err != nil {
		t.Fatal(err)
	}
	ask, got := readInBackground(rd)
	defer close(ask)
	ask <- struct{}{}
	asleep()
	closed := make(chan error)
	go func() { closed <- rd.Close() }()
	if r := expect(t, got, "Close"); r.n != 0 || !errors.Is(r.err, os.ErrClosed) {
		t.Errorf("read after Close: %d events, %v; want os.ErrClosed", r.n, r.err)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return: a watcher did not stop")
	}
}

func TestReaderDeadline(t *testing.T) {
	s := newSource(t, 3, testCapacity)
	rd := newReader(t, &kmes.Options{Source: s})
	dst := make([]kmes.View, 4)

	// A deadline in the past: what is ready, then at once the error.
	s.Emit(1, 0, "x", []byte{0xc0})
	rd.SetDeadline(time.Now().Add(-time.Second))
	if n, err := rd.ReadEvents(dst); n != 1 || err != nil {
		t.Fatalf("non-blocking read of a ready event: %d, %v", n, err)
	}
	if n, err := rd.ReadEvents(dst); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("non-blocking read of empty rings: %d, %v; want os.ErrDeadlineExceeded", n, err)
	}

	// A deadline ahead: the read waits for it.
	const wait = 100 * time.Millisecond
	rd.SetDeadline(time.Now().Add(wait))
	start := time.Now()
	if n, err := rd.ReadEvents(dst); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with a deadline: %d, %v", n, err)
	}
	if took := time.Since(start); took < wait {
		t.Errorf("the read returned after %v, before its deadline %v", took, wait)
	}

	// A deadline set while a read waits applies to it; a zero one lets
	// the next read wait for an event.
	rd.SetDeadline(time.Time{})
	ask, got := readInBackground(rd)
	defer close(ask)
	ask <- struct{}{}
	asleep()
	rd.SetDeadline(time.Now())
	if r := expect(t, got, "SetDeadline while waiting"); r.n != 0 || !errors.Is(r.err, os.ErrDeadlineExceeded) {
		t.Fatalf("read when the deadline moved to now: %d, %v", r.n, r.err)
	}
	rd.SetDeadline(time.Time{})
	ask <- struct{}{}
	asleep()
	s.Emit(2, 0, "x", []byte{0xc0})
	if r := expect(t, got, "event after the deadline was cleared"); r.n != 1 || r.err != nil || r.cpu != 2 {
		t.Fatalf("read after clearing the deadline: %d on cpu %d, %v", r.n, r.cpu, r.err)
	}
}

// TestReaderFlush: Flush ends a waiting read with ErrFlushed, a read that
// finds events serves it, and a Flush racing an emit loses nothing.
func TestReaderFlush(t *testing.T) {
	s := newSource(t, 2, testCapacity)
	rd := newReader(t, &kmes.Options{Source: s})
	ask, got := readInBackground(rd)
	defer close(ask)

	ask <- struct{}{}
	asleep()
	rd.Flush()
	if r := expect(t, got, "Flush"); r.n != 0 || r.err != kmes.ErrFlushed {
		t.Fatalf("read ended by Flush: %d, %v; want ErrFlushed", r.n, r.err)
	}
	// A flush with no read waiting ends the next wait at once.
	rd.Flush()
	ask <- struct{}{}
	if r := expect(t, got, "Flush before the read"); r.err != kmes.ErrFlushed {
		t.Fatalf("read after a Flush: %d, %v; want ErrFlushed", r.n, r.err)
	}
	// Flushes racing emits: every event is read once, in order.
	const events = 2000
	emitted := make(chan struct{})
	defer func() { <-emitted }()
	go func() {
		defer close(emitted)
		for i := range events {
			s.Emit(i%2, 0, "x", payloadFor(uint64(i), 1))
			if i%7 == 0 {
				rd.Flush()
			}
		}
	}()
	last := [2]uint64{}
	for read := 0; read < events; {
		ask <- struct{}{}
		r := expect(t, got, "racing flushes")
		if r.err != nil && r.err != kmes.ErrFlushed {
			t.Fatalf("read: %v", r.err)
		}
		if r.n > 0 && r.seq != last[r.cpu]+1 {
			t.Fatalf("cpu %d: event %d after %d", r.cpu, r.seq, last[r.cpu])
		}
		read += r.n
		if r.n > 0 {
			last[r.cpu] = r.seq + uint64(r.n) - 1
		}
	}
	if st := rd.Stats(); st[0].Events+st[1].Events != events || st[0].Lost+st[1].Lost != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestReaderIterators: Records and Views go through every event and end
// when the Reader is closed; a deadline ends them with its error.
func TestReaderIterators(t *testing.T) {
	s := newSource(t, 2, testCapacity)
	rd := newReader(t, &kmes.Options{Source: s})
	for i := range 10 {
		s.Emit(i%2, 0, "it", payloadFor(uint64(i), 2))
	}
	var seen int
	for rec, err := range rd.Records() {
		if err != nil {
			t.Fatalf("Records: %v", err)
		}
		if rec.Type != "it" {
			t.Errorf("record %+v", rec)
		}
		if seen++; seen == 10 {
			go rd.Close()
		}
	}
	if seen != 10 {
		t.Errorf("Records went through %d events, want 10", seen)
	}

	rd = newReader(t, &kmes.Options{Source: s})
	rd.SetDeadline(time.Now())
	seen = 0
	var last error
	for v, err := range rd.Views() {
		if err != nil {
			last = err
			continue
		}
		seen++
		_ = v.Sequence()
	}
	if seen != 10 || !errors.Is(last, os.ErrDeadlineExceeded) {
		t.Errorf("Views with a deadline: %d events, then %v; want 10, then os.ErrDeadlineExceeded", seen, last)
	}
}

// TestReaderCPUs: Options.CPUs keeps only those rings mapped and read.
func TestReaderCPUs(t *testing.T) {
	s := newSource(t, 4, testCapacity)
	rd := newReader(t, &kmes.Options{Source: s, CPUs: []int{3, 1}})
	if cpus := rd.CPUs(); !slices.Equal(cpus, []int{1, 3}) {
		t.Errorf("CPUs %v, want [1 3]", cpus)
	}
	if mapped := s.Producer(0).Mapped() + s.Producer(2).Mapped(); mapped != 0 {
		t.Errorf("%d mappings of the rings not asked for", mapped)
	}
	for cpu := range 4 {
		s.Emit(cpu, 0, "c", []byte{0xc0})
	}
	rd.SetDeadline(time.Now())
	var cpus []int
	for rec, err := range rd.Records() {
		if err != nil {
			break
		}
		cpus = append(cpus, rec.CPU)
	}
	slices.Sort(cpus)
	if !slices.Equal(cpus, []int{1, 3}) {
		t.Errorf("read events of cpus %v, want [1 3]", cpus)
	}
	if _, err := kmes.NewReader(&kmes.Options{Source: s, CPUs: []int{7}}); err == nil ||
		!strings.Contains(err.Error(), "no ring of cpu 7") {
		t.Errorf("NewReader of a cpu without a ring: %v", err)
	}
}

// TestReadEventsIntoNothing: a read into an empty slice reads nothing and
// changes nothing, even with a swap pending (it once took the replaced
// ring for drained, and skipped its events).
func TestReadEventsIntoNothing(t *testing.T) {
	s := newSource(t, 1, testCapacity)
	rd := newReader(t, &kmes.Options{Source: s})
	for i := range 5 {
		s.Emit(0, 0, "x", payloadFor(uint64(i+1), 4))
	}
	if _, err := s.Swap(0, 2*testCapacity); err != nil {
		t.Fatal(err)
	}
	if n, err := rd.ReadEvents(nil); n != 0 || err != nil {
		t.Fatalf("ReadEvents(nil): %d, %v", n, err)
	}
	s.Emit(0, 0, "x", payloadFor(6, 4))
	rd.SetDeadline(time.Now())
	var seqs []uint64
	for r, err := range rd.Records() {
		if err != nil {
			break
		}
		seqs = append(seqs, r.Sequence)
	}
	if !slices.Equal(seqs, []uint64{1, 2, 3, 4, 5, 6}) || rd.Stats()[0].Lost != 0 {
		t.Errorf("read %v (stats %+v), want 1..6 and nothing lost", seqs, rd.Stats()[0])
	}
}

// TestReaderOfNoRings: a Reader of no ring is an error, not a read that
// spins for ever.
func TestReaderOfNoRings(t *testing.T) {
	s := newSource(t, 2, testCapacity)
	if _, err := kmes.NewReader(&kmes.Options{Source: s, CPUs: []int{}}); err == nil ||
		!strings.Contains(err.Error(), "no ring to read") {
		t.Errorf("NewReader of no CPU: %v, want an error", err)
	}
}

// TestReaderFarDeadline: a deadline centuries away is no deadline, not an
// invalid timeout.
func TestReaderFarDeadline(t *testing.T) {
	s := newSource(t, 1, testCapacity)
	rd := newReader(t, &kmes.Options{Source: s})
	rd.SetDeadline(time.Now().Add(math.MaxInt64))
	ask, got := readInBackground(rd)
	defer close(ask)
	ask <- struct{}{}
	asleep()
	s.Emit(0, 0, "x", []byte{0xc0})
	if r := expect(t, got, "event with a far deadline"); r.n != 1 || r.err != nil {
		t.Errorf("read with a deadline in 292 years: %d, %v", r.n, r.err)
	}
}
