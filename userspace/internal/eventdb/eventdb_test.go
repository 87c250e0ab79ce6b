package eventdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var bgctx = context.Background()

const testBoot = "0a1b2c3d-test-boot"

// row is an event as the database holds it, without its payload.
type row struct {
	cpu           int
	seq           uint64
	ts            int64
	lost, dropped uint64
}

// readRows returns the events stored with their losses, in key order.
func readRows(t *testing.T, path string) []row {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT e.cpu, e.seq, e.ts_ns, coalesce(l.lost, 0), coalesce(l.dropped, 0)
		FROM events e LEFT JOIN losses l ON l.boot_id = e.boot_id AND l.cpu = e.cpu AND l.before_seq = e.seq
		ORDER BY e.boot_id, e.cpu, e.seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.cpu, &r.seq, &r.ts, &r.lost, &r.dropped); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// openTestStore opens a store in a new directory.
func openTestStore(t *testing.T) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "events.db")
	st, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, path
}

func TestRetentionByAge(t *testing.T) {
	st, path := openTestStore(t)
	now := time.Now()
	b := NewBatch(testBoot, 0)
	// CPU 0: an event a day for 10 days; the one 5 days old has a loss.
	for i := range 10 {
		b.Add(Event{Seq: uint64(i + 1), Timestamp: now.Add(-time.Duration(10-i) * 24 * time.Hour).UnixNano(), Type: "old"}, []byte{0xc0})
	}
	b.Events[5].Lost = 3
	b.Events[8].Dropped = 1
	if err := st.Insert(b); err != nil {
		t.Fatal(err)
	}
	// 10, 9, ..., 4 days old go; 3, 2, 1 stay.
	n, err := st.Retain(now, testBoot, 3*24*time.Hour+time.Hour, 0)
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
	b := NewBatch(testBoot, 0)
	payload := make([]byte, 1000)
	const n = 8000 // about 8 MB
	for seq := uint64(1); seq <= n; seq++ {
		// Two CPUs, interleaved in time.
		b.Add(Event{CPU: int(seq % 2), Seq: seq, Timestamp: int64(seq) * 1000, Type: "big"}, payload)
		if len(b.Events) == 1000 {
			if err := st.Insert(b); err != nil {
				t.Fatal(err)
			}
			b.Reset()
		}
	}
	used, err := st.UsedBytes()
	if err != nil || used < 8e6 {
		t.Fatalf("%d bytes used, %v", used, err)
	}
	const limit = 2 << 20
	deleted, err := st.Retain(time.Now(), testBoot, 0, limit)
	if err != nil {
		t.Fatal(err)
	}
	if used, _ = st.UsedBytes(); used > limit {
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
		b.Add(Event{Seq: seq, Timestamp: int64(seq) * 1000, Type: "big"}, payload)
	}
	if err := st.Insert(b); err != nil {
		t.Fatal(err)
	}
	if _, err := st.conn.ExecContext(bgctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		t.Fatal(err)
	}
	if fi2, _ := os.Stat(path); fi2.Size() > fi.Size()+1<<20 {
		t.Errorf("file grew from %d to %d bytes with freed pages to reuse", fi.Size(), fi2.Size())
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

// An event without a payload (kernel emitters may send one) is stored
// with an empty one, not skipped; storing it again changes nothing.
func TestEmptyPayload(t *testing.T) {
	st, path := openTestStore(t)
	b := NewBatch(testBoot, 0)
	b.Add(Event{CPU: 3, Seq: 1, Timestamp: time.Now().UnixNano(), Type: "kmes.x"}, nil)
	for range 2 {
		if err := st.Insert(b); err != nil {
			t.Fatal(err)
		}
	}
	if rows := readRows(t, path); len(rows) != 1 || rows[0].cpu != 3 {
		t.Fatalf("stored %+v, want the one event", rows)
	}
}

// The position of each CPU is stored with its batch and outlives the
// events retention deletes; it never goes back; a past boot's positions
// go with its last events, the current boot's stay.
func TestPositions(t *testing.T) {
	st, _ := openTestStore(t)
	now := time.Now()
	old := now.Add(-48 * time.Hour).UnixNano()
	b := NewBatch(testBoot, 0)
	for seq := uint64(1); seq <= 5; seq++ {
		b.Add(Event{CPU: 0, Seq: seq, Timestamp: old, Type: "a"}, nil)
		if seq <= 3 {
			b.Add(Event{CPU: 7, Seq: seq, Timestamp: old, Type: "a"}, nil)
		}
	}
	if err := st.Insert(b); err != nil {
		t.Fatal(err)
	}
	checkLast := func(boot string, want map[int]uint64) {
		t.Helper()
		got, err := st.LastSeqs(boot)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("positions of %s: %v, want %v", boot, got, want)
		}
		for cpu, seq := range want {
			if got[cpu] != seq {
				t.Fatalf("positions of %s: %v, want %v", boot, got, want)
			}
		}
	}
	checkLast(testBoot, map[int]uint64{0: 5, 7: 3})
	// An older event stored again does not move the position back.
	b = NewBatch(testBoot, 0)
	b.Add(Event{CPU: 0, Seq: 2, Timestamp: old, Type: "a"}, nil)
	if err := st.Insert(b); err != nil {
		t.Fatal(err)
	}
	checkLast(testBoot, map[int]uint64{0: 5, 7: 3})
	// Retention deletes every event; the positions stay.
	if n, err := st.Retain(now, testBoot, 24*time.Hour, 0); err != nil || n != 8 {
		t.Fatalf("retain deleted %d, %v; want 8", n, err)
	}
	checkLast(testBoot, map[int]uint64{0: 5, 7: 3})
	// A new boot: the old one's positions go when its events are gone
	// (here, already), at the next retention that deletes something.
	const next = "next-boot"
	b = NewBatch(next, 0)
	b.Add(Event{CPU: 1, Seq: 9, Timestamp: old, Type: "a"}, nil)
	b.Add(Event{CPU: 1, Seq: 10, Timestamp: now.UnixNano(), Type: "a"}, nil)
	if err := st.Insert(b); err != nil {
		t.Fatal(err)
	}
	checkLast(testBoot, map[int]uint64{0: 5, 7: 3})
	if n, err := st.Retain(now, next, 24*time.Hour, 0); err != nil || n != 1 {
		t.Fatalf("retain deleted %d, %v; want 1", n, err)
	}
	checkLast(testBoot, map[int]uint64{})
	checkLast(next, map[int]uint64{1: 10})
	// The current boot's positions stay without events.
	if n, err := st.Retain(now.Add(48*time.Hour), next, 24*time.Hour, 0); err != nil || n != 1 {
		t.Fatalf("retain deleted %d, %v; want 1", n, err)
	}
	checkLast(next, map[int]uint64{1: 10})
}

// A reader (kmesctl query) that opens the database while kmesd creates
// it finds none, or the whole schema: never a file without it, which it
// would call corrupt. No file is left beside it.
func TestCreateWhole(t *testing.T) {
	dir := t.TempDir()
	for i := range 30 {
		path := filepath.Join(dir, fmt.Sprintf("events%d.db", i))
		done := make(chan struct{})
		var bad error
		go func() {
			defer close(done)
			for {
				r, err := OpenReader(path)
				if err == nil {
					r.Close()
					return
				}
				if !errors.Is(err, fs.ErrNotExist) {
					bad = err
					return
				}
			}
		}()
		s, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		<-done
		s.Close()
		if bad != nil {
			t.Fatalf("a reader while the database was created: %v", bad)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "events") || strings.Contains(e.Name(), ".new-") {
			t.Errorf("%s left in the directory", e.Name())
		}
	}
}
