//go:build linux

package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmes-project/kmes/userspace/internal/eventdb"
	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/userspace/kmestest"
)

const testBoot = "0a1b2c3d-test-boot"

// row is an event as the database holds it.
type row struct {
	boot          string
	cpu           int
	seq           uint64
	ts            int64
	origin        uint8
	typ           string
	payload       string
	lost, dropped uint64 // from losses, before this event
}

func (r row) key() string { return fmt.Sprintf("%s/%d/%d", r.boot, r.cpu, r.seq) }

// readRows returns every event stored, with its losses, in key order.
func readRows(t *testing.T, path string) []row {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT e.boot_id, e.cpu, e.seq, e.ts_ns, e.origin, e.type, e.payload,
		coalesce(l.lost, 0), coalesce(l.dropped, 0)
		FROM events e LEFT JOIN losses l ON l.boot_id = e.boot_id AND l.cpu = e.cpu AND l.before_seq = e.seq
		ORDER BY e.boot_id, e.cpu, e.seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []row
	for rows.Next() {
		var r row
		var payload []byte
		if err := rows.Scan(&r.boot, &r.cpu, &r.seq, &r.ts, &r.origin, &r.typ, &payload, &r.lost, &r.dropped); err != nil {
			t.Fatal(err)
		}
		r.payload = string(payload)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// count returns the number of events stored, or -1 while the database
// cannot be read yet.
func count(path string) int {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return -1
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM events`).Scan(&n); err != nil {
		return -1
	}
	return n
}

// waitCount waits until the database holds n events.
func waitCount(t *testing.T, path string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c := count(path)
		if c == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %d events after 20s, want %d", path, c, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// daemon is kmesd running in a goroutine.
type daemon struct {
	cancel context.CancelFunc
	done   chan error
	stderr *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T, src kmes.RingSource, args ...string) *daemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{cancel: cancel, done: make(chan error, 1), stderr: &syncBuffer{}}
	e := &env{source: src, bootID: func() (string, error) { return testBoot, nil }}
	go func() { d.done <- run(ctx, args, d.stderr, e) }()
	t.Cleanup(func() {
		cancel()
		<-d.done
	})
	return d
}

// stop ends kmesd as SIGTERM does and checks that it exits cleanly.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.cancel()
	select {
	case err := <-d.done:
		d.done <- nil // for the cleanup
		if err != nil {
			t.Fatalf("kmesd: %v\nstderr:\n%s", err, d.stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("kmesd did not stop 20s after SIGTERM")
	}
}

func newSource(t *testing.T, cpus int, capacity uint64) *kmestest.Source {
	t.Helper()
	src, err := kmestest.NewSource(cpus, capacity)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// emitter emits events and remembers them as the database should hold
// them.
type emitter struct {
	src  *kmestest.Source
	want map[string]row
	n    int
}

func newEmitter(src *kmestest.Source) *emitter { return &emitter{src: src, want: map[string]row{}} }

// emit emits one event on cpu with a payload of its own.
func (e *emitter) emit(t *testing.T, cpu int) row {
	t.Helper()
	e.n++
	typ := []string{"app.login", "app.tick", "kmes.sys"}[e.n%3]
	origin := uint8(e.n % 2)
	payload := strings.Repeat(strconv.Itoa(e.n), e.n%7+1)
	seq := e.src.Emit(cpu, origin, typ, []byte(payload))
	if seq == 0 {
		t.Fatalf("event %d dropped", e.n)
	}
	r := row{boot: testBoot, cpu: cpu, seq: seq, origin: origin, typ: typ, payload: payload}
	e.want[r.key()] = r
	return r
}

func (e *emitter) emitN(t *testing.T, n, cpus int) {
	t.Helper()
	for i := range n {
		e.emit(t, i%cpus)
	}
}

// check compares the database with what was emitted: each event once,
// with its fields (the timestamp within the test's run) and losses.
func (e *emitter) check(t *testing.T, path string, losses map[string][2]uint64) {
	t.Helper()
	got := readRows(t, path)
	if len(got) != len(e.want) {
		t.Errorf("%d events stored, want %d", len(got), len(e.want))
	}
	now := time.Now().UnixNano()
	for _, g := range got {
		w, ok := e.want[g.key()]
		if !ok {
			t.Errorf("event %s stored but not emitted: %+v", g.key(), g)
			continue
		}
		w.ts = g.ts
		w.lost, w.dropped = losses[g.key()][0], losses[g.key()][1]
		if g != w {
			t.Errorf("event %s stored as %+v, want %+v", g.key(), g, w)
		}
		if g.ts <= 0 || g.ts > now {
			t.Errorf("event %s: timestamp %d not in the past", g.key(), g.ts)
		}
	}
}

func key(cpu int, seq uint64) string { return fmt.Sprintf("%s/%d/%d", testBoot, cpu, seq) }

func TestStoreExactlyOnce(t *testing.T) {
	src := newSource(t, 4, 1<<20)
	db := filepath.Join(t.TempDir(), "sub", "events.db") // the directory is created
	e := newEmitter(src)
	e.emitN(t, 500, 4)
	// A drop on CPU 1: a losses row before its next event.
	src.Producer(1).Drop()
	src.Producer(1).Drop()
	after := e.emit(t, 1)
	d := start(t, src, "--db", db, "--flush-interval", "10ms", "--batch", "64")
	waitCount(t, db, 501)
	// Events that come while it runs.
	e.emitN(t, 300, 4)
	waitCount(t, db, 801)
	d.stop(t)
	e.check(t, db, map[string][2]uint64{after.key(): {0, 2}})
	// Stopping says what it stored (at least 801/64 transactions).
	stats := regexp.MustCompile(`^kmesd: 801 events stored in (\d+) transactions \(0 lost, 2 dropped before them\); CPU time reading \d+\.\d{6} s, storing \d+\.\d{6} s\n$`)
	if m := stats.FindStringSubmatch(d.stderr.String()); m == nil {
		t.Errorf("stderr is not the stop's summary:\n%s", d.stderr)
	} else if n, _ := strconv.Atoi(m[1]); n < 13 {
		t.Errorf("%d transactions, want batches of at most 64", n)
	}
}

// A batch that is neither full nor due is stored at SIGTERM.
func TestStopStoresBatch(t *testing.T) {
	src := newSource(t, 2, 1<<20)
	db := filepath.Join(t.TempDir(), "events.db")
	e := newEmitter(src)
	e.emitN(t, 10, 2)
	d := start(t, src, "--db", db, "--flush-interval", "1h", "--batch", "100000")
	// Until the events are read: a Reader's Stats say so.
	time.Sleep(200 * time.Millisecond)
	if n := count(db); n != 0 {
		t.Fatalf("%d events stored before the batch is due", n)
	}
	d.stop(t)
	e.check(t, db, nil)
}

func TestRestartResumes(t *testing.T) {
	src := newSource(t, 3, 1<<20)
	db := filepath.Join(t.TempDir(), "events.db")
	e := newEmitter(src)
	e.emitN(t, 200, 3)
	d := start(t, src, "--db", db, "--flush-interval", "10ms")
	waitCount(t, db, 200)
	d.stop(t)
	e.emitN(t, 150, 3)
	d = start(t, src, "--db", db, "--flush-interval", "10ms")
	waitCount(t, db, 350)
	e.emitN(t, 50, 3)
	waitCount(t, db, 400)
	d.stop(t)
	// A third run with nothing new stores nothing twice.
	d = start(t, src, "--db", db, "--flush-interval", "10ms")
	time.Sleep(100 * time.Millisecond)
	d.stop(t)
	e.check(t, db, nil)
}

// Retention that deletes every stored event of a CPU, or of all, does
// not lose the resume point: a restart stores none of the events its ring
// still holds again, and goes on after them without a loss.
func TestRestartAfterRetention(t *testing.T) {
	src := newSource(t, 2, 1<<20)
	db := filepath.Join(t.TempDir(), "events.db")
	e := newEmitter(src)
	for range 100 {
		e.emit(t, 0)
	}
	mid := time.Now()
	for range 100 {
		e.emit(t, 1)
	}
	d := start(t, src, "--db", db, "--flush-interval", "10ms")
	waitCount(t, db, 200)
	d.stop(t)

	// Retention as kmesd does it, with mid for now: CPU 0's events are
	// older than a nanosecond, CPU 1's are not.
	st, err := eventdb.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	n, err := st.Retain(mid, testBoot, time.Nanosecond, 0)
	if err := errors.Join(err, st.Close()); err != nil || n != 100 {
		t.Fatalf("retention deleted %d events, %v; want CPU 0's 100", n, err)
	}
	for k, w := range e.want {
		if w.cpu == 0 {
			delete(e.want, k)
		}
	}
	for range 20 {
		e.emit(t, 0) // after the deleted ones: stored, no loss
	}
	d = start(t, src, "--db", db, "--flush-interval", "10ms")
	waitCount(t, db, 120)
	time.Sleep(100 * time.Millisecond) // time to store anything twice
	d.stop(t)
	e.check(t, db, nil)

	// kmesd's own retention deletes everything, of both CPUs.
	d = start(t, src, "--db", db, "--flush-interval", "10ms", "--max-age", "1ns", "--retention-interval", "10ms")
	waitCount(t, db, 0)
	d.stop(t)
	clear(e.want)
	e.emit(t, 0)
	e.emit(t, 1)
	d = start(t, src, "--db", db, "--flush-interval", "10ms")
	waitCount(t, db, 2)
	time.Sleep(100 * time.Millisecond)
	d.stop(t)
	e.check(t, db, nil)
}

// Events overwritten while kmesd was stopped are a loss before the first
// event it reads on restart.
func TestRestartAfterLap(t *testing.T) {
	src := newSource(t, 1, 1<<16)
	db := filepath.Join(t.TempDir(), "events.db")
	e := newEmitter(src)
	e.emitN(t, 10, 1)
	d := start(t, src, "--db", db, "--flush-interval", "10ms")
	waitCount(t, db, 10)
	d.stop(t)
	// Far more than the ring holds: the first ones are overwritten.
	for range 3000 {
		e.emit(t, 0)
	}
	first := oldest(t, src, 0)
	for k, w := range e.want {
		if w.seq > 10 && w.seq < first {
			delete(e.want, k) // overwritten
		}
	}
	d = start(t, src, "--db", db, "--flush-interval", "10ms")
	waitCount(t, db, len(e.want))
	d.stop(t)
	e.check(t, db, map[string][2]uint64{key(0, first): {first - 11, 0}})
}

// A fresh database on rings that were overwritten already: the events
// before the oldest read are lost, since boot.
func TestStartAfterLap(t *testing.T) {
	src := newSource(t, 1, 1<<16)
	db := filepath.Join(t.TempDir(), "events.db")
	e := newEmitter(src)
	for range 3000 {
		e.emit(t, 0)
	}
	first := oldest(t, src, 0)
	for k, w := range e.want {
		if w.seq < first {
			delete(e.want, k)
		}
	}
	d := start(t, src, "--db", db, "--flush-interval", "10ms")
	waitCount(t, db, len(e.want))
	d.stop(t)
	e.check(t, db, map[string][2]uint64{key(0, first): {first - 1, 0}})
}

// fullStore fails with errFull until it is let go, then stores into st.
type fullStore struct {
	st    *eventdb.DB
	mu    sync.Mutex
	full  bool
	tries int
}

func (f *fullStore) Insert(b *eventdb.Batch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.full {
		f.tries++
		return fmt.Errorf("store %d events: %w: SQLITE_FULL (test)", len(b.Events), eventdb.ErrFull)
	}
	return f.st.Insert(b)
}

func (f *fullStore) Retain(now time.Time, current string, maxAge time.Duration, maxBytes int64) (int64, error) {
	return f.st.Retain(now, current, maxAge, maxBytes)
}

func (f *fullStore) attempts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tries
}

// A full disk pauses storing; the batch is kept; what the ring
// overwrites meanwhile is recorded as lost when storing resumes.
func TestDiskFull(t *testing.T) {
	src := newSource(t, 1, 1<<16)
	db := filepath.Join(t.TempDir(), "events.db")
	st, err := eventdb.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fs := &fullStore{st: st, full: true}
	rd, err := kmes.NewReader(&kmes.Options{Source: src})
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := parseConfig([]string{"--flush-interval", "5ms", "--batch", "50"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	dr := newDrainer(rd, fs, cfg, testBoot, map[int]uint64{}, &stderr)
	dr.retry = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dr.run(ctx) }()

	e := newEmitter(src)
	e.emitN(t, 20, 1) // the batch that fails
	for fs.attempts() < 3 {
		time.Sleep(5 * time.Millisecond)
	}
	// While paused, the ring laps: 21.. are overwritten.
	for range 3000 {
		e.emit(t, 0)
	}
	first := oldest(t, src, 0)
	for k, w := range e.want {
		if w.seq > 20 && w.seq < first {
			delete(e.want, k)
		}
	}
	fs.mu.Lock()
	fs.full = false
	fs.mu.Unlock()
	waitCount(t, db, len(e.want))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rd.Close()
	e.check(t, db, map[string][2]uint64{key(0, first): {first - 21, 0}})
	out := stderr.String()
	if strings.Count(out, "storing paused") != 1 || strings.Count(out, "storing resumed") != 1 {
		t.Errorf("stderr should report the pause and the resumption once:\n%s", out)
	}
	if !strings.Contains(out, "free disk space") {
		t.Errorf("stderr does not say what to do:\n%s", out)
	}
}

// oldest returns the sequence number of the oldest event cpu's ring still
// holds: those before it were overwritten.
func oldest(t *testing.T, src *kmestest.Source, cpu int) uint64 {
	t.Helper()
	r, err := src.Producer(cpu).Reader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var first kmes.Record
	if ok, err := r.Read(&first); !ok || err != nil {
		t.Fatal(ok, err)
	}
	return first.Sequence
}
