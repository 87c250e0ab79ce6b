//go:build linux && amd64

package kmes_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/userspace/kmestest"
)

// The tests of this file swap rings as a write of
// kernel.kmes.buffer_capacity does (kmestest.Source.SetCapacity): every
// CPU at once, refused with EBUSY while a reader still maps a ring a
// swap replaced.

// setCapacity calls src.SetCapacity until it is not refused with EBUSY
// (a reader has not followed the last swap yet), for up to 10 s. It
// returns the number of refusals.
func setCapacity(t testing.TB, src *kmestest.Source, capacity uint64) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for busy := 0; ; busy++ {
		err := src.SetCapacity(capacity)
		switch {
		case err == nil:
			return busy
		case !errors.Is(err, unix.EBUSY):
			t.Fatalf("set capacity %d: %v", capacity, err)
		case time.Now().After(deadline):
			t.Fatalf("set capacity %d: still EBUSY after 10 s (%d replaced rings mapped): a reader keeps a replaced ring", capacity, src.Replaced())
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// TestReaderSkipsWhatTheSwapCopied: the new ring starts with the newest
// events of the old one, which the reader was owed only if it had not
// passed them. Whatever the reader read of the old ring, it returns each
// event once, and a reader that started at the end returns none of what
// came before its start.
func TestReaderSkipsWhatTheSwapCopied(t *testing.T) {
	for _, c := range []struct {
		name    string
		fromEnd bool
		read    int    // events read from the old ring before the swap
		want    uint64 // first sequence Read returns after the swap
	}{
		{"from the end, nothing read", true, 0, 11},
		{"from the end, events read", true, 3, 14},
		{"from the tail, nothing read", false, 0, 1},
		{"from the tail, some read", false, 4, 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := newSource(t, 1, testCapacity)
			p := src.Producer(0)
			for seq := uint64(1); seq <= 10; seq++ {
				p.Emit(0, "old", payloadFor(seq, 20))
			}
			rd := newReaders(t, src, c.fromEnd)[0]
			for seq := uint64(11); seq < 11+uint64(c.read) && c.fromEnd; seq++ {
				p.Emit(0, "old", payloadFor(seq, 20))
			}
			var rec kmes.Record
			for range c.read {
				if err := rd.Read(&rec); err != nil {
					t.Fatal(err)
				}
			}
			last := p.Sequence()
			if err := src.SetCapacity(2 * testCapacity); err != nil {
				t.Fatal(err)
			}
			src.Emit(0, 0, "new", payloadFor(last+1, 20))
			for want := c.want; want <= last+1; want++ {
				if err := rd.Read(&rec); err != nil || rec.Sequence != want {
					t.Fatalf("read %v, sequence %d (%s), want %d", err, rec.Sequence, rec.Type, want)
				}
				if !checkWhole(t, &rec) {
					t.FailNow()
				}
			}
			st := rd.Stats()[0]
			if st.Generation != 2 || st.Capacity != 2*testCapacity || st.Lost != 0 || st.Dropped != 0 || st.LastSequence != last+1 ||
				st.Events != uint64(c.read)+last+2-c.want {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestReaderReleasesTheReplacedRing: a Reader unmaps a replaced ring as
// soon as it has drained it, also when it was asleep on it, so that the
// next swap is not refused; a Reader nobody reads keeps its ring, and so
// makes the next swap EBUSY, until it is closed.
func TestReaderReleasesTheReplacedRing(t *testing.T) {
	src := newSource(t, 2, testCapacity)
	rds := newReaders(t, src, true)
	var wg sync.WaitGroup
	defer wg.Wait()
	seen := make(chan uint64, 16)
	// Reader 0 reads (and sleeps: nothing is emitted yet); reader 1 is
	// not read.
	wg.Add(1)
	go func() {
		defer wg.Done()
		var rec kmes.Record
		for rds[0].Read(&rec) == nil {
			seen <- rec.Sequence
		}
	}()
	time.Sleep(20 * time.Millisecond) // reader 0 spins out and sleeps
	if err := src.SetCapacity(2 * testCapacity); err != nil {
		t.Fatalf("first swap: %v", err) // the mapped rings are current
	}
	waitReplaced := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for src.Replaced() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%d replaced rings still mapped, want %d", src.Replaced(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	// Reader 0 was woken by the swap and moved to the new ring; reader 1
	// keeps its old one.
	waitReplaced(1)
	if got := rds[0].Stats()[0].Generation; got != 2 {
		t.Errorf("the sleeping reader is at generation %d, want 2", got)
	}
	if err := src.SetCapacity(testCapacity); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("swap while a reader maps a replaced ring: %v, want EBUSY", err)
	}
	// Nothing changed: reader 0 still reads the ring of generation 2.
	src.Emit(0, 0, "t", payloadFor(1, 4))
	select {
	case seq := <-seen:
		if seq != 1 {
			t.Errorf("read sequence %d, want 1", seq)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the reader did not read the event emitted after the refused swap")
	}
	rds[1].Close()
	waitReplaced(0)
	if err := src.SetCapacity(testCapacity); err != nil {
		t.Fatalf("swap after the idle reader closed: %v", err)
	}
	waitReplaced(0)
	if got := rds[0].Stats()[0]; got.Generation != 3 || got.Capacity != testCapacity {
		t.Errorf("reader after the second swap: %+v, want generation 3, capacity %d", got, testCapacity)
	}
	rds[0].Close()
}

// swapLoopEvent is the type of the events the swap loop emits; the
// payload is a uint32 (msgpack 0xce): the event's index on its CPU.
const swapLoopEvent = "swap.loop"

func swapLoopPayload(i uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{0xce}, i)
}

// cpuLog checks, per CPU, what a swap loop's reader returns: sequence
// numbers without a gap or a repeat, and the emitted events in order.
type cpuLog struct {
	mu      sync.Mutex
	lastSeq map[int]uint64
	next    map[int]uint32 // index of the next swap loop event
	errs    []string
	done    chan struct{} // closed when every CPU has its count
	want    uint32
	ncpu    int
	full    int
}

func newCPULog(ncpu int, want uint32) *cpuLog {
	return &cpuLog{lastSeq: map[int]uint64{}, next: map[int]uint32{}, done: make(chan struct{}), want: want, ncpu: ncpu}
}

// ahead returns how many of cpu's events up to index i were not read yet.
func (l *cpuLog) ahead(cpu int, i uint32) uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return i - l.next[cpu]
}

func (l *cpuLog) add(r *kmes.Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if last, ok := l.lastSeq[r.CPU]; ok && r.Sequence != last+1 && len(l.errs) < 10 {
		l.errs = append(l.errs, fmt.Sprintf("cpu %d: sequence %d after %d", r.CPU, r.Sequence, last))
	}
	l.lastSeq[r.CPU] = r.Sequence
	if r.Type != swapLoopEvent {
		return
	}
	i := binary.BigEndian.Uint32(r.Payload[1:])
	if i != l.next[r.CPU] && len(l.errs) < 10 {
		l.errs = append(l.errs, fmt.Sprintf("cpu %d: event %d after %d", r.CPU, i, l.next[r.CPU]))
	}
	l.next[r.CPU] = i + 1
	if i+1 == l.want {
		if l.full++; l.full == l.ncpu {
			close(l.done)
		}
	}
}

// TestSwapLoop swaps the rings between 64 and 128 KiB over and over
// while one emitter per CPU emits, never far ahead of the reader, and
// the rings are read, by one Reader each or merged: every event is read
// once, in order, with no sequence gap, nothing lost or dropped, and a
// swap refused with EBUSY (a reader has not followed the last one yet)
// succeeds when retried.
func TestSwapLoop(t *testing.T) {
	const (
		ncpu  = 3
		swaps = 200
		per   = 6000 // events per CPU
		// window bounds the events an emitter is ahead of what was read:
		// 256 events of 43 bytes are a sixth of the smaller ring.
		window = 256
	)
	for _, merged := range []bool{false, true} {
		name := map[bool]string{false: "Readers", true: "ReadMerged"}[merged]
		t.Run(name, func(t *testing.T) {
			src := newSource(t, ncpu, testCapacity)
			log := newCPULog(ncpu, per)
			var stop func() []kmes.Stats
			if merged {
				c, err := kmes.NewConsumer(&kmes.Options{Source: src, FromEnd: true})
				if err != nil {
					t.Fatal(err)
				}
				errc := make(chan error, 1)
				go func() {
					errc <- c.ReadMerged(func(r *kmes.Record) error {
						log.add(r)
						return nil
					})
				}()
				stop = func() []kmes.Stats {
					c.Close()
					if err := <-errc; err != nil {
						t.Errorf("ReadMerged: %v", err)
					}
					return c.Stats()
				}
			} else {
				rds := newReaders(t, src, true)
				var wg sync.WaitGroup
				for _, rd := range rds {
					wg.Add(1)
					go func() {
						defer wg.Done()
						var rec kmes.Record
						for {
							err := rd.Read(&rec)
							if errors.Is(err, kmes.ErrClosed) {
								return
							}
							if err != nil {
								t.Errorf("cpu %d: read: %v", rd.CPUs()[0], err)
								return
							}
							log.add(&rec)
						}
					}()
				}
				stop = func() []kmes.Stats {
					var st []kmes.Stats
					for _, rd := range rds {
						rd.Close()
					}
					wg.Wait()
					for _, rd := range rds {
						st = append(st, rd.Stats()[0])
					}
					return st
				}
			}
			dropped := make([]uint64, ncpu)
			for i := range ncpu {
				dropped[i] = src.Producer(i).Dropped()
			}

			var emitters sync.WaitGroup
			for cpu := range ncpu {
				emitters.Add(1)
				go func() {
					defer emitters.Done()
					for i := range uint32(per) {
						// At most window events ahead of the reader,
						// whatever the scheduler does: a lap would lose
						// events for want of time, not because of a swap.
						for log.ahead(cpu, i) >= window {
							time.Sleep(50 * time.Microsecond)
						}
						src.Emit(cpu, 0, swapLoopEvent, swapLoopPayload(i))
					}
				}()
			}
			busy := 0
			for i := range swaps {
				busy += setCapacity(t, src, testCapacity<<(1-i%2))
			}
			emitters.Wait()
			select {
			case <-log.done:
			case <-time.After(20 * time.Second):
				t.Errorf("not every event was read within 20 s: next indices %v", log.next)
			}
			// Every reader follows the last swap, read or not.
			for deadline := time.Now().Add(5 * time.Second); src.Replaced() > 0 && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			st := stop()
			t.Logf("%d swaps (%d refused with EBUSY, retried)", swaps, busy)
			for _, e := range log.errs {
				t.Error(e)
			}
			for _, s := range st {
				if s.Lost != 0 || s.Dropped != 0 || s.Corrupt != 0 || s.Events < per || s.Generation != 1+swaps ||
					s.LastSequence != src.Producer(s.CPU).Sequence() {
					t.Errorf("cpu %d: stats %+v; want nothing lost, %d events, generation %d, last sequence %d",
						s.CPU, s, per, 1+swaps, src.Producer(s.CPU).Sequence())
				}
				if d := src.Producer(s.CPU).Dropped(); d != dropped[s.CPU] {
					t.Errorf("cpu %d: dropped %d, was %d", s.CPU, d, dropped[s.CPU])
				}
			}
			if n := src.Replaced(); n != 0 {
				t.Errorf("%d replaced rings still mapped after the readers closed", n)
			}
		})
	}
}

// Writing the current capacity is no change: no swap, no new generation,
// and a reader keeps its ring, as the kernel's sysctl behaves.
func TestSetCapacitySameIsNoSwap(t *testing.T) {
	src := newSource(t, 1, testCapacity)
	if err := src.SetCapacity(testCapacity); err != nil {
		t.Fatalf("set the current capacity: %v", err)
	}
	rings, err := src.Rings()
	if err != nil {
		t.Fatal(err)
	}
	defer rings[0].Close()
	if got := rings[0].Generation(); got != 1 {
		t.Errorf("generation %d after writing the current capacity, want 1", got)
	}
	if src.Replaced() != 0 {
		t.Errorf("%d replaced rings, want 0", src.Replaced())
	}
}

// lateMapped is a RingSource whose Rings are mappings made after a swap
// retired the rings they map: kmes_attach returned a ring's file
// descriptor just before the swap, and the mmap came after it. Ring (the
// re-attach) is the simulator's.
type lateMapped struct {
	*kmestest.Source
	rings []*kmes.Ring
}

func (s *lateMapped) Rings() ([]*kmes.Ring, error) { return s.rings, nil }

// A ring mapped after the swap that replaced it is seen as replaced at
// once (the generation word is the new ring's, ring_generation still its
// own): the Reader drains it, follows to the new ring rather than sleep
// on the old one for ever, and unmaps it, so the next swap is not EBUSY.
func TestReaderOfARingMappedAfterItsSwap(t *testing.T) {
	src := newSource(t, 1, testCapacity)
	old := src.Producer(0) // what kmes_attach found
	for seq := uint64(1); seq <= 3; seq++ {
		src.Emit(0, 0, "late", payloadFor(seq, 8))
	}
	if err := src.SetCapacity(2 * testCapacity); err != nil {
		t.Fatal(err)
	}
	kr, err := old.Reader() // the mmap, after the swap
	if err != nil {
		t.Fatal(err)
	}
	rds, err := kmes.NewReaders(&kmes.Options{Source: &lateMapped{src, []*kmes.Ring{kr}}})
	if err != nil {
		kr.Close()
		t.Fatal(err)
	}
	rd := rds[0]
	defer rd.Close()
	if st := rd.Stats()[0]; st.Generation != 1 || st.Capacity != testCapacity {
		t.Errorf("stats of the ring mapped after its swap: %+v, want its own generation 1, capacity %d", st, testCapacity)
	}
	src.Emit(0, 0, "late", payloadFor(4, 8)) // into the new ring

	seqs := make(chan uint64, 8) // the reader never blocks on it: 4 events
	done := make(chan error, 1)
	go func() {
		var rec kmes.Record
		for {
			if err := rd.Read(&rec); err != nil {
				done <- err
				return
			}
			checkWhole(t, &rec)
			seqs <- rec.Sequence
		}
	}()
	for want := uint64(1); want <= 4; want++ {
		select {
		case seq := <-seqs:
			if seq != want {
				t.Fatalf("read sequence %d, want %d", seq, want)
			}
		case err := <-done:
			t.Fatalf("read: %v, want sequence %d", err, want)
		case <-time.After(5 * time.Second):
			st, mapped := rd.Stats()[0], src.Replaced()
			rd.Close()
			<-done
			t.Fatalf("sequence %d not read after 5 s: the reader sleeps on the replaced ring (stats %+v, %d replaced rings mapped)",
				want, st, mapped)
		}
	}
	if st := rd.Stats()[0]; st.Generation != 2 || st.Capacity != 2*testCapacity || st.Events != 4 || st.Lost != 0 || st.Dropped != 0 {
		t.Errorf("stats after following the swap: %+v", st)
	}
	if n := src.Replaced(); n != 0 {
		t.Errorf("%d replaced rings still mapped after the reader followed", n)
	}
	if err := src.SetCapacity(testCapacity); err != nil {
		t.Errorf("the next swap: %v", err)
	}
	rd.Close()
	if err := <-done; !errors.Is(err, kmes.ErrClosed) {
		t.Errorf("read after Close: %v, want ErrClosed", err)
	}
}

// A Reader follows swaps of rings whose producer page has no
// ring_generation (0, as before the word existed) by the generation word
// it saw when it mapped them.
func TestReaderWithoutRingGeneration(t *testing.T) {
	src := newSource(t, 1, testCapacity)
	src.Producer(0).SetRingGeneration(0)
	rd := newReaders(t, src, false)[0]
	for seq := uint64(1); seq <= 3; seq++ {
		src.Emit(0, 0, "old", payloadFor(seq, 8))
	}
	var rec kmes.Record
	read := func(want uint64) {
		t.Helper()
		if err := rd.Read(&rec); err != nil || rec.Sequence != want {
			t.Fatalf("read %v, sequence %d, want %d", err, rec.Sequence, want)
		}
	}
	read(1)
	for gen := uint64(2); gen <= 3; gen++ {
		// Nothing reads while the swap is made and the new ring loses
		// its ring_generation: the Reader maps it later.
		n, err := src.Swap(0, testCapacity<<(gen%2))
		if err != nil {
			t.Fatal(err)
		}
		n.SetRingGeneration(0)
		src.Emit(0, 0, "old", payloadFor(gen+2, 8))
		if gen == 2 {
			read(2)
			read(3)
		}
		read(gen + 2)
		if st := rd.Stats()[0]; st.Generation != gen || st.Lost != 0 || st.Dropped != 0 {
			t.Errorf("stats %+v, want generation %d, nothing lost or dropped", st, gen)
		}
	}
}
