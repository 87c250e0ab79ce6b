package kmes

import (
	"encoding/binary"
	"time"
	"unsafe"
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

	// raw holds the whole event, copied out of the ring.
	raw []byte
}

// Time returns the event's timestamp as a time.Time.
func (r *Record) Time() time.Time { return time.Unix(0, r.Timestamp) }

// Raw returns the whole event as it was in the ring, header first. It
// aliases the Record's buffer.
func (r *Record) Raw() []byte { return r.raw }

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
