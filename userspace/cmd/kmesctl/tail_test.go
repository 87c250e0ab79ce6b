package main

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/kmes-project/kmes/userspace/kmes"
)

func TestAppendRecord(t *testing.T) {
	ts := time.Date(2026, 11, 26, 1, 2, 3, 4000, time.UTC)
	r := &kmes.Record{
		CPU:       3,
		Sequence:  42,
		Timestamp: ts.UnixNano(),
		Origin:    kmes.OriginUser,
		Type:      `app."login"`,
		Payload:   []byte{0x82, 0xa4, 'u', 's', 'e', 'r', 0xa3, 'b', 'o', 'b', 0xa2, 'o', 'k', 0xc3},
	}
	want := `{"cpu":3,"seq":42,"ts":"2026-11-26T01:02:03.000004000Z","ts_ns":"1795654923000004000","origin":0,"type":"app.\"login\"","payload":{"user":"bob","ok":true}}` + "\n"
	if got := string(appendRecord(nil, r)); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}

	// Nine digits even for a whole second; a payload that is not msgpack
	// is reported, and its bytes shown, in fields of the event.
	r = &kmes.Record{CPU: 0, Sequence: 1, Timestamp: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano(),
		Origin: kmes.OriginKMES, Type: "kmes.sysctl", Payload: []byte{0x81, 0xa1, 'a', 0xc1}}
	want = `{"cpu":0,"seq":1,"ts":"2026-01-02T03:04:05.000000000Z","ts_ns":"1767323045000000000","origin":1,"type":"kmes.sysctl",` +
		`"payload_error":"never used type byte 0xc1 at offset 3","payload_base64":"gaFhwQ=="}` + "\n"
	if got := string(appendRecord([]byte("reused"), r)[len("reused"):]); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}

	// ts_ns is exact beyond 2^53, and before 1970.
	for _, ns := range []int64{1<<53 + 1, math.MaxInt64, -1, math.MinInt64} {
		r.Timestamp = ns
		var ev struct {
			TS   time.Time `json:"ts"`
			TSNs string    `json:"ts_ns"`
		}
		line := appendRecord(nil, r)
		if err := json.Unmarshal(line, &ev); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if ev.TSNs != strconv.FormatInt(ns, 10) || !ev.TS.Equal(time.Unix(0, ns)) {
			t.Errorf("timestamp %d: %s", ns, line)
		}
	}
}

func TestTailFilter(t *testing.T) {
	r := &kmes.Record{CPU: 2, Origin: 1, Type: "a.b"}
	for _, c := range []struct {
		f    tailFilter
		want bool
	}{
		{tailFilter{"", -1, -1}, true},
		{tailFilter{"a.b", -1, -1}, true},
		{tailFilter{"a", -1, -1}, false},
		{tailFilter{"a.b.c", -1, -1}, false},
		{tailFilter{"", 1, -1}, true},
		{tailFilter{"", 0, -1}, false},
		{tailFilter{"", -1, 2}, true},
		{tailFilter{"", -1, 0}, false},
		{tailFilter{"a.b", 1, 2}, true},
		{tailFilter{"a.b", 1, 3}, false},
		{tailFilter{"x", 1, 2}, false},
	} {
		if got := c.f.match(r); got != c.want {
			t.Errorf("%+v.match(%+v) = %v, want %v", c.f, r, got, c.want)
		}
	}
}

func TestGapReporter(t *testing.T) {
	var buf bytes.Buffer
	g := &gapReporter{w: &buf}
	g.update([]kmes.Stats{{CPU: 0}, {CPU: 1}})
	g.update([]kmes.Stats{{CPU: 0, Lost: 5}, {CPU: 1, Dropped: 2}})
	g.update([]kmes.Stats{{CPU: 0, Lost: 5}, {CPU: 1, Dropped: 2}})
	g.update([]kmes.Stats{{CPU: 0, Lost: 7, Dropped: 1}, {CPU: 1, Dropped: 2}})
	want := "kmesctl tail: cpu 0: lost 5 events (overwritten), dropped 0 (before the ring)\n" +
		"kmesctl tail: cpu 1: lost 0 events (overwritten), dropped 2 (before the ring)\n" +
		"kmesctl tail: cpu 0: lost 2 events (overwritten), dropped 1 (before the ring)\n"
	if got := buf.String(); got != want {
		t.Errorf("got\n%swant\n%s", got, want)
	}
}
