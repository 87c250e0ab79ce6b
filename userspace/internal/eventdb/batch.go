package eventdb

import (
	"context"
	"time"

	"github.com/kmes-project/kmes/userspace/kmes"
)

// Event is one event of a Batch; its payload is in the batch's buffer
// (Batch.Payload).
type Event struct {
	CPU       int
	Seq       uint64
	Timestamp int64 // ns since the epoch
	Origin    uint8
	Type      string
	// Lost and Dropped are the events lost (overwritten) and dropped
	// (before the ring) on the CPU just before this one: a losses row.
	Lost, Dropped uint64

	off, n int // the payload: buf[off:off+n]
}

// Batch is events to store in one transaction, copied out of the
// Reader's memory (its Views are valid only until the next read), so that
// a batch the database refused can be stored again later.
type Batch struct {
	boot   string
	noted  int64 // when the batch's losses were noted, ns
	Events []Event
	buf    []byte
	types  map[string]string // interned types: one string per type, not per event
}

// NewBatch returns an empty batch of events of boot, room for size.
func NewBatch(boot string, size int) *Batch {
	return &Batch{boot: boot, Events: make([]Event, 0, size), types: make(map[string]string)}
}

// Payload returns e's payload, in b's memory; an empty one is not nil,
// which would be stored as NULL.
func (b *Batch) Payload(e *Event) []byte {
	if e.n == 0 {
		return []byte{}
	}
	return b.buf[e.off : e.off+e.n : e.off+e.n]
}

// Reset empties b, keeping its memory.
func (b *Batch) Reset() {
	b.Events = b.Events[:0]
	b.buf = b.buf[:0]
	if len(b.types) > 4096 {
		clear(b.types) // types are a small set, unless someone emits random ones
	}
}

// AddView copies v into b with the losses before it.
func (b *Batch) AddView(v *kmes.View, lost, dropped uint64) {
	typ, ok := b.types[string(v.Type())] // no allocation for the lookup
	if !ok {
		typ = string(v.Type())
		b.types[typ] = typ
	}
	b.Add(Event{CPU: v.CPU(), Seq: v.Sequence(), Timestamp: v.Timestamp(), Origin: v.Origin(), Type: typ,
		Lost: lost, Dropped: dropped}, v.Payload())
}

// Add copies e, with payload, into b.
func (b *Batch) Add(e Event, payload []byte) {
	if e.Lost > 0 || e.Dropped > 0 {
		b.noted = time.Now().UnixNano()
	}
	e.off = len(b.buf)
	b.buf = append(b.buf, payload...)
	e.n = len(payload)
	b.Events = append(b.Events, e)
}

// InsertUncommitted begins a transaction and inserts b without
// committing it, for tests that kill the process in the middle of a
// transaction. Nothing can be stored after it.
func (s *DB) InsertUncommitted(b *Batch) error {
	if _, err := s.conn.ExecContext(context.Background(), "BEGIN"); err != nil {
		return err
	}
	return s.addAll(b)
}

// Path returns the database's path.
func (s *DB) Path() string { return s.path }
