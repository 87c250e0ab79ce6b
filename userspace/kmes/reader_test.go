//go:build linux && amd64

package kmes_test

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/userspace/kmestest"
)

func newSource(t testing.TB, n int, capacity uint64) *kmestest.Source {
	t.Helper()
	s, err := kmestest.NewSource(n, capacity)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newReaders(t testing.TB, s *kmestest.Source, fromEnd bool) []*kmes.Reader {
	t.Helper()
	rds, err := kmes.NewReaders(&kmes.Options{Source: s, FromEnd: fromEnd})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, rd := range rds {
			rd.Close()
		}
	})
	return rds
}

// checkWhole fails the test unless rec is an event payloadFor wrote whole.
// It may be called from any goroutine.
func checkWhole(t testing.TB, rec *kmes.Record) bool {
	t.Helper()
	n := len(rec.Payload) - 2
	if n < 0 || rec.Payload[0] != 0xc4 || int(rec.Payload[1]) != n || !bytes.Equal(rec.Payload, payloadFor(rec.Sequence, n)) {
		t.Errorf("event %d is torn: payload %x", rec.Sequence, rec.Payload)
		return false
	}
	return true
}

// TestReaderRacingWriter has a writer lap a reader over and over in a
// small ring: every event the reader returns is whole, sequences only go
// up, and every sequence number is either read or counted lost.
func TestReaderRacingWriter(t *testing.T) {
	s := newSource(t, 1, testCapacity)
	rd := newReaders(t, s, false)[0]
	p := s.Producer(0)
	const total = 200_000
	p.Emit(0, "race", payloadFor(1, 10))
	var rec kmes.Record
	if err := rd.Read(&rec); err != nil || rec.Sequence != 1 {
		t.Fatalf("first read: %v, sequence %d", err, rec.Sequence)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for seq := uint64(2); seq <= total; seq++ {
			p.Emit(0, "race", payloadFor(seq, int(seq%200)))
		}
	}()
	var read, last uint64 = 1, 1
	for last < total {
		if err := rd.Read(&rec); err != nil {
			t.Fatalf("read: %v", err)
		}
		if !checkWhole(t, &rec) {
			t.FailNow()
		}
		if rec.Sequence <= last {
			t.Fatalf("sequence %d after %d", rec.Sequence, last)
		}
		last = rec.Sequence
		read++
	}
	<-done
	st := rd.Stats()[0]
	if st.Events != read || st.Events+st.Lost != total || st.Dropped != 0 || st.Corrupt != 0 {
		t.Fatalf("stats %+v after reading %d of %d", st, read, total)
	}
	if st.Lost == 0 {
		t.Logf("the reader kept up with the writer: no lap was exercised")
	}
}

func TestReaderSleepsUntilAnEvent(t *testing.T) {
	s := newSource(t, 1, testCapacity)
	rd := newReaders(t, s, false)[0]
	got := make(chan error, 1)
	var rec kmes.Record
	go func() { got <- rd.Read(&rec) }()
	time.Sleep(50 * time.Millisecond) // long enough to spin out and sleep
	select {
	case err := <-got:
		t.Fatalf("Read returned %v with nothing in the ring", err)
	default:
	}
	s.Producer(0).Emit(0, "wake", []byte{0xc0})
	select {
	case err := <-got:
		if err != nil || rec.Type != "wake" {
			t.Fatalf("read %v %q", err, rec.Type)
		}
	case <-time.After(500 * time.Millisecond):
		t.Fatal("the producer's wake-up did not reach the sleeping reader")
	}
}

func TestReaderWakeHandshakes(t *testing.T) {
	// Ping-pong: each event is emitted only once the reader has taken the
	// previous one and gone back to waiting, the path where a lost wake-up
	// would show as a one-second stall.
	s := newSource(t, 1, testCapacity)
	rd := newReaders(t, s, false)[0]
	p := s.Producer(0)
	taken := make(chan uint64)
	go func() {
		var rec kmes.Record
		for {
			if err := rd.Read(&rec); err != nil {
				close(taken)
				return
			}
			taken <- rec.Sequence
		}
	}()
	start := time.Now()
	for i := uint64(1); i <= 300; i++ {
		if i%3 == 0 {
			time.Sleep(time.Millisecond)
		}
		p.Emit(0, "ping", []byte{0xc0})
		if seq := <-taken; seq != i {
			t.Fatalf("read sequence %d, want %d", seq, i)
		}
	}
	rd.Close()
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("300 handshakes took %v: wake-ups are being lost", d)
	}
}

func TestReaderCloseWakesASleepingRead(t *testing.T) {
	s := newSource(t, 2, testCapacity)
	rds := newReaders(t, s, false)
	got := make(chan error, 1)
	go func() {
		var rec kmes.Record
		got <- rds[1].Read(&rec)
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	rds[1].Close()
	select {
	case err := <-got:
		if !errors.Is(err, kmes.ErrClosed) {
			t.Fatalf("Read after Close returned %v, want ErrClosed", err)
		}
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Errorf("Read returned %v after Close", d)
		}
	case <-time.After(time.Second):
		t.Fatal("Close did not wake the sleeping Read")
	}
	var rec kmes.Record
	if err := rds[1].Read(&rec); !errors.Is(err, kmes.ErrClosed) {
		t.Errorf("Read on a closed reader: %v", err)
	}
	if err := rds[1].Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestReaderCloseRacesWait(t *testing.T) {
	// Close at every moment of the way into the futex wait.
	s := newSource(t, 1, testCapacity)
	for i := range 200 {
		rd := newReaders(t, s, true)[0]
		got := make(chan error, 1)
		go func() {
			var rec kmes.Record
			got <- rd.Read(&rec)
		}()
		time.Sleep(time.Duration(i%20) * 50 * time.Microsecond)
		rd.Close()
		select {
		case err := <-got:
			if !errors.Is(err, kmes.ErrClosed) {
				t.Fatalf("round %d: %v", i, err)
			}
		case <-time.After(500 * time.Millisecond):
			t.Fatalf("round %d: Read still blocked after Close", i)
		}
	}
}

func TestReaderFollowsAGenerationChange(t *testing.T) {
	for _, c := range []struct {
		name        string
		newCapacity uint64
	}{
		{"larger ring", 2 * testCapacity},
		{"same capacity", testCapacity},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newSource(t, 1, testCapacity)
			rd := newReaders(t, s, false)[0]
			var rec kmes.Record
			for seq := uint64(1); seq <= 10; seq++ {
				s.Producer(0).Emit(0, "gen", payloadFor(seq, 20))
			}
			for want := uint64(1); want <= 5; want++ {
				if err := rd.Read(&rec); err != nil || rec.Sequence != want {
					t.Fatalf("read %v, sequence %d, want %d", err, rec.Sequence, want)
				}
			}
			n, err := s.Swap(0, c.newCapacity)
			if err != nil {
				t.Fatal(err)
			}
			for seq := uint64(11); seq <= 15; seq++ {
				n.Emit(0, "gen", payloadFor(seq, 20))
			}
			// 6..10 from the old ring, then 11..15 from the new one: the
			// events the swap copied are not returned twice.
			for want := uint64(6); want <= 15; want++ {
				if err := rd.Read(&rec); err != nil || rec.Sequence != want {
					t.Fatalf("read %v, sequence %d, want %d", err, rec.Sequence, want)
				}
				if !checkWhole(t, &rec) {
					t.FailNow()
				}
			}
			if st := rd.Stats()[0]; st.Generation != 2 || st.Events != 15 || st.Lost != 0 || st.Dropped != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestReaderGenerationChangeLosesOnlyTheOldest(t *testing.T) {
	// The reader is behind when the ring is swapped for a smaller one: it
	// drains the old ring, so nothing is lost; events emitted after are read
	// from the new ring.
	s := newSource(t, 1, 2*testCapacity)
	rd := newReaders(t, s, false)[0]
	const n = 1000 // 1000 * 129 bytes: more than the new ring holds
	for seq := uint64(1); seq <= n; seq++ {
		s.Producer(0).Emit(0, "gen", payloadFor(seq, 96))
	}
	nr, err := s.Swap(0, testCapacity)
	if err != nil {
		t.Fatal(err)
	}
	nr.Emit(0, "gen", payloadFor(n+1, 96))
	var rec kmes.Record
	for want := uint64(1); want <= n+1; want++ {
		if err := rd.Read(&rec); err != nil || rec.Sequence != want {
			t.Fatalf("read %v, sequence %d, want %d", err, rec.Sequence, want)
		}
	}
	if st := rd.Stats()[0]; st.Lost != 0 || st.Generation != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestReaderWokenByAGenerationChange(t *testing.T) {
	s := newSource(t, 1, testCapacity)
	rd := newReaders(t, s, false)[0]
	s.Producer(0).Emit(0, "gen", payloadFor(1, 4))
	var rec kmes.Record
	if err := rd.Read(&rec); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { got <- rd.Read(&rec) }()
	time.Sleep(50 * time.Millisecond)
	n, err := s.Swap(0, 2*testCapacity)
	if err != nil {
		t.Fatal(err)
	}
	n.Emit(0, "gen", payloadFor(2, 4))
	select {
	case err := <-got:
		if err != nil || rec.Sequence != 2 {
			t.Fatalf("read %v, sequence %d, want 2", err, rec.Sequence)
		}
	case <-time.After(500 * time.Millisecond):
		t.Fatal("the reader slept through the generation change")
	}
}

// TestReaderSwapUnderLoad swaps rings while a writer emits and a reader
// drains: every sequence number is read once or counted lost.
func TestReaderSwapUnderLoad(t *testing.T) {
	s := newSource(t, 1, testCapacity)
	rd := newReaders(t, s, false)[0]
	const total = 30_000
	var mu sync.Mutex // the producer of a ring is one goroutine at a time
	stop := make(chan struct{})
	var swaps atomic.Int32
	go func() {
		defer close(stop)
		for seq := uint64(1); seq <= total; seq++ {
			mu.Lock()
			s.Producer(0).Emit(0, "load", payloadFor(seq, int(seq%100)))
			if seq%5000 == 0 && seq < total {
				capacity := testCapacity << (seq / 5000 % 2)
				if _, err := s.Swap(0, uint64(capacity)); err != nil {
					t.Error(err)
				}
				swaps.Add(1)
			}
			mu.Unlock()
		}
	}()
	var rec kmes.Record
	var last uint64
	for last < total {
		if err := rd.Read(&rec); err != nil {
			t.Fatal(err)
		}
		if !checkWhole(t, &rec) {
			t.FailNow()
		}
		if rec.Sequence <= last {
			t.Fatalf("sequence %d after %d: duplicate across a swap", rec.Sequence, last)
		}
		last = rec.Sequence
	}
	<-stop
	st := rd.Stats()[0]
	if st.Events+st.Lost != total || st.Generation != uint64(1+swaps.Load()) {
		t.Fatalf("stats %+v after %d swaps", st, swaps.Load())
	}
}

// TestReaderWakeSharedWithOtherReaders has a second Reader of the same ring
// (so of the same consumer page and need_wake) sleep and close over and
// over while the first sleeps without a timeout: every event must wake the
// first at once. A reader that withdrew the shared request when it woke
// would leave the first asleep.
func TestReaderWakeSharedWithOtherReaders(t *testing.T) {
	s := newSource(t, 1, testCapacity)
	sleeper := newReaders(t, s, true)[0]
	taken := make(chan uint64)
	go func() {
		var rec kmes.Record
		for sleeper.Read(&rec) == nil {
			taken <- rec.Sequence
		}
		close(taken)
	}()
	for i := uint64(1); i <= 50; i++ {
		other := newReaders(t, s, true)[0]
		done := make(chan error, 1)
		go func() {
			var rec kmes.Record
			done <- other.Read(&rec)
		}()
		time.Sleep(2 * time.Millisecond) // both readers spin out and sleep
		other.Close()
		if err := <-done; !errors.Is(err, kmes.ErrClosed) {
			t.Fatalf("round %d: the other reader's Read: %v", i, err)
		}
		start := time.Now()
		s.Producer(0).Emit(0, "wake", []byte{0xc0})
		select {
		case seq := <-taken:
			if seq != i {
				t.Fatalf("round %d: read sequence %d", i, seq)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: the sleeping reader was not woken", i)
		}
		// A lost wake-up could be hidden by a timed wait: a wake must come
		// from the producer, well before any timeout of a second.
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Fatalf("round %d: the sleeping reader woke %v after the event", i, d)
		}
	}
}

func TestReaderReportsAFailingFutexWait(t *testing.T) {
	// A futex error other than a wake-up, a changed value or a signal
	// would recur on every wait: Read returns it instead of spinning.
	s := newSource(t, 1, testCapacity)
	rd := newReaders(t, s, false)[0]
	kmes.MisalignFutex(rd)
	got := make(chan error, 1)
	go func() {
		var rec kmes.Record
		got <- rd.Read(&rec)
	}()
	select {
	case err := <-got:
		if !errors.Is(err, unix.EINVAL) || !strings.HasPrefix(err.Error(), "futex_waitv: ") {
			t.Fatalf("Read returned %v, want futex_waitv: EINVAL", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read did not return: the failing futex wait made it spin")
	}
}
