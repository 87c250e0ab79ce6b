package kmesguest

import (
	"bytes"
	"encoding/binary"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/kmes-project/kmes/userspace/kmes"
)

// mp builds msgpack encodings by hand, so that each type family's exact
// bytes are what is emitted.
func mp(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch v := p.(type) {
		case byte:
			b = append(b, v)
		case int:
			b = append(b, byte(v))
		case uint16:
			b = binary.BigEndian.AppendUint16(b, v)
		case uint32:
			b = binary.BigEndian.AppendUint32(b, v)
		case uint64:
			b = binary.BigEndian.AppendUint64(b, v)
		case string:
			b = append(b, v...)
		case []byte:
			b = append(b, v...)
		default:
			panic("mp: unexpected part")
		}
	}
	return b
}

func repeat(s string, n int) string { return string(bytes.Repeat([]byte(s), n)) }

// fixints returns n positive fixints, the elements of an array.
func fixints(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i & 0x7f)
	}
	return b
}

// kv returns n map entries: fixstr key "kNN", fixint value.
func kv(n int) []byte {
	var b []byte
	for i := 0; i < n; i++ {
		b = append(b, 0xa3, 'k', byte('0'+i/10), byte('0'+i%10), byte(i))
	}
	return b
}

// msgpackCases covers every msgpack type family, each at its bounds where
// the event size allows (kernel.kmes.max_event_size is 64 KiB: the 32-bit
// length forms carry short values, which is valid msgpack).
var msgpackCases = []struct {
	name    string
	payload []byte
}{
	{"nil", mp(0xc0)},
	{"false", mp(0xc2)},
	{"true", mp(0xc3)},
	{"posfixint0", mp(0x00)},
	{"posfixint127", mp(0x7f)},
	{"negfixint-1", mp(0xff)},
	{"negfixint-32", mp(0xe0)},
	{"uint8", mp(0xcc, 0xff)},
	{"uint16", mp(0xcd, uint16(0xffff))},
	{"uint32", mp(0xce, uint32(0xffffffff))},
	{"uint64", mp(0xcf, uint64(math.MaxUint64))},
	{"int8", mp(0xd0, 0x80)},
	{"int16", mp(0xd1, uint16(0x8000))},
	{"int32", mp(0xd2, uint32(0x80000000))},
	{"int64", mp(0xd3, uint64(1)<<63)},
	{"float32", mp(0xca, math.Float32bits(3.25))},
	{"float64", mp(0xcb, math.Float64bits(-1e300))},
	{"fixstr0", mp(0xa0)},
	{"fixstr31", mp(0xbf, repeat("s", 31))},
	{"fixstr_utf8", mp(0xa0|len("héllo, 世界"), "héllo, 世界")},
	{"str8", mp(0xd9, 255, repeat("a", 255))},
	{"str16", mp(0xda, uint16(300), repeat("b", 300))},
	{"str16_60000", mp(0xda, uint16(60000), repeat("c", 60000))},
	{"str32", mp(0xdb, uint32(5), "hello")},
	{"bin8", mp(0xc4, 3, 0x00, 0xff, 0x80)},
	{"bin16", mp(0xc5, uint16(1000), bytes.Repeat([]byte{0xfe}, 1000))},
	{"bin32", mp(0xc6, uint32(4), 0xde, 0xad, 0xbe, 0xef)},
	{"fixarray0", mp(0x90)},
	{"fixarray15", mp(0x9f, fixints(15))},
	{"array16", mp(0xdc, uint16(16), fixints(16))},
	{"array32", mp(0xdd, uint32(2), 0xc0, 0xc3)},
	{"fixmap0", mp(0x80)},
	{"fixmap15", mp(0x8f, kv(15))},
	{"map16", mp(0xde, uint16(16), kv(16))},
	{"map32", mp(0xdf, uint32(1), kv(1))},
	{"fixext1", mp(0xd4, 0x01, 0xaa)},
	{"fixext2", mp(0xd5, 0x02, 0xaa, 0xbb)},
	{"fixext4", mp(0xd6, 0xff, uint32(0x01020304))}, // type -1: the timestamp extension
	{"fixext8", mp(0xd7, 0x7f, uint64(0x0102030405060708))},
	{"fixext16", mp(0xd8, 0x80, bytes.Repeat([]byte{0x11}, 16))},
	{"ext8", mp(0xc7, 3, 0x05, "abc")},
	{"ext16", mp(0xc8, uint16(2), 0x06, "de")},
	{"ext32", mp(0xc9, uint32(1), 0x07, "f")},
	{"nested", mp(0x82, 0xa1, "a", 0x91, 0x81, 0xa1, "b", 0xc0, 0xa1, "c", 0xd4, 0x01, 0x00)},
}

// TestMsgpackRoundTrip emits one event per msgpack type family with
// kmes.Emit and reads each back, from a Reader started at the end of the
// ring, exactly as emitted: type, payload bytes, origin 0, the CPU it was
// emitted on, increasing sequences, timestamps within the emitting time.
func TestMsgpackRoundTrip(t *testing.T) {
	cpu := targetCPU()
	pin(t, cpu)
	rd := readerFor(t, cpu, true)
	before := time.Now().UnixNano()
	for _, c := range msgpackCases {
		emit(t, "kmes.test.msgpack."+c.name, c.payload)
	}
	after := time.Now().UnixNano()
	isCase := func(r *kmes.Record) bool { return strings.HasPrefix(r.Type, "kmes.test.msgpack.") }
	got := readUntil(t, rd, len(msgpackCases), isCase)
	var lastSeq uint64
	var lastTS int64
	for i, c := range msgpackCases {
		r := got[i]
		if err := checkRecord(r, cpu, "kmes.test.msgpack."+c.name, c.payload); err != nil {
			t.Errorf("event %d: %v", i, err)
		}
		if r.Sequence <= lastSeq {
			t.Errorf("%s: sequence %d after %d", c.name, r.Sequence, lastSeq)
		}
		if r.Timestamp < before || r.Timestamp > after || r.Timestamp < lastTS {
			t.Errorf("%s: timestamp %d, want in [%d, %d] and >= the previous %d", c.name, r.Timestamp, before, after, lastTS)
		}
		lastSeq, lastTS = r.Sequence, r.Timestamp
	}
}

// tick is a payload for EmitValue: a struct encodes as a map in field
// order, so its bytes are fixed.
type tick struct {
	CPU int     `msgpack:"cpu"`
	N   int     `msgpack:"n"`
	Msg string  `msgpack:"msg"`
	F   float64 `msgpack:"f"`
	B   []byte  `msgpack:"b"`
	L   []int   `msgpack:"l"`
}

// TestEmitValue checks that EmitValue's payload is msgpack/v5's encoding
// of the value, and that it decodes back to the value.
func TestEmitValue(t *testing.T) {
	cpu := targetCPU()
	pin(t, cpu)
	rd := readerFor(t, cpu, true)
	v := tick{CPU: cpu, N: 70000, Msg: "hello", F: 0.5, B: []byte{1, 2}, L: []int{-1, 300}}
	want, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := kmes.EmitValue("kmes.test.value", v); err != nil {
		t.Fatalf("EmitValue: %v", err)
	}
	r := readUntil(t, rd, 1, ofType("kmes.test.value"))[0]
	if err := checkRecord(r, cpu, "kmes.test.value", want); err != nil {
		t.Fatal(err)
	}
	var back tick
	if err := msgpack.Unmarshal(r.Payload, &back); err != nil {
		t.Fatalf("decode the payload: %v", err)
	}
	if back.CPU != v.CPU || back.N != v.N || back.Msg != v.Msg || back.F != v.F || !bytes.Equal(back.B, v.B) || len(back.L) != 2 || back.L[0] != -1 || back.L[1] != 300 {
		t.Errorf("decoded %+v, emitted %+v", back, v)
	}
}
