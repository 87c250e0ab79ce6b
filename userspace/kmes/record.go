package kmes

import (
	"encoding/binary"
	"fmt"
	"github.com/kmes-project/kmes/userspace/kmes/abi"
	"time"
	"unsafe"

	"github.com/vmihailenco/msgpack/v5"
)

// Record is one event read from a ring. A Reader or Consumer reuses a
// Record's buffer for the next event: keep Payload (or the Record) only
// until the next read, or copy it.
type Record struct {
	// CPU is the CPU whose ring held the event (header cpu_id).
	CPU int
	// Sequence is the per-CPU sequence number, starting at 1.
	Sequence uint64
	// Timestamp is CLOCK_REALTIME in nanoseconds at acceptance.
	Timestamp int64
	// Origin is the origin class: OriginUser for the system calls.
	Origin uint8
	// Type is the event type.
	Type string
	// Payload is the msgpack payload. It aliases the Record's buffer.
	Payload []byte
	// Lost counts the events of this CPU overwritten in the ring before
	// the reader got to them, just before this one: the loss is reported
	// where it happened. Dropped counts those the kernel dropped before
	// they reached the ring (too large, or emitted where they could not be
	// written). Both are 0 for most events; Stats sums them.
	Lost, Dropped uint64

	// raw holds the whole event, copied out of the ring.
	raw []byte
}

// Time returns the event's timestamp as a time.Time.
func (r *Record) Time() time.Time { return time.Unix(0, r.Timestamp) }

// Raw returns the whole event as it was in the ring, header first. It
// aliases the Record's buffer.
func (r *Record) Raw() []byte { return r.raw }

// Decode decodes the msgpack payload into v (msgpack/v5's Unmarshal).
func (r *Record) Decode(v any) error { return decode(r.Payload, v) }

// Clone returns a copy of r that owns its memory.
func (r *Record) Clone() *Record {
	c := *r
	c.raw = append([]byte(nil), r.raw...)
	c.Payload = c.raw[len(r.raw)-len(r.Payload):]
	return &c
}

// sameString reports whether b holds s. From 8 to 16 bytes it compares
// two overlapping words instead of calling the runtime's memequal: this
// runs once per event read. (A byte loop for shorter types measured
// slower than the call.)
func sameString(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	if n := len(b); n >= 8 && n <= 16 {
		sb := unsafe.Slice(unsafe.StringData(s), n)
		return binary.LittleEndian.Uint64(b) == binary.LittleEndian.Uint64(sb) &&
			binary.LittleEndian.Uint64(b[n-8:]) == binary.LittleEndian.Uint64(sb[n-8:])
	}
	return string(b) == s
}

// View is one event as ReadEvents returns it: its bytes in the reader's
// private copy of the ring, read field by field. A View is valid until
// the next read from the same Reader or Ring (ReadEvents, Read, or the
// next step of an iterator), which may reuse the memory: copy what must
// outlive it (Record fills a Record that owns its memory when cloned).
type View struct {
	raw           []byte // the whole event, header first
	hdr           uint32 // header_size: where the payload starts
	lost, dropped uint64
}

// header is the fixed part of the event's header, which every event has
// (parse checked): indexing it needs no bounds checks.
func (v *View) header() *[abi.HdrBaseSize]byte { return (*[abi.HdrBaseSize]byte)(v.raw) }

// CPU returns the CPU whose ring held the event (header cpu_id).
func (v *View) CPU() int { return int(binary.LittleEndian.Uint16(v.header()[abi.HdrCPUIDOff:])) }

// Sequence returns the per-CPU sequence number, starting at 1.
func (v *View) Sequence() uint64 { return binary.LittleEndian.Uint64(v.header()[abi.HdrSequenceOff:]) }

// Timestamp returns CLOCK_REALTIME in nanoseconds at acceptance.
func (v *View) Timestamp() int64 {
	return int64(binary.LittleEndian.Uint64(v.header()[abi.HdrTimestampOff:]))
}

// Time returns the timestamp as a time.Time.
func (v *View) Time() time.Time { return time.Unix(0, v.Timestamp()) }

// Origin returns the origin class: OriginUser for the system calls.
func (v *View) Origin() uint8 { return v.header()[abi.HdrOriginClassOff] }

// Type returns the event type's bytes, in the View's memory.
func (v *View) Type() []byte {
	return v.raw[abi.HdrTypeOff : abi.HdrTypeOff+int(binary.LittleEndian.Uint16(v.header()[abi.HdrTypeLenOff:]))]
}

// TypeIs reports whether the event's type is typ, without allocating.
func (v *View) TypeIs(typ string) bool { return sameString(v.Type(), typ) }

// Payload returns the msgpack payload, in the View's memory.
func (v *View) Payload() []byte { return v.raw[v.hdr:] }

// Raw returns the whole event as it was in the ring, header first.
func (v *View) Raw() []byte { return v.raw }

// Lost returns the events of this CPU overwritten before the reader got
// to them, just before this one (see Record.Lost).
func (v *View) Lost() uint64 { return v.lost }

// Dropped returns the events of this CPU the kernel dropped before they
// reached the ring, just before this one (see Record.Dropped).
func (v *View) Dropped() uint64 { return v.dropped }

// Decode decodes the msgpack payload into v (msgpack/v5's Unmarshal).
func (v *View) Decode(x any) error { return decode(v.Payload(), x) }

// Record fills rec with the event. rec's Payload and Raw alias the View's
// memory; its Type is a string of its own (kept from rec's previous event
// when it is the same, so reading events of one type does not allocate).
func (v *View) Record(rec *Record) { v.record(rec) }

func (v *View) record(rec *Record) {
	ev, h := v.raw, v.header()
	rec.raw = ev
	rec.Timestamp = int64(binary.LittleEndian.Uint64(h[abi.HdrTimestampOff:]))
	rec.Sequence = binary.LittleEndian.Uint64(h[abi.HdrSequenceOff:])
	rec.CPU = int(binary.LittleEndian.Uint16(h[abi.HdrCPUIDOff:]))
	rec.Origin = h[abi.HdrOriginClassOff]
	if typ := v.Type(); !sameString(typ, rec.Type) {
		rec.Type = string(typ)
	}
	rec.Payload = ev[v.hdr:]
	rec.Lost, rec.Dropped = v.lost, v.dropped
}

func decode(payload []byte, v any) error {
	if err := msgpack.Unmarshal(payload, v); err != nil {
		return fmt.Errorf("decode payload: %w", err)
	}
	return nil
}
