package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strings"
	"testing"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// samplePayload has a value of every msgpack type family, in maps and
// arrays, with keys that are not str.
func samplePayload(t testing.TB) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(""+
		"8e"+ // fixmap, 14 entries
		"a1 6e c0"+ // "n": nil
		"a1 62 92 c2 c3"+ // "b": [false, true]
		"a1 69 94 05 e0 d0 80 d3 8000000000000000"+ // "i": [5, -32, -128, min int64]
		"a1 75 94 cc ff cd ffff ce ffffffff cf ffffffffffffffff"+ // "u": uints
		"a1 66 92 ca 3dcccccd cb 3fb999999999999a"+ // "f": [0.1 (32), 0.1]
		"a1 73 93 a2 c328 d9 01 41 da 0001 42"+ // "s": ["\xc3(", "A", "B"]
		"a1 78 c4 03 010203"+ // "x": bin
		"a1 65 92 d4 05 01 c7 02 07 abcd"+ // "e": [ext, ext8]
		"a1 61 dc 0001 dd 00000000"+ // "a": [[]] in array16 and array32
		"a1 6d de 0001 a1 6b df 00000000"+ // "m": {"k": {}} in map16 and map32
		"07 a3 736576"+ // 7: "sev"
		"92 01 a1 7a c0"+ // [1 z]: nil
		"a4 6e 65 73 74 81 a1 6b 81 01 02"+ // "nest": {"k": {1: 2}}
		"cb 7ff8000000000000 cb fff0000000000000", // NaN: -Inf
		" ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const sampleJSON = `{"n":null,"b":[false,true],"i":[5,-32,-128,-9223372036854775808],` +
	`"u":[255,65535,4294967295,18446744073709551615],"f":[0.1,0.1],"s":["\ufffd(","A","B"],` +
	`"x":"AQID","e":["ext(5,AQ==)","ext(7,q80=)"],"a":[[]],"m":{"k":{}},"7":"sev",` +
	`"[1 z]":null,"nest":{"k":{"1":2}},"NaN":"-Inf"}`

func TestPayloadJSONSample(t *testing.T) {
	b := samplePayload(t)
	got, err := appendPayloadJSON(nil, b)
	if err != nil || string(got) != sampleJSON {
		t.Fatalf("got  %s (%v)\nwant %s", got, err, sampleJSON)
	}
	if !json.Valid(got) {
		t.Errorf("not valid JSON: %s", got)
	}
}

// Every proper prefix of the sample is an error, and leaves dst as it was.
func TestPayloadJSONTruncated(t *testing.T) {
	b := samplePayload(t)
	for n := range len(b) {
		dst := []byte("prefix")
		got, err := appendPayloadJSON(dst, b[:n:n])
		var perr *payloadError
		if !errors.As(err, &perr) || string(got) != "prefix" {
			t.Errorf("%d of %d bytes: %q, %v; want an error", n, len(b), got, err)
			continue
		}
		if n > 0 && !strings.Contains(err.Error(), " at offset ") {
			t.Errorf("%d of %d bytes: error %q says no offset", n, len(b), err)
		}
	}
}

// A str that is not UTF-8, or has control characters and the characters
// JavaScript takes as line ends, is still a valid JSON string, each bad
// byte a U+FFFD.
func TestPayloadJSONStrings(t *testing.T) {
	for _, c := range []struct{ str, want string }{
		{"\xff", `"\ufffd"`},
		{"a\xc3", `"a\ufffd"`},
		{"\xe2\x82", `"\ufffd\ufffd"`},
		{"\xed\xa0\x80", `"\ufffd\ufffd\ufffd"`}, // a surrogate
		{"\xf4\x90\x80\x80", `"\ufffd\ufffd\ufffd\ufffd"`},
		{"é€😀", `"é€😀"`},
		{"\x00\x1f\x7f", `"\u0000\u001f` + "\x7f" + `"`},
		{"\u2028\u2029", `"\u2028\u2029"`},
		{`<&>"\`, `"<&>\"\\"`},
	} {
		p := append([]byte{0xd9, byte(len(c.str))}, c.str...)
		got, err := appendPayloadJSON(nil, p)
		if err != nil || string(got) != c.want || !json.Valid(got) {
			t.Errorf("str %q: %s (%v), want %s", c.str, got, err, c.want)
		}
		// The same as a map key.
		p = append(append([]byte{0x81}, p...), 0xc0)
		got, err = appendPayloadJSON(nil, p)
		if want := "{" + c.want + ":null}"; err != nil || string(got) != want || !json.Valid(got) {
			t.Errorf("key %q: %s (%v), want %s", c.str, got, err, want)
		}
	}
}

// refValue decodes one msgpack value with msgpack/v5 into what
// encoding/json encodes as appendPayloadJSON should: maps in their order.
// errIncomparable is for a value the two render differently on purpose: an
// ext, a NaN or infinity, a map key that is not a str, or nesting deeper
// than the converter goes.
func refValue(d *msgpack.Decoder, depth int) (any, error) {
	if depth > mpDepthMax {
		return nil, errIncomparable
	}
	c, err := d.PeekCode()
	if err != nil {
		return nil, err
	}
	switch {
	case msgpcode.IsExt(c):
		return nil, errIncomparable
	case msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32:
		n, err := d.DecodeMapLen()
		if err != nil {
			return nil, err
		}
		m := orderedMap{}
		for range n {
			c, err := d.PeekCode()
			if err != nil {
				return nil, err
			}
			if !msgpcode.IsString(c) {
				return nil, errIncomparable
			}
			k, err := d.DecodeString()
			if err != nil {
				return nil, err
			}
			v, err := refValue(d, depth+1)
			if err != nil {
				return nil, err
			}
			m.keys = append(m.keys, k)
			m.vals = append(m.vals, v)
		}
		return m, nil
	case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
		n, err := d.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		a := []any{}
		for range n {
			v, err := refValue(d, depth+1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		return a, nil
	}
	v, err := d.DecodeInterface()
	switch f := v.(type) {
	case float32:
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return nil, errIncomparable
		}
	case float64:
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, errIncomparable
		}
	}
	return v, err
}

var errIncomparable = errors.New("not comparable")

// orderedMap is a msgpack map for encoding/json, keys in their order.
type orderedMap struct {
	keys []string
	vals []any
}

func (m orderedMap) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range m.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		if err := encodeRef(&b, k); err != nil {
			return nil, err
		}
		b.WriteByte(':')
		if err := encodeRef(&b, m.vals[i]); err != nil {
			return nil, err
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// encodeRef is encoding/json without its escapes of <, > and &, and without
// the newline.
func encodeRef(b *bytes.Buffer, v any) error {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	b.Truncate(b.Len() - 1)
	return nil
}

// FuzzPayloadJSON: the JSON is valid, or the payload an error that leaves
// dst as it was and that kmes.ValidatePayload finds too; and for a payload
// that converts and that msgpack/v5 decodes, the JSON is what
// encoding/json makes of the decoded value (keys in their order), except
// for the values rendered otherwise on purpose.
func FuzzPayloadJSON(f *testing.F) {
	f.Add(samplePayload(f))
	for _, s := range []string{
		"", "\xc0", "\xc1", "\x81\xa1a\x01", "\x82\xa1b\x01\xa1a\x02", "\x93\x01\xa1x\xc4\x01\xff",
		"\xca\x7f\x7f\xff\xff", "\xcb\x44\x4b\x1a\xe4\xd6\xe2\xef\x50", "\xcb\x3e\x7a\xd7\xf2\x9a\xbc\xaf\x48",
		"\xdd\xff\xff\xff\xff", "\x81\x92\x01\x02\xc0", "\xd4\x05\x01", "\xa3\xe2\x80\xa8", "\xa2a\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := appendPayloadJSON([]byte("x"), b)
		if err != nil {
			var perr *payloadError
			if !errors.As(err, &perr) || string(got) != "x" {
				t.Fatalf("%x: %q, %v", b, got, err)
			}
			// What the kernel takes (at its deepest) converts.
			if verr := kmes.ValidatePayload(b, 256); verr == nil {
				t.Fatalf("%x: %v, but kmes.ValidatePayload takes it", b, err)
			}
			// msgpack/v5 would allocate the length a truncated str or
			// bin claims.
			return
		}
		if !bytes.HasPrefix(got, []byte("x")) || !json.Valid(got[1:]) {
			t.Fatalf("%x: not valid JSON: %q", b, got)
		}

		r := bytes.NewReader(b)
		v, rerr := refValue(msgpack.NewDecoder(r), 0)
		if rerr != nil || r.Len() > 0 {
			return // not comparably, or msgpack/v5 failed
		}
		var want bytes.Buffer
		if err := encodeRef(&want, v); err != nil {
			t.Fatalf("%x: encoding/json of %#v: %v", b, v, err)
		}
		if !sameTokens(got[1:], want.Bytes()) {
			t.Fatalf("%x: got %s (%v), msgpack/v5 and encoding/json %s", b, got[1:], err, want.String())
		}
	})
}

// sameTokens reports whether JSON texts a and b have the same tokens in the
// same order: the same keys in the same order, the same strings, and
// numbers written the same. Only how a string's characters are escaped may
// differ (kmesctl writes \u0008 where encoding/json writes \b).
func sameTokens(a, b []byte) bool {
	da, db := json.NewDecoder(bytes.NewReader(a)), json.NewDecoder(bytes.NewReader(b))
	da.UseNumber()
	db.UseNumber()
	for {
		ta, erra := da.Token()
		tb, errb := db.Token()
		if erra != nil || errb != nil {
			return errors.Is(erra, io.EOF) && errors.Is(errb, io.EOF)
		}
		if ta != tb {
			return false
		}
	}
}

// BenchmarkPayloadJSON converts a map of 1 KiB or so: 40 entries of short
// str keys and str, integer, float, bool and small array values.
func BenchmarkPayloadJSON(b *testing.B) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.EncodeMapLen(40)
	for i := range 40 {
		enc.EncodeString("key_" + string(rune('a'+i%26)) + string(rune('a'+i/26)))
		switch i % 4 {
		case 0:
			enc.EncodeString("a value of some length, and a few more bytes, 1 KiB")
		case 1:
			enc.EncodeInt(int64(i) * 1000003)
		case 2:
			enc.EncodeFloat64(float64(i) / 3)
		case 3:
			enc.EncodeArrayLen(3)
			enc.EncodeBool(true)
			enc.EncodeNil()
			enc.EncodeString("tiny")
		}
	}
	p := buf.Bytes()
	out, err := appendPayloadJSON(nil, p)
	if err != nil || !json.Valid(out) {
		b.Fatalf("%s: %v", out, err)
	}
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		out, err = appendPayloadJSON(out[:0], p)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(p)), "payload_bytes")
}
