package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
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

// withSignals makes tail and stat --watch take their signals from the
// channel it returns.
func withSignals(t *testing.T) chan<- os.Signal {
	t.Helper()
	ch := make(chan os.Signal, 4)
	old := notifySignals
	notifySignals = func() (<-chan os.Signal, func()) { return ch, func() {} }
	t.Cleanup(func() { notifySignals = old })
	return ch
}

// fakeConsumer hands tail its events, tells it it is idle, hands it the
// live ones; then it returns once closed, or with hang never (until the
// test ends).
type fakeConsumer struct {
	events, live []kmes.Record
	hang         bool

	opts      *kmes.Options
	closed    chan struct{}
	closeOnce sync.Once
	release   chan struct{}
}

func withFakeConsumer(t *testing.T, c *fakeConsumer) *fakeConsumer {
	t.Helper()
	c.closed = make(chan struct{})
	c.release = make(chan struct{})
	old := newTailConsumer
	newTailConsumer = func(o *kmes.Options) (tailConsumer, error) { c.opts = o; return c, nil }
	t.Cleanup(func() {
		newTailConsumer = old
		close(c.release)
	})
	return c
}

func (c *fakeConsumer) ReadMerged(fn func(*kmes.Record) error) error {
	for i := range c.events {
		if err := fn(&c.events[i]); err != nil {
			return err
		}
	}
	if c.opts.OnIdle != nil {
		if err := c.opts.OnIdle(); err != nil {
			return err
		}
	}
	for i := range c.live {
		if err := fn(&c.live[i]); err != nil {
			return err
		}
	}
	if c.hang {
		<-c.release
		return nil
	}
	<-c.closed
	return nil
}

func (c *fakeConsumer) Stats() []kmes.Stats { return nil }

func (c *fakeConsumer) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}

// A loss goes out just before the event after it; one before an event
// the filters leave out goes before the CPU's next event printed, or at
// the end of the events present; once live, at once. A signal stops
// tail -f, which writes out all it had.
func TestTailLossesAndStop(t *testing.T) {
	sigs := withSignals(t)
	now := time.Now().UnixNano()
	withFakeConsumer(t, &fakeConsumer{events: []kmes.Record{
		{CPU: 0, Sequence: 1, Type: "a"},
		{CPU: 1, Sequence: 5, Type: "b"},
		{CPU: 0, Sequence: 4, Type: "a", Lost: 2},
		{CPU: 1, Sequence: 6, Type: "b"},
		{CPU: 0, Sequence: 5, Type: "x"},                       // filtered out
		{CPU: 1, Sequence: 11, Type: "x", Lost: 3, Dropped: 1}, // filtered out, its loss still told
		{CPU: 0, Sequence: 6, Type: "a"},
	}, live: []kmes.Record{
		{CPU: 0, Sequence: 9, Type: "a", Timestamp: now, Lost: 2},
		{CPU: 1, Sequence: 20, Type: "x", Timestamp: now, Dropped: 8}, // filtered out
	}})
	var out, errOut syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run([]string{"tail", "-f", "-n", "all", "--type", "[ab]"}, strings.NewReader(""), &out, &errOut)
	}()
	at := func(seq int) string { return fmt.Sprintf(`"seq":%d,"ts":"1970-01-01T00:00:00.000000000Z"`, seq) }
	ts := time.Unix(0, now).UTC().Format(tsFormat)
	want := `{"cpu":0,` + at(1) + `,"ts_ns":"0","origin":0,"type":"a"}` + "\n" +
		`{"cpu":1,` + at(5) + `,"ts_ns":"0","origin":0,"type":"b"}` + "\n" +
		`{"cpu":0,"lost":2,"dropped":0}` + "\n" +
		`{"cpu":0,` + at(4) + `,"ts_ns":"0","origin":0,"type":"a"}` + "\n" +
		`{"cpu":1,` + at(6) + `,"ts_ns":"0","origin":0,"type":"b"}` + "\n" +
		`{"cpu":0,` + at(6) + `,"ts_ns":"0","origin":0,"type":"a"}` + "\n" +
		`{"cpu":1,"lost":3,"dropped":1}` + "\n" +
		`{"cpu":0,"lost":2,"dropped":0}` + "\n" +
		`{"cpu":0,"seq":9,"ts":"` + ts + `","ts_ns":"` + fmt.Sprint(now) + `","origin":0,"type":"a"}` + "\n" +
		`{"cpu":1,"lost":0,"dropped":8}` + "\n"
	deadline := time.Now().Add(10 * time.Second)
	for out.String() != want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	sigs <- syscall.SIGINT
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tail did not stop on SIGINT")
	}
	if got := out.String(); got != want || errOut.String() != "" {
		t.Errorf("got\n%s\nstderr %q\nwant\n%s", got, errOut.String(), want)
	}
}

// -n keeps the last N events present, and without -f tail exits when
// they are printed.
func TestTailLines(t *testing.T) {
	var evs []kmes.Record
	for i := range 15 {
		evs = append(evs, kmes.Record{CPU: 0, Sequence: uint64(i + 1), Type: "a"})
	}
	for _, c := range []struct {
		n     string
		first int // the sequence of the first printed, 0: none
	}{{"10", 6}, {"3", 13}, {"all", 1}, {"0", 0}, {"20", 1}} {
		withFakeConsumer(t, &fakeConsumer{events: evs})
		out, _, err := runArgs(t, "", "tail", "-n", c.n)
		if err != nil {
			t.Fatalf("tail -n %s: %v", c.n, err)
		}
		var want string
		for seq := c.first; c.first > 0 && seq <= 15; seq++ {
			want += fmt.Sprintf(`{"cpu":0,"seq":%d,"ts":"1970-01-01T00:00:00.000000000Z","ts_ns":"0","origin":0,"type":"a"}`+"\n", seq)
		}
		if out != want {
			t.Errorf("tail -n %s:\n%s\nwant\n%s", c.n, out, want)
		}
	}
	withFakeConsumer(t, &fakeConsumer{events: evs})
	if _, _, err := runArgs(t, "", "tail", "-n", "x"); err == nil || exitCode(err) != 2 ||
		err.Error() != `kmesctl tail: -n "x": want a number of events, 0 or more, or "all"` {
		t.Errorf("tail -nx: %v", err)
	}
}

// A second signal while tail stops gives up on a read loop that does not
// return.
func TestTailInterruptedTwice(t *testing.T) {
	for _, sig := range []os.Signal{syscall.SIGINT, syscall.SIGTERM} {
		sigs := withSignals(t)
		c := withFakeConsumer(t, &fakeConsumer{hang: true})
		done := make(chan error, 1)
		go func() { done <- run([]string{"tail", "-f"}, strings.NewReader(""), io.Discard, io.Discard) }()
		sigs <- sig
		select {
		case <-c.closed:
		case <-time.After(10 * time.Second):
			t.Fatal("the first signal did not close the consumer")
		}
		select {
		case err := <-done:
			t.Fatalf("tail returned %v with its read loop still running", err)
		case <-time.After(20 * time.Millisecond):
		}
		sigs <- sig
		select {
		case err := <-done:
			want := "kmesctl tail: interrupted twice, stopping without draining"
			if err == nil || err.Error() != want || exitCode(err) != 1 {
				t.Errorf("after a second %v: %v (exit %d), want %s", sig, err, exitCode(err), want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("a second %v did not stop tail", sig)
		}
	}
}
