package kmesguest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/sys/unix"

	"github.com/kmes-project/kmes/vm/guest"
)

// kmesdRun is kmesd running as 'make run' starts it (guest.DemoPlan's
// Daemon), with a database of the test's own.
type kmesdRun struct {
	cmd    *exec.Cmd
	stderr lockedBuffer
}

func startKmesd(t *testing.T, ctx context.Context, db string) *kmesdRun {
	t.Helper()
	d := guest.DemoPlan().Daemon
	k := &kmesdRun{cmd: command(t, ctx, d[0], append(d[1:], "--db", db, "--flush-interval", "50ms")...)}
	k.cmd.Stderr = &k.stderr
	if err := k.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", k.cmd, err)
	}
	t.Cleanup(func() {
		if k.cmd.ProcessState == nil {
			k.cmd.Process.Kill()
			k.cmd.Wait()
		}
	})
	// kmesd opens its database after it set up its SIGTERM handler: once
	// it holds the file open, SIGTERM stops it cleanly.
	deadline := time.Now().Add(time.Minute)
	fds := fmt.Sprintf("/proc/%d/fd", k.cmd.Process.Pid)
	for {
		entries, _ := os.ReadDir(fds)
		for _, e := range entries {
			if target, _ := os.Readlink(filepath.Join(fds, e.Name())); target == db {
				return k
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: its database not open after a minute; stderr:\n%s", k.cmd, k.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lockedBuffer is a bytes.Buffer that exec's copying goroutine writes
// while the test may read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// stop sends sig and waits: SIGTERM must end kmesd with status 0 and its
// summary line, SIGKILL kills it.
func (k *kmesdRun) stop(t *testing.T, sig unix.Signal) {
	t.Helper()
	if err := k.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	err := k.cmd.Wait()
	if sig == unix.SIGKILL {
		return
	}
	summary := regexp.MustCompile(`^kmesd: \d+ events stored in \d+ transactions \(\d+ lost, \d+ dropped before them\); CPU time reading \d+\.\d{6} s, storing \d+\.\d{6} s\n$`)
	if err != nil || !summary.MatchString(k.stderr.String()) {
		t.Fatalf("%s after %s: %v; stderr, want only the summary:\n%s", k.cmd, sig, err, k.stderr.String())
	}
}

// queryEvent is a line of 'kmesctl query' (JSON): an event or a loss.
type queryEvent struct {
	CPU     *int            `json:"cpu"`
	Seq     uint64          `json:"seq"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
	Lost    *uint64         `json:"lost"`
}

// query runs 'kmesctl query --db db' with args and parses its lines.
func query(t *testing.T, ctx context.Context, db string, args ...string) []queryEvent {
	t.Helper()
	q := command(t, ctx, "kmesctl", append([]string{"query", "--db", db}, args...)...)
	var stderr bytes.Buffer
	q.Stderr = &stderr
	out, err := q.Output()
	if err != nil {
		t.Fatalf("%s: %v; stderr:\n%s", q, err, stderr.String())
	}
	var evs []queryEvent
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l == "" {
			continue
		}
		var e queryEvent
		if err := json.Unmarshal([]byte(l), &e); err != nil || e.CPU == nil {
			t.Fatalf("%s printed %q: not an event or loss line (%v)", q, l, err)
		}
		evs = append(evs, e)
	}
	return evs
}

// TestKmesd runs kmesd on the kernel's rings, as 'make run' does, and
// reads what it stored with kmesctl query: every event the test emits is
// stored once, across a restart (events emitted while it was stopped
// included) and a SIGKILL mid-stream; the demo's own query prints them.
func TestKmesd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	db := filepath.Join(t.TempDir(), "events.db")
	typ := fmt.Sprintf("kmesd.test.%d", time.Now().UnixNano())
	n := 0
	// emitN emits count events of typ, spread over the CPUs, payload {"n": n}.
	emitN := func(count int) {
		t.Helper()
		for range count {
			n++
			p, err := msgpack.Marshal(map[string]int{"n": n})
			if err != nil {
				t.Fatal(err)
			}
			if err := emitOn(n%runtime.NumCPU(), typ, p); err != nil {
				t.Fatalf("emit event %d: %v", n, err)
			}
		}
	}
	// stored waits until query shows the n events of typ, each once
	// (the database's key makes a (cpu, seq) unique: a repeat would be
	// an event stored twice under two sequence numbers).
	stored := func() {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			ours := map[int]int{}
			for _, e := range query(t, ctx, db, "--type", typ) {
				if e.Lost != nil {
					continue
				}
				var p struct{ N int }
				if err := json.Unmarshal(e.Payload, &p); err != nil {
					t.Fatalf("payload %s: %v", e.Payload, err)
				}
				ours[p.N]++
			}
			missing := 0
			for i := 1; i <= n; i++ {
				switch ours[i] {
				case 0:
					missing++
				case 1:
				default:
					t.Fatalf("event %d stored %d times", i, ours[i])
				}
			}
			if len(ours) > n {
				t.Fatalf("%d events of %s stored, %d emitted", len(ours), typ, n)
			}
			if missing == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("after 2 minutes, %d of the %d events emitted are not stored", missing, n)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	k := startKmesd(t, ctx, db)
	emitN(100)
	stored()
	k.stop(t, unix.SIGTERM)

	emitN(50) // while it is stopped
	k = startKmesd(t, ctx, db)
	emitN(50)
	stored()

	emitN(100)
	k.stop(t, unix.SIGKILL) // some of them may not be committed yet
	k = startKmesd(t, ctx, db)
	stored()
	k.stop(t, unix.SIGTERM)

	// The demo's query prints them, for people.
	d := guest.DemoPlan()
	q := command(t, ctx, d.Query[0], append(d.Query[1:], "--db", db, "--type", typ)...)
	out, err := q.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", q, err, out)
	}
	// Loss lines (events the earlier tests had dropped) may come first.
	if lines := strings.Count(string(out), " "+typ+" {"); lines != n {
		t.Errorf("%s printed %d lines of %s, want %d:\n%s", q, lines, typ, n, out)
	}
}
