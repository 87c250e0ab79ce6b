package kmes

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// RingSource gives a Reader its rings: the kernel's through kmes_attach by
// default, or a simulator's in tests.
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
	// closeWakeEvery is how often Close repeats its wake-up while the
	// reader has not left its wait: a wake sent just before the reader
	// entered FUTEX_WAIT is not seen.
	closeWakeEvery = time.Millisecond
)

// Reader reads one CPU's ring and blocks when it is empty: the whole read
// protocol of KMES.md §4, generation changes included. Read is for one
// goroutine; Close and Stats may be called from any.
//
// When kernel.kmes.buffer_capacity changes, the kernel replaces every
// ring (a swap) and wakes their sleepers. Read then drains the old ring
// up to its final write_pos, attaches again, unmaps the old ring (no file
// descriptor is kept open) and goes on in the new one after the last
// event it passed: no event is returned twice, and none is lost unless
// the producer overran the new ring before the Reader got to it.
// Until a Read does this the Reader keeps the old ring mapped, and the
// kernel refuses the next swap with EBUSY: keep reading, or Close the
// Reader.
type Reader struct {
	src   RingSource
	index int

	mu   sync.Mutex // guards ring against Stats during a re-attach
	ring *Ring

	spin int
	// onIdle, if set, is called from Read each time it finds the ring
	// empty, before it waits: ReadMerged learns that nothing older is
	// coming from this ring.
	onIdle  func()
	closed  atomic.Bool
	reading atomic.Bool // a Read is running: it, not Close, unmaps the ring
	waiting atomic.Bool // Read is in or about to enter FUTEX_WAIT
	release sync.Once
}

// NewReaders attaches to every CPU's ring (the kernel's, or opts.Source's)
// and returns one Reader per ring, at tail_pos or, with opts.FromEnd, at
// the current end.
func NewReaders(opts *Options) ([]*Reader, error) {
	if opts == nil {
		opts = &Options{}
	}
	src := opts.Source
	if src == nil {
		src = KernelRings
	}
	rings, err := src.Rings()
	if err != nil {
		return nil, err
	}
	rds := make([]*Reader, len(rings))
	for i, ring := range rings {
		if opts.FromEnd {
			ring.SeekEnd()
		}
		rds[i] = &Reader{src: src, index: i, ring: ring, spin: spinMin}
	}
	return rds, nil
}

// CPU returns the CPU of the reader's ring.
func (rd *Reader) CPU() int { return rd.current().CPU() }

// Stats returns what the reader counted so far.
func (rd *Reader) Stats() Stats { return rd.current().Stats() }

func (rd *Reader) current() *Ring {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	return rd.ring
}

// Read returns the next event in rec, waiting for one if need be. It
// returns ErrClosed once the Reader is closed, a *CorruptError (after
// which reading may go on) when the ring holds an impossible event, and a
// "futex_wait: " error when it cannot sleep (which would recur). rec's
// Payload points into the Reader's memory until the next Read.
func (rd *Reader) Read(rec *Record) error {
	rd.reading.Store(true)
	// The common case first: an event is there.
	if !rd.closed.Load() {
		if ok, err := rd.ring.Read(rec); ok || err != nil {
			rd.reading.Store(false)
			return err
		}
	}
	err := rd.read(rec)
	rd.reading.Store(false)
	if err == ErrClosed { // read returns it as it is
		rd.unmap()
	}
	return err
}

// each calls fn with every event until the Reader is closed (it then
// returns nil) or fn fails, and tells onCorrupt of corruption it got past.
// It is Read in a loop that says once, not per event, that it is reading.
func (rd *Reader) each(fn func(*Record) error, onCorrupt func(error)) error {
	rd.reading.Store(true)
	defer rd.reading.Store(false)
	var rec Record
	for {
		err := rd.read(&rec)
		switch {
		case err == nil:
			if err := fn(&rec); err != nil {
				return err
			}
		case err == ErrClosed:
			rd.unmap()
			return nil
		case errors.Is(err, ErrCorrupt):
			onCorrupt(err)
		default:
			return err
		}
	}
}

// read is Read for a caller that has said it is reading.
func (rd *Reader) read(rec *Record) error {
	for {
		if rd.closed.Load() {
			return ErrClosed
		}
		// The generation is read before the ring is found empty: once it
		// changed, write_pos is final and an empty ring is drained.
		replaced := rd.ring.generationChanged()
		ok, err := rd.ring.Read(rec)
		if ok || err != nil {
			return err
		}
		if replaced {
			if err := rd.reattach(); err != nil {
				return err
			}
			continue
		}
		if rd.onIdle != nil {
			rd.onIdle()
		}
		if !rd.spinWait() {
			if err := rd.sleep(); err != nil {
				return err
			}
		}
	}
}

// spinWait polls the ring for a while and reports whether it became ready.
func (rd *Reader) spinWait() bool {
	for i := 0; i < rd.spin; i++ {
		if rd.ring.ready() || rd.closed.Load() {
			rd.spin = min(rd.spin*2, spinMax)
			return true
		}
	}
	rd.spin = max(rd.spin/2, spinMin)
	return false
}

// sleep waits on the ring's futex until the producer wakes it or Close
// does. The wait has no timeout: the wait protocol loses no wake-up.
func (rd *Reader) sleep() error {
	rd.waiting.Store(true)
	defer rd.waiting.Store(false)
	val, sleep := rd.ring.armWait()
	if !sleep || rd.closed.Load() {
		return nil
	}
	return futexWait(rd.ring.futex, val)
}

// reattach replaces a ring whose generation changed, after it was drained,
// and unmaps it at once: the kernel refuses a further swap while a
// replaced ring is mapped.
func (rd *Reader) reattach() error {
	old := rd.ring
	ring, err := rd.src.Ring(rd.index)
	if err != nil {
		return fmt.Errorf("re-attach ring of cpu %d after generation %d: %w", old.CPU(), old.gen0, err)
	}
	if ring.gen0 == old.gen0 {
		// The source still hands out the old ring: it is not replaced
		// yet. Try again after a wait rather than spin.
		ring.Close()
		time.Sleep(closeWakeEvery)
		return nil
	}
	ring.SeekTail()
	ring.follow(old)
	rd.mu.Lock()
	rd.ring = ring
	rd.mu.Unlock()
	return old.Close()
}

// Close makes Read return ErrClosed, waking it if it sleeps, and unmaps
// the ring (at once, or when a running Read returns). It may be called
// more than once and from any goroutine.
func (rd *Reader) Close() error {
	if rd.closed.Swap(true) {
		return nil
	}
	// Until the reader leaves its wait, wake it again: a wake that comes
	// just before it enters FUTEX_WAIT is not seen.
	for rd.waiting.Load() {
		futexWake(rd.current().futex)
		time.Sleep(closeWakeEvery)
	}
	if !rd.reading.Load() {
		rd.unmap()
	}
	return nil
}

// unmap releases the ring once; the Reader is closed and no Read uses it.
func (rd *Reader) unmap() {
	rd.release.Do(func() { rd.current().Close() })
}
