//go:build linux && amd64

package kmes_test

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/userspace/kmes/abi"
)

// checkView fails the test unless v is the whole event payloadFor wrote
// for its sequence number, of type typ.
func checkView(t *testing.T, v *kmes.View, typ string) {
	t.Helper()
	p := v.Payload()
	n := len(p) - 2
	if n < 0 || !bytes.Equal(p, payloadFor(v.Sequence(), n)) || !v.TypeIs(typ) || string(v.Type()) != typ ||
		v.CPU() != 3 || len(v.Raw()) != abi.HdrBaseSize+len(typ)+len(p) {
		t.Errorf("event %d: type %q, payload %x, cpu %d: not what was written", v.Sequence(), v.Type(), p, v.CPU())
	}
}

// TestRingReadEventsAcrossWrap reads, in batches of every size, events of
// every length that wrap around a small ring many times: each batch comes
// from one chunk, whole and in order, and stays valid until the next call.
func TestRingReadEventsAcrossWrap(t *testing.T) {
	for _, batch := range []int{1, 2, 7, 64, 1000} {
		p, r := newSimRing(t, testCapacity)
		dst := make([]kmes.View, batch)
		var last uint64
		for round := range 40 {
			for i := range 97 {
				p.Emit(0, "wrap", payloadFor(p.Sequence()+1, (round*97+i)%250))
			}
			for {
				n, err := r.ReadEvents(dst)
				if err != nil {
					t.Fatalf("batch %d: ReadEvents: %v", batch, err)
				}
				if n == 0 {
					break
				}
				for i := range dst[:n] {
					v := &dst[i]
					checkView(t, v, "wrap")
					if v.Sequence() != last+1 || v.Lost() != 0 || v.Dropped() != 0 {
						t.Fatalf("batch %d: event %d after %d (lost %d, dropped %d)", batch, v.Sequence(), last, v.Lost(), v.Dropped())
					}
					last = v.Sequence()
				}
			}
		}
		if last != p.Sequence() {
			t.Errorf("batch %d: read up to %d of %d", batch, last, p.Sequence())
		}
		if s := r.Stats(); s.Events != last || s.Lost != 0 || s.LastSequence != last {
			t.Errorf("batch %d: stats %+v", batch, s)
		}
	}
}

// TestReadEventsReportsLossInPlace: events overwritten before they were
// read are reported on the first event after them, and dropped ones on the
// first event after the drop, in the View and in the Record.
func TestReadEventsReportsLossInPlace(t *testing.T) {
	p, r := newSimRing(t, testCapacity)
	dst := make([]kmes.View, 16)
	p.Emit(0, "a", payloadFor(1, 10))
	if n, err := r.ReadEvents(dst); n != 1 || err != nil {
		t.Fatalf("first read: %d, %v", n, err)
	}
	// Lap the reader: far more than the ring holds.
	for range 2000 {
		p.Emit(0, "a", payloadFor(p.Sequence()+1, 100))
	}
	n, err := r.ReadEvents(dst)
	if n == 0 || err != nil {
		t.Fatalf("read after the lap: %d, %v", n, err)
	}
	first := dst[0].Sequence()
	if dst[0].Lost() != first-2 || dst[0].Dropped() != 0 {
		t.Errorf("first event after the lap: sequence %d, lost %d, dropped %d; want lost %d", first, dst[0].Lost(), dst[0].Dropped(), first-2)
	}
	for i := 1; i < n; i++ {
		if dst[i].Lost() != 0 || dst[i].Dropped() != 0 {
			t.Errorf("event %d: lost %d, dropped %d, want none", dst[i].Sequence(), dst[i].Lost(), dst[i].Dropped())
		}
	}
	for n > 0 {
		n, err = r.ReadEvents(dst)
		if err != nil {
			t.Fatal(err)
		}
	}
	// Two dropped before the ring, between two events.
	p.Drop()
	p.Drop()
	p.Emit(0, "b", payloadFor(p.Sequence()+1, 3))
	var rec kmes.Record
	if ok, err := r.Read(&rec); !ok || err != nil || rec.Dropped != 2 || rec.Lost != 0 || rec.Type != "b" {
		t.Errorf("event after two drops: %v %v, %+v; want dropped 2", ok, err, rec)
	}
	if s := r.Stats(); s.Lost != first-2 || s.Dropped != 2 {
		t.Errorf("stats %+v: want lost %d, dropped 2", s, first-2)
	}
}

// TestReadEventsStopsBeforeCorruption: a batch ends before a corrupt
// event, the next call reports it, and the events skipped with it are
// counted lost on the next event.
func TestReadEventsStopsBeforeCorruption(t *testing.T) {
	p, r := newSimRing(t, testCapacity)
	p.Emit(0, "before", []byte{0xc0})
	p.Emit(0, "before", []byte{0xc0})
	p.WriteRaw(rawEvent(0, 30, 1, 40))
	p.Emit(0, "after", []byte{0xc2})
	dst := make([]kmes.View, 8)
	if n, err := r.ReadEvents(dst); n != 2 || err != nil {
		t.Fatalf("first batch: %d, %v; want the 2 events before the corrupt one", n, err)
	}
	if n, err := r.ReadEvents(dst); n != 0 || !errors.Is(err, kmes.ErrCorrupt) {
		t.Fatalf("second batch: %d, %v; want a CorruptError", n, err)
	}
	p.Emit(0, "later", []byte{0xc3})
	n, err := r.ReadEvents(dst)
	if n != 1 || err != nil || !dst[0].TypeIs("later") || dst[0].Lost() != 1 {
		t.Fatalf("after resynchronising: %d, %v, lost %d; want the later event, 1 lost before it", n, err, dst[0].Lost())
	}
}

func TestDecode(t *testing.T) {
	p, r := newSimRing(t, testCapacity)
	b, err := msgpack.Marshal(map[string]any{"user": "ada", "n": 3})
	if err != nil {
		t.Fatal(err)
	}
	p.Emit(0, "app.login", b)
	p.Emit(0, "app.login", []byte{0x91}) // an array missing its element
	dst := make([]kmes.View, 2)
	if n, err := r.ReadEvents(dst); n != 2 || err != nil {
		t.Fatalf("ReadEvents: %d, %v", n, err)
	}
	var got struct {
		User string `msgpack:"user"`
		N    int    `msgpack:"n"`
	}
	if err := dst[0].Decode(&got); err != nil || got.User != "ada" || got.N != 3 {
		t.Errorf("View.Decode: %+v, %v", got, err)
	}
	var rec kmes.Record
	dst[0].Record(&rec)
	got.User = ""
	if err := rec.Decode(&got); err != nil || got.User != "ada" {
		t.Errorf("Record.Decode: %+v, %v", got, err)
	}
	var v any
	if err := dst[1].Decode(&v); err == nil || !strings.HasPrefix(err.Error(), "decode payload: ") {
		t.Errorf("Decode of a truncated payload: %v, want a decode payload: error", err)
	}
}

// TestClosedRingAndReader: every method of a closed Ring or Reader
// returns an error or a zero, never faults.
func TestClosedRingAndReader(t *testing.T) {
	s := newSource(t, 2, testCapacity)
	rd, err := kmes.NewReader(&kmes.Options{Source: s})
	if err != nil {
		t.Fatal(err)
	}
	s.Emit(0, 0, "x", []byte{0xc0})
	if err := rd.Close(); err != nil {
		t.Fatal(err)
	}
	dst := make([]kmes.View, 4)
	if n, err := rd.ReadEvents(dst); n != 0 || !errors.Is(err, os.ErrClosed) || !errors.Is(err, kmes.ErrClosed) {
		t.Errorf("ReadEvents after Close: %d, %v; want os.ErrClosed", n, err)
	}
	var rec kmes.Record
	if err := rd.Read(&rec); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
	rd.Flush()
	rd.SetDeadline(time.Now())
	if cpus, st := rd.CPUs(), rd.Stats(); len(cpus) != 2 || len(st) != 2 {
		t.Errorf("CPUs %v, Stats %+v after Close", cpus, st)
	}
	for range rd.Records() {
		t.Error("a closed Reader's iterator yielded")
	}
	if err := rd.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
