// Package payload builds the msgpack payloads that the guest tests and
// benchmarks of the kernel's msgpack validator emit: the two shapes its
// vector walks are for, of an exact size, with the offsets of their parts,
// so that a test can make invalid variants of them. The same size and seed
// give the same bytes. Like vm/guest, it uses only the standard library.
package payload

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
)

// Payload is one msgpack value: a top-level array (array16, or array32
// when it has more than 65535 elements).
type Payload struct {
	Bytes []byte
	// Elems are the offsets of the top-level array's elements.
	Elems []int
	// Maps, Keys and Values are, in a Maps payload, the offsets of each
	// map's header, of each key's fixstr header and of each value's type
	// byte, in order.
	Maps, Keys, Values []int
}

// MinSize is the smallest payload Ints and Maps build: an empty array16.
const MinSize = 3

// Ints returns an array of size bytes (at least MinSize) of small
// one-byte values: positive fixints (six in ten), negative fixints (two),
// nil, false and true.
func Ints(size int, seed uint64) Payload {
	r := newRand(seed)
	n, array32 := size-3, false
	if n > math.MaxUint16 {
		n, array32 = size-5, true
	}
	p := header(size, n, array32)
	for range n {
		p.Elems = append(p.Elems, len(p.Bytes))
		p.Bytes = append(p.Bytes, smallValue(r))
	}
	return p
}

// Maps returns an array of size bytes (at least MinSize) of maps of 5 to
// 20 entries (fixmap, or map16 above 15): each key a fixstr of 1 to 8
// ASCII letters, digits or underscores, each value a fixint, a uint8, a
// uint16 or a float32. The maps that would not fit the size are replaced
// by maps of five one-letter keys with fixint values (16 bytes), and
// what even those leave (less than 16 bytes) is filled with small values
// as Ints has them, elements of the top-level array too.
func Maps(size int, seed uint64) Payload {
	if size < MinSize {
		panic(fmt.Sprintf("payload: %d bytes, less than %d", size, MinSize))
	}
	r := newRand(seed)
	var body []byte
	var elems, maps, keys, values []int
	for {
		left := size - 3 - len(body)
		m := newMap(r, 5+r.IntN(16), 8, true)
		if len(m.b) > left {
			m = newMap(r, 5, 1, false)
		}
		if len(m.b) > left {
			break
		}
		at := 3 + len(body)
		elems = append(elems, at)
		maps = append(maps, at)
		for _, k := range m.keys {
			keys = append(keys, at+k)
		}
		for _, v := range m.values {
			values = append(values, at+v)
		}
		body = append(body, m.b...)
	}
	for 3+len(body) < size {
		elems = append(elems, 3+len(body))
		body = append(body, smallValue(r))
	}
	if len(elems) > math.MaxUint16 {
		panic(fmt.Sprintf("payload: %d bytes of maps are more elements than an array16 holds", size))
	}
	p := header(size, len(elems), false)
	p.Bytes = append(p.Bytes, body...)
	p.Elems, p.Maps, p.Keys, p.Values = elems, maps, keys, values
	return p
}

// header starts a payload of size bytes whose top-level array, an array16
// or an array32, has n elements.
func header(size, n int, array32 bool) Payload {
	if size < MinSize {
		panic(fmt.Sprintf("payload: %d bytes, less than %d", size, MinSize))
	}
	b := make([]byte, 0, size)
	if array32 {
		b = binary.BigEndian.AppendUint32(append(b, 0xdd), uint32(n))
	} else {
		b = binary.BigEndian.AppendUint16(append(b, 0xdc), uint16(n))
	}
	return Payload{Bytes: b}
}

// SetCount rewrites the element count in the top-level array's header of
// b (array16 or array32), as a test that makes it wrong does.
func SetCount(b []byte, n int) {
	switch b[0] {
	case 0xdc:
		binary.BigEndian.PutUint16(b[1:], uint16(n))
	case 0xdd:
		binary.BigEndian.PutUint32(b[1:], uint32(n))
	default:
		panic(fmt.Sprintf("payload: type byte %#x is no array16 or array32", b[0]))
	}
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x6b6d6573)) }

// smallValue returns a one-byte msgpack value.
func smallValue(r *rand.Rand) byte {
	switch x := r.IntN(10); {
	case x < 6:
		return byte(r.IntN(0x80)) // positive fixint
	case x < 8:
		return byte(0xe0 + r.IntN(0x20)) // negative fixint
	case x == 8:
		return 0xc0 // nil
	default:
		return byte(0xc2 + r.IntN(2)) // false, true
	}
}

const keyChars = "abcdefghijklmnopqrstuvwxyz0123456789_"

// oneMap is a map's bytes and the offsets in them of its keys and values.
type oneMap struct {
	b            []byte
	keys, values []int
}

// newMap returns a map of n entries, keys of 1 to maxKey characters and,
// wide false, fixint values only.
func newMap(r *rand.Rand, n, maxKey int, wide bool) oneMap {
	var m oneMap
	if n <= 15 {
		m.b = append(m.b, 0x80|byte(n))
	} else {
		m.b = binary.BigEndian.AppendUint16(append(m.b, 0xde), uint16(n))
	}
	for range n {
		m.keys = append(m.keys, len(m.b))
		l := 1 + r.IntN(maxKey)
		m.b = append(m.b, 0xa0|byte(l))
		for range l {
			m.b = append(m.b, keyChars[r.IntN(len(keyChars))])
		}
		m.values = append(m.values, len(m.b))
		kind := 0
		if wide {
			kind = r.IntN(4)
		}
		switch kind {
		case 0:
			if r.IntN(4) == 0 {
				m.b = append(m.b, byte(0xe0+r.IntN(0x20))) // negative fixint
			} else {
				m.b = append(m.b, byte(r.IntN(0x80))) // positive fixint
			}
		case 1:
			m.b = append(m.b, 0xcc, byte(r.Uint32()))
		case 2:
			m.b = binary.BigEndian.AppendUint16(append(m.b, 0xcd), uint16(r.Uint32()))
		case 3:
			m.b = binary.BigEndian.AppendUint32(append(m.b, 0xca), math.Float32bits(r.Float32()*1000-500))
		}
	}
	return m
}
