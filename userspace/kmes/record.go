package kmes

import (
	"encoding/binary"
	"time"
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

// parse fills r's fields from the event in r.raw, which the ring checked
// (size, header_size and type_len bounds). The type string is reused when
// it repeats the previous event's, the common case, to avoid an allocation
// per event.
func (r *Record) parse() {
	b := r.raw
	hdrSize := binary.LittleEndian.Uint32(b[HdrHeaderSizeOff:])
	r.Timestamp = int64(binary.LittleEndian.Uint64(b[HdrTimestampOff:]))
	r.Sequence = binary.LittleEndian.Uint64(b[HdrSequenceOff:])
	r.CPU = int(binary.LittleEndian.Uint16(b[HdrCPUIDOff:]))
	r.Origin = b[HdrOriginClassOff]
	typeLen := int(binary.LittleEndian.Uint16(b[HdrTypeLenOff:]))
	if typ := b[HdrTypeOff : HdrTypeOff+typeLen]; string(typ) != r.Type {
		r.Type = string(typ)
	}
	r.Payload = b[hdrSize:]
}
