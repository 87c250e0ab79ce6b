package bench

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	_ "modernc.org/sqlite"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/userspace/kmes/abi"
	"github.com/kmes-project/kmes/vm/guest"
)

// kmesdSummary is the line kmesd prints when it stops.
var kmesdSummary = regexp.MustCompile(`kmesd: (\d+) events stored in (\d+) transactions \(\d+ lost, \d+ dropped before them\); CPU time reading (\d+\.\d+) s, storing (\d+\.\d+) s\n`)

// TestKmesdStore measures kmesd on the kernel's rings: events/s stored
// into SQLite for 64-byte and 1 KiB payloads, with reading the rings
// (into batches) and storing them (the transactions) apart. They are the
// CPU time of kmesd's drain thread, as kmesd reports it when it stops, so
// the test's own polling does not count. The events are emitted first
// (half a ring of CPU 0), then kmesd, started on a database that holds
// every event older than them, stores only them, with the default batch
// of 1024. Under icount a second is 1e9 instructions: events/s reads
// events per 1e9 instructions. BenchmarkStore measures the same on the
// host, from simulated rings.
func TestKmesdStore(t *testing.T) {
	pinCPU0(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	db := filepath.Join(t.TempDir(), "events.db")
	// What the rings hold already (the other tests' events) is stored
	// first, and not measured.
	runKmesd(t, ctx, db)
	rd, err := kmes.NewReader(&kmes.Options{FromEnd: true, CPUs: []int{0}})
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	capacity := rd.Stats()[0].Capacity
	rd.Close()
	for _, size := range []int{64, 1024} {
		typ := "bench.kmesd"
		events := make([]kmes.Event, 256)
		for i := range events {
			events[i] = kmes.Event{Type: typ, Payload: binPayload(t, size)}
		}
		n := int(capacity/2) / (abi.HdrBaseSize + len(typ) + size) / len(events) * len(events)
		for i := 0; i < n; i += len(events) {
			if _, err := kmes.EmitBatch(events); err != nil {
				t.Fatalf("kmes_emit_batch: %v", err)
			}
		}
		stored, txs, reading, storing := runKmesd(t, ctx, db)
		if stored != n {
			t.Fatalf("kmesd stored %d events, want the %d emitted", stored, n)
		}
		name := "kmesd_" + sizeName(size)
		guest.Record(t, name+"_events", float64(n)/(reading+storing).Seconds(), "events/s")
		guest.Record(t, name+"_read_events", float64(n)/reading.Seconds(), "events/s")
		guest.Record(t, name+"_db_events", float64(n)/storing.Seconds(), "events/s")
		guest.Record(t, name, float64((reading+storing).Nanoseconds())/float64(n), "ns/event")
		t.Logf("%s: %d events in %d transactions", name, n, txs)
	}
}

// runKmesd starts kmesd on db, waits until it stored every event the
// rings hold, stops it with SIGTERM and returns its summary.
func runKmesd(t *testing.T, ctx context.Context, db string) (stored, txs int, reading, storing time.Duration) {
	t.Helper()
	d := guest.DemoPlan().Daemon
	cmd := exec.CommandContext(ctx, d[0], append(d[1:], "--db", db, "--flush-interval", "50ms")...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	want := ringHeads(t)
	// kmesd handles SIGTERM once it has created the database.
	for !storedUpTo(db, want) {
		if ctx.Err() != nil {
			t.Fatalf("kmesd did not store the rings' events: %v; stderr:\n%s", ctx.Err(), stderr.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
	cmd.Process.Signal(unix.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%s: %v; stderr:\n%s", cmd, err, stderr.String())
	}
	m := kmesdSummary.FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("kmesd printed no summary:\n%s", stderr.String())
	}
	stored, _ = strconv.Atoi(m[1])
	txs, _ = strconv.Atoi(m[2])
	r, err1 := strconv.ParseFloat(m[3], 64)
	s, err2 := strconv.ParseFloat(m[4], 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("kmesd's summary %q: %v %v", m[0], err1, err2)
	}
	reading, storing = time.Duration(r*1e9), time.Duration(s*1e9)
	return stored, txs, reading, storing
}

// ringHeads returns the sequence number of the newest event of each
// CPU's ring: a Reader reads them all, without waiting.
func ringHeads(t *testing.T) map[int]uint64 {
	t.Helper()
	rd, err := kmes.NewReader(&kmes.Options{})
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	defer rd.Close()
	rd.SetDeadline(time.Unix(1, 0))
	heads := map[int]uint64{}
	views := make([]kmes.View, 256)
	for {
		n, err := rd.ReadEvents(views)
		for i := range views[:n] {
			heads[views[i].CPU()] = max(heads[views[i].CPU()], views[i].Sequence())
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return heads
		}
		if err != nil && !errors.Is(err, kmes.ErrCorrupt) {
			t.Fatalf("read the rings: %v", err)
		}
	}
}

// storedUpTo reports whether kmesd created db and its positions reached
// want.
func storedUpTo(db string, want map[int]uint64) bool {
	if _, err := os.Stat(db); err != nil {
		return false
	}
	s, err := sql.Open("sqlite", "file:"+db+"?mode=ro")
	if err != nil {
		return false
	}
	defer s.Close()
	for cpu, seq := range want {
		if seq == 0 {
			continue
		}
		var last uint64
		if err := s.QueryRow(`SELECT last_seq FROM positions WHERE cpu = ? ORDER BY last_seq DESC LIMIT 1`, cpu).Scan(&last); err != nil || last < seq {
			return false
		}
	}
	return true
}

// binPayload is a msgpack bin of size bytes in all.
func binPayload(t *testing.T, size int) []byte {
	switch {
	case size >= 2 && size-2 <= 0xff:
		return append([]byte{0xc4, byte(size - 2)}, make([]byte, size-2)...)
	case size >= 3 && size-3 <= 0xffff:
		return append([]byte{0xc5, byte((size - 3) >> 8), byte(size - 3)}, make([]byte, size-3)...)
	}
	t.Fatalf("no %d-byte payload", size)
	return nil
}
