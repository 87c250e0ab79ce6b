package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/vmihailenco/msgpack/v5"
)

func TestJSONToMsgpack(t *testing.T) {
	for _, c := range []struct {
		json    string
		msgpack string // hex
		back    string // the JSON tail prints for it
	}{
		{`null`, "c0", `null`},
		{`true`, "c3", `true`},
		{`false`, "c2", `false`},
		{`0`, "00", `0`},
		{`127`, "7f", `127`},
		{`128`, "cc80", `128`},
		{`-1`, "ff", `-1`},
		{`-33`, "d0df", `-33`},
		{`65536`, "ce00010000", `65536`},
		{`-2147483649`, "d3ffffffff7fffffff", `-2147483649`},
		{`9223372036854775807`, "cf7fffffffffffffff", `9223372036854775807`},
		{`18446744073709551615`, "cfffffffffffffffff", `18446744073709551615`},
		{`18446744073709551616`, "cb43f0000000000000", `18446744073709552000`},
		{`1.5`, "cb3ff8000000000000", `1.5`},
		{`-0.25`, "cbbfd0000000000000", `-0.25`},
		{`1e3`, "cb408f400000000000", `1000`},
		{`1E-7`, "cb3e7ad7f29abcaf48", `1e-7`},
		{`""`, "a0", `""`},
		{`"héllo"`, "a668c3a96c6c6f", `"héllo"`},
		{`"a\"b\\c\n\u0001<>&"`, "aa6122625c630a013c3e26", `"a\"b\\c\n\u0001<>&"`},
		{`[]`, "90", `[]`},
		{`[1,[2,[]],"x"]`, "9301920290a178", `[1,[2,[]],"x"]`},
		{`{}`, "80", `{}`},
		{`{"b":1,"a":{"c":[true,null]}}`, "82a16201a16181a16392c3c0", `{"b":1,"a":{"c":[true,null]}}`},
		{` {"dup":1, "dup":2} `, "82a3647570" + "01" + "a3647570" + "02", `{"dup":1,"dup":2}`},
	} {
		b, err := jsonToMsgpack(strings.NewReader(c.json))
		if err != nil {
			t.Errorf("%s: %v", c.json, err)
			continue
		}
		if got := hex.EncodeToString(b); got != c.msgpack {
			t.Errorf("%s: msgpack %s, want %s", c.json, got, c.msgpack)
		}
		if err := kmes.ValidatePayload(b, kmes.DefaultMaxNestingDepth); err != nil {
			t.Errorf("%s: %v", c.json, err)
		}
		if got, err := appendPayloadJSON(nil, b); err != nil || string(got) != c.back {
			t.Errorf("%s: back to JSON %s (%v), want %s", c.json, got, err, c.back)
		}
	}
}

// The msgpack of a JSON value decodes, with a common msgpack library, to
// the Go values of that JSON value.
func TestJSONToMsgpackDecodes(t *testing.T) {
	b, err := jsonToMsgpack(strings.NewReader(`{"i":-5,"u":300,"f":2.5,"s":"x","n":null,"t":true,"a":[1,"y"],"m":{"k":false}}`))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := msgpack.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"i": int8(-5), "u": uint16(300), "f": 2.5, "s": "x", "n": nil, "t": true,
		"a": []any{int8(1), "y"}, "m": map[string]any{"k": false},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded %#v\nwant %#v", got, want)
	}
}

func TestMsgpackToJSON(t *testing.T) {
	for _, c := range []struct {
		name, msgpack, json string
	}{
		{"nil", "c0", `null`},
		{"false", "c2", `false`},
		{"true", "c3", `true`},
		{"positive fixint", "7f", `127`},
		{"negative fixint", "e0", `-32`},
		{"uint8", "ccff", `255`},
		{"uint16", "cdffff", `65535`},
		{"uint32", "ceffffffff", `4294967295`},
		{"uint64", "cfffffffffffffffff", `18446744073709551615`},
		{"int8", "d080", `-128`},
		{"int16", "d18000", `-32768`},
		{"int32", "d280000000", `-2147483648`},
		{"int64", "d38000000000000000", `-9223372036854775808`},
		{"float32", "ca3dcccccd", `0.1`},
		{"float32 big", "ca7f7fffff", `3.4028235e+38`},
		{"float64", "cb3fb999999999999a", `0.1`},
		{"float64 1e21", "cb444b1ae4d6e2ef50", `1e+21`},
		{"float64 NaN", "cb7ff8000000000001", `"NaN"`},
		{"float64 +Inf", "cb7ff0000000000000", `"+Inf"`},
		{"float64 -Inf", "cbfff0000000000000", `"-Inf"`},
		{"fixstr", "a3616263", `"abc"`},
		{"str8", "d903616263", `"abc"`},
		{"str16", "da0003616263", `"abc"`},
		{"str32", "db00000003616263", `"abc"`},
		{"str not UTF-8", "a261ff", `"a\ufffd"`},
		{"str U+2028", "a3e280a8", `"\u2028"`},
		{"bin8", "c403010203", `"AQID"`},
		{"bin16", "c50000", `""`},
		{"bin32", "c60000000101", `"AQ=="`},
		{"fixarray", "920102", `[1,2]`},
		{"array16", "dc0001c0", `[null]`},
		{"array32", "dd00000000", `[]`},
		{"fixmap", "81a16101", `{"a":1}`},
		{"map16", "de0001a16190", `{"a":[]}`},
		{"map32", "df00000002a162c0a161c3", `{"b":null,"a":true}`},
		{"map int key", "8101a178", `{"1":"x"}`},
		{"map nil key", "81c0c0", `{"<nil>":null}`},
		{"map bool key", "81c3c3", `{"true":true}`},
		{"map float key", "81cb3ff800000000000000", `{"1.5":0}`},
		{"map bin key", "81c402010200", `{"[1 2]":0}`},
		{"map array key", "81920102c0", `{"[1 2]":null}`},
		{"map map key", "8181a16101c0", `{"map[a:1]":null}`},
		{"map ext key", "81d40501c0", `{"ext(5,AQ==)":null}`},
		{"map nested keys", "81928180c4010081c0ca3fc00000c0",
			`{"[map[map[]:[0]] map[<nil>:1.5]]":null}`},
		{"map str key not UTF-8", "81a2c328c0", `{"\ufffd(":null}`},
		{"map array key with str", "8192a3612262a20a01c0", `{"[a\"b \n\u0001]":null}`},
		{"map NaN key", "81cb7ff8000000000001c0", `{"NaN":null}`},
		{"map float32 key", "81ca49742400c0", `{"1e+06":null}`},
		{"map uint64 key", "81cfffffffffffffffffc0", `{"18446744073709551615":null}`},
		{"map negative key", "81d0dfc0", `{"-33":null}`},
		{"map duplicate keys", "82a16101a16102", `{"a":1,"a":2}`},
		{"fixext1", "d40501", `"ext(5,AQ==)"`},
		{"fixext2", "d5ff0102", `"ext(-1,AQI=)"`},
		{"fixext4", "d60101020304", `"ext(1,AQIDBA==)"`},
		{"fixext8", "d7010000000000000000", `"ext(1,AAAAAAAAAAA=)"`},
		{"fixext16", "d801" + strings.Repeat("00", 16), `"ext(1,AAAAAAAAAAAAAAAAAAAAAA==)"`},
		{"ext8", "c70207abcd", `"ext(7,q80=)"`},
		{"ext16", "c8000107ff", `"ext(7,/w==)"`},
		{"ext32", "c90000000007", `"ext(7,)"`},
		{"ext in a map", "82a365787407a464617461d40501", `{"ext":7,"data":"ext(5,AQ==)"}`},
		{"nested", "81a16193c0c3818002", `{"a":[null,true,{"map[]":2}]}`},
	} {
		b, err := hex.DecodeString(c.msgpack)
		if err != nil {
			t.Fatal(err)
		}
		got, err := appendPayloadJSON([]byte("x"), b)
		if err != nil || string(got) != "x"+c.json {
			t.Errorf("%s (%s): %s (%v), want x%s", c.name, c.msgpack, got, err, c.json)
		}
	}
}

// A payload that is not one msgpack value is an error that says why and
// where, and appends nothing.
func TestMsgpackToJSONError(t *testing.T) {
	for _, c := range []struct {
		name, msgpack, err string
	}{
		{"empty", "", "empty payload"},
		{"0xc1", "c1", "never used type byte 0xc1 at offset 0"},
		{"0xc1 in a map", "81a161c1", "never used type byte 0xc1 at offset 3"},
		{"truncated str", "a36162", "truncated fixstr at offset 0: 3 bytes needed, 2 left"},
		{"truncated str8 length", "d9", "truncated str8 at offset 0: its 1-byte length is cut short"},
		{"truncated bin16 length", "c500", "truncated bin16 at offset 0: its 2-byte length is cut short"},
		{"truncated bin16", "c50005", "truncated bin16 at offset 0: 5 bytes needed, 0 left"},
		{"truncated bin32", "c6000000050102", "truncated bin32 at offset 0: 5 bytes needed, 2 left"},
		{"truncated ext type", "c701", "truncated ext8 at offset 0: 2 bytes needed, 0 left"},
		{"truncated fixext4", "d6010203", "truncated fixext4 at offset 0: 5 bytes needed, 3 left"},
		{"truncated float64", "cb3ff0", "truncated type 0xcb at offset 0: 8 bytes needed, 2 left"},
		{"truncated uint32", "ce0000", "truncated type 0xce at offset 0: 4 bytes needed, 2 left"},
		{"truncated array", "9201", "truncated fixarray at offset 0: 2 elements need at least 2 bytes, 1 left"},
		{"truncated nested array", "929101", "truncated fixarray at offset 0: 1 more values expected at offset 3 (end of payload)"},
		{"truncated map value", "82a161c0a162", "truncated fixmap at offset 0: 1 more values expected at offset 6 (end of payload)"},
		{"truncated map", "82a161", "truncated fixmap at offset 0: 2 entries need at least 4 bytes, 2 left"},
		{"map without its value", "81a161", "truncated fixmap at offset 0: 1 more values expected at offset 3 (end of payload)"},
		{"huge array length", "ddffffffff", "truncated array32 at offset 0: 4294967295 elements need at least 4294967295 bytes, 0 left"},
		{"huge map length", "dfffffffff", "truncated map32 at offset 0: 4294967295 entries need at least 8589934590 bytes, 0 left"},
		{"huge str length", "dbffffffff61", "truncated str32 at offset 0: 4294967295 bytes needed, 1 left"},
		{"huge bin length", "c6ffffffff", "truncated bin32 at offset 0: 4294967295 bytes needed, 0 left"},
		{"huge ext length", "c9ffffffff01", "truncated ext32 at offset 0: 4294967296 bytes needed, 1 left"},
		{"trailing bytes", "c0c0", "trailing bytes at offset 1 (1 after the value)"},
		{"truncated key", "81d90541", "truncated str8 at offset 1: 5 bytes needed, 1 left"},
		{"truncated non-str key", "8192", "truncated fixmap at offset 0: 1 entries need at least 2 bytes, 1 left"},
		{"bad non-str key", "8191c1c0", "never used type byte 0xc1 at offset 2"},
	} {
		b, err := hex.DecodeString(c.msgpack)
		if err != nil {
			t.Fatal(err)
		}
		got, err := appendPayloadJSON([]byte("x"), b)
		var perr *payloadError
		if !errors.As(err, &perr) || err.Error() != c.err || string(got) != "x" {
			t.Errorf("%s (%s): %q, %v; want x, %s", c.name, c.msgpack, got, err, c.err)
		}
	}
}

// A payload nested to the converter's depth converts; one level more is an
// error, without exhausting the stack.
func TestMsgpackToJSONDeep(t *testing.T) {
	for _, c := range []struct {
		name string
		// nest is a payload of n containers, the innermost holding
		// a scalar at depth n.
		nest func(n int) []byte
	}{
		{"arrays", func(n int) []byte { return append(bytes.Repeat([]byte{0x91}, n), 0xc0) }},
		{"map values", func(n int) []byte { return append(bytes.Repeat([]byte{0x81, 0xa1, 'k'}, n), 0x01) }},
		// Each map's key is the next map: keys in text, inside a key.
		{"map keys", func(n int) []byte { return append(bytes.Repeat([]byte{0x81}, n), bytes.Repeat([]byte{0xc0}, n+1)...) }},
	} {
		got, err := appendPayloadJSON(nil, c.nest(mpDepthMax))
		if err != nil || !json.Valid(got) {
			t.Errorf("%s %d deep: %.40s... %v", c.name, mpDepthMax, got, err)
		}
		got, err = appendPayloadJSON(nil, c.nest(mpDepthMax+1))
		if err == nil || !strings.HasPrefix(err.Error(), fmt.Sprintf("nesting deeper than %d at offset ", mpDepthMax)) || got != nil {
			t.Errorf("%s %d deep: %.40s... %v, want an error", c.name, mpDepthMax+1, got, err)
		}
	}
	b := append(bytes.Repeat([]byte{0x91}, 256), 0xc0)
	want := strings.Repeat("[", 256) + "null" + strings.Repeat("]", 256)
	if got, err := appendPayloadJSON(nil, b); err != nil || string(got) != want {
		t.Errorf("payload 256 deep: %.40s... %v", got, err)
	}
	b = append(bytes.Repeat([]byte{0x91}, mpDepthMax+1), 0xc0)
	if _, err := appendPayloadJSON(nil, b); err == nil || err.Error() != fmt.Sprintf("nesting deeper than %d at offset %d", mpDepthMax, mpDepthMax+1) {
		t.Errorf("payload %d deep: %v", mpDepthMax+1, err)
	}
}

func TestAppendFloat(t *testing.T) {
	for _, c := range []struct {
		f    float64
		bits int
		want string
	}{
		{0, 64, "0"},
		{math.Copysign(0, -1), 64, "-0"},
		{100, 64, "100"},
		{1e20, 64, "100000000000000000000"},
		{1e21, 64, "1e+21"},
		{1e-6, 64, "0.000001"},
		{1e-7, 64, "1e-7"},
		{123456789e-20, 64, "1.23456789e-12"},
		{float64(float32(0.1)), 32, "0.1"},
		{float64(float32(1e-7)), 32, "1e-7"},
	} {
		if got := string(appendFloat(nil, c.f, c.bits)); got != c.want {
			t.Errorf("appendFloat(%v, %d) = %s, want %s", c.f, c.bits, got, c.want)
		}
	}
}
