// Package kmesguest tests the KMES system calls and rings from userspace,
// through the Go library (userspace/kmes), kmesctl and kmes-demo, inside
// the guest. It runs as root: CAP_SYS_ADMIN exempts the emitters from the
// rate limit. The guest runs the debug kernel, where a system call costs
// about 20 times what it does on the plain one: loops are kept small.
package kmesguest

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/userspace/kmes/abi"
	"github.com/kmes-project/kmes/vm/guest"
)

func TestMain(m *testing.M) { guest.Main(m) }

// readTimeout bounds every wait for events that were emitted: they are in
// the ring already, so only a bug makes it run out.
const readTimeout = 20 * time.Second

// targetCPU is the CPU the tests emit on: the last one, so that smp4 tests
// another ring than CPU 0's.
func targetCPU() int { return runtime.NumCPU() - 1 }

// pin locks the calling goroutine to its OS thread and that thread to cpu,
// so that every event it emits goes to cpu's ring. The thread is never
// unlocked: it ends with the goroutine instead of taking its affinity back
// to the scheduler.
func pin(t testing.TB, cpu int) {
	t.Helper()
	if err := pinTo(cpu); err != nil {
		t.Fatal(err)
	}
}

// pinTo is pin for goroutines other than the test's.
func pinTo(cpu int) error {
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("sched_setaffinity cpu %d: %w", cpu, err)
	}
	return nil
}

// emitOn emits one event on cpu, from a goroutine whose thread dies
// pinned to it.
func emitOn(cpu int, typ string, payload []byte) error {
	errc := make(chan error, 1)
	go func() {
		if err := pinTo(cpu); err != nil {
			errc <- err
			return
		}
		errc <- kmes.Emit(typ, payload)
	}()
	return <-errc
}

// readerFor returns a Reader of cpu's ring (closed at the end of the
// test), at the current end of the ring or, fromEnd false, at its oldest
// surviving event.
func readerFor(t testing.TB, cpu int, fromEnd bool) *kmes.Reader {
	t.Helper()
	rds, err := kmes.NewReaders(&kmes.Options{FromEnd: fromEnd})
	if err != nil {
		t.Fatalf("NewReaders: %v", err)
	}
	var rd *kmes.Reader
	for _, r := range rds {
		if r.CPUs()[0] == cpu && rd == nil {
			rd = r
			continue
		}
		r.Close()
	}
	if rd == nil {
		t.Fatalf("NewReaders returned %d rings, none of cpu %d", len(rds), cpu)
	}
	t.Cleanup(func() { rd.Close() })
	return rd
}

// readUntil reads rd until it has n records that keep accepts, and returns
// those (copies). It fails the test if they have not all come within
// readTimeout.
func readUntil(t testing.TB, rd *kmes.Reader, n int, keep func(*kmes.Record) bool) []*kmes.Record {
	t.Helper()
	var timedOut atomic.Bool
	timer := time.AfterFunc(readTimeout, func() {
		timedOut.Store(true)
		rd.Close()
	})
	defer timer.Stop()
	var (
		got []*kmes.Record
		rec kmes.Record
	)
	for len(got) < n {
		err := rd.Read(&rec)
		switch {
		case errors.Is(err, kmes.ErrClosed) && timedOut.Load():
			t.Fatalf("read %d of %d events in %v", len(got), n, readTimeout)
		case err != nil:
			t.Fatalf("read after %d of %d events: %v", len(got), n, err)
		}
		if keep(&rec) {
			got = append(got, rec.Clone())
		}
	}
	return got
}

// ofType keeps the records of one type.
func ofType(typ string) func(*kmes.Record) bool {
	return func(r *kmes.Record) bool { return r.Type == typ }
}

// emit is kmes.Emit, failing the test on an error: a kernel without the
// KMES calls (ENOSYS) is a failure, not a skip.
func emit(t testing.TB, typ string, payload []byte) {
	t.Helper()
	if err := kmes.Emit(typ, payload); err != nil {
		t.Fatalf("Emit(%q, % x): %v", typ, head(payload), err)
	}
}

// head abbreviates a payload for messages.
func head(b []byte) []byte {
	if len(b) > 16 {
		return b[:16]
	}
	return b
}

// bin returns a msgpack bin16 payload of exactly size bytes, the first
// eight bytes of its data being tag (little-endian).
func bin(size int, tag uint64) []byte {
	p := make([]byte, size)
	p[0] = 0xc5
	p[1], p[2] = byte((size-3)>>8), byte(size-3)
	for i := 0; i < 8 && 3+i < size; i++ {
		p[3+i] = byte(tag >> (8 * i))
	}
	return p
}

// eventSize is the size in the ring of an event: header, type, payload.
func eventSize(typ string, payload []byte) int { return abi.HdrBaseSize + len(typ) + len(payload) }

// checkRecord compares a record with what was emitted on cpu.
func checkRecord(r *kmes.Record, cpu int, typ string, payload []byte) error {
	switch {
	case r.Type != typ:
		return fmt.Errorf("type %q, want %q", r.Type, typ)
	case string(r.Payload) != string(payload):
		return fmt.Errorf("%s: payload % x (%d bytes), want % x (%d bytes)", typ, head(r.Payload), len(r.Payload), head(payload), len(payload))
	case r.Origin != kmes.OriginUser:
		return fmt.Errorf("%s: origin %d, want %d (userspace)", typ, r.Origin, kmes.OriginUser)
	case r.CPU != cpu:
		return fmt.Errorf("%s: cpu %d, want %d (the emitter was pinned there)", typ, r.CPU, cpu)
	case r.Sequence == 0:
		return fmt.Errorf("%s: sequence 0, which KMES never uses", typ)
	}
	return nil
}
