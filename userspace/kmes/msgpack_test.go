package kmes

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// The tables below are mirrored by kernel/kmes/tests/validate_kunit.c;
// cvalidate_test.go feeds them to the C validator as well.

// payloadCase is a payload and the verdict on it; err, for an invalid one,
// is a part of the text ValidatePayload's error must have.
type payloadCase struct {
	name     string
	in       []byte
	maxDepth int
	valid    bool
	err      string
}

// hx decodes hex with optional spaces.
func hx(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// Valid encodings at the default depth: every type family and width,
// boundary values, empty str/bin/array/map/ext, nested closes.
var validPayloads = []struct{ name, hex string }{
	{"positive fixint 0", "00"},
	{"positive fixint 127", "7f"},
	{"negative fixint -32", "e0"},
	{"negative fixint -1", "ff"},
	{"nil", "c0"},
	{"false", "c2"},
	{"true", "c3"},
	{"uint8 0", "cc 00"},
	{"uint8 255", "cc ff"},
	{"uint16 65535", "cd ff ff"},
	{"uint32 max", "ce ff ff ff ff"},
	{"uint64 max", "cf ff ff ff ff ff ff ff ff"},
	{"int8 -128", "d0 80"},
	{"int16 min", "d1 80 00"},
	{"int32 min", "d2 80 00 00 00"},
	{"int64 min", "d3 80 00 00 00 00 00 00 00"},
	{"float32 1.0", "ca 3f 80 00 00"},
	{"float32 NaN", "ca 7f c0 00 00"},
	{"float64 1.0", "cb 3f f0 00 00 00 00 00 00"},
	{"fixstr empty", "a0"},
	{"fixstr a", "a1 61"},
	{"fixstr not UTF-8", "a2 ff fe"},
	{"str8 empty", "d9 00"},
	{"str8 1", "d9 01 61"},
	{"str16 empty", "da 00 00"},
	{"str16 1", "da 00 01 61"},
	{"str32 empty", "db 00 00 00 00"},
	{"str32 2", "db 00 00 00 02 61 62"},
	{"bin8 empty", "c4 00"},
	{"bin8 1", "c4 01 ff"},
	{"bin16 empty", "c5 00 00"},
	{"bin16 1", "c5 00 01 00"},
	{"bin32 empty", "c6 00 00 00 00"},
	{"bin32 1", "c6 00 00 00 01 00"},
	{"fixarray empty", "90"},
	{"fixarray 1", "91 01"},
	{"array16 empty", "dc 00 00"},
	{"array16 2", "dc 00 02 c0 c3"},
	{"array32 empty", "dd 00 00 00 00"},
	{"array32 1", "dd 00 00 00 01 c2"},
	{"fixmap empty", "80"},
	{"fixmap 1", "81 a1 61 01"},
	{"fixmap int key", "81 01 02"},
	{"fixmap array key", "81 90 c0"},
	{"map16 empty", "de 00 00"},
	{"map16 1", "de 00 01 01 02"},
	{"map32 empty", "df 00 00 00 00"},
	{"map32 1", "df 00 00 00 01 a0 c0"},
	{"fixext1", "d4 01 aa"},
	{"fixext2", "d5 02 aa bb"},
	{"fixext4 timestamp", "d6 ff 00 00 00 01"},
	{"fixext8", "d7 05 01 02 03 04 05 06 07 08"},
	{"fixext16", "d8 05 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f"},
	{"ext8 empty", "c7 00 05"},
	{"ext8 2", "c7 02 80 aa bb"},
	{"ext16 empty", "c8 00 00 05"},
	{"ext16 1", "c8 00 01 05 aa"},
	{"ext32 empty", "c9 00 00 00 00 05"},
	{"ext32 1", "c9 00 00 00 01 05 aa"},
	{"[[[]]]", "91 91 90"},
	{"[[],[]]", "92 90 90"},
	{"[[1],2]", "92 91 01 02"},
	{"[[[[1]]],2]", "92 91 91 91 01 02"},
	{"{a:[1]}", "81 a1 61 91 01"},
	{"{a:{},b:[]}", "82 a1 61 80 a1 62 90"},
	{"[{},{1:[]}]", "92 80 81 01 90"},
	{"[1,[2,[3,{}]],4]", "93 01 92 02 92 03 80 04"},
	{"{[]:{}}", "81 90 80"},
}

// Invalid encodings at the default depth.
var invalidPayloads = []struct{ name, hex, err string }{
	{"empty", "", "empty payload"},
	{"0xc1", "c1", "never used type byte 0xc1 at offset 0"},
	{"0xc1 in array", "91 c1", "0xc1 at offset 1"},
	{"0xc1 as map key", "81 c1 01", "0xc1 at offset 1"},
	{"0xc1 as map value", "81 01 c1", "0xc1 at offset 2"},
	{"trailing byte after fixint", "01 02", "trailing bytes at offset 1"},
	{"trailing nil after array", "90 c0", "trailing bytes at offset 1"},
	{"trailing 0xc1", "c0 c1", "trailing bytes at offset 1"},
	{"trailing after nested close", "91 90 90", "trailing bytes at offset 2"},
	{"fixarray 2 with 1", "92 01", "truncated fixarray at offset 0: 2 elements need at least 2 bytes, 1 left"},
	{"fixarray 3 with 2", "93 01 02 ", "truncated fixarray at offset 0: 3 elements need at least 3 bytes, 2 left"},
	{"fixmap key without value", "81 01", "truncated fixmap at offset 0: 1 entries need at least 2 bytes, 1 left"},
	{"fixmap 2 with 3 values", "82 01 02 03", "need at least 4 bytes"},
	{"inner str eats the rest", "92 a2 01 02", "truncated fixarray at offset 0: 1 more values expected at offset 4"},
	{"array32 4294967295 elements", "dd ff ff ff ff 01", "truncated array32 at offset 0: 4294967295 elements"},
	{"map32 4294967295 entries", "df ff ff ff ff 01 01", "truncated map32 at offset 0: 4294967295 entries"},
	{"str32 4294967295 bytes", "db ff ff ff ff 61", "truncated str32 at offset 0: 4294967295 bytes needed, 1 left"},
	{"bin32 4294967295 bytes", "c6 ff ff ff ff 00", "truncated bin32 at offset 0"},
	{"ext32 4294967295 bytes", "c9 ff ff ff ff 05 00", "truncated ext32 at offset 0: 4294967296 bytes needed"},
	{"array16 65535 elements", "dc ff ff 01 01", "truncated array16"},
	{"map16 65535 entries", "de ff ff 01 01", "truncated map16"},
	{"str32 in array", "91 db 00 00 00 09 61", "truncated str32 at offset 1"},
	{"str8 length missing", "d9", "truncated str8 at offset 0: its 1-byte length is cut short"},
	{"str32 length cut", "db 00 00", "its 4-byte length"},
	{"ext8 type missing", "c7 00", "truncated ext8 at offset 0: 1 bytes needed, 0 left"},
	{"fixext1 data missing", "d4 01", "truncated fixext1"},
	{"fixext16 one short", "d8 05 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e", "truncated fixext16"},
	{"uint64 truncated", "cf 00 00", "truncated uint64 at offset 0: 8 bytes needed, 2 left"},
	{"float32 truncated", "ca 00", "truncated float32"},
}

// Depth cases with explicit limits.
var depthPayloads = []struct {
	name     string
	hex      string
	maxDepth int
	valid    bool
	err      string
}{
	{"5 at depth 0", "05", 0, true, ""},
	{"[] at max_depth 0", "90", 0, false, "nesting deeper than 0 at offset 0"},
	{"{} at max_depth 0", "80", 0, false, "nesting deeper than 0 at offset 0"},
	{"[] at max_depth 1", "90", 1, true, ""},
	{"[5] at max_depth 1", "91 05", 1, true, ""},
	{"[[]] at max_depth 1", "91 90", 1, false, "nesting deeper than 1 at offset 1"},
	{"[[]] at max_depth 2", "91 90", 2, true, ""},
	{"[[[]]] at max_depth 2", "91 91 90", 2, false, "nesting deeper than 2 at offset 2"},
	{"{a:[1]} at max_depth 2", "81 a1 61 91 01", 2, true, ""},
	{"{a:[1]} at max_depth 1", "81 a1 61 91 01", 1, false, "nesting deeper than 1 at offset 3"},
	{"[{}] at max_depth 1", "91 80", 1, false, "nesting deeper than 1 at offset 1"},
	{"{[]:1} at max_depth 1", "81 90 01", 1, false, "nesting deeper than 1 at offset 1"},
	{"[[],[[]]] at max_depth 2", "92 90 91 90", 2, false, "nesting deeper than 2 at offset 3"},
	{"[] at max_depth -1", "90", -1, false, "nesting deeper than 0"},
}

// sizedCase is a header followed by fill bytes of one value: valid as
// given, invalid with one byte less (truncated) or more (trailing).
type sizedCase struct {
	name string
	hdr  string
	fill int
	with byte
}

var sizedPayloads = []sizedCase{
	{"fixstr 31", "bf", 31, 'x'},
	{"str8 255", "d9 ff", 255, 'x'},
	{"str16 256", "da 01 00", 256, 'x'},
	{"str16 65535", "da ff ff", 65535, 'x'},
	{"str32 65536", "db 00 01 00 00", 65536, 0xff},
	{"bin8 255", "c4 ff", 255, 0},
	{"bin16 65535", "c5 ff ff", 65535, 0},
	{"bin32 65536", "c6 00 01 00 00", 65536, 0xc1},
	{"fixarray 15", "9f", 15, 0x01},
	{"array16 65535", "dc ff ff", 65535, 0x01},
	{"array32 65536", "dd 00 01 00 00", 65536, 0xc0},
	{"fixmap 15", "8f", 30, 0x01},
	{"map16 65535", "de ff ff", 131070, 0xe0},
	{"map32 65536", "df 00 01 00 00", 131072, 0x7f},
	{"fixext16", "d8 05", 16, 0},
	{"ext8 255", "c7 ff 05", 255, 0},
	{"ext16 65535", "c8 ff ff 05", 65535, 0},
	{"ext32 65536", "c9 00 01 00 00 05", 65536, 0},
}

func (c sizedCase) build(fill int) []byte {
	return append(hx(c.hdr), bytes.Repeat([]byte{c.with}, fill)...)
}

// depthShape builds a payload of nesting depth d (d >= 1).
type depthShape struct {
	name  string
	build func(d int) []byte
}

var depthShapes = []depthShape{
	{"arrays", func(d int) []byte { // [[...[]...]]
		return append(bytes.Repeat([]byte{0x91}, d-1), 0x90)
	}},
	{"arrays around a scalar", func(d int) []byte { // [[...[5]...]]
		return append(bytes.Repeat([]byte{0x91}, d), 0x05)
	}},
	{"maps", func(d int) []byte { // {1: {1: ... {}}}
		return append(bytes.Repeat([]byte{0x81, 0x01}, d-1), 0x80)
	}},
}

var depthLimits = []int{1, 4, 32, 256}

// payloadCases is every table case with its verdict, and for the
// generated ones a depth limit too.
func payloadCases() []payloadCase {
	var cs []payloadCase
	for _, c := range validPayloads {
		cs = append(cs, payloadCase{c.name, hx(c.hex), DefaultMaxNestingDepth, true, ""})
	}
	for _, c := range invalidPayloads {
		cs = append(cs, payloadCase{c.name, hx(c.hex), DefaultMaxNestingDepth, false, c.err})
	}
	for _, c := range depthPayloads {
		cs = append(cs, payloadCase{c.name, hx(c.hex), c.maxDepth, c.valid, c.err})
	}
	for _, c := range sizedPayloads {
		cs = append(cs,
			payloadCase{c.name, c.build(c.fill), DefaultMaxNestingDepth, true, ""},
			payloadCase{c.name + " one short", c.build(c.fill - 1), DefaultMaxNestingDepth, false, "truncated"},
			payloadCase{c.name + " one over", c.build(c.fill + 1), DefaultMaxNestingDepth, false, "trailing bytes"})
	}
	for _, s := range depthShapes {
		for _, d := range depthLimits {
			name := fmt.Sprintf("%s %%d deep at max_depth %%d", s.name)
			cs = append(cs,
				payloadCase{fmt.Sprintf(name, d, d), s.build(d), d, true, ""},
				payloadCase{fmt.Sprintf(name, d+1, d), s.build(d + 1), d, false, fmt.Sprintf("nesting deeper than %d", d)},
				payloadCase{fmt.Sprintf(name, d, d-1), s.build(d), d - 1, false, fmt.Sprintf("nesting deeper than %d", d-1)},
				payloadCase{fmt.Sprintf(name, d, d+1), s.build(d), d + 1, true, ""})
		}
		// Limits above 256 count as 256.
		for _, m := range []int{257, 1000, math.MaxInt32, math.MaxUint32} {
			name := fmt.Sprintf("%s %%d deep at max_depth %d", s.name, m)
			cs = append(cs,
				payloadCase{fmt.Sprintf(name, 256), s.build(256), m, true, ""},
				payloadCase{fmt.Sprintf(name, 257), s.build(257), m, false, "nesting deeper than 256"})
		}
	}
	return cs
}

func TestValidatePayloadTable(t *testing.T) {
	n := 0
	for _, c := range payloadCases() {
		n++
		err := ValidatePayload(c.in, c.maxDepth)
		if c.valid {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		switch {
		case err == nil:
			t.Errorf("%s (% x): accepted", c.name, head(c.in))
		case !errors.Is(err, ErrInvalidPayload):
			t.Errorf("%s: %v does not wrap ErrInvalidPayload", c.name, err)
		case !strings.Contains(err.Error(), c.err):
			t.Errorf("%s: %q does not say %q", c.name, err, c.err)
		}
	}
	t.Logf("%d cases", n)
}

// Every proper prefix of a valid value is invalid, and so is the value
// followed by any byte.
func TestValidatePayloadPrefixesAndTrailing(t *testing.T) {
	for _, c := range payloadCases() {
		if !c.valid || len(c.in) > 300 {
			continue
		}
		for k := range len(c.in) {
			if err := ValidatePayload(c.in[:k], c.maxDepth); err == nil {
				t.Errorf("%s: prefix % x accepted", c.name, c.in[:k])
			} else if k > 0 && !strings.Contains(err.Error(), "truncated") {
				t.Errorf("%s: prefix % x: %v, want a truncation", c.name, c.in[:k], err)
			}
		}
		for _, b := range []byte{0x00, 0xc0, 0xc1, 0xff} {
			in := append(bytes.Clone(c.in), b)
			if err := ValidatePayload(in, c.maxDepth); err == nil || !strings.Contains(err.Error(),
				fmt.Sprintf("trailing bytes at offset %d", len(c.in))) {
				t.Errorf("%s + %02x: %v", c.name, b, err)
			}
		}
	}
}

// A container may nest at most maxDepth deep, however large the payload.
func TestValidatePayloadLinear(t *testing.T) {
	// 1 MiB of nested arrays is refused at the 33rd byte...
	deep := bytes.Repeat([]byte{0x91}, 1<<20)
	if err := ValidatePayload(deep, DefaultMaxNestingDepth); err == nil ||
		!strings.Contains(err.Error(), "nesting deeper than 32 at offset 32") {
		t.Errorf("deep: %v", err)
	}
	// ...and a flat array of a million elements is fine.
	flat := append(hx("dd 00 10 00 00"), bytes.Repeat([]byte{0xc0}, 1<<20)...)
	if err := ValidatePayload(flat, 1); err != nil {
		t.Errorf("flat: %v", err)
	}
}

// Validating a good payload does not allocate.
func TestValidatePayloadAllocs(t *testing.T) {
	in := hx("93 01 92 02 92 03 80 db 00 00 00 02 61 62")
	if n := testing.AllocsPerRun(100, func() {
		if ValidatePayload(in, DefaultMaxNestingDepth) != nil {
			t.Fatal("invalid")
		}
	}); n != 0 {
		t.Errorf("%v allocations", n)
	}
}

func head(b []byte) []byte {
	if len(b) > 16 {
		return b[:16]
	}
	return b
}

// utf8Case is an event type and whether it is strict UTF-8.
type utf8Case struct {
	name  string
	hex   string
	valid bool
}

var utf8Cases = []utf8Case{
	{"empty", "", true},
	{"ASCII", "68 65 6c 6c 6f", true},
	{"NUL bytes", "00 61 00", true},
	{"U+0080", "c2 80", true},
	{"U+07FF", "df bf", true},
	{"U+0800", "e0 a0 80", true},
	{"U+D7FF", "ed 9f bf", true},
	{"U+E000", "ee 80 80", true},
	{"U+FFFD", "ef bf bd", true},
	{"U+FFFF", "ef bf bf", true},
	{"U+10000", "f0 90 80 80", true},
	{"U+10FFFF", "f4 8f bf bf", true},
	{"mixed then ASCII", "61 c3 a9 62 e2 82 ac f0 9f 98 80 61 62 63 64 65 66 67 68 69 6a 6b 6c 6d 6e 6f 70", true},
	{"overlong C0 80", "c0 80", false},
	{"overlong C1 BF", "c1 bf", false},
	{"overlong E0 80 80", "e0 80 80", false},
	{"overlong E0 9F BF", "e0 9f bf", false},
	{"overlong F0 80 80 80", "f0 80 80 80", false},
	{"overlong F0 8F BF BF", "f0 8f bf bf", false},
	{"surrogate ED A0 80", "ed a0 80", false},
	{"surrogate ED BF BF", "ed bf bf", false},
	{"above U+10FFFF F4 90 80 80", "f4 90 80 80", false},
	{"F5 80 80 80", "f5 80 80 80", false},
	{"FE", "fe", false},
	{"FF", "ff", false},
	{"lone continuation 80", "80", false},
	{"continuation BF after ASCII", "61 bf", false},
	{"truncated 2-byte at end", "61 c3", false},
	{"truncated 3-byte at end", "61 e2 82", false},
	{"truncated 4-byte at end", "61 f0 9f 98", false},
	{"bad 2nd byte of 2", "c3 41", false},
	{"bad 3rd byte of 3", "e2 82 41", false},
	{"bad 4th byte of 4", "f0 9f 98 41", false},
	{"continuation after 4-byte", "f0 9f 98 80 80", false},
	{"4-byte cut by ASCII", "f0 9f 41 41", false},
}

// fastPathCases puts something at each position 0..16 of a 40-byte
// ASCII string, around the eight-byte steps of the ASCII fast path.
func fastPathCases() []utf8Case {
	var cs []utf8Case
	for pos := 0; pos <= 16; pos++ {
		at := func(ins string, total int) string {
			s := bytes.Repeat([]byte{'a'}, total)
			copy(s[pos:], hx(ins))
			return hex.EncodeToString(s)
		}
		cs = append(cs,
			utf8Case{fmt.Sprintf("80 at %d", pos), at("80", 40), false},
			utf8Case{fmt.Sprintf("FF at %d", pos), at("ff", 40), false},
			utf8Case{fmt.Sprintf("C3 then ASCII at %d", pos), at("c3", 40), false},
			utf8Case{fmt.Sprintf("ED A0 80 at %d", pos), at("eda080", 40), false},
			utf8Case{fmt.Sprintf("C3 A9 at %d", pos), at("c3a9", 40), true},
			utf8Case{fmt.Sprintf("F4 8F BF BF at %d", pos), at("f48fbfbf", 40), true},
			utf8Case{fmt.Sprintf("C3 ending %d bytes", pos+1), at("c3", pos+1), false},
			utf8Case{fmt.Sprintf("E2 82 ending %d bytes", pos+2), at("e282", pos+2), false},
			utf8Case{fmt.Sprintf("ASCII of %d bytes", pos), at("", pos), true})
	}
	return cs
}

func allUTF8Cases() []utf8Case { return append(append([]utf8Case{}, utf8Cases...), fastPathCases()...) }

func TestValidateTypeUTF8(t *testing.T) {
	for _, c := range allUTF8Cases() {
		s := string(hx(c.hex))
		err := ValidateType(s)
		want := c.valid && s != ""
		if (err == nil) != want {
			t.Errorf("%s (% x): ValidateType: %v, want valid %v", c.name, s, err, want)
		}
		if err != nil && !errors.Is(err, ErrInvalidType) {
			t.Errorf("%s: %v does not wrap ErrInvalidType", c.name, err)
		}
		// Go's own check is the strict one the kernel applies.
		if utf8.ValidString(s) != c.valid {
			t.Errorf("%s: utf8.ValidString disagrees with the table", c.name)
		}
	}
}

func TestValidateTypeLimits(t *testing.T) {
	for _, c := range []struct {
		in  string
		err string
	}{
		{"", "empty"},
		{"a", ""},
		{"kmes.test", ""},
		{strings.Repeat("a", 65535), ""},
		{strings.Repeat("a", 65536), "65536 bytes, longer than 65535"},
		{"ab\xed\xa0\x80", "not UTF-8 at offset 2"},
		{"\xc0\x80", "not UTF-8 at offset 0"},
		{"é\xf4\x90\x80\x80", "not UTF-8 at offset 2"},
		{"abc\xe2\x82", "not UTF-8 at offset 3"},
	} {
		err := ValidateType(c.in)
		if c.err == "" {
			if err != nil {
				t.Errorf("%q: %v", head([]byte(c.in)), err)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrInvalidType) || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%q: %v, want %q", head([]byte(c.in)), err, c.err)
		}
	}
	// Every surrogate, and the first code points past the end, are refused.
	for r := rune(0xd800); r <= 0xdfff; r++ {
		s := string([]byte{0xe0 | byte(r>>12), 0x80 | byte(r>>6&0x3f), 0x80 | byte(r&0x3f)})
		if ValidateType(s) == nil {
			t.Fatalf("surrogate U+%04X accepted", r)
		}
	}
	for r := rune(0x110000); r < 0x110100; r++ {
		s := string([]byte{0xf0 | byte(r>>18), 0x80 | byte(r>>12&0x3f), 0x80 | byte(r>>6&0x3f), 0x80 | byte(r&0x3f)})
		if ValidateType(s) == nil {
			t.Fatalf("U+%X accepted", r)
		}
	}
}

// refDepth reads one value with vmihailenco/msgpack's decoder, which does
// the parsing (codes, lengths, skipping), and returns the value's nesting
// depth. It gives up past msgpackDepthMax + 1, deeper than any limit.
func refDepth(d *msgpack.Decoder, level int) (int, error) {
	if level > msgpackDepthMax {
		return level, nil
	}
	c, err := d.PeekCode()
	if err != nil {
		return 0, err
	}
	var values int
	switch {
	case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
		values, err = d.DecodeArrayLen()
	case msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32:
		values, err = d.DecodeMapLen()
		values *= 2
	default:
		return level, d.Skip()
	}
	if err != nil {
		return 0, err
	}
	deepest := level + 1
	for range values {
		dd, err := refDepth(d, level+1)
		if err != nil {
			return 0, err
		}
		if dd > msgpackDepthMax {
			return dd, nil
		}
		deepest = max(deepest, dd)
	}
	return deepest, nil
}

// reference says whether vmihailenco/msgpack reads b as exactly one value
// with nothing after it, and that value's depth.
func reference(b []byte) (ok bool, depth int) {
	r := bytes.NewReader(b)
	depth, err := refDepth(msgpack.NewDecoder(r), 0)
	if depth > msgpackDepthMax {
		return false, depth // too deep for any limit: the rest is moot
	}
	return err == nil && r.Len() == 0, depth
}

// FuzzValidatePayload checks that ValidatePayload never panics and agrees
// with vmihailenco/msgpack in both directions: what the reference reads as
// one whole value within the depth limit is accepted, and what is accepted
// the reference reads as one whole value within the limit. The reference
// is known to differ in none of the cases here: its Skip refuses 0xc1, it
// reads exactly the bytes it needs from a bytes.Reader (so trailing bytes
// are seen), and it does not look inside str. A value nested deeper than
// 256 is cut short in refDepth (the rest of it cannot make it valid).
func FuzzValidatePayload(f *testing.F) {
	for _, c := range payloadCases() {
		if len(c.in) <= 4096 {
			f.Add(c.in, uint16(min(c.maxDepth, math.MaxUint16)))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, limit uint16) {
		maxDepth := int(limit)
		err := ValidatePayload(b, maxDepth)
		if err != nil && !errors.Is(err, ErrInvalidPayload) {
			t.Fatalf("%v does not wrap ErrInvalidPayload", err)
		}
		// Raising the limit never turns valid into invalid.
		if err == nil && maxDepth < msgpackDepthMax && ValidatePayload(b, maxDepth+1) != nil {
			t.Fatalf("% x: valid at depth %d, invalid at %d", head(b), maxDepth, maxDepth+1)
		}
		ok, depth := reference(b)
		refValid := ok && depth <= min(maxDepth, msgpackDepthMax)
		if refValid && err != nil {
			t.Fatalf("% x (max depth %d): the reference reads it (depth %d), ValidatePayload: %v",
				head(b), maxDepth, depth, err)
		}
		if !refValid && err == nil {
			t.Fatalf("% x (max depth %d): accepted, the reference says ok=%v depth %d",
				head(b), maxDepth, ok, depth)
		}
	})
}
