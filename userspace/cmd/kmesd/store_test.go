//go:build linux

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

	"github.com/kmes-project/kmes/userspace/internal/eventdb"
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
	st, err := eventdb.Open(path)
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	b := eventdb.NewBatch(testBoot, crashCommitted)
	now := time.Now().UnixNano() // recent: no retention at the next start
	for seq := uint64(1); seq <= crashCommitted; seq++ {
		b.Add(eventdb.Event{Seq: seq, Timestamp: now, Type: "crash.committed"}, []byte("helper"))
	}
	if err := st.Insert(b); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	b.Reset()
	for seq := uint64(crashCommitted + 1); seq <= crashTotal; seq++ {
		b.Add(eventdb.Event{Seq: seq, Timestamp: now, Type: "crash.uncommitted"}, []byte(strings.Repeat("x", 100)))
	}
	if err := st.InsertUncommitted(b); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("ready")
	time.Sleep(time.Hour)
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
	// The other program's database is left as it was: not turned to WAL.
	db, err = sql.Open("sqlite", "file:"+other+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	var mode string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "delete" {
		t.Errorf("%s's journal_mode after kmesd refused it: %q, %v; want delete", other, mode, err)
	}
	db.Close()
	if _, err := os.Stat(other + "-wal"); err == nil {
		t.Errorf("kmesd left a WAL beside %s", other)
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
