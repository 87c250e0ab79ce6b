//go:build linux && amd64

package kmes_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/userspace/kmes/abi"
	"github.com/kmes-project/kmes/userspace/kmestest"
)

const testCapacity = abi.CapacityMin // 64 KiB: wraps quickly

func newSimRing(t testing.TB, capacity uint64) (*kmestest.Ring, *kmes.Ring) {
	t.Helper()
	p, err := kmestest.New(3, capacity, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	r, err := p.Reader()
	if err != nil {
		t.Fatal(err)
	}
	return p, r
}

// payloadFor is a msgpack bin 8 whose bytes derive from seq, so that a
// reader can tell a whole event from a torn one.
func payloadFor(seq uint64, n int) []byte {
	p := make([]byte, 2+n)
	p[0], p[1] = 0xc4, byte(n)
	for i := range n {
		p[2+i] = byte(seq*31 + uint64(i))
	}
	return p
}

func readAll(t testing.TB, r *kmes.Ring) []*kmes.Record {
	t.Helper()
	var out []*kmes.Record
	var rec kmes.Record
	for {
		ok, err := r.Read(&rec)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if !ok {
			return out
		}
		out = append(out, rec.Clone())
	}
}

func TestRingReadsEveryHeaderField(t *testing.T) {
	p, r := newSimRing(t, testCapacity)
	p.Now = func() int64 { return 1_700_000_000_123_456_789 }
	p.Emit(kmes.OriginUser, "net.conn", payloadFor(1, 10))
	p.Emit(7, "é", []byte{0xc0})
	recs := readAll(t, r)
	if len(recs) != 2 {
		t.Fatalf("read %d events, want 2", len(recs))
	}
	want := []kmes.Record{
		{CPU: 3, Sequence: 1, Timestamp: 1_700_000_000_123_456_789, Origin: 0, Type: "net.conn", Payload: payloadFor(1, 10)},
		{CPU: 3, Sequence: 2, Timestamp: 1_700_000_000_123_456_789, Origin: 7, Type: "é", Payload: []byte{0xc0}},
	}
	for i, got := range recs {
		w := want[i]
		if got.CPU != w.CPU || got.Sequence != w.Sequence || got.Timestamp != w.Timestamp ||
			got.Origin != w.Origin || got.Type != w.Type || !bytes.Equal(got.Payload, w.Payload) {
			t.Errorf("event %d = %+v, want %+v", i, *got, w)
		}
		if len(got.Raw()) != abi.HdrBaseSize+len(w.Type)+len(w.Payload) {
			t.Errorf("event %d: raw is %d bytes", i, len(got.Raw()))
		}
	}
	if s := r.Stats(); s.Events != 2 || s.Lost != 0 || s.Dropped != 0 || s.LastSequence != 2 ||
		s.Capacity != testCapacity || s.Generation != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestRingPayloadFoundByHeaderSize(t *testing.T) {
	// A later version may add header fields: the payload starts at
	// header_size, not at 29 + type_len.
	p, r := newSimRing(t, testCapacity)
	raw := make([]byte, 29+3+4+1)
	binary.LittleEndian.PutUint32(raw[0:], uint32(len(raw)))
	binary.LittleEndian.PutUint32(raw[4:], 29+3+4)
	binary.LittleEndian.PutUint64(raw[16:], 1)
	binary.LittleEndian.PutUint16(raw[27:], 3)
	copy(raw[29:], "abc")
	raw[len(raw)-1] = 0xc3
	p.WriteRaw(raw)
	recs := readAll(t, r)
	if len(recs) != 1 || recs[0].Type != "abc" || !bytes.Equal(recs[0].Payload, []byte{0xc3}) {
		t.Fatalf("read %+v", recs)
	}
}

func TestRingWrapsThroughTheDoubleMapping(t *testing.T) {
	p, r := newSimRing(t, testCapacity)
	rng := rand.New(rand.NewPCG(1, 2))
	var rec kmes.Record
	// Odd sizes put events across the end of the buffer in every way.
	for seq := uint64(1); seq <= 5000; seq++ {
		n := 1 + rng.IntN(250)
		p.Emit(0, "wrap", payloadFor(seq, n))
		ok, err := r.Read(&rec)
		if !ok || err != nil {
			t.Fatalf("event %d: read %v %v", seq, ok, err)
		}
		if rec.Sequence != seq || !bytes.Equal(rec.Payload, payloadFor(seq, n)) {
			t.Fatalf("event %d: got sequence %d payload %x", seq, rec.Sequence, rec.Payload)
		}
	}
	if p.WritePos() < 4*testCapacity {
		t.Fatalf("only %d bytes written: the ring did not wrap enough", p.WritePos())
	}
	if s := r.Stats(); s.Events != 5000 || s.Lost != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestRingLappedReaderSkipsToTail(t *testing.T) {
	p, r := newSimRing(t, testCapacity)
	p.Emit(0, "t", payloadFor(1, 100))
	if recs := readAll(t, r); len(recs) != 1 {
		t.Fatalf("read %d", len(recs))
	}
	// Four ring-fulls while the reader sleeps.
	const n = 4 * testCapacity / 160
	for seq := uint64(2); seq <= n; seq++ {
		p.Emit(0, "t", payloadFor(seq, 100+int(seq%30)))
	}
	recs := readAll(t, r)
	if len(recs) == 0 {
		t.Fatal("nothing survived")
	}
	first := recs[0].Sequence
	for i, rec := range recs {
		if rec.Sequence != first+uint64(i) || !bytes.Equal(rec.Payload, payloadFor(rec.Sequence, 100+int(rec.Sequence%30))) {
			t.Fatalf("event %d: sequence %d, payload wrong or out of order", i, rec.Sequence)
		}
	}
	if last := recs[len(recs)-1].Sequence; last != n {
		t.Fatalf("last sequence %d, want %d", last, n)
	}
	s := r.Stats()
	if s.Lost != first-2 || s.Dropped != 0 || s.Events != 1+uint64(len(recs)) {
		t.Errorf("stats %+v, want Lost %d (events 2..%d overwritten)", s, first-2, first-1)
	}
}

func TestRingCountsDropsSeparately(t *testing.T) {
	p, r := newSimRing(t, testCapacity)
	p.Emit(0, "t", []byte{0xc0})
	p.Drop()
	p.Drop()
	p.Emit(0, "t", []byte{0xc0})
	if seq := p.Emit(0, "big", make([]byte, testCapacity/2)); seq != 0 {
		t.Fatalf("an event larger than half the ring was written (sequence %d)", seq)
	}
	p.Emit(0, "t", []byte{0xc0})
	recs := readAll(t, r)
	if len(recs) != 3 || recs[1].Sequence != 4 || recs[2].Sequence != 6 {
		t.Fatalf("read %d events", len(recs))
	}
	if s := r.Stats(); s.Dropped != 3 || s.Lost != 0 {
		t.Errorf("stats %+v, want 3 dropped, none lost", s)
	}
}

// TestRingDroppedFromTheProducerPage reads the producer's own dropped
// count (KMES_META_DROPPED_OFF): every drop counts, whether or not a
// reader saw its sequence gap, a swap carries the count to the new ring,
// and a closed Ring reads 0.
func TestRingDroppedFromTheProducerPage(t *testing.T) {
	p, r := newSimRing(t, testCapacity)
	if d := r.Dropped(); d != 0 {
		t.Fatalf("a new ring's dropped count is %d", d)
	}
	p.Drop()
	p.Emit(0, "big", make([]byte, testCapacity/2)) // larger than half the ring
	if d, pd := r.Dropped(), p.Dropped(); d != 2 || pd != 2 {
		t.Fatalf("dropped %d (producer %d) after two drops, want 2", d, pd)
	}
	p.SetDropped(1 << 40)
	if d := r.Dropped(); d != 1<<40 {
		t.Fatalf("dropped %d, the producer page says %d", d, uint64(1)<<40)
	}
	n, err := p.Swap(2 * testCapacity)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	n.Drop()
	nr, err := n.Reader()
	if err != nil {
		t.Fatal(err)
	}
	if d := nr.Dropped(); d != 1<<40+1 {
		t.Errorf("the new ring's dropped count is %d, want the old one's carried over plus 1 (%d)", d, uint64(1)<<40+1)
	}
	if d := r.Dropped(); d != 1<<40 {
		t.Errorf("the replaced ring's dropped count moved to %d", d)
	}
	r.Close()
	if d := r.Dropped(); d != 0 {
		t.Errorf("dropped %d after Close, want 0", d)
	}
}

func TestRingSeekEnd(t *testing.T) {
	p, r := newSimRing(t, testCapacity)
	p.Emit(0, "old", []byte{0xc0})
	r.SeekEnd()
	p.Emit(0, "new", []byte{0xc0})
	recs := readAll(t, r)
	if len(recs) != 1 || recs[0].Type != "new" {
		t.Fatalf("read %+v", recs)
	}
	r.SeekTail()
	if recs := readAll(t, r); len(recs) != 2 || recs[0].Type != "old" {
		t.Fatalf("after SeekTail read %+v", recs)
	}
}

// rawEvent builds an event with the given header fields.
func rawEvent(size, hdrSize uint32, typeLen uint16, total int) []byte {
	b := make([]byte, total)
	binary.LittleEndian.PutUint32(b[0:], size)
	binary.LittleEndian.PutUint32(b[4:], hdrSize)
	binary.LittleEndian.PutUint64(b[16:], 99)
	binary.LittleEndian.PutUint16(b[27:], typeLen)
	return b
}

func TestRingCorruptSizes(t *testing.T) {
	cases := []struct {
		name   string
		raw    []byte
		reason string
	}{
		{"event_size 0", rawEvent(0, 30, 1, 40), "smaller than a header"},
		{"event_size below the header", rawEvent(20, 30, 1, 40), "smaller than a header"},
		{"event_size beyond write_pos", rawEvent(40+35+1, 30, 1, 40), "beyond write_pos"}, // "after" is 35 bytes
		{"event_size over half the ring", rawEvent(testCapacity/2+1, 30, 1, 40), "larger than half the ring"},
		{"event_size huge", rawEvent(0xffffffff, 30, 1, 40), "larger than half the ring"},
		{"header_size beyond the event", rawEvent(40, 41, 1, 40), "header_size 41 is larger"},
		{"empty type", rawEvent(40, 29, 0, 40), "empty type"},
		{"type beyond header_size", rawEvent(40, 30, 2, 40), "type_len 2 does not fit header_size 30"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, r := newSimRing(t, testCapacity)
			p.Emit(0, "before", []byte{0xc0})
			p.WriteRaw(c.raw)
			p.Emit(0, "after", []byte{0xc2})
			var rec kmes.Record
			if ok, err := r.Read(&rec); !ok || err != nil || rec.Type != "before" {
				t.Fatalf("first read: %v %v %q", ok, err, rec.Type)
			}
			ok, err := r.Read(&rec)
			var ce *kmes.CorruptError
			if ok || !errors.As(err, &ce) || !errors.Is(err, kmes.ErrCorrupt) {
				t.Fatalf("read of the corrupt event: %v %v, want a CorruptError", ok, err)
			}
			if ce.CPU != 3 || ce.Pos != 36 || !strings.Contains(ce.Reason, c.reason) {
				t.Errorf("error %q: want cpu 3, position 36, reason %q", err, c.reason)
			}
			// Resynchronised at write_pos (tail_pos is behind): the event
			// after the bad one is lost with it, and counted so.
			if ok, err := r.Read(&rec); ok || err != nil {
				t.Errorf("after resynchronising read %v %v, want nothing", ok, err)
			}
			if r.ReadPos() != p.WritePos() {
				t.Errorf("read position %d, want write_pos %d", r.ReadPos(), p.WritePos())
			}
			p.Emit(0, "later", []byte{0xc3})
			if ok, err := r.Read(&rec); !ok || err != nil || rec.Type != "later" {
				t.Fatalf("read after resynchronising: %v %v %q", ok, err, rec.Type)
			}
			if s := r.Stats(); s.Corrupt != 1 || s.Lost != 1 || s.Dropped != 0 {
				t.Errorf("stats %+v, want 1 corrupt, 1 lost (the event after the bad one)", s)
			}
		})
	}
}

func TestRingCorruptionResyncsAtTail(t *testing.T) {
	// When tail_pos is ahead of the bad event, the reader goes there and
	// reads on.
	p, r := newSimRing(t, testCapacity)
	p.Emit(0, "a", []byte{0xc0})
	readAll(t, r)
	p.WriteRaw(rawEvent(0, 0, 0, 64)) // at position 31
	for seq := uint64(3); p.TailPos() <= 31; seq++ {
		p.Emit(0, "fill", payloadFor(seq, 200))
	}
	recs := readAll(t, r)
	if len(recs) == 0 || recs[len(recs)-1].Sequence != p.Sequence() {
		t.Fatalf("did not read to the end after the lap")
	}
}

func FuzzRingNeverPanics(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte("0")) // a misaligned start that reads as a 73008-byte event
	f.Add(rawEvent(40, 30, 1, 40))
	f.Add(rawEvent(0xffffffff, 0xffffffff, 0xffff, 64))
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) == 0 || len(raw) > testCapacity/4 {
			return
		}
		// A ring larger than a chunk of copying, with more than a chunk
		// of good events after the raw bytes.
		p, r := newSimRing(t, 1<<20)
		p.WriteRaw(raw)
		for p.WritePos() < uint64(len(raw))+80<<10 {
			p.Emit(0, "fill", payloadFor(1, 250))
		}
		var rec kmes.Record
		for i := 0; i < 5000; i++ {
			ok, err := r.Read(&rec)
			if err == nil && !ok {
				break
			}
			// A misaligned start can read as a plausible event: what
			// must hold is that it stays within what was published.
			if ok && r.ReadPos() > p.WritePos() {
				t.Fatalf("read past write_pos")
			}
		}
		if r.ReadPos() != p.WritePos() {
			t.Fatalf("read position %d, write_pos %d", r.ReadPos(), p.WritePos())
		}
	})
}

func TestNewRingRejectsBadMappings(t *testing.T) {
	p, _ := newSimRing(t, testCapacity)
	good, err := p.Mapping()
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(off int, b ...byte) []byte {
		m := make([]byte, len(good))
		copy(m, good)
		copy(m[off:], b)
		return m
	}
	le64 := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
	cases := []struct {
		name string
		m    []byte
		want string
	}{
		{"short", good[:100], "shorter than the metadata pages"},
		{"magic", mutate(0, 'X'), "bad magic"},
		{"version", mutate(abi.MetaVersionOff, 2), "version 2"},
		{"capacity not a power of two", mutate(abi.MetaCapacityOff, le64(testCapacity+1)...), "not a power of two"},
		{"capacity too small", mutate(abi.MetaCapacityOff, le64(4096)...), "not a power of two in"},
		{"data offset", mutate(abi.MetaDataOffOff, le64(4096)...), "data offset 4096"},
		{"mapping too short for the capacity", good[:abi.MapSize(testCapacity)-1], "needs"},
	}
	for _, c := range cases {
		if _, err := kmes.NewRing(c.m); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
}

func TestSimulatorMapsTheReaderReadOnly(t *testing.T) {
	// Like the kernel's, a reader's mapping has the producer page and the
	// data read-only and only the consumer page writable.
	p, _ := newSimRing(t, testCapacity)
	m, err := p.Mapping()
	if err != nil {
		t.Fatal(err)
	}
	m[abi.MetaNeedWakeOff] = 0
	for _, off := range []int{0, abi.MetaWritePosOff, abi.MapDataOff, abi.MapDataOff + testCapacity} {
		if !faults(func() { m[off] = 1 }) {
			t.Errorf("write at offset %d did not fault", off)
		}
	}
}

func faults(f func()) (faulted bool) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() { faulted = recover() != nil }()
	f()
	return false
}

func TestRingLappedBeforeTheFirstRead(t *testing.T) {
	// The reader opened at tail_pos (sequence 1); everything overwritten
	// before its first read is lost to it and counted so.
	p, _ := newSimRing(t, testCapacity)
	p.Emit(0, "t", payloadFor(1, 100))
	r, err := p.Reader()
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(2); seq <= 2000; seq++ {
		p.Emit(0, "t", payloadFor(seq, 100))
	}
	recs := readAll(t, r)
	first := recs[0].Sequence
	if s := r.Stats(); s.Lost != first-1 || s.Events+s.Lost != 2000 {
		t.Errorf("stats %+v with the first event read %d: want %d lost", s, first, first-1)
	}
}

func TestRingSeekEndCountsFromTheFirstRead(t *testing.T) {
	p, r := newSimRing(t, testCapacity)
	for seq := uint64(1); seq <= 10; seq++ {
		p.Emit(0, "t", []byte{0xc0})
	}
	r.SeekEnd()
	p.Emit(0, "t", []byte{0xc0})
	if recs := readAll(t, r); len(recs) != 1 || recs[0].Sequence != 11 {
		t.Fatalf("read %d events", len(recs))
	}
	if s := r.Stats(); s.Lost != 0 || s.Dropped != 0 || s.Events != 1 {
		t.Errorf("stats %+v: the events before the end are neither lost nor dropped", s)
	}
}

func TestRingCorruptSizeInALargeRing(t *testing.T) {
	// With more published than one chunk of copying (64 KiB), a size that
	// cannot be must still be reported, not copied again and again.
	for _, c := range []struct {
		name string
		size uint32
	}{{"over half the ring", 1<<20/2 + 1}, {"beyond write_pos", 1<<20/2 - 1}} {
		t.Run(c.name, func(t *testing.T) {
			p, r := newSimRing(t, 1<<20)
			p.WriteRaw(rawEvent(c.size, 30, 1, 40))
			for seq := uint64(1); p.WritePos() < 200<<10; seq++ {
				p.Emit(0, "fill", payloadFor(seq, 200))
			}
			done := make(chan error, 1)
			go func() {
				var rec kmes.Record
				_, err := r.Read(&rec)
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, kmes.ErrCorrupt) {
					t.Fatalf("read: %v, want a CorruptError", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Read did not return")
			}
		})
	}
}

func TestRingFreshRingLappedBeforeTheFirstRead(t *testing.T) {
	// Opened on a CPU's first ring before anything was written: the first
	// event will be sequence 1, so a lap before the first read is counted.
	p, r := newSimRing(t, testCapacity)
	for seq := uint64(1); seq <= 2000; seq++ {
		p.Emit(0, "t", payloadFor(seq, 100))
	}
	recs := readAll(t, r)
	if s := r.Stats(); s.Lost != recs[0].Sequence-1 || s.Events+s.Lost != 2000 {
		t.Errorf("stats %+v, first event read %d", s, recs[0].Sequence)
	}
}

func TestRingAfterClose(t *testing.T) {
	// Closing a ring this package mapped unmaps it: what is asked of the
	// Ring after that must not touch the mapping.
	p, _ := newSimRing(t, testCapacity)
	p.Emit(0, "t", []byte{0xc0})
	src, err := p.Mapping()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(-1, 0, len(src), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANONYMOUS|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	copy(m, src[:abi.MapDataOff])
	r, err := kmes.NewRing(m)
	if err != nil {
		t.Fatal(err)
	}
	kmes.SetCloser(r, func() error { return unix.Munmap(m) })
	if r.WritePos() == 0 || r.Generation() != 1 {
		t.Fatalf("write_pos %d, generation %d before Close", r.WritePos(), r.Generation())
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	var w, tail, gen, read uint64
	var ok bool
	var rerr error
	if faults(func() {
		w, tail, gen = r.WritePos(), r.TailPos(), r.Generation()
		var rec kmes.Record
		ok, rerr = r.Read(&rec)
		r.SeekTail()
		r.SeekEnd()
		read = r.ReadPos()
	}) {
		t.Fatal("the Ring read its unmapped pages after Close")
	}
	if w != 0 || tail != 0 || gen != 0 || read != 0 || ok || !errors.Is(rerr, os.ErrClosed) {
		t.Errorf("after Close: write_pos %d, tail_pos %d, generation %d, read position %d, Read %v %v; want zeros, nothing read and os.ErrClosed",
			w, tail, gen, read, ok, rerr)
	}
	if g := r.RingGeneration(); g != 1 {
		t.Errorf("ring generation %d after Close, want 1: it is the ring's own", g)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// The ring's own generation is ring_generation, which a swap leaves as it
// is: a ring mapped after the swap that replaced it reads as replaced
// (Generation differs), and its reader still has every event it holds.
// In a producer page without ring_generation (0), the ring's generation
// is the generation word when the ring was opened.
func TestRingGeneration(t *testing.T) {
	t.Run("mapped after its swap", func(t *testing.T) {
		p, before := newSimRing(t, testCapacity)
		defer before.Close()
		for seq := uint64(1); seq <= 3; seq++ {
			p.Emit(0, "g", payloadFor(seq, 4))
		}
		n, err := p.Swap(2 * testCapacity)
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		if p.RingGeneration() != 1 || p.Generation() != 2 || n.RingGeneration() != 2 || n.Generation() != 2 {
			t.Fatalf("simulator: old ring generation %d (word %d), new %d (word %d); want 1 (2), 2 (2)",
				p.RingGeneration(), p.Generation(), n.RingGeneration(), n.Generation())
		}
		after, err := p.Reader()
		if err != nil {
			t.Fatal(err)
		}
		defer after.Close()
		for _, r := range []*kmes.Ring{before, after} {
			if r.RingGeneration() != 1 || r.Generation() != 2 || r.Stats().Generation != 1 {
				t.Errorf("ring generation %d, generation %d, stats generation %d; want 1, 2, 1",
					r.RingGeneration(), r.Generation(), r.Stats().Generation)
			}
			if recs := readAll(t, r); len(recs) != 3 || recs[2].Sequence != 3 {
				t.Errorf("read %d events of the replaced ring, want 3", len(recs))
			}
		}
	})
	t.Run("producer page without it", func(t *testing.T) {
		p, err := kmestest.New(0, testCapacity, 5)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		p.SetRingGeneration(0)
		r, err := p.Reader()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if r.RingGeneration() != 5 || r.Stats().Generation != 5 {
			t.Errorf("ring generation %d, stats generation %d; want 5, the generation word at open", r.RingGeneration(), r.Stats().Generation)
		}
		n, err := p.Swap(testCapacity)
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		if r.RingGeneration() != 5 || r.Generation() != 6 {
			t.Errorf("after the swap: ring generation %d, generation %d; want 5, 6", r.RingGeneration(), r.Generation())
		}
	})
}

// PageSize is data_page_size, read when the ring is opened: what the
// producer page says, 0 (a kernel older than the field) included, which
// opens like any other value. Stats carries it, and Close keeps it.
func TestRingPageSize(t *testing.T) {
	for _, want := range []uint64{4096, 2 << 20, 0} {
		p, err := kmestest.New(1, testCapacity, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		p.SetPageSize(uint32(want))
		p.Emit(0, "t", []byte{0xc0})
		r, err := p.Reader()
		if err != nil {
			t.Fatalf("data_page_size %d: %v", want, err)
		}
		if recs := readAll(t, r); len(recs) != 1 {
			t.Errorf("data_page_size %d: read %d events, want 1", want, len(recs))
		}
		if ps, sps := r.PageSize(), r.Stats().PageSize; ps != want || sps != want {
			t.Errorf("PageSize %d, Stats().PageSize %d; the producer page says %d", ps, sps, want)
		}
		r.Close()
		if ps := r.PageSize(); ps != want {
			t.Errorf("PageSize %d after Close, want %d: it is the ring's own", ps, want)
		}
	}
}
