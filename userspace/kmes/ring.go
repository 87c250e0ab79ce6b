package kmes

import (
	"encoding/binary"
	"fmt"
	"github.com/kmes-project/kmes/userspace/kmes/abi"
	"math/bits"
	"runtime"
	"sync/atomic"
	"unsafe"
)

// Ring reads one mapped ring: the consumer half of the protocol of
// KMES.md §4 over a []byte, with no system call. The mapping is laid out
// as kmes_attach's mmap gives it (abi.MapSize bytes: producer page, consumer
// page, data mapped twice); Attach makes one, and so can a simulator.
//
// Shared words and their ordering (the producer's side is in the kernel's
// kernel/kmes/ring.c):
//
//   - write_pos: loaded atomically (acquire) before any event byte; the
//     producer stores it with release after the bytes.
//   - tail_pos: loaded atomically (acquire) before a chunk of events is
//     copied out and again after: the producer stores it with release
//     before it overwrites older bytes, so the copy is whole if tail_pos
//     did not pass its start.
//   - need_wake (consumer page, shared by every consumer of the ring) and
//     futex_counter form an eventcount: a reader about to sleep loads
//     futex_counter (acquire) first, then stores need_wake = 1 with a full
//     barrier (Go's atomic store is XCHG on amd64), then re-loads
//     write_pos and the generation, and sleeps on the counter it loaded
//     first. The producer, seeing need_wake set, clears it, then bumps
//     futex_counter and wakes all. Readers only ever store 1: a 0 stored
//     by one would withdraw another's request.
//   - generation: loaded atomically. When the producer replaces the
//     ring (a swap), it freezes write_pos first, then stores the new
//     ring's generation (release) and wakes the ring's sleepers: a reader
//     that sees the new generation reads up to a final write_pos.
//   - ring_generation: the ring's own generation, written before the
//     ring is visible and never changed, read once when the Ring is
//     opened. The ring is replaced exactly when generation differs from
//     it, even if the swap came between kmes_attach and the mmap.
//   - dropped: loaded atomically; the producer's count of the events
//     dropped on the ring's CPU since boot.
//   - data_page_size: written before the ring is visible and never
//     changed, read once when the Ring is opened.
//
// A Ring is not safe for concurrent use; its Stats are.
type Ring struct {
	data     []byte // both copies of the data pages
	capacity uint64
	mask     uint64
	cpu      int
	pageSize uint64 // data_page_size

	writePos *atomic.Uint64
	tailPos  *atomic.Uint64
	gen      *atomic.Uint64
	dropped  *atomic.Uint64
	futex    *atomic.Uint32
	// needWake is the first word of the consumer page: need_wake is its
	// low byte and the rest of the page is zero, so storing the word 1
	// stores need_wake = 1 and keeps the zeros.
	needWake *atomic.Uint32

	readPos uint64
	// buf is a private copy of the ring's bytes from bufPos on, taken when
	// write_pos was bufW; Read hands out events from it.
	buf          []byte
	bufPos, bufW uint64
	// gen0 is the ring's own generation: ring_generation, or, in a
	// producer page that does not have it (0), the generation word when
	// the ring was opened. The ring is replaced when the word differs.
	gen0 uint64
	// skipThrough: events up to this sequence were read from the ring this
	// one replaced (after a generation change).
	skipThrough uint64
	// lapped: the reader jumped ahead since the last event it returned, so
	// the next sequence gap is events overwritten, not dropped.
	lapped bool

	// count is the reader's own; shared is what Stats reads, published
	// from count when something other than the event count changes, when
	// the reader catches up with write_pos, and every publishEvery events:
	// an atomic store per counter per event would be most of the cost of
	// reading a small event.
	count       counts
	shared      sharedCounts
	unpublished int

	closer func() error
}

const publishEvery = 256

type counts struct {
	events, lost, dropped, corrupt, lastSeq uint64
	// known: lastSeq is a real baseline (an event was read, or the
	// sequence before the first one was), so a gap after it counts.
	known bool
}

type sharedCounts struct{ events, lost, dropped, corrupt, lastSeq atomic.Uint64 }

func (r *Ring) publish() {
	r.shared.events.Store(r.count.events)
	r.shared.lost.Store(r.count.lost)
	r.shared.dropped.Store(r.count.dropped)
	r.shared.corrupt.Store(r.count.corrupt)
	r.shared.lastSeq.Store(r.count.lastSeq)
	r.unpublished = 0
}

// NewRing checks a mapping of a ring and returns its reader, positioned at
// tail_pos: the oldest surviving event.
func NewRing(mapping []byte) (*Ring, error) {
	// Read's torn-read check needs x86 ordering: the loads of a copy are
	// not reordered after the load of tail_pos that follows them.
	if runtime.GOARCH != "amd64" {
		return nil, fmt.Errorf("open ring: %w", ErrUnsupported)
	}
	if len(mapping) < abi.MapDataOff {
		return nil, fmt.Errorf("open ring: mapping of %d bytes is shorter than the metadata pages", len(mapping))
	}
	if uintptr(unsafe.Pointer(&mapping[0]))%8 != 0 {
		return nil, fmt.Errorf("open ring: mapping is not 8-byte aligned")
	}
	meta := mapping[:abi.MetaPageSize]
	if string(meta[abi.MetaMagicOff:abi.MetaMagicOff+abi.RingMagicLen]) != abi.RingMagic {
		return nil, fmt.Errorf("open ring: bad magic %q", meta[abi.MetaMagicOff:abi.MetaMagicOff+abi.RingMagicLen])
	}
	if v := binary.LittleEndian.Uint32(meta[abi.MetaVersionOff:]); v != abi.RingVersion {
		return nil, fmt.Errorf("open ring: version %d, this library reads version %d", v, abi.RingVersion)
	}
	capacity := binary.LittleEndian.Uint64(meta[abi.MetaCapacityOff:])
	if capacity < abi.CapacityMin || capacity > abi.CapacityMax || bits.OnesCount64(capacity) != 1 {
		return nil, fmt.Errorf("open ring: capacity %d is not a power of two in [%d, %d]", capacity, abi.CapacityMin, abi.CapacityMax)
	}
	if off := binary.LittleEndian.Uint64(meta[abi.MetaDataOffOff:]); off != abi.MapDataOff {
		return nil, fmt.Errorf("open ring: data offset %d, want %d", off, abi.MapDataOff)
	}
	if uint64(len(mapping)) < abi.MapSize(capacity) {
		return nil, fmt.Errorf("open ring: mapping of %d bytes, a ring of capacity %d needs %d", len(mapping), capacity, abi.MapSize(capacity))
	}
	r := &Ring{
		data:     mapping[abi.MapDataOff:abi.MapSize(capacity)],
		capacity: capacity,
		mask:     capacity - 1,
		cpu:      int(binary.LittleEndian.Uint16(meta[abi.MetaCPUIDOff:])),
		// Not checked: a reader does not need it, and an older kernel
		// leaves it 0.
		pageSize: uint64(binary.LittleEndian.Uint32(meta[abi.MetaDataPageSizeOff:])),
		futex:    (*atomic.Uint32)(unsafe.Pointer(&mapping[abi.MetaFutexOff])),
		needWake: (*atomic.Uint32)(unsafe.Pointer(&mapping[abi.MetaNeedWakeOff])),
	}
	r.positions(meta)
	r.gen0 = binary.LittleEndian.Uint64(meta[abi.MetaRingGenerationOff:])
	if r.gen0 == 0 {
		// Laid out before ring_generation: the word at open is all there
		// is, though a swap between kmes_attach and the mmap has already
		// moved it on.
		r.gen0 = r.gen.Load()
	}
	r.SeekTail()
	return r, nil
}

// NewMappedRing is NewRing for a RingSource that maps rings its own way:
// Close calls unmap, once, when the Ring no longer reads the mapping.
func NewMappedRing(mapping []byte, unmap func() error) (*Ring, error) {
	r, err := NewRing(mapping)
	if err != nil {
		return nil, err
	}
	r.closer = unmap
	return r, nil
}

// positions points write_pos, tail_pos, the generation and the dropped
// count into meta, a producer page.
func (r *Ring) positions(meta []byte) {
	r.writePos = (*atomic.Uint64)(unsafe.Pointer(&meta[abi.MetaWritePosOff]))
	r.tailPos = (*atomic.Uint64)(unsafe.Pointer(&meta[abi.MetaTailPosOff]))
	r.gen = (*atomic.Uint64)(unsafe.Pointer(&meta[abi.MetaGenOff]))
	r.dropped = (*atomic.Uint64)(unsafe.Pointer(&meta[abi.MetaDroppedOff]))
}

// CPU returns the CPU the ring belongs to.
func (r *Ring) CPU() int { return r.cpu }

// Capacity returns the size of the ring's data region in bytes.
func (r *Ring) Capacity() uint64 { return r.capacity }

// PageSize returns the size in bytes of the pages the ring's data is on
// (data_page_size): 2 MiB (2097152) on 2 MiB pages, 4096 when the kernel
// fell back to 4 KiB pages (the kernel log names the CPU and the reason),
// 0 when the kernel is older than the field: unknown. It is the ring's
// own and never changes, Close included. It is the size of the kernel's
// pages, not of this process's mapping of them: the mapping uses 4 KiB
// entries where transparent hugepages are off for it, or where it was
// placed with the data off a 2 MiB boundary (MAP_FIXED, mremap).
func (r *Ring) PageSize() uint64 { return r.pageSize }

// Generation returns the generation word as the producer shows it now, 0
// after Close: the ring's own generation (RingGeneration) until a swap
// replaces the ring, then the generation of the ring that replaced it.
func (r *Ring) Generation() uint64 { return r.gen.Load() }

// RingGeneration returns the ring's own generation (ring_generation: 1
// for a CPU's first ring, one more for each ring that replaced it), which
// never changes, Close included. The ring was replaced when Generation
// differs from it; a ring mapped after the swap that replaced it is no
// exception. With a producer page laid out before ring_generation it is
// the generation word when the ring was opened.
func (r *Ring) RingGeneration() uint64 { return r.gen0 }

// WritePos returns the producer's write position, 0 after Close.
func (r *Ring) WritePos() uint64 { return r.writePos.Load() }

// TailPos returns the position of the oldest surviving event, 0 after
// Close.
func (r *Ring) TailPos() uint64 { return r.tailPos.Load() }

// Dropped returns the producer's count of the events dropped on the
// ring's CPU since boot (too large for the ring, or emitted where they
// could not be written), as the producer page shows it now; a swap
// carries it over to the new ring. 0 after Close. Unlike Stats' Dropped,
// which counts the sequence gaps this reader saw, it covers every event
// the kernel dropped, read or not.
func (r *Ring) Dropped() uint64 { return r.dropped.Load() }

// ReadPos returns where the next Read starts.
func (r *Ring) ReadPos() uint64 { return r.readPos }

// SeekEnd moves the read position to the current end: Read returns only
// events published from now on. Gaps count from the first event read.
func (r *Ring) SeekEnd() {
	r.readPos = r.writePos.Load()
	r.count.lastSeq, r.count.known = 0, false
	r.publish()
}

// SeekTail moves the read position to the oldest surviving event. Events
// the producer overwrites before they are read count as lost from there.
func (r *Ring) SeekTail() {
	r.readPos = r.tailPos.Load()
	if r.readPos == 0 && r.gen0 == 1 && !r.count.known {
		// A CPU's first ring, never overwritten: it holds every event
		// since boot, from sequence 1 on, so a first event numbered
		// above 1 follows events dropped before the ring.
		r.count.lastSeq, r.count.known = 0, true
		r.publish()
		return
	}
	if r.readPos == r.writePos.Load() {
		return // empty: the next number is unknown
	}
	// The sequence number of the event at tail_pos, if it was not
	// overwritten while it was read, is where counting starts.
	seq := binary.LittleEndian.Uint64(r.data[r.readPos&r.mask+abi.HdrSequenceOff:])
	if r.tailPos.Load() == r.readPos && seq != 0 && !r.count.known {
		r.count.lastSeq, r.count.known = seq-1, true
		r.publish()
	}
}

// Stats returns what the ring's reader counted. It may be called from any
// goroutine; while the reader is busy it may lag by up to 256 events, and
// it is exact whenever the reader has caught up with the producer.
func (r *Ring) Stats() Stats {
	return Stats{
		CPU:          r.cpu,
		Generation:   r.gen0,
		Capacity:     r.capacity,
		PageSize:     r.pageSize,
		Events:       r.shared.events.Load(),
		Lost:         r.shared.lost.Load(),
		Dropped:      r.shared.dropped.Load(),
		Corrupt:      r.shared.corrupt.Load(),
		LastSequence: r.shared.lastSeq.Load(),
	}
}

// Close unmaps the ring if this package mapped it. A closed Ring reads as
// an empty one whose positions, generation and dropped count are 0; Stats
// still holds what was counted.
func (r *Ring) Close() error {
	// Every word moves to a page of zeros of the Ring's own before the
	// mapping goes, so nothing reads or writes it once it is unmapped.
	zero := make([]byte, abi.MetaPageSize)
	r.positions(zero)
	r.futex = (*atomic.Uint32)(unsafe.Pointer(&zero[abi.MetaFutexOff]))
	r.needWake = (*atomic.Uint32)(unsafe.Pointer(&zero[abi.MetaFutexOff+64]))
	r.data, r.buf = nil, nil
	r.readPos, r.bufPos, r.bufW = 0, 0, 0
	c := r.closer
	r.closer = nil
	if c == nil {
		return nil
	}
	return c()
}

// generationChanged reports whether the producer has replaced this ring:
// the generation word is no longer the ring's own. Once it has, write_pos
// is final.
func (r *Ring) generationChanged() bool { return r.gen.Load() != r.gen0 }

// Read returns the next event in rec, as ReadEvents would one View. It
// returns false when there is none yet. rec's Payload and Raw point into
// the Ring's own copy of the events, valid until the next read.
func (r *Ring) Read(rec *Record) (bool, error) {
	var v [1]View
	n, err := r.ReadEvents(v[:])
	if n == 0 {
		return false, err
	}
	v[0].record(rec)
	return true, nil
}

// ReadEvents fills dst with the next events, as many as fit, from one
// chunk the ring's bytes were copied out in: it returns 0 and no error
// when there is none yet, and a *CorruptError (with no event) when the
// event at the read position has sizes that cannot be right; the reader
// has then already moved on to the next position it can trust, so reading
// may go on. ErrClosed once the Ring is closed.
//
// The views point into the Ring's private copy of the chunk, never into
// the mapping, which the producer may overwrite: they stay valid until
// the next ReadEvents or Read of this Ring, which may reuse that memory.
//
// Events are copied out of the ring a chunk at a time, with one check of
// tail_pos after each copy rather than one per event: a chunk copied
// while tail_pos stayed at or behind its start is whole, since the
// producer moves tail_pos past bytes before it overwrites them.
func (r *Ring) ReadEvents(dst []View) (int, error) {
	if r.data == nil {
		return 0, fmt.Errorf("read ring of cpu %d: %w", r.cpu, ErrClosed)
	}
	if len(dst) == 0 {
		return 0, nil
	}
	n := 0
	for n == 0 {
		if r.readPos >= r.bufPos && r.readPos-r.bufPos < uint64(len(r.buf)) {
			var err error
			if n, err = r.parse(dst); n > 0 || err != nil {
				return n, err
			}
		}
		if ok, err := r.fill(); !ok || err != nil {
			return 0, err
		}
	}
	return n, nil
}

// parse hands out the whole events of the chunk in r.buf from the read
// position on, at most len(dst). It returns 0 when the first event is cut
// off by the chunk's end (fill then copies it whole), and a *CorruptError
// when that event cannot be; past the first it stops before either.
func (r *Ring) parse(dst []View) (int, error) {
	buf := r.buf[r.readPos-r.bufPos:]
	c := &r.count
	n, gap := 0, false
	for n < len(dst) && len(buf) >= abi.HdrBaseSize {
		size := uint64(binary.LittleEndian.Uint32(buf))
		hdr := binary.LittleEndian.Uint32(buf[abi.HdrHeaderSizeOff:])
		typeLen := uint32(binary.LittleEndian.Uint16(buf[abi.HdrTypeLenOff:]))
		if size > uint64(len(buf)) || size <= abi.HdrBaseSize || size > r.capacity/2 ||
			uint64(hdr) > size || typeLen == 0 || abi.HdrBaseSize+typeLen > hdr {
			room := min(size, uint64(len(buf))) // the chunk holds all of it
			if size > room {
				room = r.bufW - r.readPos // it may go on past the chunk
			}
			if n > 0 || size > uint64(len(buf)) && size <= r.capacity/2 && size <= room {
				break // the next call reports it, or fill copies it whole
			}
			return 0, r.corrupt(size, r.sizeProblem(size, hdr, typeLen, room))
		}
		ev := buf[:size:size]
		buf = buf[size:]
		r.readPos += size
		seq := binary.LittleEndian.Uint64(ev[abi.HdrSequenceOff:])
		if seq <= r.skipThrough {
			continue
		}
		// The sequence gap before the event: overwritten if the reader
		// was lapped since the last one, else dropped before the ring.
		var lost, dropped uint64
		if c.known && seq > c.lastSeq+1 {
			if r.lapped {
				lost = seq - c.lastSeq - 1
			} else {
				dropped = seq - c.lastSeq - 1
			}
			c.lost += lost
			c.dropped += dropped
			gap = true
		}
		r.lapped = false
		c.lastSeq, c.known = seq, true
		// Field by field: a composite literal goes through a temporary.
		v := &dst[n]
		v.raw, v.hdr, v.lost, v.dropped = ev, hdr, lost, dropped
		n++
	}
	if n == 0 && len(buf) > 0 && len(buf) < abi.HdrBaseSize && r.bufW-r.readPos < abi.HdrBaseSize {
		// Not even a header before write_pos.
		return 0, r.corrupt(abi.HdrBaseSize, "beyond write_pos")
	}
	c.events += uint64(n)
	r.unpublished += n
	if gap || r.unpublished >= publishEvery || r.readPos == r.bufW {
		r.publish()
	}
	return n, nil
}

// chunkSize is how much Read copies out of the ring at a time.
const chunkSize = 64 << 10

// fill copies the published bytes from the read position on, up to a
// chunk or one whole event if that is larger. It returns false when there
// is nothing to read.
func (r *Ring) fill() (bool, error) {
	for {
		w := r.writePos.Load()
		if r.readPos == w {
			if r.unpublished != 0 {
				r.publish()
			}
			return false, nil
		}
		if t := r.tailPos.Load(); r.readPos < t {
			r.lap(t)
			continue
		}
		if r.readPos > w {
			return false, r.corrupt(0, "read position beyond write_pos")
		}
		n := min(w-r.readPos, chunkSize)
		off := r.readPos & r.mask
		if size := uint64(binary.LittleEndian.Uint32(r.data[off:])); size > n && size <= min(w-r.readPos, r.capacity/2) {
			n = size
		}
		// The data is mapped twice, so off+n never runs past it: n is at
		// most capacity, since the producer keeps write_pos - tail_pos
		// within it.
		r.buf = append(r.buf[:0], r.data[off:off+n]...)
		if t := r.tailPos.Load(); t > r.readPos {
			r.lap(t) // torn: the producer overwrote bytes as we copied them
			continue
		}
		r.bufPos, r.bufW = r.readPos, w
		return true, nil
	}
}

// sizeProblem says which check an event failed; room is how much of it
// write_pos said was there.
func (r *Ring) sizeProblem(size uint64, hdr, typeLen uint32, room uint64) string {
	switch {
	case size <= abi.HdrBaseSize:
		return "smaller than a header"
	case size > r.capacity/2:
		return "larger than half the ring"
	case size > room:
		return "beyond write_pos"
	case uint64(hdr) > size:
		return fmt.Sprintf("header_size %d is larger", hdr)
	case typeLen == 0:
		return "empty type"
	}
	return fmt.Sprintf("type_len %d does not fit header_size %d", typeLen, hdr)
}

// lap moves a reader the producer overtook to the oldest surviving event.
func (r *Ring) lap(tail uint64) {
	r.readPos = tail
	r.lapped = true
}

// corrupt resynchronises after a bad event at the read position: at
// tail_pos if it is ahead, else at write_pos, the only other position known
// to start an event. What is skipped counts as lost.
func (r *Ring) corrupt(size uint64, reason string) error {
	pos := r.readPos
	next := r.writePos.Load()
	if t := r.tailPos.Load(); t > pos {
		next = t
	}
	r.readPos = next
	r.lapped = true
	r.count.corrupt++
	r.publish()
	return &CorruptError{CPU: r.cpu, Pos: pos, Size: uint32(size), Reason: reason, Skipped: next - pos}
}

// follow makes r, a new generation of old's ring, go on where old stopped:
// events old returned or passed over are skipped and the counts carry
// over. old was drained up to its final write_pos, and the new ring
// starts with the newest of old's events that fit: every one of them was
// old's to read, so none is returned again. A reader that read none of
// them (it started at the end, and nothing came since) learns the last
// one's sequence number from old itself.
func (r *Ring) follow(old *Ring) {
	r.count = old.count
	skip := max(old.skipThrough, old.count.lastSeq)
	if last, ok := old.lastSequence(); ok {
		skip = max(skip, last)
	}
	if !r.count.known && skip != 0 {
		// What old held before the reader's start is not owed to it:
		// counting starts after it.
		r.count.lastSeq, r.count.known = skip, true
	}
	r.skipThrough = skip
	r.publish()
	// Events between the last one read and the first the new ring holds
	// were lost in the swap.
	r.lapped = true
}

// lastSequence returns the sequence number of the last event of a
// replaced ring, walking its events from tail_pos to write_pos: both are
// final once the generation changed. It returns false for an empty ring,
// or when the walk meets a size that cannot be right.
func (r *Ring) lastSequence() (uint64, bool) {
	if !r.generationChanged() {
		return 0, false
	}
	var last uint64
	w := r.writePos.Load()
	for pos := r.tailPos.Load(); pos < w; {
		off := pos & r.mask
		size := uint64(binary.LittleEndian.Uint32(r.data[off:]))
		if size <= abi.HdrBaseSize || size > r.capacity/2 || size > w-pos {
			return 0, false
		}
		last = binary.LittleEndian.Uint64(r.data[off+abi.HdrSequenceOff:])
		pos += size
	}
	return last, last != 0
}

// arm prepares to sleep on the ring (KMES.md §4, Wait): it loads the
// counter to wait on, then asks the producer for a wake-up. The caller
// then looks at the ring again (ready) before it sleeps. No wake-up is
// lost, whatever other readers of the ring do. A publish whose need_wake
// check comes before our store stored write_pos before that check, so
// the second look sees it. One whose check comes after finds need_wake
// set, or cleared since our store by the producer's previous check:
// either way a bump follows our store, hence our load of the counter, and
// a wait on the value loaded returns at once or is woken. Were the
// counter loaded after the store, a clear and bump between the two would
// leave us asleep on the new value, our request gone.
func (r *Ring) arm() uint32 {
	v := r.futex.Load()
	r.needWake.Store(1)
	return v
}

// ready reports, without side effects, whether Read would find something
// or the ring was replaced.
func (r *Ring) ready() bool {
	return r.writePos.Load() != r.readPos || r.generationChanged()
}
