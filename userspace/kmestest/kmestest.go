//go:build linux

// Package kmestest is the producer half of a KMES ring in userspace, for
// tests of consumers without a kernel: a Source is a kmes.RingSource
// (kmes.Options.Source) whose rings a test writes events into, drops
// events from, corrupts, and swaps for rings of another capacity, as the
// kernel does. A ring lives in two
// memfds, one for the metadata pages and one for the data, whose pages are
// mapped twice, back to back, exactly as the kernel maps them (NewHuge puts
// the data on 2 MiB pages), and the producer follows the write protocol of
// KMES.md §4: tail_pos is advanced (release) before older bytes are
// overwritten, write_pos is published (release) after the bytes, then
// need_wake is checked after a full barrier and, if set, cleared before
// futex_counter is bumped and the shared futex woken.
//
// Each Ring has one producer: Emit and the other writing methods must not
// run concurrently with each other. Readers may run concurrently with it.
package kmestest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/userspace/kmes/abi"
)

// HugePageSize is the size of the pages NewHuge puts a ring's data on.
const HugePageSize = 2 << 20

// Ring is a simulated ring of one CPU.
type Ring struct {
	metaFD   int // the two metadata pages
	dataFD   int // the data region, once
	pageSize uintptr
	capacity uint64
	cpu      int
	w        []byte // the producer's writable mapping
	data     []byte // w's data pages, twice

	writePos *atomic.Uint64
	tailPos  *atomic.Uint64
	gen      *atomic.Uint64
	dropped  *atomic.Uint64
	futex    *atomic.Uint32
	needWake *atomic.Uint32

	seq uint64 // last sequence number used
	// sizes lists the sizes of the events from tail_pos on: the producer
	// walks tail_pos with them, not with the ring's bytes, which WriteRaw
	// may have made nonsense.
	sizes []uint64
	// Now stamps events; tests may replace it.
	Now func() int64

	mu       sync.Mutex // guards mappings
	mappings [][]byte   // readers' mappings, unmapped by Close
}

// New creates the ring of cpu with the given capacity and generation:
// both the generation word and ring_generation, the ring's own, which
// nothing changes afterwards (SetRingGeneration aside). Its data is on
// the system's base pages, which data_page_size says (4096 on x86-64).
func New(cpu int, capacity uint64, generation uint64) (*Ring, error) {
	return newRing(cpu, capacity, generation, unix.Getpagesize())
}

// NewHuge is New with the data on 2 MiB hugetlb pages (memfd_create with
// MFD_HUGETLB), mapped at 2 MiB-aligned addresses, and data_page_size
// 2 MiB; a Swap gives the same kind of ring. capacity must be a
// multiple of HugePageSize, and the system must have that many huge pages
// free (/proc/sys/vm/nr_hugepages), or it fails with ENOMEM.
func NewHuge(cpu int, capacity uint64, generation uint64) (*Ring, error) {
	if capacity%HugePageSize != 0 {
		return nil, fmt.Errorf("create ring: capacity %d is not a multiple of %d", capacity, HugePageSize)
	}
	return newRing(cpu, capacity, generation, HugePageSize)
}

func newRing(cpu int, capacity uint64, generation uint64, pageSize int) (*Ring, error) {
	name := fmt.Sprintf("kmestest-cpu%d", cpu)
	metaFD, err := memfd(name+"-meta", unix.MFD_CLOEXEC, abi.MapDataOff)
	if err != nil {
		return nil, fmt.Errorf("create ring: %w", err)
	}
	flags := unix.MFD_CLOEXEC
	if pageSize == HugePageSize {
		flags |= unix.MFD_HUGETLB | unix.MFD_HUGE_2MB
	}
	dataFD, err := memfd(name+"-data", flags, int64(capacity))
	if err != nil {
		unix.Close(metaFD)
		return nil, fmt.Errorf("create ring: %w", err)
	}
	r := &Ring{metaFD: metaFD, dataFD: dataFD, pageSize: uintptr(pageSize), capacity: capacity, cpu: cpu,
		Now: func() int64 { return time.Now().UnixNano() }}
	w, err := r.mapTwice(unix.PROT_READ|unix.PROT_WRITE, unix.PROT_READ|unix.PROT_WRITE)
	if err != nil {
		unix.Close(metaFD)
		unix.Close(dataFD)
		return nil, fmt.Errorf("create ring: %w", err)
	}
	r.w = w
	r.data = w[abi.MapDataOff:]
	word := func(off int) unsafe.Pointer { return unsafe.Pointer(&w[off]) }
	r.writePos = (*atomic.Uint64)(word(abi.MetaWritePosOff))
	r.tailPos = (*atomic.Uint64)(word(abi.MetaTailPosOff))
	r.gen = (*atomic.Uint64)(word(abi.MetaGenOff))
	r.dropped = (*atomic.Uint64)(word(abi.MetaDroppedOff))
	r.futex = (*atomic.Uint32)(word(abi.MetaFutexOff))
	r.needWake = (*atomic.Uint32)(word(abi.MetaNeedWakeOff))

	copy(w[abi.MetaMagicOff:], abi.RingMagic)
	binary.LittleEndian.PutUint32(w[abi.MetaVersionOff:], abi.RingVersion)
	binary.LittleEndian.PutUint16(w[abi.MetaCPUIDOff:], uint16(cpu))
	binary.LittleEndian.PutUint64(w[abi.MetaCapacityOff:], capacity)
	binary.LittleEndian.PutUint64(w[abi.MetaDataOffOff:], abi.MapDataOff)
	binary.LittleEndian.PutUint64(w[abi.MetaRingGenerationOff:], generation)
	r.SetPageSize(uint32(pageSize))
	r.gen.Store(generation)
	return r, nil
}

// memfd returns a memfd of size bytes.
func memfd(name string, flags int, size int64) (int, error) {
	fd, err := unix.MemfdCreate(name, flags)
	if err != nil {
		return -1, fmt.Errorf("memfd_create %s: %w", name, err)
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("ftruncate %s to %d bytes: %w", name, size, err)
	}
	return fd, nil
}

// mapTwice maps the memfds as kmes_attach's mmap lays a ring out: metadata
// pages with metaProt (the consumer page always read-write), then the data
// pages twice with dataProt. It reserves the whole range first so the two
// data mappings are adjacent, and places it so that the data starts at a
// multiple of the data's page size.
func (r *Ring) mapTwice(metaProt, dataProt int) ([]byte, error) {
	size := uintptr(abi.MapSize(r.capacity))
	slack := r.pageSize - uintptr(unix.Getpagesize())
	res, err := unix.MmapPtr(-1, 0, nil, size+slack, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("reserve %d bytes: %w", size+slack, err)
	}
	// The range from base, with base + MapDataOff aligned; the slack
	// around it goes back.
	data := (uintptr(res) + abi.MapDataOff + r.pageSize - 1) &^ (r.pageSize - 1)
	head := data - abi.MapDataOff - uintptr(res)
	base := unsafe.Add(res, head)
	if head > 0 {
		unix.MunmapPtr(res, head)
	}
	if tail := slack - head; tail > 0 {
		unix.MunmapPtr(unsafe.Add(base, size), tail)
	}
	at := func(off uintptr) unsafe.Pointer { return unsafe.Add(base, off) }
	parts := []struct {
		fd                int
		off, fileOff, len uintptr
		prot              int
	}{
		{r.metaFD, 0, 0, abi.MetaPageSize, metaProt},
		{r.metaFD, abi.MapConsumerOff, abi.MapConsumerOff, abi.MetaPageSize, unix.PROT_READ | unix.PROT_WRITE},
		{r.dataFD, abi.MapDataOff, 0, uintptr(r.capacity), dataProt},
		{r.dataFD, abi.MapDataOff + uintptr(r.capacity), 0, uintptr(r.capacity), dataProt},
	}
	for _, p := range parts {
		if _, err := unix.MmapPtr(p.fd, int64(p.fileOff), at(p.off), p.len, p.prot, unix.MAP_SHARED|unix.MAP_FIXED); err != nil {
			unix.MunmapPtr(base, size)
			return nil, fmt.Errorf("map %d bytes at offset %d: %w", p.len, p.off, err)
		}
	}
	return unsafe.Slice((*byte)(base), size), nil
}

// Mapping returns a new mapping of the ring as a consumer gets it:
// producer page and data read-only, so a reader that writes there faults.
func (r *Ring) Mapping() ([]byte, error) {
	m, err := r.mapTwice(unix.PROT_READ, unix.PROT_READ)
	if err != nil {
		return nil, fmt.Errorf("map ring of cpu %d: %w", r.cpu, err)
	}
	r.mu.Lock()
	r.mappings = append(r.mappings, m)
	r.mu.Unlock()
	return m, nil
}

// Reader returns a kmes.Ring reading a new mapping of r, which its Close
// unmaps (as kmes.Attach's rings are unmapped when closed).
func (r *Ring) Reader() (*kmes.Ring, error) {
	m, err := r.Mapping()
	if err != nil {
		return nil, err
	}
	kr, err := kmes.NewMappedRing(m, func() error { return r.unmap(m) })
	if err != nil {
		r.unmap(m)
		return nil, err
	}
	return kr, nil
}

// unmap releases one of the readers' mappings, unless Close did already.
func (r *Ring) unmap(m []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, x := range r.mappings {
		if &x[0] == &m[0] {
			r.mappings = append(r.mappings[:i], r.mappings[i+1:]...)
			return unix.MunmapPtr(unsafe.Pointer(&m[0]), uintptr(len(m)))
		}
	}
	return nil
}

// Mapped returns the number of readers' mappings of the ring that are
// still mapped (Mapping's, and Reader's until their Close).
func (r *Ring) Mapped() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.mappings)
}

// Close unmaps every mapping of the ring and closes the memfds.
func (r *Ring) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range append(r.mappings, r.w) {
		unix.MunmapPtr(unsafe.Pointer(&m[0]), uintptr(len(m)))
	}
	r.mappings = nil
	return errors.Join(unix.Close(r.metaFD), unix.Close(r.dataFD))
}

// Capacity returns the ring's capacity.
func (r *Ring) Capacity() uint64 { return r.capacity }

// Sequence returns the last sequence number used.
func (r *Ring) Sequence() uint64 { return r.seq }

// WritePos returns the producer's write position.
func (r *Ring) WritePos() uint64 { return r.writePos.Load() }

// TailPos returns the position of the oldest surviving event.
func (r *Ring) TailPos() uint64 { return r.tailPos.Load() }

// Generation returns the generation word: the ring's own generation
// until a swap replaces it, then the new ring's.
func (r *Ring) Generation() uint64 { return r.gen.Load() }

// RingGeneration returns ring_generation, the ring's own generation.
func (r *Ring) RingGeneration() uint64 {
	return binary.LittleEndian.Uint64(r.w[abi.MetaRingGenerationOff:])
}

// SetRingGeneration stores g as ring_generation, before any reader maps
// the ring: 0 lays the producer page out as a kernel did before
// ring_generation existed (the word was zero padding).
func (r *Ring) SetRingGeneration(g uint64) {
	binary.LittleEndian.PutUint64(r.w[abi.MetaRingGenerationOff:], g)
}

// SetPageSize stores n as data_page_size, before any reader maps the
// ring; New and NewHuge store the size of the data's pages. 0 lays the
// producer page out as a kernel did before data_page_size existed, 4096
// on a NewHuge ring as a kernel that fell back to 4 KiB pages.
func (r *Ring) SetPageSize(n uint32) {
	binary.LittleEndian.PutUint32(r.w[abi.MetaDataPageSizeOff:], n)
}

// Dropped returns the dropped count of the producer page: the events
// dropped on this CPU, carried over by swaps.
func (r *Ring) Dropped() uint64 { return r.dropped.Load() }

// SetDropped stores n as the producer page's dropped count, as if the
// kernel had dropped that many events on this CPU without consuming
// sequence numbers here (Drop does both).
func (r *Ring) SetDropped(n uint64) { r.dropped.Store(n) }

// Event is one event to emit.
type Event struct {
	Type    string
	Payload []byte
}

// Emit writes one event and publishes it. It returns the event's sequence
// number, or 0 when the event is dropped (larger than half the ring; its
// sequence number is consumed and the dropped count incremented, as the
// kernel does).
func (r *Ring) Emit(origin uint8, typ string, payload []byte) uint64 {
	return r.EmitBatch(origin, []Event{{typ, payload}})[0]
}

// EmitBatch writes events with one timestamp and publishes them with one
// write_pos store, as a kernel batch does. It returns their sequence
// numbers (0 for a dropped one).
func (r *Ring) EmitBatch(origin uint8, events []Event) []uint64 {
	ts := r.Now()
	seqs := make([]uint64, len(events))
	pos := r.writePos.Load()
	for i, ev := range events {
		r.seq++
		size := uint64(abi.HdrBaseSize + len(ev.Type) + len(ev.Payload))
		if size > r.capacity/2 || len(ev.Type) == 0 {
			r.dropped.Add(1)
			continue
		}
		r.makeRoom(pos, size)
		r.put(pos, r.header(ts, origin, ev, size), ev.Payload)
		pos += size
		seqs[i] = r.seq
	}
	r.publish(pos)
	return seqs
}

// Drop consumes a sequence number without writing and counts it in the
// producer page's dropped count: an event the kernel dropped before it
// reached the ring.
func (r *Ring) Drop() {
	r.seq++
	r.dropped.Add(1)
}

// WriteRaw writes raw as one event of size declared bytes (raw's own
// event_size field is left as given) and publishes it, so tests can plant
// corrupt sizes. The ring advances by len(raw).
func (r *Ring) WriteRaw(raw []byte) {
	pos := r.writePos.Load()
	r.makeRoom(pos, uint64(len(raw)))
	r.put(pos, raw, nil)
	r.publish(pos + uint64(len(raw)))
}

func (r *Ring) header(ts int64, origin uint8, ev Event, size uint64) []byte {
	h := make([]byte, abi.HdrBaseSize+len(ev.Type))
	binary.LittleEndian.PutUint32(h[abi.HdrEventSizeOff:], uint32(size))
	binary.LittleEndian.PutUint32(h[abi.HdrHeaderSizeOff:], uint32(len(h)))
	binary.LittleEndian.PutUint64(h[abi.HdrTimestampOff:], uint64(ts))
	binary.LittleEndian.PutUint64(h[abi.HdrSequenceOff:], r.seq)
	binary.LittleEndian.PutUint16(h[abi.HdrCPUIDOff:], uint16(r.cpu))
	h[abi.HdrOriginClassOff] = origin
	binary.LittleEndian.PutUint16(h[abi.HdrTypeLenOff:], uint16(len(ev.Type)))
	copy(h[abi.HdrTypeOff:], ev.Type)
	return h
}

// makeRoom walks tail_pos over whole events until size more bytes fit at
// pos, and stores it (release) before those bytes are overwritten.
func (r *Ring) makeRoom(pos, size uint64) {
	tail := r.tailPos.Load()
	moved := false
	for pos+size-tail > r.capacity {
		tail += r.sizes[0]
		r.sizes = r.sizes[1:]
		moved = true
	}
	if moved {
		r.tailPos.Store(tail)
	}
	r.sizes = append(r.sizes, size)
}

// put copies an event's bytes at pos: one copy each, the double mapping
// takes care of the wrap.
func (r *Ring) put(pos uint64, hdr, payload []byte) {
	off := pos & (r.capacity - 1)
	n := copy(r.data[off:], hdr)
	copy(r.data[off+uint64(n):], payload)
}

// publish stores write_pos (release; Go's atomic store is also a full
// barrier, which the need_wake check needs) and wakes sleeping readers.
func (r *Ring) publish(pos uint64) {
	r.writePos.Store(pos)
	r.wakeIfAsked()
}

// wakeIfAsked is the producer's half of the eventcount: need_wake is
// cleared before futex_counter is bumped, so a reader that asks again
// after the clear has loaded a counter the bump makes stale.
func (r *Ring) wakeIfAsked() {
	if r.needWake.Load()&0xff != 0 {
		r.needWake.Store(0)
		r.futex.Add(1)
		unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(r.futex)), 1 /* FUTEX_WAKE */, 1<<31-1, 0, 0, 0)
	}
}

// Swap replaces r by a ring of the given capacity, as a capacity change
// does in the kernel: the newest surviving events that fit are copied to
// the new ring from position 0, the new ring gets the next generation
// (its generation word and ring_generation), writers switch to it (the
// caller uses the returned Ring from now on), then r's generation word is
// set to the new ring's and its sleepers woken; r's ring_generation stays.
func (r *Ring) Swap(capacity uint64) (*Ring, error) {
	gen := r.gen.Load()
	n, err := newRing(r.cpu, capacity, gen+1, int(r.pageSize))
	if err != nil {
		return nil, err
	}
	n.Now = r.Now
	n.seq = r.seq
	n.dropped.Store(r.dropped.Load())
	// The newest events that fit, whole.
	w := r.writePos.Load()
	start := r.tailPos.Load()
	sizes := r.sizes
	for w-start > capacity {
		start += sizes[0]
		sizes = sizes[1:]
	}
	n.sizes = append([]uint64(nil), sizes...)
	copy(n.data, r.data[start&(r.capacity-1):][:w-start])
	n.writePos.Store(w - start)
	r.gen.Store(gen + 1)
	r.wakeIfAsked()
	return n, nil
}

// Source is a kmes.RingSource over simulated rings, one per CPU. Swap
// replaces one of them, SetCapacity all of them as a write of
// kernel.kmes.buffer_capacity does; re-attaches then see the new rings.
type Source struct {
	// mu guards rings and old. Swaps hold it throughout, so that Rings
	// and Ring wait for a swap to end, as kmes_attach does.
	mu sync.Mutex
	// cpu[i] is CPU i's producer lock: Source.Emit and the swaps of CPU
	// i's ring hold it, as the kernel disables preemption on the CPU.
	// rings[i] changes only with both mu and cpu[i] held.
	cpu   []sync.Mutex
	rings []*Ring
	old   []*Ring // replaced rings that readers may still map
}

// NewSource creates n rings of the given capacity, generation 1.
func NewSource(n int, capacity uint64) (*Source, error) {
	s := &Source{cpu: make([]sync.Mutex, n)}
	for cpu := 0; cpu < n; cpu++ {
		r, err := New(cpu, capacity, 1)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.rings = append(s.rings, r)
	}
	return s, nil
}

// Producer returns the current ring of CPU i, to emit into from a single
// goroutine that does not race the swaps (Emit does not).
func (s *Source) Producer(i int) *Ring {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rings[i]
}

// Emit writes an event into CPU i's current ring, never while that ring
// is being swapped, and returns its sequence number (Ring.Emit). Emits on
// one CPU must come from one goroutine at a time.
func (s *Source) Emit(i int, origin uint8, typ string, payload []byte) uint64 {
	return s.EmitBatch(i, origin, []Event{{typ, payload}})[0]
}

// EmitBatch is Ring.EmitBatch into CPU i's current ring, as Emit.
func (s *Source) EmitBatch(i int, origin uint8, events []Event) []uint64 {
	s.cpu[i].Lock()
	defer s.cpu[i].Unlock()
	return s.rings[i].EmitBatch(origin, events)
}

// Swap gives CPU i a new ring of the given capacity and returns it. The
// caller must not emit into CPU i's ring concurrently but through Emit.
func (s *Source) Swap(i int, capacity uint64) (*Ring, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.swap(i, capacity)
}

// swap is Swap with s.mu held.
func (s *Source) swap(i int, capacity uint64) (*Ring, error) {
	s.cpu[i].Lock()
	defer s.cpu[i].Unlock()
	n, err := s.rings[i].Swap(capacity)
	if err != nil {
		return nil, err
	}
	s.old = append(s.old, s.rings[i])
	s.rings[i] = n
	return n, nil
}

// SetCapacity replaces every CPU's ring by one of the given capacity (the
// next generation), as a write of kernel.kmes.buffer_capacity does; the
// current capacity is no change, and swaps nothing. It fails with EINVAL for a
// capacity that is not a power of two in range, and with EBUSY, changing
// nothing, while a reader still maps a ring that a swap replaced: at most
// two generations exist. Rings and Ring wait until it is done.
func (s *Source) SetCapacity(capacity uint64) error {
	if capacity < abi.CapacityMin || capacity > abi.CapacityMax || capacity&(capacity-1) != 0 {
		return fmt.Errorf("set capacity %d: %w", capacity, unix.EINVAL)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.rings) > 0 && s.rings[0].Capacity() == capacity {
		return nil
	}
	if err := s.retire(); err != nil {
		return fmt.Errorf("set capacity %d: %w", capacity, err)
	}
	for i := range s.rings {
		if _, err := s.swap(i, capacity); err != nil {
			return fmt.Errorf("set capacity %d: cpu %d: %w", capacity, i, err)
		}
	}
	return nil
}

// retire closes the replaced rings no reader maps any more, and fails
// with EBUSY if some reader still maps one.
func (s *Source) retire() error {
	kept := s.old[:0]
	for _, r := range s.old {
		if r.Mapped() > 0 {
			kept = append(kept, r)
			continue
		}
		r.Close()
	}
	clear(s.old[len(kept):])
	s.old = kept
	if len(kept) > 0 {
		return fmt.Errorf("the ring of cpu %d of generation %d is still mapped: %w", kept[0].cpu, kept[0].RingGeneration(), unix.EBUSY)
	}
	return nil
}

// Replaced returns the number of replaced rings that some reader still
// maps.
func (s *Source) Replaced() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.old {
		if r.Mapped() > 0 {
			n++
		}
	}
	return n
}

// Rings maps every current ring for a reader.
func (s *Source) Rings() ([]*kmes.Ring, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Readers(s.rings)
}

// Readers maps each of rings for a reader: all of them, or none and an
// error.
func Readers(rings []*Ring) ([]*kmes.Ring, error) {
	var rs []*kmes.Ring
	for _, r := range rings {
		kr, err := r.Reader()
		if err != nil {
			for _, kr := range rs {
				kr.Close()
			}
			return nil, err
		}
		rs = append(rs, kr)
	}
	return rs, nil
}

// Ring maps CPU i's current ring for a reader.
func (s *Source) Ring(i int) (*kmes.Ring, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i >= len(s.rings) {
		return nil, fmt.Errorf("attach ring %d: there are %d", i, len(s.rings))
	}
	return s.rings[i].Reader()
}

// Close closes every ring, replaced ones included. Readers must be done.
func (s *Source) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range append(s.rings, s.old...) {
		r.Close()
	}
	s.rings, s.old = nil, nil
	return nil
}

// ReserveHugePages makes sure n 2 MiB huge pages are free for NewHuge,
// raising /proc/sys/vm/nr_hugepages if needed (which takes root), and
// returns what puts the old value back.
func ReserveHugePages(n int) (restore func() error, err error) {
	const nr = "/proc/sys/vm/nr_hugepages"
	free, err := hugePagesFree()
	if err != nil || free >= n {
		return func() error { return nil }, err
	}
	old, err := os.ReadFile(nr)
	if err != nil {
		return nil, fmt.Errorf("reserve %d huge pages: %w", n, err)
	}
	total, err := strconv.Atoi(strings.TrimSpace(string(old)))
	if err != nil {
		return nil, fmt.Errorf("reserve %d huge pages: %s: %q: %w", n, nr, old, err)
	}
	restore = func() error { return os.WriteFile(nr, old, 0) }
	if err := os.WriteFile(nr, []byte(strconv.Itoa(total+n-free)), 0); err != nil {
		return nil, fmt.Errorf("reserve %d huge pages: write %s: %w", n, nr, err)
	}
	if free, err = hugePagesFree(); err == nil && free < n {
		err = fmt.Errorf("reserve %d huge pages: only %d free after raising %s (memory too fragmented?)", n, free, nr)
	}
	if err != nil {
		restore()
		return nil, err
	}
	return restore, nil
}

// hugePagesFree returns HugePages_Free of /proc/meminfo.
func hugePagesFree() (int, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "HugePages_Free:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, errors.New("/proc/meminfo has no HugePages_Free")
}
