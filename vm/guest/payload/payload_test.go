package payload

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"

	"github.com/kmes-project/kmes/userspace/kmes"
)

var sizes = []int{MinSize, 4, 18, 19, 30, 64, 300, 990, 1000, 1024, 4097, 16350, 61440, 65538, 65539, 65540, 70000}

// count returns the element count in the top-level array's header.
func count(t *testing.T, b []byte) int {
	t.Helper()
	switch b[0] {
	case 0xdc:
		return int(binary.BigEndian.Uint16(b[1:]))
	case 0xdd:
		return int(binary.BigEndian.Uint32(b[1:]))
	}
	t.Fatalf("type byte %#x is no array16 or array32", b[0])
	return 0
}

// Every payload is valid msgpack (the Go validator, which the kernel's
// scalar walk is checked against), exactly of its size, with the elements
// its header counts at the offsets it says.
func TestShapes(t *testing.T) {
	for _, shape := range []struct {
		name  string
		build func(int, uint64) Payload
	}{{"ints", Ints}, {"maps", Maps}} {
		for _, size := range sizes {
			p := shape.build(size, uint64(size))
			if len(p.Bytes) != size {
				t.Errorf("%s(%d): %d bytes", shape.name, size, len(p.Bytes))
				continue
			}
			if err := kmes.ValidatePayload(p.Bytes, kmes.DefaultMaxNestingDepth); err != nil {
				t.Errorf("%s(%d): %v", shape.name, size, err)
			}
			if n := count(t, p.Bytes); n != len(p.Elems) {
				t.Errorf("%s(%d): the header counts %d elements, %d recorded", shape.name, size, n, len(p.Elems))
			}
			if !slices.IsSorted(p.Elems) || len(p.Elems) > 0 && p.Elems[0] != 3 && p.Elems[0] != 5 {
				t.Errorf("%s(%d): element offsets %v...", shape.name, size, p.Elems[:min(len(p.Elems), 4)])
			}
			// Each element is valid on its own, from its offset to the
			// next one's.
			for i, at := range p.Elems {
				end := len(p.Bytes)
				if i+1 < len(p.Elems) {
					end = p.Elems[i+1]
				}
				if err := kmes.ValidatePayload(p.Bytes[at:end], kmes.DefaultMaxNestingDepth); err != nil {
					t.Fatalf("%s(%d): element %d at %d: %v", shape.name, size, i, at, err)
				}
			}
			if again := shape.build(size, uint64(size)); !bytes.Equal(again.Bytes, p.Bytes) {
				t.Errorf("%s(%d): not the same bytes for the same seed", shape.name, size)
			}
		}
	}
}

func TestInts(t *testing.T) {
	p := Ints(4096, 1)
	for _, at := range p.Elems {
		switch b := p.Bytes[at]; {
		case b <= 0x7f, b >= 0xe0, b == 0xc0, b == 0xc2, b == 0xc3:
		default:
			t.Fatalf("element at %d is %#x, not a small one-byte value", at, b)
		}
	}
	if p := Ints(70000, 1); p.Bytes[0] != 0xdd || len(p.Elems) != 70000-5 {
		t.Errorf("Ints(70000): type byte %#x, %d elements; want an array32 of 69995", p.Bytes[0], len(p.Elems))
	}
}

func TestMaps(t *testing.T) {
	for _, size := range []int{30, 1024, 16384, 61440} {
		p := Maps(size, uint64(size))
		if len(p.Maps) == 0 {
			t.Fatalf("Maps(%d): no map", size)
		}
		filler := len(p.Elems) - len(p.Maps)
		if filler >= 16 || !slices.Equal(p.Elems[:len(p.Maps)], p.Maps) {
			t.Errorf("Maps(%d): %d maps then %d small values; want fewer than 16 of those", size, len(p.Maps), filler)
		}
		if len(p.Keys) != len(p.Values) {
			t.Fatalf("Maps(%d): %d keys, %d values", size, len(p.Keys), len(p.Values))
		}
		entries := 0
		for _, at := range p.Maps {
			switch b := p.Bytes[at]; {
			case b >= 0x85 && b <= 0x8f:
				entries += int(b & 0x0f)
			case b == 0xde:
				n := int(binary.BigEndian.Uint16(p.Bytes[at+1:]))
				if n < 16 || n > 20 {
					t.Errorf("Maps(%d): map16 of %d entries at %d", size, n, at)
				}
				entries += n
			default:
				t.Fatalf("Maps(%d): map header %#x at %d", size, b, at)
			}
		}
		if entries != len(p.Keys) {
			t.Errorf("Maps(%d): the headers count %d entries, %d keys recorded", size, entries, len(p.Keys))
		}
		for i, at := range p.Keys {
			h := p.Bytes[at]
			l := int(h & 0x1f)
			if h&0xe0 != 0xa0 || l < 1 || l > 8 || p.Values[i] != at+1+l {
				t.Fatalf("Maps(%d): key %d at %d: header %#x, value at %d", size, i, at, h, p.Values[i])
			}
			for _, c := range p.Bytes[at+1 : at+1+l] {
				if !bytes.ContainsRune([]byte(keyChars), rune(c)) {
					t.Fatalf("Maps(%d): key %d at %d: %q", size, i, at, p.Bytes[at+1:at+1+l])
				}
			}
		}
		for _, at := range p.Values {
			switch b := p.Bytes[at]; {
			case b <= 0x7f, b >= 0xe0, b == 0xcc, b == 0xcd, b == 0xca:
			default:
				t.Fatalf("Maps(%d): value at %d has type byte %#x", size, at, b)
			}
		}
	}
}

func TestSetCount(t *testing.T) {
	p := Ints(300, 1)
	SetCount(p.Bytes, 298)
	if err := kmes.ValidatePayload(p.Bytes, kmes.DefaultMaxNestingDepth); err == nil {
		t.Error("a count one too many: valid")
	}
	SetCount(p.Bytes, 297)
	if err := kmes.ValidatePayload(p.Bytes, kmes.DefaultMaxNestingDepth); err != nil {
		t.Errorf("the count restored: %v", err)
	}
	q := Ints(70000, 1)
	SetCount(q.Bytes, 69994)
	if err := kmes.ValidatePayload(q.Bytes, kmes.DefaultMaxNestingDepth); err == nil {
		t.Error("array32 with a count one too few: valid")
	}
}
