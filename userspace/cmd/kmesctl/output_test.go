package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/kmes-project/kmes/userspace/kmes"
)

// printSample prints, in mode: an event with a nested payload, one whose
// payload is not msgpack, a loss, and one with no payload and a type
// with a space.
func printSample(t *testing.T, mode string) (stdout, stderr string) {
	t.Helper()
	base := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC).UnixNano()
	var out, errOut bytes.Buffer
	p, err := newPrinter(mode, &out, &errOut)
	if err != nil {
		t.Fatal(err)
	}
	if sp, ok := p.(*shortPrinter); ok {
		sp.loc = time.FixedZone("CET", 3600)
	}
	steps := []func() error{
		func() error {
			// {"a":[1,{"b":nil}],"e":{}}
			return p.event(&kmes.Record{CPU: 0, Sequence: 1, Timestamp: base + 123456789, Origin: kmes.OriginUser, Type: "app.login",
				Payload: []byte{0x82, 0xa1, 'a', 0x92, 0x01, 0x81, 0xa1, 'b', 0xc0, 0xa1, 'e', 0x80}})
		},
		func() error {
			return p.event(&kmes.Record{CPU: 1, Sequence: 7, Timestamp: base + 123458000, Origin: kmes.OriginKMES, Type: "kmes.sysctl",
				Payload: []byte{0x81, 0xa1, 'a', 0xc1}})
		},
		func() error { return p.loss(1, 2, 1) },
		func() error {
			return p.event(&kmes.Record{CPU: 1, Sequence: 11, Timestamp: base + 124000000, Origin: kmes.OriginUser, Type: "app x"})
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.flush(); err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String()
}

const printedJSON = `{"cpu":0,"seq":1,"ts":"2026-12-05T10:00:00.123456789Z","ts_ns":"1796464800123456789","origin":0,"type":"app.login","payload":{"a":[1,{"b":null}],"e":{}}}
{"cpu":1,"seq":7,"ts":"2026-12-05T10:00:00.123458000Z","ts_ns":"1796464800123458000","origin":1,"type":"kmes.sysctl","payload_error":"never used type byte 0xc1 at offset 3","payload_base64":"gaFhwQ=="}
{"cpu":1,"lost":2,"dropped":1}
{"cpu":1,"seq":11,"ts":"2026-12-05T10:00:00.124000000Z","ts_ns":"1796464800124000000","origin":0,"type":"app x"}
`

func TestPrinterJSON(t *testing.T) {
	out, errOut := printSample(t, "json")
	if out != printedJSON || errOut != "" {
		t.Errorf("got\n%s\nstderr %q\nwant\n%s", out, errOut, printedJSON)
	}
}

func TestPrinterJSONPretty(t *testing.T) {
	out, errOut := printSample(t, "json-pretty")
	want := `{
  "cpu": 0,
  "seq": 1,
  "ts": "2026-12-05T10:00:00.123456789Z",
  "ts_ns": "1796464800123456789",
  "origin": 0,
  "type": "app.login",
  "payload": {
    "a": [
      1,
      {
        "b": null
      }
    ],
    "e": {}
  }
}
{
  "cpu": 1,
  "seq": 7,
  "ts": "2026-12-05T10:00:00.123458000Z",
  "ts_ns": "1796464800123458000",
  "origin": 1,
  "type": "kmes.sysctl",
  "payload_error": "never used type byte 0xc1 at offset 3",
  "payload_base64": "gaFhwQ=="
}
{
  "cpu": 1,
  "lost": 2,
  "dropped": 1
}
{
  "cpu": 1,
  "seq": 11,
  "ts": "2026-12-05T10:00:00.124000000Z",
  "ts_ns": "1796464800124000000",
  "origin": 0,
  "type": "app x"
}
`
	if out != want || errOut != "" {
		t.Errorf("got\n%s\nstderr %q\nwant\n%s", out, errOut, want)
	}

	// A stream of JSON values, each the json mode's line.
	dec := json.NewDecoder(strings.NewReader(out))
	lines := strings.SplitAfter(printedJSON, "\n")
	for i := 0; ; i++ {
		var v json.RawMessage
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			if i != len(lines)-1 {
				t.Errorf("%d objects, want %d", i, len(lines)-1)
			}
			break
		}
		if err != nil {
			t.Fatalf("object %d: %v", i, err)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, v); err != nil {
			t.Fatal(err)
		}
		if got := compact.String() + "\n"; i >= len(lines) || got != lines[i] {
			t.Errorf("object %d: %s, json mode has %q", i, got, lines[min(i, len(lines)-1)])
		}
	}
}

func TestPrinterShort(t *testing.T) {
	out, errOut := printSample(t, "short")
	want := `2026-12-05 11:00:00.123456 cpu 0 seq 1 app.login {"a":[1,{"b":null}],"e":{}}
2026-12-05 11:00:00.123458 cpu 1 seq 7 kmes.sysctl <payload error: never used type byte 0xc1 at offset 3>
2026-12-05 11:00:00.124000 cpu 1 seq 11 "app x"
`
	wantErr := "kmesctl tail: cpu 1: lost 2 events (overwritten), dropped 1 (before the ring)\n"
	if out != want || errOut != wantErr {
		t.Errorf("got\n%s\nstderr %q\nwant\n%s\nstderr %q", out, errOut, want, wantErr)
	}

	for typ, want := range map[string]string{
		"app.x":     "app.x",
		"é.ü/x":     "é.ü/x",
		"":          `""`,
		`"q"`:       `"\"q\""`,
		"a b":       `"a b"`,
		"a\tb":      `"a\tb"`,
		"a\x00b":    `"a\x00b"`,
		"\xff":      `"\xff"`,
		"a\u200bb":  `"a\u200bb"`, // not printable: would hide
		"x\u00a0y":  `"x\u00a0y"`, // a space that is not ' '
		"a<b>&c'd%": "a<b>&c'd%",
	} {
		if got := string(appendShortType(nil, typ)); got != want {
			t.Errorf("type %q: %s, want %s", typ, got, want)
		}
	}
}

// The printers write only when flushed (or when their buffer fills).
func TestPrinterBuffers(t *testing.T) {
	for _, mode := range []string{"json", "json-pretty", "short"} {
		var out, errOut bytes.Buffer
		p, err := newPrinter(mode, &out, &errOut)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.event(&kmes.Record{CPU: 0, Sequence: 1, Type: "a"}); err != nil {
			t.Fatal(err)
		}
		if out.Len() != 0 {
			t.Errorf("-o %s wrote before flush: %q", mode, out.String())
		}
		if err := p.flush(); err != nil || out.Len() == 0 {
			t.Errorf("-o %s: flush: %v, wrote %q", mode, err, out.String())
		}
	}
}

func TestPrinterModes(t *testing.T) {
	for _, mode := range []string{"xml", "JSON", "json_pretty"} {
		_, err := newPrinter(mode, io.Discard, io.Discard)
		want := "kmesctl tail: -o " + mode + ": unknown output mode (json, json-pretty, short)"
		if err == nil || err.Error() != want || exitCode(err) != 2 {
			t.Errorf("-o %q: %v, want %s", mode, err, want)
		}
	}
}
