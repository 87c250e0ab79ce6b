//go:build linux

package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmes-project/kmes/userspace/internal/eventdb"
	"github.com/vmihailenco/msgpack/v5"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
)

// answer is what the collector says to one request.
type answer struct {
	status     int
	retryAfter string
	// rejected, with a 200, is the partial success the response reports.
	rejected int64
}

// collector is an OTLP/HTTP logs receiver: it decodes each request as
// the collector's otlpreceiver does, and keeps the records of the
// requests it accepted.
type collector struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	answers  []answer         // the next requests' answers; then 200
	down     bool             // while set, every request gets a 503
	events   map[string][]row // accepted event records by key
	bodies   map[string]pcommon.Value
	losses   map[string][2]uint64 // accepted loss records by their event's key
	refused  map[string]int       // records of refused requests, by key
	times    []time.Time          // when each request came
	headers  []http.Header
	accepted int // requests
}

func newCollector(t *testing.T) *collector {
	c := &collector{t: t, events: map[string][]row{}, bodies: map[string]pcommon.Value{},
		losses: map[string][2]uint64{}, refused: map[string]int{}}
	c.srv = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *collector) url() string { return c.srv.URL + "/v1/logs" }

// answer queues answers for the next requests.
func (c *collector) answer(a ...answer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.answers = append(c.answers, a...)
}

func (c *collector) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	req := plogotlp.NewExportRequest()
	if err == nil {
		err = req.UnmarshalProto(body)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.times = append(c.times, time.Now())
	c.headers = append(c.headers, r.Header.Clone())
	if err != nil || r.Method != http.MethodPost || r.URL.Path != "/v1/logs" || r.Header.Get("Content-Type") != "application/x-protobuf" {
		c.t.Errorf("collector: %s %s (%s): %v", r.Method, r.URL.Path, r.Header.Get("Content-Type"), err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	a := answer{status: http.StatusOK}
	if c.down {
		a.status = http.StatusServiceUnavailable
	} else if len(c.answers) > 0 {
		a, c.answers = c.answers[0], c.answers[1:]
	}
	rls := req.Logs().ResourceLogs()
	for i := range rls.Len() {
		if sn, _ := rls.At(i).Resource().Attributes().Get("service.name"); sn.Str() != "kmesd" {
			c.t.Errorf("collector: resource service.name %q", sn.Str())
		}
		sls := rls.At(i).ScopeLogs()
		for j := range sls.Len() {
			recs := sls.At(j).LogRecords()
			for k := range recs.Len() {
				c.record(recs.At(k), a.status)
			}
		}
	}
	if a.retryAfter != "" {
		w.Header().Set("Retry-After", a.retryAfter)
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(a.status)
	if a.status == http.StatusOK {
		c.accepted++
		resp := plogotlp.NewExportResponse()
		if a.rejected > 0 {
			resp.PartialSuccess().SetRejectedLogRecords(a.rejected)
			resp.PartialSuccess().SetErrorMessage("too old")
		}
		b, _ := resp.MarshalProto()
		w.Write(b)
	}
}

func (c *collector) record(lr plog.LogRecord, status int) {
	a := lr.Attributes()
	str := func(k string) string { v, _ := a.Get(k); return v.Str() }
	num := func(k string) int64 { v, _ := a.Get(k); return v.Int() }
	k := fmt.Sprintf("%s/%d/%d", str("kmes.boot_id"), num("kmes.cpu"), num("kmes.seq"))
	_, isLoss := a.Get("kmes.lost")
	if status != http.StatusOK {
		if !isLoss {
			c.refused[k]++
		}
		return
	}
	if isLoss {
		c.losses[k] = [2]uint64{uint64(num("kmes.lost")), uint64(num("kmes.dropped"))}
		return
	}
	if lr.ObservedTimestamp() < lr.Timestamp() {
		c.t.Errorf("record %s: observed %d before its timestamp %d", k, lr.ObservedTimestamp(), lr.Timestamp())
	}
	r := row{boot: str("kmes.boot_id"), cpu: int(num("kmes.cpu")), seq: uint64(num("kmes.seq")), ts: int64(lr.Timestamp()),
		origin: uint8(num("kmes.origin")), typ: str("kmes.type")}
	c.events[k] = append(c.events[k], r)
	body := pcommon.NewValueEmpty()
	lr.Body().CopyTo(body)
	c.bodies[k] = body
}

// wait waits until the collector accepted n distinct events.
func (c *collector) wait(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c.mu.Lock()
		got := len(c.events)
		c.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the collector holds %d events after 20s, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// check compares what the collector accepted with what was emitted, but
// skip: each event once, with its attributes and body, and losses.
func (c *collector) check(t *testing.T, e *emitter, skip map[string]bool, losses map[string][2]uint64) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now().UnixNano()
	for k, w := range e.want {
		got := c.events[k]
		if skip[k] {
			if len(got) != 0 {
				t.Errorf("event %s forwarded, want it skipped", k)
			}
			continue
		}
		if len(got) != 1 {
			t.Errorf("event %s forwarded %d times, want once", k, len(got))
			continue
		}
		g := got[0]
		if g.ts <= 0 || g.ts > now {
			t.Errorf("event %s: timestamp %d not in the past", k, g.ts)
		}
		payload := w.payload
		w.ts, w.payload = g.ts, ""
		if g != w {
			t.Errorf("event %s forwarded as %+v, want %+v", k, g, w)
		}
		want := pcommon.NewValueEmpty()
		setBody(want, []byte(payload))
		if !c.bodies[k].Equal(want) {
			t.Errorf("event %s: body %s, want %s", k, c.bodies[k].AsString(), want.AsString())
		}
	}
	for k := range c.events {
		if _, ok := e.want[k]; !ok {
			t.Errorf("event %s forwarded but not emitted", k)
		}
	}
	if fmt.Sprint(c.losses) != fmt.Sprint(losses) && !(len(c.losses) == 0 && len(losses) == 0) {
		t.Errorf("losses forwarded %v, want %v", c.losses, losses)
	}
}

// fast makes the forwarder's waits short for tests.
func fast(f *forwarder) {
	f.poll, f.backoff, f.maxBackoff = 10*time.Millisecond, 10*time.Millisecond, 50*time.Millisecond
}

func TestForwardExactlyOnce(t *testing.T) {
	c := newCollector(t)
	src := newSource(t, 4, 1<<20)
	db := filepath.Join(t.TempDir(), "events.db")
	e := newEmitter(src)
	e.emitN(t, 300, 4)
	src.Producer(2).Drop()
	after := e.emit(t, 2)
	d := startTuned(t, e, fast, "--db", db, "--flush-interval", "10ms", "--otlp-endpoint", c.url(),
		"--otlp-batch", "50", "--otlp-header", "Authorization=Bearer s3cret", "--otlp-header", "X-Tenant=kmes")
	c.wait(t, 301)
	e.emitN(t, 200, 4) // while it runs
	c.wait(t, 501)
	d.stop(t)
	c.check(t, e, nil, map[string][2]uint64{after.key(): {0, 1}})
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range c.headers {
		if h.Get("Authorization") != "Bearer s3cret" || h.Get("X-Tenant") != "kmes" {
			t.Errorf("request headers %v, want Authorization and X-Tenant", h)
		}
	}
	if c.accepted < 501/50 {
		t.Errorf("%d requests, want batches of at most 50", c.accepted)
	}
}

// startTuned starts kmesd, as start does, with its forwarder changed by
// tune.
func startTuned(t *testing.T, e *emitter, tune func(*forwarder), args ...string) *daemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{cancel: cancel, done: make(chan error, 1), stderr: &syncBuffer{}}
	env := &env{source: e.src, bootID: func() (string, error) { return testBoot, nil }, tuneForwarder: tune}
	go func() { d.done <- run(ctx, args, d.stderr, env) }()
	t.Cleanup(func() {
		cancel()
		<-d.done
	})
	return d
}

// The collector is down (503) for a while: nothing is lost, nothing
// sent twice.
func TestForwardOutage(t *testing.T) {
	c := newCollector(t)
	for range 8 {
		c.answer(answer{status: http.StatusServiceUnavailable})
	}
	src := newSource(t, 2, 1<<20)
	db := filepath.Join(t.TempDir(), "events.db")
	e := newEmitter(src)
	e.emitN(t, 100, 2)
	d := startTuned(t, e, fast, "--db", db, "--flush-interval", "10ms", "--otlp-endpoint", c.url(), "--otlp-batch", "30")
	waitCount(t, db, 100)
	e.emitN(t, 100, 2)
	c.wait(t, 200)
	d.stop(t)
	c.check(t, e, nil, nil)
	if s := d.stderr.String(); strings.Count(s, "503 Service Unavailable (trying again") != 1 || !strings.Contains(s, "forwarding resumed") {
		t.Errorf("stderr does not report the outage once, and its end:\n%s", s)
	}
}

// A restart resumes forwarding after what the collector accepted,
// including what was stored while forwarding was off.
func TestForwardRestart(t *testing.T) {
	c := newCollector(t)
	src := newSource(t, 3, 1<<20)
	db := filepath.Join(t.TempDir(), "events.db")
	e := newEmitter(src)
	e.emitN(t, 150, 3)
	args := []string{"--db", db, "--flush-interval", "10ms", "--otlp-endpoint", c.url(), "--otlp-batch", "40"}
	d := startTuned(t, e, fast, args...)
	c.wait(t, 150)
	d.stop(t)
	// Stored without forwarding.
	e.emitN(t, 60, 3)
	d = start(t, src, "--db", db, "--flush-interval", "10ms")
	waitCount(t, db, 210)
	d.stop(t)
	e.emitN(t, 90, 3)
	d = startTuned(t, e, fast, args...)
	c.wait(t, 300)
	time.Sleep(50 * time.Millisecond) // nothing more comes
	d.stop(t)
	c.check(t, e, nil, nil)
}

// A 400 is a permanent refusal: reported once, the batch skipped, the
// rest forwarded.
func TestForwardSkipsRefused(t *testing.T) {
	c := newCollector(t)
	c.answer(answer{status: http.StatusBadRequest})
	src := newSource(t, 1, 1<<20)
	db := filepath.Join(t.TempDir(), "events.db")
	e := newEmitter(src)
	e.emitN(t, 20, 1)
	d := startTuned(t, e, fast, "--db", db, "--flush-interval", "10ms", "--otlp-endpoint", c.url(), "--otlp-batch", "5")
	waitCount(t, db, 20)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c.mu.Lock()
		n := len(c.events) + len(c.refused)
		c.mu.Unlock()
		if n == 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events forwarded or refused, want 20", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	d.stop(t)
	c.mu.Lock()
	skip := map[string]bool{}
	for k, n := range c.refused {
		skip[k] = true
		if n != 1 {
			t.Errorf("refused event %s sent %d times, want once", k, n)
		}
	}
	c.mu.Unlock()
	if len(skip) == 0 || len(skip) > 5 {
		t.Errorf("%d events refused, want the first batch's", len(skip))
	}
	c.check(t, e, skip, nil)
	s := d.stderr.String()
	if strings.Count(s, "400 Bad Request") != 1 || !strings.Contains(s, fmt.Sprintf("%d events skipped", len(skip))) {
		t.Errorf("stderr does not report the refusal once:\n%s", s)
	}
}

// Retry-After is waited for, rather than the backoff.
func TestForwardRetryAfter(t *testing.T) {
	for _, status := range []int{http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		c := newCollector(t)
		c.answer(answer{status: status, retryAfter: "1"})
		src := newSource(t, 1, 1<<20)
		db := filepath.Join(t.TempDir(), "events.db")
		e := newEmitter(src)
		e.emitN(t, 10, 1)
		d := startTuned(t, e, fast, "--db", db, "--flush-interval", "10ms", "--otlp-endpoint", c.url())
		c.wait(t, 10)
		d.stop(t)
		c.check(t, e, nil, nil)
		c.mu.Lock()
		if len(c.times) < 2 {
			t.Errorf("%d: %d requests", status, len(c.times))
		} else if gap := c.times[1].Sub(c.times[0]); gap < 900*time.Millisecond {
			t.Errorf("%d with Retry-After: 1: sent again after %s", status, gap)
		}
		c.mu.Unlock()
	}
}

// A partial success is accepted (nothing is sent again) and reported.
func TestForwardPartialSuccess(t *testing.T) {
	c := newCollector(t)
	c.answer(answer{status: http.StatusOK, rejected: 3})
	src := newSource(t, 1, 1<<20)
	db := filepath.Join(t.TempDir(), "events.db")
	e := newEmitter(src)
	e.emitN(t, 10, 1)
	d := startTuned(t, e, fast, "--db", db, "--flush-interval", "10ms", "--otlp-endpoint", c.url())
	c.wait(t, 10)
	time.Sleep(50 * time.Millisecond) // nothing more comes
	d.stop(t)
	c.check(t, e, nil, nil)
	if s := d.stderr.String(); !strings.Contains(s, "kmesd: forwarding: the collector rejected 3 records: too old\n") {
		t.Errorf("stderr does not report the partial success:\n%s", s)
	}
}

// While the collector is down, --max-bytes deletes events not forwarded
// yet: kmesd reports how many, and when the collector is back it gets
// every event still stored, once. No event goes unaccounted for.
func TestForwardRetentionOverMaxBytes(t *testing.T) {
	c := newCollector(t)
	c.down = true
	src := newSource(t, 2, 4<<20)
	db := filepath.Join(t.TempDir(), "events.db")
	e := newEmitter(src)
	d := startTuned(t, e, fast, "--db", db, "--flush-interval", "10ms", "--otlp-endpoint", c.url(),
		"--max-bytes", "256K", "--retention-interval", "20ms")
	e.emitN(t, 20000, 2)
	deleted := regexp.MustCompile(`kmesd: retention: (\d+) events deleted before they were forwarded \(over --max-bytes\): lost for forwarding\n`)
	lost := func() int {
		n := 0
		for _, m := range deleted.FindAllStringSubmatch(d.stderr.String(), -1) {
			k, _ := strconv.Atoi(m[1])
			n += k
		}
		return n
	}
	deadline := time.Now().Add(20 * time.Second)
	for lost() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no deletion of unforwarded events reported after 20s:\n%s", d.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The drain stores the last event (positions holds the last seq of
	// each CPU: 10000 each).
	deadline = time.Now().Add(20 * time.Second)
	for {
		var sum int
		if sdb, err := sql.Open("sqlite", "file:"+db+"?mode=ro"); err == nil {
			sdb.QueryRow(`SELECT coalesce(sum(last_seq), 0) FROM positions`).Scan(&sum)
			sdb.Close()
		}
		if sum == len(e.want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20s, the positions stored sum to %d, want %d", sum, len(e.want))
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.mu.Lock()
	c.down = false
	c.mu.Unlock()
	// Forwarding ends when every event still stored is forwarded.
	deadline = time.Now().Add(20 * time.Second)
	for {
		stored := readRows(t, db)
		missing := 0
		c.mu.Lock()
		for _, r := range stored {
			if _, ok := c.events[r.key()]; !ok {
				missing++
			}
		}
		c.mu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20s: %d of the %d events stored not forwarded", missing, len(stored))
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	d.stop(t)
	stored := map[string]bool{}
	for _, r := range readRows(t, db) {
		stored[r.key()] = true
	}
	c.mu.Lock()
	skip := map[string]bool{}
	for k := range e.want {
		if _, ok := c.events[k]; !ok {
			skip[k] = true
			if stored[k] {
				t.Errorf("event %s stored but never forwarded", k)
			}
		}
	}
	c.mu.Unlock()
	if len(skip) == 0 || len(skip) > lost() {
		t.Errorf("%d events not forwarded, %d reported deleted before they were:\n%s", len(skip), lost(), d.stderr.String())
	}
	c.check(t, e, skip, nil)
}

// A batch the collector took whose recording in the database fails is
// recorded again, not sent again.
func TestForwardAdvanceFails(t *testing.T) {
	c := newCollector(t)
	src := newSource(t, 1, 1<<20)
	db := filepath.Join(t.TempDir(), "events.db")
	st, err := eventdb.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	sdb, err := sql.Open("sqlite", "file:"+db)
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	// Recording forwarding fails until the trigger is dropped.
	if _, err := sdb.Exec(`CREATE TRIGGER refuse BEFORE INSERT ON forwarded
		BEGIN SELECT RAISE(ABORT, 'the test refuses'); END`); err != nil {
		t.Fatal(err)
	}
	e := newEmitter(src)
	e.emitN(t, 10, 1)
	d := startTuned(t, e, fast, "--db", db, "--flush-interval", "10ms", "--otlp-endpoint", c.url())
	c.wait(t, 10)
	time.Sleep(200 * time.Millisecond) // twenty tries to record it
	if _, err := sdb.Exec(`DROP TRIGGER refuse`); err != nil {
		t.Fatal(err)
	}
	var fwd int
	deadline := time.Now().Add(20 * time.Second)
	for fwd != 10 {
		if time.Now().After(deadline) {
			t.Fatalf("forwarded.last_seq is %d after 20s, want 10", fwd)
		}
		time.Sleep(10 * time.Millisecond)
		sdb.QueryRow(`SELECT coalesce(max(last_seq), 0) FROM forwarded`).Scan(&fwd)
	}
	d.stop(t)
	c.check(t, e, nil, nil)
	c.mu.Lock()
	if c.accepted != 1 {
		t.Errorf("%d requests accepted, want 1", c.accepted)
	}
	c.mu.Unlock()
	if s := d.stderr.String(); strings.Count(s, "the test refuses") != 1 {
		t.Errorf("stderr does not report the failure once:\n%s", s)
	}
}

func TestBody(t *testing.T) {
	mp, err := msgpack.Marshal(map[string]any{"user": "ann", "n": 3, "ok": true, "tags": []any{"a", 1.5}, "raw": []byte{1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	v := pcommon.NewValueEmpty()
	setBody(v, mp)
	want := pcommon.NewValueMap()
	want.Map().PutStr("user", "ann")
	want.Map().PutInt("n", 3)
	want.Map().PutBool("ok", true)
	tags := want.Map().PutEmptySlice("tags")
	tags.AppendEmpty().SetStr("a")
	tags.AppendEmpty().SetDouble(1.5)
	want.Map().PutEmptyBytes("raw").FromRaw([]byte{1, 2})
	if !v.Equal(want) {
		t.Errorf("body %s, want %s", v.AsString(), want.AsString())
	}
	for _, p := range []string{"", "not msgpack", "\xc1"} {
		setBody(v, []byte(p))
		if v.Type() != pcommon.ValueTypeBytes || string(v.Bytes().AsRaw()) != p {
			t.Errorf("%q: body %s, want its bytes", p, v.AsString())
		}
	}
	setBody(v, []byte{0x2a})
	if v.Type() != pcommon.ValueTypeInt || v.Int() != 42 {
		t.Errorf("msgpack 42: body %s", v.AsString())
	}
}

func TestRetryAfterParse(t *testing.T) {
	now := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	for s, want := range map[string]time.Duration{"": 0, "3": 3 * time.Second, "x": 0, "-1": 0,
		now.Add(7 * time.Second).Format(http.TimeFormat): 7 * time.Second, now.Add(-time.Second).Format(http.TimeFormat): 0} {
		if got := parseRetryAfter(s, now); got != want {
			t.Errorf("Retry-After %q: %s, want %s", s, got, want)
		}
	}
}
