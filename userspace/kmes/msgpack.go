package kmes

import (
	"errors"
	"fmt"
	"math"
	"unicode/utf8"
)

// DefaultMaxNestingDepth is the default of the kernel.kmes.max_nesting_depth
// sysctl: the deepest payload nesting kmes_emit accepts out of the box.
const DefaultMaxNestingDepth = 32

// ErrInvalidPayload is wrapped by every error of ValidatePayload: the
// payload is not what kmes_emit accepts, and the kernel would fail the call
// with EINVAL.
var ErrInvalidPayload = errors.New("kmes: invalid payload")

// ErrInvalidType is wrapped by every error of ValidateType: the event type
// is not what kmes_emit accepts, and the kernel would fail the call with
// EINVAL.
var ErrInvalidType = errors.New("kmes: invalid event type")

const (
	// msgpackDepthMax is KMES_MSGPACK_DEPTH_MAX, the largest depth limit
	// the kernel's validator honours (and the sysctl's maximum).
	msgpackDepthMax = 256
	// msgpackLenMax is the longest payload the kernel's validator takes.
	msgpackLenMax = math.MaxUint32
	// typeLenMax is the longest event type: type_len is a u16.
	typeLenMax = math.MaxUint16
)

// mpKind says what follows a msgpack type byte.
type mpKind uint8

const (
	mpInvalid mpKind = iota // 0xc1, never used
	mpBytes                 // n bytes of data
	mpArray                 // n values
	mpMap                   // n entries, 2n values
)

// mpType describes one msgpack type byte: after it come lenb bytes of
// big-endian length, which is added to n.
type mpType struct {
	kind mpKind
	lenb uint8
	n    uint8
	name string
}

// mpTypes describes every type byte.
var mpTypes = func() (t [256]mpType) {
	for b := 0x00; b <= 0x7f; b++ {
		t[b] = mpType{mpBytes, 0, 0, "positive fixint"}
	}
	for b := 0x80; b <= 0x8f; b++ {
		t[b] = mpType{mpMap, 0, uint8(b & 0x0f), "fixmap"}
	}
	for b := 0x90; b <= 0x9f; b++ {
		t[b] = mpType{mpArray, 0, uint8(b & 0x0f), "fixarray"}
	}
	for b := 0xa0; b <= 0xbf; b++ {
		t[b] = mpType{mpBytes, 0, uint8(b & 0x1f), "fixstr"}
	}
	for b := 0xe0; b <= 0xff; b++ {
		t[b] = mpType{mpBytes, 0, 0, "negative fixint"}
	}
	for b, d := range map[byte]mpType{
		0xc0: {mpBytes, 0, 0, "nil"},
		0xc1: {mpInvalid, 0, 0, "never used type byte 0xc1"},
		0xc2: {mpBytes, 0, 0, "false"},
		0xc3: {mpBytes, 0, 0, "true"},
		0xc4: {mpBytes, 1, 0, "bin8"},
		0xc5: {mpBytes, 2, 0, "bin16"},
		0xc6: {mpBytes, 4, 0, "bin32"},
		0xc7: {mpBytes, 1, 1, "ext8"}, // length, type, data
		0xc8: {mpBytes, 2, 1, "ext16"},
		0xc9: {mpBytes, 4, 1, "ext32"},
		0xca: {mpBytes, 0, 4, "float32"},
		0xcb: {mpBytes, 0, 8, "float64"},
		0xcc: {mpBytes, 0, 1, "uint8"},
		0xcd: {mpBytes, 0, 2, "uint16"},
		0xce: {mpBytes, 0, 4, "uint32"},
		0xcf: {mpBytes, 0, 8, "uint64"},
		0xd0: {mpBytes, 0, 1, "int8"},
		0xd1: {mpBytes, 0, 2, "int16"},
		0xd2: {mpBytes, 0, 4, "int32"},
		0xd3: {mpBytes, 0, 8, "int64"},
		0xd4: {mpBytes, 0, 2, "fixext1"}, // type, data
		0xd5: {mpBytes, 0, 3, "fixext2"},
		0xd6: {mpBytes, 0, 5, "fixext4"},
		0xd7: {mpBytes, 0, 9, "fixext8"},
		0xd8: {mpBytes, 0, 17, "fixext16"},
		0xd9: {mpBytes, 1, 0, "str8"},
		0xda: {mpBytes, 2, 0, "str16"},
		0xdb: {mpBytes, 4, 0, "str32"},
		0xdc: {mpArray, 2, 0, "array16"},
		0xdd: {mpArray, 4, 0, "array32"},
		0xde: {mpMap, 2, 0, "map16"},
		0xdf: {mpMap, 4, 0, "map32"},
	} {
		t[b] = d
	}
	return t
}()

func payloadErr(format string, args ...any) error {
	return fmt.Errorf("%w: msgpack: "+format, append([]any{ErrInvalidPayload}, args...)...)
}

// ValidatePayload checks payload as the kernel checks a kmes_emit payload:
// it must be exactly one msgpack value (any type family; the byte 0xc1 is
// never valid) with nothing after it, and nest at most maxDepth arrays and
// maps deep. An empty payload is invalid. The contents of str and bin
// values are not checked (str need not be UTF-8), nor the types of ext
// values.
//
// Depth: a scalar that is not inside any array or map has depth 0; each
// enclosing array or map adds 1. So 5 has depth 0, [] depth 1, [[]] depth 2
// and {"a": [1]} depth 2. As in the kernel, a maxDepth above 256 counts as
// 256; a negative one counts as 0. Payloads longer than 4294967295 bytes
// are invalid (the system call's payload_len is a u32).
//
// The error, if any, wraps ErrInvalidPayload and tells where (a byte
// offset) and why the payload is invalid. The check is iterative, takes
// time linear in len(payload) and allocates only for an error.
func ValidatePayload(payload []byte, maxDepth int) error {
	if len(payload) == 0 {
		return payloadErr("empty payload")
	}
	if uint64(len(payload)) > msgpackLenMax {
		return payloadErr("payload of %d bytes is longer than %d", len(payload), uint64(msgpackLenMax))
	}
	maxDepth = max(0, min(maxDepth, msgpackDepthMax))
	// The open containers: values still expected, and where each starts.
	var stack [msgpackDepthMax]struct {
		left  uint32
		start int
	}
	depth := 0
	end := len(payload)
	p := 0
	for {
		if p == end {
			c := &stack[depth-1]
			return payloadErr("truncated %s at offset %d: %d more values expected at offset %d (end of payload)",
				mpTypes[payload[c.start]].name, c.start, c.left, p)
		}
		start := p
		t := &mpTypes[payload[p]]
		p++
		if t.kind == mpInvalid {
			return payloadErr("%s at offset %d", t.name, start)
		}
		n := uint64(t.n)
		if t.lenb > 0 {
			if end-p < int(t.lenb) {
				return payloadErr("truncated %s at offset %d: its %d-byte length is cut short", t.name, start, t.lenb)
			}
			var l uint32
			for _, b := range payload[p : p+int(t.lenb)] {
				l = l<<8 | uint32(b)
			}
			n += uint64(l)
			p += int(t.lenb)
		}
		left := uint64(end - p)
		switch t.kind {
		case mpBytes:
			if n > left {
				return payloadErr("truncated %s at offset %d: %d bytes needed, %d left", t.name, start, n, left)
			}
			p += int(n)
		case mpArray, mpMap:
			values, what := n, "elements"
			if t.kind == mpMap {
				values, what = 2*n, "entries"
			}
			if values > left {
				return payloadErr("truncated %s at offset %d: %d %s need at least %d bytes, %d left",
					t.name, start, n, what, values, left)
			}
			if depth >= maxDepth {
				return payloadErr("nesting deeper than %d at offset %d", maxDepth, start)
			}
			if values > 0 {
				stack[depth].left = uint32(values)
				stack[depth].start = start
				depth++
				continue
			}
		}
		// A value is complete: close the containers it completes.
		for {
			if depth == 0 {
				if p != end {
					return payloadErr("trailing bytes at offset %d (%d after the value)", p, end-p)
				}
				return nil
			}
			stack[depth-1].left--
			if stack[depth-1].left > 0 {
				break
			}
			depth--
		}
	}
}

// ValidateType checks an event type as the kernel checks a kmes_emit type:
// it must be non-empty, at most 65535 bytes long (type_len is a u16) and
// strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF,
// no truncated sequences; NUL is allowed). The error, if any, wraps
// ErrInvalidType.
func ValidateType(t string) error {
	switch {
	case t == "":
		return fmt.Errorf("%w: empty", ErrInvalidType)
	case len(t) > typeLenMax:
		return fmt.Errorf("%w: %d bytes, longer than %d", ErrInvalidType, len(t), typeLenMax)
	case !utf8.ValidString(t):
		off := 0
		for off < len(t) {
			r, size := utf8.DecodeRuneInString(t[off:])
			if r == utf8.RuneError && size == 1 {
				break
			}
			off += size
		}
		return fmt.Errorf("%w: not UTF-8 at offset %d", ErrInvalidType, off)
	}
	return nil
}
