package kmesguest

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kmes-project/kmes/userspace/kmes"
)

// TestReaderWaitsOnEveryCPU: one Reader over every CPU's ring sleeps in
// one futex_waitv, and an event on any CPU wakes it with that event; the
// loss and order fields come with it.
func TestReaderWaitsOnEveryCPU(t *testing.T) {
	const typ = "kmes.test.waitv"
	rd, err := kmes.NewReader(&kmes.Options{FromEnd: true})
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	defer rd.Close()
	if got := len(rd.CPUs()); got != runtime.NumCPU() {
		t.Fatalf("a Reader of %d rings on %d CPUs", got, runtime.NumCPU())
	}
	type result struct {
		cpu, n int
		seq    uint64
		typ    string
		err    error
	}
	ask, got := make(chan struct{}), make(chan result)
	defer close(ask)
	go func() {
		views := make([]kmes.View, 16)
		for range ask {
			n, err := rd.ReadEvents(views)
			r := result{n: n, err: err}
			if n > 0 {
				r.cpu, r.seq, r.typ = views[0].CPU(), views[0].Sequence(), string(views[0].Type())
			}
			got <- r
		}
	}()
	for round := range 2 {
		for cpu := range runtime.NumCPU() {
			ask <- struct{}{}
			time.Sleep(50 * time.Millisecond) // past the spin, into futex_waitv
			if err := emitOn(cpu, typ, mp(0xc0)); err != nil {
				t.Fatalf("emit on cpu %d: %v", cpu, err)
			}
			select {
			case r := <-got:
				// Only this test emits while it waits: the event that
				// woke the reader is the one emitted.
				if r.err != nil || r.n != 1 || r.cpu != cpu || r.typ != typ {
					t.Fatalf("round %d, cpu %d: read %d events (first of cpu %d, type %q), %v", round, cpu, r.n, r.cpu, r.typ, r.err)
				}
			case <-time.After(readTimeout):
				t.Fatalf("round %d: an event on cpu %d did not wake the Reader", round, cpu)
			}
		}
	}
	// A deadline ends a wait with nothing to read; Close ends the next.
	rd.SetDeadline(time.Now().Add(100 * time.Millisecond))
	ask <- struct{}{}
	if r := <-got; r.n != 0 || !errors.Is(r.err, os.ErrDeadlineExceeded) {
		t.Errorf("read with a deadline: %d events, %v; want os.ErrDeadlineExceeded", r.n, r.err)
	}
	rd.SetDeadline(time.Time{})
	ask <- struct{}{}
	time.Sleep(50 * time.Millisecond)
	rd.Close()
	select {
	case r := <-got:
		if !errors.Is(r.err, os.ErrClosed) {
			t.Errorf("read ended by Close: %d events, %v; want os.ErrClosed", r.n, r.err)
		}
	case <-time.After(readTimeout):
		t.Fatal("Close did not wake the Reader")
	}
}

// TestReaderReportsLossInPlace: a reader lapped by the producer learns of
// the events it lost on the first event after them, in a real ring.
func TestReaderReportsLossInPlace(t *testing.T) {
	cpu := targetCPU()
	pin(t, cpu)
	rd, err := kmes.NewReader(&kmes.Options{FromEnd: true, CPUs: []int{cpu}})
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	defer rd.Close()
	st := rd.Stats()[0]
	payload := make([]byte, 1024)
	payload[0], payload[1], payload[2] = 0xc5, byte((len(payload)-3)>>8), byte(len(payload)-3)
	// One event read first: the sequence it counts gaps from.
	if err := kmes.Emit("kmes.test.lap", payload); err != nil {
		t.Fatalf("Emit: %v", err)
	}
	var rec kmes.Record
	if err := rd.Read(&rec); err != nil {
		t.Fatalf("Read: %v", err)
	}
	// Twice the ring's capacity: the reader is lapped.
	n := int(2 * st.Capacity / uint64(len(payload)))
	evs := make([]kmes.Event, n)
	for i := range evs {
		evs[i] = kmes.Event{Type: "kmes.test.lap", Payload: payload}
	}
	if emitted, err := kmes.EmitBatch(evs); err != nil || emitted != n {
		t.Fatalf("EmitBatch: %d of %d, %v", emitted, n, err)
	}
	rd.SetDeadline(time.Now())
	var read, lost uint64
	first := true
	for r, err := range rd.Records() {
		if err != nil {
			break
		}
		if first && r.Lost == 0 {
			t.Errorf("first event read, sequence %d: lost 0, want the events overwritten before it", r.Sequence)
		}
		if !first && (r.Lost != 0 || r.Dropped != 0) {
			t.Errorf("event %d: lost %d, dropped %d after the first", r.Sequence, r.Lost, r.Dropped)
		}
		first = false
		read++
		lost += r.Lost
	}
	if read+lost != uint64(n) {
		t.Errorf("read %d and lost %d events of %d emitted", read, lost, n)
	}
	if s := rd.Stats()[0]; s.Lost != lost {
		t.Errorf("Stats lost %d, the records said %d", s.Lost, lost)
	}
}

// TestReaderMapsOnlyItsCPUs: a Reader of some CPUs maps only their rings
// (kmes_attach's file descriptors are in CPU order), as /proc/self/maps
// shows them ("kmes:[ring N]").
func TestReaderMapsOnlyItsCPUs(t *testing.T) {
	cpu := targetCPU()
	rd, err := kmes.NewReader(&kmes.Options{CPUs: []int{cpu}})
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	defer rd.Close()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	rings := map[string]int{}
	for _, l := range strings.Split(string(b), "\n") {
		if i := strings.Index(l, "kmes:[ring "); i >= 0 {
			rings[l[i:]]++
		}
	}
	want := fmt.Sprintf("kmes:[ring %d]", cpu)
	if len(rings) != 1 || rings[want] == 0 {
		t.Errorf("a Reader of cpu %d: the process maps %v, want only %s", cpu, rings, want)
	}
}
