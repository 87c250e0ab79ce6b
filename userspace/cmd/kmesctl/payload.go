package main

import (
	"encoding/base64"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// mpDepthMax bounds the recursion of the converter: payloads of kernel
// emitters are not checked by the kernel. A scalar outside any array or
// map has depth 0; each enclosing array or map adds 1.
const mpDepthMax = 1000

// payloadError says why and where (a byte offset) a payload is not
// exactly one msgpack value.
type payloadError struct{ msg string }

func (e *payloadError) Error() string { return e.msg }

func payloadErrorf(format string, args ...any) error {
	return &payloadError{fmt.Sprintf(format, args...)}
}

// appendPayloadJSON appends payload, which must be exactly one msgpack
// value, as JSON, in one pass over its bytes:
//
//   - nil, bool, integers: null, true/false, the integer;
//   - floats: as encoding/json formats them, NaN and infinities as the
//     strings "NaN", "+Inf" and "-Inf";
//   - str: a JSON string, each byte that is not UTF-8 as U+FFFD;
//   - bin: a string of its bytes in standard base64;
//   - array: an array; map: an object with its entries in their order
//     (duplicate keys stay);
//   - ext: the string "ext(TYPE,BASE64)", TYPE the signed type in decimal
//     and BASE64 the data in standard base64;
//   - a map key that is not a str: the string of its text as Go's %v
//     formats the value (1, true, <nil>, 1.5, [1 2] for a bin or an array,
//     map[a:1] for a map, ext(5,AQ==) for an ext).
//
// If payload is not one msgpack value (empty, truncated, with a byte
// 0xc1, with bytes after the value, or nested deeper than mpDepthMax), it
// returns dst as it was and a *payloadError. It allocates only for a map
// key that is not a str, or for an error.
func appendPayloadJSON(dst []byte, payload []byte) ([]byte, error) {
	if len(payload) == 0 {
		return dst, payloadErrorf("empty payload")
	}
	c := mpConv{b: payload, out: dst}
	if err := c.value(0, false); err != nil {
		return dst, err
	}
	if c.p != len(payload) {
		return dst, payloadErrorf("trailing bytes at offset %d (%d after the value)", c.p, len(payload)-c.p)
	}
	return c.out, nil
}

// mpConv converts msgpack to JSON as it reads it. In text mode it writes
// a value as Go's %v formats it, for a map key that is not a str.
type mpConv struct {
	b   []byte // the payload
	p   int    // the next byte to read
	out []byte
	key []byte // a key's text, while out takes it as a JSON string
}

// mpTypeName names the msgpack type of type byte t, for errors.
func mpTypeName(t byte) string {
	switch {
	case t&0xf0 == 0x80:
		return "fixmap"
	case t&0xf0 == 0x90:
		return "fixarray"
	case t&0xe0 == 0xa0:
		return "fixstr"
	case t >= 0xc4 && t <= 0xc6:
		return "bin" + strconv.Itoa(8<<(t-0xc4))
	case t >= 0xc7 && t <= 0xc9:
		return "ext" + strconv.Itoa(8<<(t-0xc7))
	case t >= 0xd4 && t <= 0xd8:
		return "fixext" + strconv.Itoa(1<<(t-0xd4))
	case t >= 0xd9 && t <= 0xdb:
		return "str" + strconv.Itoa(8<<(t-0xd9))
	case t == 0xdc || t == 0xdd:
		return "array" + strconv.Itoa(16<<(t-0xdc))
	case t == 0xde || t == 0xdf:
		return "map" + strconv.Itoa(16<<(t-0xde))
	}
	return fmt.Sprintf("type 0x%02x", t)
}

// length reads the n-byte big-endian length of the value of type byte t
// at offset start.
func (c *mpConv) length(start int, n int) (uint64, error) {
	if len(c.b)-c.p < n {
		return 0, payloadErrorf("truncated %s at offset %d: its %d-byte length is cut short", mpTypeName(c.b[start]), start, n)
	}
	var v uint64
	for _, x := range c.b[c.p : c.p+n] {
		v = v<<8 | uint64(x)
	}
	c.p += n
	return v, nil
}

// data takes the n bytes of data of the value at offset start.
func (c *mpConv) data(start int, n uint64) ([]byte, error) {
	if left := uint64(len(c.b) - c.p); n > left {
		return nil, payloadErrorf("truncated %s at offset %d: %d bytes needed, %d left", mpTypeName(c.b[start]), start, n, left)
	}
	s := c.b[c.p : c.p+int(n)]
	c.p += int(n)
	return s, nil
}

// bigEndian takes the n (1 to 8) data bytes at c.p, of the value at start,
// as a big-endian unsigned integer.
func (c *mpConv) bigEndian(start, n int) (uint64, error) {
	s, err := c.data(start, uint64(n))
	if err != nil {
		return 0, err
	}
	var v uint64
	for _, x := range s {
		v = v<<8 | uint64(x)
	}
	return v, nil
}

// value converts the value at c.p, at depth depth.
func (c *mpConv) value(depth int, text bool) error {
	start := c.p
	if depth > mpDepthMax {
		return payloadErrorf("nesting deeper than %d at offset %d", mpDepthMax, start)
	}
	// The containers check that a value follows: c.p < len(c.b).
	t := c.b[c.p]
	c.p++
	switch {
	case t <= 0x7f:
		c.out = strconv.AppendInt(c.out, int64(t), 10)
		return nil
	case t >= 0xe0:
		c.out = strconv.AppendInt(c.out, int64(int8(t)), 10)
		return nil
	case t&0xf0 == 0x80:
		return c.mapOf(start, uint64(t&0x0f), depth, text)
	case t&0xf0 == 0x90:
		return c.arrayOf(start, uint64(t&0x0f), depth, text)
	case t&0xe0 == 0xa0:
		return c.str(start, uint64(t&0x1f), text)
	}
	switch t {
	case 0xc0:
		if text {
			c.out = append(c.out, "<nil>"...)
		} else {
			c.out = append(c.out, "null"...)
		}
		return nil
	case 0xc2:
		c.out = append(c.out, "false"...)
		return nil
	case 0xc3:
		c.out = append(c.out, "true"...)
		return nil
	case 0xc4, 0xc5, 0xc6: // bin 8, 16, 32
		n, err := c.length(start, 1<<(t-0xc4))
		if err != nil {
			return err
		}
		s, err := c.data(start, n)
		if err != nil {
			return err
		}
		if text {
			c.out = append(c.out, '[')
			for i, x := range s {
				if i > 0 {
					c.out = append(c.out, ' ')
				}
				c.out = strconv.AppendUint(c.out, uint64(x), 10)
			}
			c.out = append(c.out, ']')
			return nil
		}
		c.out = append(c.out, '"')
		c.out = base64.StdEncoding.AppendEncode(c.out, s)
		c.out = append(c.out, '"')
		return nil
	case 0xc7, 0xc8, 0xc9: // ext 8, 16, 32
		n, err := c.length(start, 1<<(t-0xc7))
		if err != nil {
			return err
		}
		return c.ext(start, n, text)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16
		return c.ext(start, 1<<(t-0xd4), text)
	case 0xca:
		s, err := c.data(start, 4)
		if err != nil {
			return err
		}
		f := math.Float32frombits(uint32(s[0])<<24 | uint32(s[1])<<16 | uint32(s[2])<<8 | uint32(s[3]))
		if text {
			c.out = fmt.Append(c.out, f)
		} else {
			c.out = appendFloat(c.out, float64(f), 32)
		}
		return nil
	case 0xcb:
		v, err := c.bigEndian(start, 8)
		if err != nil {
			return err
		}
		f := math.Float64frombits(v)
		if text {
			c.out = fmt.Append(c.out, f)
		} else {
			c.out = appendFloat(c.out, f, 64)
		}
		return nil
	case 0xcc, 0xcd, 0xce, 0xcf: // uint 8, 16, 32, 64
		v, err := c.bigEndian(start, 1<<(t-0xcc))
		if err != nil {
			return err
		}
		c.out = strconv.AppendUint(c.out, v, 10)
		return nil
	case 0xd0, 0xd1, 0xd2, 0xd3: // int 8, 16, 32, 64
		n := 1 << (t - 0xd0)
		v, err := c.bigEndian(start, n)
		if err != nil {
			return err
		}
		shift := 64 - 8*n
		c.out = strconv.AppendInt(c.out, int64(v<<shift)>>shift, 10)
		return nil
	case 0xd9, 0xda, 0xdb: // str 8, 16, 32
		n, err := c.length(start, 1<<(t-0xd9))
		if err != nil {
			return err
		}
		return c.str(start, n, text)
	case 0xdc, 0xdd: // array 16, 32
		n, err := c.length(start, 2<<(t-0xdc))
		if err != nil {
			return err
		}
		return c.arrayOf(start, n, depth, text)
	case 0xde, 0xdf: // map 16, 32
		n, err := c.length(start, 2<<(t-0xde))
		if err != nil {
			return err
		}
		return c.mapOf(start, n, depth, text)
	}
	return payloadErrorf("never used type byte 0x%02x at offset %d", t, start)
}

func (c *mpConv) str(start int, n uint64, text bool) error {
	s, err := c.data(start, n)
	if err != nil {
		return err
	}
	if text {
		c.out = append(c.out, s...)
	} else {
		c.out = appendJSONString(c.out, s)
	}
	return nil
}

func (c *mpConv) ext(start int, n uint64, text bool) error {
	// The type byte, then the data.
	s, err := c.data(start, n+1)
	if err != nil {
		return err
	}
	if !text {
		c.out = append(c.out, '"')
	}
	c.out = append(c.out, "ext("...)
	c.out = strconv.AppendInt(c.out, int64(int8(s[0])), 10)
	c.out = append(c.out, ',')
	c.out = base64.StdEncoding.AppendEncode(c.out, s[1:])
	c.out = append(c.out, ')')
	if !text {
		c.out = append(c.out, '"')
	}
	return nil
}

// values checks that a container of n entries of per values each, at
// offset start, can fit in the bytes left, one at least a value, so that
// a bad length fails at once.
func (c *mpConv) values(start int, n, per uint64, what string) error {
	if left := uint64(len(c.b) - c.p); per*n > left {
		return payloadErrorf("truncated %s at offset %d: %d %s need at least %d bytes, %d left",
			mpTypeName(c.b[start]), start, n, what, per*n, left)
	}
	return nil
}

// more checks that the next of the values left of the container at
// offset start is there.
func (c *mpConv) more(start int, left uint64) error {
	if c.p == len(c.b) {
		return payloadErrorf("truncated %s at offset %d: %d more values expected at offset %d (end of payload)",
			mpTypeName(c.b[start]), start, left, c.p)
	}
	return nil
}

// separator appends what goes between two elements or entries: a space
// in text mode (as %v has it), else a comma.
func (c *mpConv) separator(text bool) {
	if text {
		c.out = append(c.out, ' ')
	} else {
		c.out = append(c.out, ',')
	}
}

func (c *mpConv) arrayOf(start int, n uint64, depth int, text bool) error {
	if err := c.values(start, n, 1, "elements"); err != nil {
		return err
	}
	c.out = append(c.out, '[')
	for i := range n {
		if i > 0 {
			c.separator(text)
		}
		if err := c.more(start, n-i); err != nil {
			return err
		}
		if err := c.value(depth+1, text); err != nil {
			return err
		}
	}
	c.out = append(c.out, ']')
	return nil
}

func (c *mpConv) mapOf(start int, n uint64, depth int, text bool) error {
	if err := c.values(start, n, 2, "entries"); err != nil {
		return err
	}
	if text {
		c.out = append(c.out, "map["...)
	} else {
		c.out = append(c.out, '{')
	}
	for i := range n {
		if i > 0 {
			c.separator(text)
		}
		if err := c.more(start, 2*(n-i)); err != nil {
			return err
		}
		if text || isStr(c.b[c.p]) {
			if err := c.value(depth+1, text); err != nil {
				return err
			}
		} else {
			// The key's text, then that as a JSON string.
			mark := len(c.out)
			if err := c.value(depth+1, true); err != nil {
				return err
			}
			c.key = append(c.key[:0], c.out[mark:]...)
			c.out = appendJSONString(c.out[:mark], c.key)
		}
		c.out = append(c.out, ':')
		if err := c.more(start, 2*(n-i)-1); err != nil {
			return err
		}
		if err := c.value(depth+1, text); err != nil {
			return err
		}
	}
	if text {
		c.out = append(c.out, ']')
	} else {
		c.out = append(c.out, '}')
	}
	return nil
}

// isStr reports whether t is the type byte of a str.
func isStr(t byte) bool {
	return t&0xe0 == 0xa0 || t >= 0xd9 && t <= 0xdb
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
func appendJSONString[S string | []byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		// A run of bytes that stay as they are, at once.
		j := i
		for j < len(s) && s[j] >= 0x20 && s[j] < utf8.RuneSelf && s[j] != '"' && s[j] != '\\' {
			j++
		}
		dst = append(dst, s[i:j]...)
		if i = j; i == len(s) {
			break
		}
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
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
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
