package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// A decoded msgpack value is nil, bool, int64, uint64, float32, float64,
// string (str), []byte (bin), []any (array), *mpMap or mpExt.

// mpMap is a msgpack map with its entries in their order.
type mpMap struct{ keys, vals []any }

// String formats the map as fmt formats a Go map, for a map used as a key.
func (m *mpMap) String() string {
	var b strings.Builder
	b.WriteString("map[")
	for i := range m.keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%v:%v", m.keys[i], m.vals[i])
	}
	b.WriteByte(']')
	return b.String()
}

// mpExt is a msgpack ext value.
type mpExt struct {
	Type int8
	Data []byte
}

func (e mpExt) String() string {
	return fmt.Sprintf("ext(%d,%s)", e.Type, base64.StdEncoding.EncodeToString(e.Data))
}

// mpDepthMax bounds decoding recursion: payloads of kernel emitters are
// not checked by the kernel.
const mpDepthMax = 1000

var errTruncated = errors.New("truncated")

// decodeMsgpack decodes b, which must be exactly one msgpack value.
func decodeMsgpack(b []byte) (any, error) {
	d := mpDecoder{b: b}
	v, err := d.value(0)
	if err != nil {
		return nil, err
	}
	if d.p != len(b) {
		return nil, fmt.Errorf("trailing bytes at offset %d", d.p)
	}
	return v, nil
}

type mpDecoder struct {
	b []byte
	p int
}

func (d *mpDecoder) take(n uint64) ([]byte, error) {
	if n > uint64(len(d.b)-d.p) {
		return nil, errTruncated
	}
	s := d.b[d.p : d.p+int(n)]
	d.p += int(n)
	return s, nil
}

// uint reads an n-byte big-endian unsigned integer.
func (d *mpDecoder) uint(n int) (uint64, error) {
	s, err := d.take(uint64(n))
	if err != nil {
		return 0, err
	}
	var v uint64
	for _, c := range s {
		v = v<<8 | uint64(c)
	}
	return v, nil
}

func (d *mpDecoder) value(depth int) (any, error) {
	if depth > mpDepthMax {
		return nil, fmt.Errorf("nesting deeper than %d", mpDepthMax)
	}
	s, err := d.take(1)
	if err != nil {
		return nil, err
	}
	c := s[0]
	switch {
	case c <= 0x7f:
		return int64(c), nil
	case c >= 0xe0:
		return int64(int8(c)), nil
	case c&0xf0 == 0x80:
		return d.mapOf(uint64(c&0x0f), depth)
	case c&0xf0 == 0x90:
		return d.arrayOf(uint64(c&0x0f), depth)
	case c&0xe0 == 0xa0:
		return d.str(uint64(c & 0x1f))
	}
	switch c {
	case 0xc0:
		return nil, nil
	case 0xc2:
		return false, nil
	case 0xc3:
		return true, nil
	case 0xc4, 0xc5, 0xc6: // bin 8, 16, 32
		n, err := d.uint(1 << (c - 0xc4))
		if err != nil {
			return nil, err
		}
		return d.take(n)
	case 0xc7, 0xc8, 0xc9: // ext 8, 16, 32
		n, err := d.uint(1 << (c - 0xc7))
		if err != nil {
			return nil, err
		}
		return d.ext(n)
	case 0xca:
		v, err := d.uint(4)
		return math.Float32frombits(uint32(v)), err
	case 0xcb:
		v, err := d.uint(8)
		return math.Float64frombits(v), err
	case 0xcc, 0xcd, 0xce, 0xcf: // uint 8, 16, 32, 64
		return d.uint(1 << (c - 0xcc))
	case 0xd0, 0xd1, 0xd2, 0xd3: // int 8, 16, 32, 64
		n := 1 << (c - 0xd0)
		v, err := d.uint(n)
		shift := 64 - 8*n
		return int64(v<<shift) >> shift, err
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16
		return d.ext(1 << (c - 0xd4))
	case 0xd9, 0xda, 0xdb: // str 8, 16, 32
		n, err := d.uint(1 << (c - 0xd9))
		if err != nil {
			return nil, err
		}
		return d.str(n)
	case 0xdc, 0xdd: // array 16, 32
		n, err := d.uint(2 << (c - 0xdc))
		if err != nil {
			return nil, err
		}
		return d.arrayOf(n, depth)
	case 0xde, 0xdf: // map 16, 32
		n, err := d.uint(2 << (c - 0xde))
		if err != nil {
			return nil, err
		}
		return d.mapOf(n, depth)
	}
	return nil, fmt.Errorf("never used type byte 0x%02x at offset %d", c, d.p-1)
}

func (d *mpDecoder) str(n uint64) (any, error) {
	s, err := d.take(n)
	return string(s), err
}

func (d *mpDecoder) ext(n uint64) (any, error) {
	t, err := d.take(1)
	if err != nil {
		return nil, err
	}
	data, err := d.take(n)
	if err != nil {
		return nil, err
	}
	return mpExt{int8(t[0]), data}, nil
}

// left bounds the length of a container by the bytes left, one per value
// at least, so that a bad length cannot make it allocate much.
func (d *mpDecoder) left(n uint64) error {
	if n > uint64(len(d.b)-d.p) {
		return errTruncated
	}
	return nil
}

func (d *mpDecoder) arrayOf(n uint64, depth int) (any, error) {
	if err := d.left(n); err != nil {
		return nil, err
	}
	a := make([]any, n)
	for i := range a {
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		a[i] = v
	}
	return a, nil
}

func (d *mpDecoder) mapOf(n uint64, depth int) (any, error) {
	if err := d.left(2 * n); err != nil {
		return nil, err
	}
	m := &mpMap{keys: make([]any, n), vals: make([]any, n)}
	for i := range m.keys {
		k, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		m.keys[i], m.vals[i] = k, v
	}
	return m, nil
}

// appendPayloadJSON appends payload as JSON: the decoded msgpack value, or
// {"raw":"<base64>"} when it is not one msgpack value.
func appendPayloadJSON(dst []byte, payload []byte) []byte {
	v, err := decodeMsgpack(payload)
	if err != nil {
		dst = append(dst, `{"raw":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, payload)
		return append(dst, `"}`...)
	}
	return appendJSON(dst, v)
}

// appendJSON appends a decoded msgpack value as JSON: bin and ext data in
// base64, ext as {"ext":type,"data":...}, map keys that are not strings
// formatted with %v, NaN and infinities as strings.
func appendJSON(dst []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(dst, "null"...)
	case bool:
		return strconv.AppendBool(dst, v)
	case int64:
		return strconv.AppendInt(dst, v, 10)
	case uint64:
		return strconv.AppendUint(dst, v, 10)
	case float32:
		return appendFloat(dst, float64(v), 32)
	case float64:
		return appendFloat(dst, v, 64)
	case string:
		return appendJSONString(dst, v)
	case []byte:
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, v)
		return append(dst, '"')
	case []any:
		dst = append(dst, '[')
		for i, e := range v {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSON(dst, e)
		}
		return append(dst, ']')
	case *mpMap:
		dst = append(dst, '{')
		for i, k := range v.keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			ks, ok := k.(string)
			if !ok {
				ks = fmt.Sprint(k)
			}
			dst = appendJSONString(dst, ks)
			dst = append(dst, ':')
			dst = appendJSON(dst, v.vals[i])
		}
		return append(dst, '}')
	case mpExt:
		dst = append(dst, `{"ext":`...)
		dst = strconv.AppendInt(dst, int64(v.Type), 10)
		dst = append(dst, `,"data":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, v.Data)
		return append(dst, `"}`...)
	}
	panic(fmt.Sprintf("appendJSON: unexpected %T", v))
}

// appendFloat formats f as encoding/json does; JSON has no NaN or
// infinity, so those become strings.
func appendFloat(dst []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(dst, `"+Inf"`...)
	case math.IsInf(f, -1):
		return append(dst, `"-Inf"`...)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) ||
			bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	dst = strconv.AppendFloat(dst, f, format, -1, bits)
	if format == 'e' {
		// e-09 to e-9, as encoding/json does
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Bytes that are not UTF-8
// become U+FFFD, as with encoding/json; unlike it, <, > and & stay as
// they are.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			// valid JSON, but not valid JavaScript
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}
