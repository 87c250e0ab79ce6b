package main

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var bgctx = context.Background()

// TestMain runs the crash helper when the test binary is started as it.
func TestMain(m *testing.M) {
	if path := os.Getenv("KMESD_TEST_CRASH_DB"); path != "" {
		crashHelper(path)
		return
	}
	os.Exit(m.Run())
}

// Events of the crash helper: CPU 0, sequence numbers 1..crashCommitted
// committed, then up to crashTotal in a transaction it never commits.
const (
	crashCommitted = 500
	crashTotal     = 40000
)

// crashHelper stores crashCommitted events, then begins a large
// transaction, says "ready" on stdout and waits to be killed.
func crashHelper(path string) {
	st, err := openStore(path)
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	b := newBatch(testBoot, crashCommitted)
	now := time.Now().UnixNano() // recent: no retention at the next start
	for seq := uint64(1); seq <= crashCommitted; seq++ {
		addEvent(b, 0, seq, now, "crash.committed", []byte("helper"))
	}
	if err := st.insert(b); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	b.reset()
	for seq := uint64(crashCommitted + 1); seq <= crashTotal; seq++ {
		addEvent(b, 0, seq, now, "crash.uncommitted", []byte(strings.Repeat("x", 100)))
	}
	if _, err := st.conn.ExecContext(bgctx, "BEGIN"); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	for i := range b.events {
		if err := st.add(b, &b.events[i]); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
	}
	fmt.Println("ready")
	time.Sleep(time.Hour)
}

// addEvent adds an event to b as the drain loop would.
func addEvent(b *batch, cpu int, seq uint64, ts int64, typ string, payload []byte) {
	off := len(b.buf)
	b.buf = append(b.buf, payload...)
	b.events = append(b.events, event{cpu: cpu, seq: seq, ts: ts, typ: typ, off: off, n: len(payload)})
}

// kmesd killed in the middle of a large transaction: a later run finds
// only what was committed and stores the rest once.
func TestCrashMidBatch(t *testing.T) {
	db := filepath.Join(t.TempDir(), "events.db")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "KMESD_TEST_CRASH_DB="+db)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("crash helper: %q, %v", line, err)
	}
	// The transaction spilled into the WAL: uncommitted frames there.
	if fi, err := os.Stat(db + "-wal"); err != nil || fi.Size() < 1<<20 {
		t.Errorf("the helper's WAL holds no uncommitted transaction: %v, %v", fi, err)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	if n := count(db); n != crashCommitted {
		t.Fatalf("%d events after the crash, want the %d committed", n, crashCommitted)
	}
	// The ring holds events 1..crashCommitted+300 of CPU 0.
	src := newSource(t, 1, 1<<20)
	e := newEmitter(src)
	for range crashCommitted + 300 {
		r := e.emit(t, 0)
		if r.seq <= crashCommitted {
			// Stored by the earlier run, as it read them then.
			r.typ, r.payload, r.origin = "crash.committed", "helper", 0
			e.want[r.key()] = r
		}
	}
	d := start(t, src, "--db", db, "--flush-interval", "10ms")
	waitCount(t, db, crashCommitted+300)
	d.stop(t)
	e.check(t, db, nil)
}

// openTestStore opens a store in a new directory.
func openTestStore(t *testing.T) (*store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "events.db")
	st, err := openStore(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.close() })
	return st, path
}

func TestRetentionByAge(t *testing.T) {
	st, path := openTestStore(t)
	now := time.Now()
	b := newBatch(testBoot, 0)
	// CPU 0: an event a day for 10 days; the one 5 days old has a loss.
	for i := range 10 {
		addEvent(b, 0, uint64(i+1), now.Add(-time.Duration(10-i)*24*time.Hour).UnixNano(), "old", []byte{0xc0})
	}
	b.events[5].lost = 3
	b.events[8].dropped = 1
	if err := st.insert(b); err != nil {
		t.Fatal(err)
	}
	// 10, 9, ..., 4 days old go; 3, 2, 1 stay.
	n, err := st.retain(now, 3*24*time.Hour+time.Hour, 0)
	if err != nil || n != 7 {
		t.Fatalf("retain deleted %d, %v; want 7", n, err)
	}
	rows := readRows(t, path)
	if len(rows) != 3 || rows[0].seq != 8 {
		t.Fatalf("left %+v, want seq 8..10", rows)
	}
	if rows[1].dropped != 1 {
		t.Errorf("the loss of a kept event went: %+v", rows[1])
	}
	if l := countLosses(t, path); l != 1 {
		t.Errorf("%d losses rows left, want 1 (the deleted event's went with it)", l)
	}
}

func countLosses(t *testing.T, path string) int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM losses`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRetentionBySize(t *testing.T) {
	st, path := openTestStore(t)
	b := newBatch(testBoot, 0)
	payload := make([]byte, 1000)
	const n = 8000 // about 8 MB
	for seq := uint64(1); seq <= n; seq++ {
		// Two CPUs, interleaved in time.
		addEvent(b, int(seq%2), seq, int64(seq)*1000, "big", payload)
		if len(b.events) == 1000 {
			if err := st.insert(b); err != nil {
				t.Fatal(err)
			}
			b.reset()
		}
	}
	used, err := st.usedBytes()
	if err != nil || used < 8e6 {
		t.Fatalf("%d bytes used, %v", used, err)
	}
	const limit = 2 << 20
	deleted, err := st.retain(time.Now(), 0, limit)
	if err != nil {
		t.Fatal(err)
	}
	if used, _ = st.usedBytes(); used > limit {
		t.Errorf("%d bytes used after retention, limit %d", used, limit)
	}
	rows := readRows(t, path)
	if int64(len(rows))+deleted != n || len(rows) < n/8 {
		t.Fatalf("%d events left and %d deleted of %d", len(rows), deleted, n)
	}
	// The newest are kept.
	var oldestKept int64 = 1 << 62
	for _, r := range rows {
		oldestKept = min(oldestKept, r.ts)
	}
	if want := int64(n-len(rows)+1) * 1000; oldestKept != want {
		t.Errorf("oldest event kept at %d, want %d: not the oldest were deleted", oldestKept, want)
	}
	// Freed pages are reused: storing as much again does not grow the file.
	fi, _ := os.Stat(path)
	for seq := uint64(n + 1); seq <= n+uint64(deleted); seq++ {
		addEvent(b, 0, seq, int64(seq)*1000, "big", payload)
	}
	if err := st.insert(b); err != nil {
		t.Fatal(err)
	}
	if _, err := st.conn.ExecContext(bgctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		t.Fatal(err)
	}
	if fi2, _ := os.Stat(path); fi2.Size() > fi.Size()+1<<20 {
		t.Errorf("file grew from %d to %d bytes with freed pages to reuse", fi.Size(), fi2.Size())
	}
}

// Bad input is one line naming the problem and the fix.
func TestBadDatabase(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	os.WriteFile(notDir, nil, 0o644)
	garbage := filepath.Join(dir, "garbage.db")
	os.WriteFile(garbage, []byte(strings.Repeat("this is not SQLite\n", 400)), 0o644)
	other := filepath.Join(dir, "other.db")
	db, err := sql.Open("sqlite", other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE t(x)"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	for _, tc := range []struct{ path, want string }{
		{filepath.Join(notDir, "x.db"), "open database " + notDir + "/x.db: not a directory (choose a writable --db)"},
		{garbage, "database " + garbage + " is not a kmesd database or is corrupt: "},
		{other, "database " + other + " is not a kmesd database or is corrupt: "},
	} {
		src := newSource(t, 1, 1<<16)
		err := run(bgctx, []string{"--db", tc.path}, os.Stderr, &env{source: src, bootID: func() (string, error) { return testBoot, nil }})
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("--db %s: %v, want one line beginning %q", tc.path, err, tc.want)
		}
	}
	// As a user who may not write there.
	if os.Getuid() == 0 {
		t.Log("running as root: no permission denied to see")
		return
	}
	ro := filepath.Join(dir, "ro")
	os.Mkdir(ro, 0o555)
	err = run(bgctx, []string{"--db", filepath.Join(ro, "x.db")}, os.Stderr, &env{bootID: func() (string, error) { return testBoot, nil }})
	if want := "open database " + ro + "/x.db: permission denied (choose a writable --db)"; err == nil || err.Error() != want {
		t.Errorf("%v, want %s", err, want)
	}
}

// The permission error as a user gets it, from the error wording alone.
func TestUnwritableWording(t *testing.T) {
	err := checkWritable("/proc/kmesd-test/x.db")
	if err == nil || !strings.HasSuffix(err.Error(), "(choose a writable --db)") || !strings.HasPrefix(err.Error(), "open database /proc/kmesd-test/x.db: ") {
		t.Errorf("%v", err)
	}
}

// The database is in WAL mode, with 16 KiB pages and synchronous=NORMAL.
func TestPragmas(t *testing.T) {
	st, _ := openTestStore(t)
	for p, want := range map[string]string{"journal_mode": "wal", "page_size": "16384", "synchronous": "1"} {
		var got string
		if err := st.conn.QueryRowContext(bgctx, "PRAGMA "+p).Scan(&got); err != nil || got != want {
			t.Errorf("PRAGMA %s: %q, %v; want %q", p, got, err, want)
		}
	}
}
