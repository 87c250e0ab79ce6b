package kmes

import (
	"errors"
	"fmt"
	"iter"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// RingSource gives a Reader its rings: the kernel's through kmes_attach by
// default (KernelRings), or a simulator's in tests (package kmestest).
type RingSource interface {
	// Rings attaches to and maps every CPU's ring, in the kernel's order.
	Rings() ([]*Ring, error)
	// Ring attaches again and maps the ring at index i: after a
	// generation change, the ring that replaced it.
	Ring(i int) (*Ring, error)
}

const (
	// spinMax bounds the polls of write_pos before a reader sleeps; the
	// budget doubles when a spin finds an event and halves when it does
	// not, so a busy ring is drained without system calls and an idle one
	// costs little.
	spinMax = 1 << 12
	spinMin = 16
	// ringsPerWait is how many rings one thread waits on: one futex_waitv
	// takes 128 words, and the thread's own wake word is one of them.
	ringsPerWait = futexWaitvMax - 1
	// readBatch is how many events Read takes from a ring at a time.
	readBatch = 64
	// reattachRetry is how long a Reader waits before it asks its source
	// again for a ring that replaced one, when the source still hands out
	// the old ring.
	reattachRetry = time.Millisecond
)

// ErrFlushed is returned by a read that Flush ended before an event came.
var ErrFlushed = errors.New("kmes: flushed")

// Reader reads one or more CPUs' rings and blocks while they are all
// empty: the whole read protocol of KMES.md §4, generation changes
// included. NewReader gives one Reader for every ring (or the CPUs of
// Options.CPUs), NewReaders one Reader per ring. Events come in each
// ring's order; the rings take turns, a chunk at a time. (Consumer's
// ReadMerged orders them by time across rings.)
//
// A blocked Reader waits for all its rings at once with futex_waitv: one
// thread for up to 127 rings, and a goroutine more, parked in the kernel,
// for each 127 beyond. ReadEvents, Read and the iterators are for one
// goroutine; Close, Flush, SetDeadline, Stats and CPUs may be called from
// any.
//
// When kernel.kmes.buffer_capacity changes, the kernel replaces every
// ring (a swap) and wakes their sleepers. The Reader then drains the old
// ring up to its final write_pos, attaches again, unmaps the old ring (no
// file descriptor is kept open) and goes on in the new one after the last
// event it passed: no event is returned twice, and none is lost unless the
// producer overran the new ring before the Reader got to it. Until a read
// does this the Reader keeps the old ring mapped, and the kernel refuses
// the next swap with EBUSY: keep reading, or Close the Reader.
type Reader struct {
	src RingSource

	mu    sync.Mutex // guards rings[i].ring against Stats and CPUs during a re-attach
	rings []readerRing
	next  int // the ring the next read looks at first: rings take turns
	spin  int
	// batch[pendFrom:pendTo] are the events of Read's last batch not
	// returned yet: Read takes events from a ring as ReadEvents does, a
	// batch at a time, and ReadEvents returns these first. (Indices, not
	// a slice: no write barrier per event.)
	batch            [readBatch]View
	pendFrom, pendTo int
	// onIdle, if set, is told that ring i was found empty, by a look
	// that began at the time given: ReadMerged learns that no event
	// stamped before then is coming from it. It is told before every
	// wait, and while other rings are read at most every idleEvery.
	onIdle    func(i int, at time.Time)
	idleEvery time.Duration

	// ctl is the Reader's own futex word, among those it sleeps on:
	// Close, Flush, SetDeadline and the watchers bump it, then wake it.
	ctl      atomic.Uint32
	closed   atomic.Bool
	flush    atomic.Bool
	deadline atomic.Pointer[time.Time]
	reading  atomic.Bool // a read is running: it, not Close, unmaps the rings
	release  sync.Once

	wait     []futexWaiter // the sleeping thread's words: its rings', then ctl
	watchers []*watcher    // one per ringsPerWait rings past the first
	watching sync.WaitGroup
	waitErr  atomic.Pointer[error] // a watcher's failed wait, for the reader
}

type readerRing struct {
	index  int // in the RingSource's order
	ring   *Ring
	idleAt time.Time // when onIdle was last told of it
}

// NewReader attaches to every CPU's ring (the kernel's, or opts.Source's;
// only opts.CPUs' if set) and returns one Reader for all of them, at
// tail_pos or, with opts.FromEnd, at the current end. Close it when done.
func NewReader(opts *Options) (*Reader, error) {
	src, rings, err := openRings(opts)
	if err != nil {
		return nil, err
	}
	return newReader(src, rings), nil
}

// NewReaders is NewReader with one Reader per ring, in ring order, for a
// goroutine per ring.
func NewReaders(opts *Options) ([]*Reader, error) {
	src, rings, err := openRings(opts)
	if err != nil {
		return nil, err
	}
	rds := make([]*Reader, len(rings))
	for i := range rings {
		rds[i] = newReader(src, rings[i:i+1])
	}
	return rds, nil
}

// openRings maps the rings opts asks for.
func openRings(opts *Options) (RingSource, []readerRing, error) {
	if opts == nil {
		opts = &Options{}
	}
	src := opts.Source
	if src == nil {
		src = KernelRings()
	}
	var all []*Ring
	var index []int // all[i]'s index in the source's order
	var err error
	if sel, ok := src.(cpuSelector); ok && opts.CPUs != nil {
		all, index, err = sel.ringsOf(opts.CPUs)
	} else if all, err = src.Rings(); err == nil {
		for i := range all {
			index = append(index, i)
		}
	}
	if err != nil {
		return nil, nil, err
	}
	rings := make([]readerRing, 0, len(all))
	for i, ring := range all {
		if opts.CPUs != nil && !slices.Contains(opts.CPUs, ring.CPU()) {
			ring.Close()
			continue
		}
		if opts.FromEnd {
			ring.SeekEnd()
		}
		rings = append(rings, readerRing{index: index[i], ring: ring})
	}
	for _, cpu := range opts.CPUs {
		if !slices.ContainsFunc(rings, func(r readerRing) bool { return r.ring.CPU() == cpu }) {
			have := make([]int, len(all))
			for i, r := range all {
				have[i] = r.CPU()
			}
			for _, r := range rings {
				r.ring.Close()
			}
			return nil, nil, fmt.Errorf("attach rings: no ring of cpu %d (the kernel has rings of cpus %v)", cpu, have)
		}
	}
	if len(rings) == 0 {
		return nil, nil, fmt.Errorf("attach rings: no ring to read (the source has %d; Options.CPUs %v)", len(all), opts.CPUs)
	}
	return src, rings, nil
}

// cpuSelector is a RingSource that can map only some CPUs' rings, as the
// kernel's does: ringsOf returns them, in the source's order, with their
// indices in it. A CPU it has no ring of is left out.
type cpuSelector interface {
	ringsOf(cpus []int) (rings []*Ring, index []int, err error)
}

func newReader(src RingSource, rings []readerRing) *Reader {
	rd := &Reader{src: src, rings: rings, spin: spinMin}
	for first := ringsPerWait; first < len(rings); first += ringsPerWait {
		w := &watcher{first: first, end: min(first+ringsPerWait, len(rings))}
		rd.watchers = append(rd.watchers, w)
		rd.watching.Add(1)
		go rd.watch(w)
	}
	return rd
}

// CPUs returns the CPUs of the Reader's rings, in ring order.
func (rd *Reader) CPUs() []int {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	cpus := make([]int, len(rd.rings))
	for i := range rd.rings {
		cpus[i] = rd.rings[i].ring.CPU() // not idle, which the reader writes
	}
	return cpus
}

// Stats returns what the Reader counted on each ring, in ring order. It
// is safe to call while reading and after Close.
func (rd *Reader) Stats() []Stats {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	s := make([]Stats, len(rd.rings))
	for i := range rd.rings {
		s[i] = rd.rings[i].ring.Stats()
	}
	return s
}

// ReadEvents fills dst with the next events from one ring, from one chunk
// of its bytes, and returns how many; it waits while every ring is empty.
// The closed flag, the generation and the counts are checked once per
// call, not per event. The Views are valid until the next read from this
// Reader (ReadEvents, Read, an iterator's next step), which reuses their
// memory, or until Close.
//
// Each View says what was lost or dropped on its CPU just before it
// (View.Lost, View.Dropped). Errors: ErrClosed (which is os.ErrClosed)
// once the Reader is closed; os.ErrDeadlineExceeded when the deadline
// passed with nothing to read (a deadline in the past makes a read that
// never blocks); ErrFlushed when Flush ended the wait; a *CorruptError
// (after which reading may go on) when a ring holds an impossible event;
// a "futex_waitv: " error when it cannot sleep, which would recur.
func (rd *Reader) ReadEvents(dst []View) (int, error) {
	if len(dst) == 0 {
		return 0, nil
	}
	if rd.pendFrom < rd.pendTo && !rd.closed.Load() {
		n := copy(dst, rd.batch[rd.pendFrom:rd.pendTo])
		rd.pendFrom += n
		return n, nil
	}
	rd.reading.Store(true)
	n, err := rd.readEvents(dst)
	rd.reading.Store(false)
	if rd.closed.Load() {
		// Close may have left the unmap to this read (the views are
		// in the Reader's memory, not the mapping).
		rd.unmap()
	}
	return n, err
}

// Read returns the next event in rec, waiting for one if need be: a
// ReadEvents of one event, and the same errors. rec's Payload and Raw
// point into the Reader's memory until the next read.
func (rd *Reader) Read(rec *Record) error {
	if rd.pendFrom == rd.pendTo || rd.closed.Load() {
		n, err := rd.ReadEvents(rd.batch[:])
		if n == 0 {
			return err
		}
		rd.pendFrom, rd.pendTo = 0, n
	}
	rd.batch[rd.pendFrom].record(rec)
	rd.pendFrom++
	return nil
}

// Views iterates over the events, a View at a time, read in batches: the
// fastest way to go through them. Each View is valid until the next step.
// The iteration ends when the Reader is closed, or with the error of a
// read that fails: os.ErrDeadlineExceeded, or a futex error. A
// *CorruptError and ErrFlushed are yielded and reading goes on, unless the
// loop breaks.
func (rd *Reader) Views() iter.Seq2[*View, error] {
	return func(yield func(*View, error) bool) {
		views := make([]View, 64)
		for {
			n, err := rd.ReadEvents(views)
			for i := range n {
				if !yield(&views[i], nil) {
					return
				}
			}
			switch {
			case err == nil:
			case errors.Is(err, ErrClosed):
				return
			case errors.Is(err, ErrCorrupt) || err == ErrFlushed:
				if !yield(nil, err) {
					return
				}
			default:
				yield(nil, err)
				return
			}
		}
	}
}

// Records is Views with each event in a Record, valid until the next
// step (Clone it to keep it).
func (rd *Reader) Records() iter.Seq2[*Record, error] {
	return func(yield func(*Record, error) bool) {
		var rec Record
		for v, err := range rd.Views() {
			if err != nil {
				if !yield(nil, err) {
					return
				}
				continue
			}
			v.record(&rec)
			if !yield(&rec, nil) {
				return
			}
		}
	}
}

// SetDeadline makes reads that would wait past t return
// os.ErrDeadlineExceeded; a zero t waits for ever, a t in the past makes
// reads return what is ready without waiting. A read waiting now follows
// the new deadline.
func (rd *Reader) SetDeadline(t time.Time) {
	if t.IsZero() {
		rd.deadline.Store(nil)
	} else {
		rd.deadline.Store(&t)
	}
	rd.wake()
}

// Flush makes a waiting read return at once: with the events that are
// ready, or ErrFlushed. With no read waiting, it is the next read that
// returns without waiting, with events or ErrFlushed.
func (rd *Reader) Flush() {
	rd.flush.Store(true)
	rd.wake()
}

// Close makes reads return ErrClosed, waking one that waits, and unmaps
// the rings (at once, or when a running read returns). It may be called
// more than once and from any goroutine.
func (rd *Reader) Close() error {
	if rd.closed.Swap(true) {
		return nil
	}
	rd.wake()
	for _, w := range rd.watchers {
		w.req.Add(1)
		futexWake(&w.req)
	}
	rd.watching.Wait()
	if !rd.reading.Load() {
		rd.unmap()
	}
	return nil
}

// wake bumps and wakes the Reader's own word: a read about to sleep
// loaded it before it looked at the rings and flags, so it does not sleep
// through what changed since.
func (rd *Reader) wake() {
	rd.ctl.Add(1)
	futexWake(&rd.ctl)
}

// unmap releases the rings once; the Reader is closed and no read uses
// them.
func (rd *Reader) unmap() {
	rd.release.Do(func() {
		rd.mu.Lock()
		defer rd.mu.Unlock()
		for i := range rd.rings {
			rd.rings[i].ring.Close()
		}
	})
}

// readEvents is ReadEvents for a caller that has said it is reading.
func (rd *Reader) readEvents(dst []View) (int, error) {
	for {
		if rd.closed.Load() {
			return 0, ErrClosed
		}
		var start time.Time
		if rd.onIdle != nil {
			start = time.Now()
		}
		n, err := rd.scan(dst, start)
		if n > 0 || err != nil {
			if rd.flush.Load() {
				rd.flush.Store(false) // this read did not wait: the flush is served
			}
			return n, err
		}
		if rd.onIdle != nil {
			// Every ring was found empty: say so before waiting, however
			// recently it was said.
			for i := range rd.rings {
				rd.rings[i].idleAt = start
				rd.onIdle(i, start)
			}
		}
		if rd.flush.Swap(false) {
			return 0, ErrFlushed
		}
		if d := rd.deadline.Load(); d != nil && !time.Now().Before(*d) {
			return 0, os.ErrDeadlineExceeded
		}
		if !rd.spinWait() {
			if err := rd.sleep(); err != nil {
				return 0, err
			}
		}
	}
}

// scan reads from the first ring, in turn, that has events. start is
// when it began, for onIdle.
func (rd *Reader) scan(dst []View, start time.Time) (int, error) {
rings:
	for k := range rd.rings {
		i := (rd.next + k) % len(rd.rings)
		rr := &rd.rings[i]
		for {
			// The generation is read before the ring is found empty: once
			// it changed, write_pos is final and an empty ring is drained.
			replaced := rr.ring.generationChanged()
			n, err := rr.ring.ReadEvents(dst)
			if n > 0 || err != nil {
				rd.next = i + 1
				return n, err
			}
			if !replaced {
				break
			}
			ok, err := rd.reattach(i)
			if err != nil {
				return 0, err
			}
			if !ok {
				continue rings // not replaced yet: the next ring
			}
		}
		if rd.onIdle != nil && start.Sub(rr.idleAt) >= rd.idleEvery {
			rr.idleAt = start
			rd.onIdle(i, start)
		}
	}
	return 0, nil
}

// spinWait polls the rings for a while and reports whether one became
// ready or the Reader's word moved (Close, Flush, SetDeadline).
func (rd *Reader) spinWait() bool {
	c := rd.ctl.Load()
	for i := 0; i < rd.spin; i += max(len(rd.rings), 1) {
		for _, r := range rd.rings {
			if r.ring.ready() {
				rd.spin = min(rd.spin*2, spinMax)
				return true
			}
		}
		if rd.ctl.Load() != c {
			return true
		}
	}
	rd.spin = max(rd.spin/2, spinMin)
	return false
}

// sleep waits until a producer wakes one of the rings, or the Reader's
// word moves; it may return early, never late. The rings are armed as
// KMES.md §4 says (Ring.arm), all of them before any is looked at again:
// a producer that publishes after that look sees need_wake set and bumps
// a counter loaded before, so the wait returns. The Reader's word is
// loaded before the flags are looked at, and Close, Flush and
// SetDeadline set theirs before they bump it: none is slept through.
// Rings past the first ringsPerWait are waited on by the watchers, which
// bump the word when one of theirs is woken.
func (rd *Reader) sleep() error {
	c := rd.ctl.Load()
	if rd.closed.Load() || rd.flush.Load() {
		return nil
	}
	if p := rd.waitErr.Load(); p != nil {
		return *p // a watcher failed: its rings are not waited on
	}
	var deadline time.Time
	if d := rd.deadline.Load(); d != nil {
		deadline = *d
	}
	ws := rd.wait[:0]
	for _, r := range rd.rings[:min(len(rd.rings), ringsPerWait)] {
		ws = append(ws, sharedWaiter(r.ring.futex, r.ring.arm()))
	}
	for _, w := range rd.watchers {
		w.request(rd.rings[w.first:w.end])
	}
	for _, r := range rd.rings {
		if r.ring.ready() {
			return nil
		}
	}
	ws = append(ws, privateWaiter(&rd.ctl, c))
	rd.wait = ws
	if _, err := futexWaitv(ws, deadline); err != nil {
		return err
	}
	if p := rd.waitErr.Load(); p != nil {
		return *p
	}
	return nil
}

// watcher waits, on its own goroutine, for the rings first..end of a
// Reader that has more than ringsPerWait, while the Reader sleeps. The
// Reader arms the rings and hands it their words; the watcher never
// touches the rings itself, so a ring unmapped as it waits costs nothing
// but a stale request.
type watcher struct {
	first, end int
	req        atomic.Uint32 // bumped for a new request, a cancel, or Close
	mu         sync.Mutex    // guards words
	words      []futexWaiter // the request: armed rings' words, none when cancelled
}

// request hands the watcher the words of its armed rings.
func (w *watcher) request(rings []readerRing) {
	w.mu.Lock()
	w.words = w.words[:0]
	for _, r := range rings {
		w.words = append(w.words, sharedWaiter(r.ring.futex, r.ring.arm()))
	}
	w.mu.Unlock()
	w.req.Add(1)
	futexWake(&w.req)
}

// cancel withdraws the request before one of the watcher's rings is
// unmapped: a watcher that took the request before sees req move, and
// ignores what its wait on the unmapped ring returned.
func (w *watcher) cancel() {
	w.mu.Lock()
	w.words = w.words[:0]
	w.mu.Unlock()
	w.req.Add(1)
	futexWake(&w.req)
}

// watch serves w's requests until the Reader is closed: it waits on the
// request's words and its own req, and wakes the Reader when a ring's
// word, not req, ended the wait.
func (rd *Reader) watch(w *watcher) {
	defer rd.watching.Done()
	var seen uint32
	var own []futexWaiter
	for {
		r := w.req.Load()
		// Close sets closed before it bumps req: a req that includes the
		// bump comes with closed set.
		if rd.closed.Load() {
			return
		}
		if r == seen {
			if err := futexWait(&w.req, r); err != nil {
				rd.fail(err)
				return
			}
			continue
		}
		seen = r
		w.mu.Lock()
		own = append(own[:0], w.words...)
		w.mu.Unlock()
		if len(own) == 0 {
			continue // cancelled
		}
		own = append(own, privateWaiter(&w.req, r))
		_, err := futexWaitv(own, time.Time{})
		switch {
		case w.req.Load() != r:
			// A new request, a cancel or Close: the Reader is awake.
		case err != nil:
			rd.fail(err)
			return
		default:
			rd.wake()
		}
	}
}

// fail hands a watcher's error to the Reader and wakes it.
func (rd *Reader) fail(err error) {
	rd.waitErr.CompareAndSwap(nil, &err)
	rd.wake()
}

// reattach replaces ring i, whose generation changed, after it was
// drained, and unmaps the old ring at once: the kernel refuses a further
// swap while a replaced ring is mapped. It returns false when the source
// still hands out the old ring.
func (rd *Reader) reattach(i int) (bool, error) {
	old := rd.rings[i].ring
	ring, err := rd.src.Ring(rd.rings[i].index)
	if err != nil {
		return false, fmt.Errorf("re-attach ring of cpu %d after generation %d: %w", old.CPU(), old.gen0, err)
	}
	if ring.gen0 == old.gen0 {
		// Not replaced yet: try again after a wait rather than spin.
		ring.Close()
		time.Sleep(reattachRetry)
		return false, nil
	}
	ring.SeekTail()
	ring.follow(old)
	if i >= ringsPerWait {
		rd.watchers[i/ringsPerWait-1].cancel()
	}
	rd.mu.Lock()
	rd.rings[i].ring = ring
	rd.mu.Unlock()
	return true, old.Close()
}

// each calls fn with every event until the Reader is closed (it then
// returns nil) or fn fails, and tells onCorrupt of corruption it got past.
func (rd *Reader) each(fn func(*Record) error, onCorrupt func(error)) error {
	for rec, err := range rd.Records() {
		switch {
		case err == nil:
			if err := fn(rec); err != nil {
				return err
			}
		case errors.Is(err, ErrCorrupt):
			onCorrupt(err)
		case err == ErrFlushed:
		default:
			return err
		}
	}
	return nil
}
