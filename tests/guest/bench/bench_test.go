// Package bench measures KMES inside the guest for 'make bench'. Run under
// -icount shift=0, a guest nanosecond is one executed instruction, so the
// numbers are instructions and repeat exactly from run to run.
package bench

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/vm/guest"
)

func TestMain(m *testing.M) { guest.Main(m) }

const debugfs = "/sys/kernel/debug"

func mountDebugfs(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(debugfs + "/kmes"); err == nil {
		return
	}
	if err := unix.Mount("debugfs", debugfs, "debugfs", 0, ""); err != nil && err != unix.EBUSY {
		t.Fatalf("mount debugfs: %v", err)
	}
}

// TestSyscalls measures, in instructions under icount, a getppid round
// trip (the baseline the syscall targets are stated against), kmes_emit of a
// 64-byte and a 1 KiB event and kmes_emit_batch of 16, 64 and 256 64-byte
// events, and fails when a ratio misses its target. The guest runs as root:
// CAP_SYS_ADMIN exempts it from the rate limit.
func TestSyscalls(t *testing.T) {
	getppid := perOp(200000, 1, func() { unix.Getppid() })
	guest.Record(t, "getppid", getppid, "ns/call")

	ev64, ev1k := newEvent(t, 64), newEvent(t, 1024)
	if err := ev64.emit(); err == unix.ENOSYS {
		t.Fatalf("kmes_emit (syscall %d): ENOSYS: this kernel has no KMES system calls (built without the syscall patches or with CONFIG_KMES=n)", kmes.SysEmit)
	} else if err != nil {
		t.Fatalf("kmes_emit of a 64-byte event: %v", err)
	}
	emit64 := perOp(200000, 1, func() { must(t, "kmes_emit", ev64.emit()) })
	guest.Record(t, "emit_64B", emit64, "ns/event")
	guest.Record(t, "emit_1KiB", perOp(100000, 1, func() { must(t, "kmes_emit", ev1k.emit()) }), "ns/event")

	var batch256 float64
	for _, count := range []int{16, 64, 256} {
		b := newBatch(ev64, count)
		perEvent := perOp(400000/count, count, func() { must(t, "kmes_emit_batch", b.emit()) })
		guest.Record(t, fmt.Sprintf("emit_batch%d_64B", count), perEvent, "ns/event")
		batch256 = perEvent
	}

	for _, r := range []struct {
		name        string
		cost, limit float64
	}{
		{"emit_64B_per_getppid", emit64 / getppid, 2},
		{"emit_batch256_64B_per_getppid", batch256 / getppid, 0.25},
	} {
		guest.Record(t, r.name, r.cost, "ratio")
		if r.cost > r.limit {
			t.Errorf("%s = %.3f: the target is <= %g", r.name, r.cost, r.limit)
		}
	}
}

// perOp runs f n times after a warm-up and returns the time per op, with
// ops operations per call of f.
func perOp(n, ops int, f func()) float64 {
	for i := 0; i < n/10; i++ {
		f()
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		f()
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n*ops)
}

func must(t *testing.T, call string, err error) {
	if err != nil {
		t.Fatalf("%s: %v", call, err)
	}
}

// benchType is the event type of every benchmark event.
var benchType = []byte("bench")

// event is a kmes_emit event of a given size: 29 + type_len + payload_len
// bytes, the payload one msgpack bin filling the rest.
type event struct {
	typ, payload []byte
}

func newEvent(t *testing.T, size int) event {
	n := size - kmes.HdrBaseSize - len(benchType)
	var p []byte
	switch {
	case n >= 2 && n-2 <= 0xff:
		p = append([]byte{0xc4, byte(n - 2)}, make([]byte, n-2)...) // bin8
	case n >= 3 && n-3 <= 0xffff:
		p = append([]byte{0xc5, byte((n - 3) >> 8), byte(n - 3)}, make([]byte, n-3)...) // bin16
	default:
		t.Fatalf("no %d-byte event", size)
	}
	return event{typ: benchType, payload: p}
}

// emit is kmes_emit(type, type_len, payload, payload_len). The buffers are
// on the heap, which does not move, and live as long as e.
func (e event) emit() error {
	_, _, errno := unix.RawSyscall6(kmes.SysEmit,
		uintptr(unsafe.Pointer(&e.typ[0])), uintptr(len(e.typ)),
		uintptr(unsafe.Pointer(&e.payload[0])), uintptr(len(e.payload)), 0, 0)
	runtime.KeepAlive(e)
	if errno != 0 {
		return errno
	}
	return nil
}

// batch is a kmes_emit_batch call: count struct kmes_emit_entry of 32 bytes
// (userspace/kmes's EmitEntry* layout), all pointing at one event.
type batch struct {
	ev      event
	entries []byte
	count   int
	emitted *uint32
}

func newBatch(ev event, count int) batch {
	b := batch{ev: ev, entries: make([]byte, count*kmes.EmitEntrySize), count: count, emitted: new(uint32)}
	for i := 0; i < count; i++ {
		e := b.entries[i*kmes.EmitEntrySize:]
		binary.LittleEndian.PutUint64(e[kmes.EmitEntryTypeOff:], uint64(uintptr(unsafe.Pointer(&ev.typ[0]))))
		binary.LittleEndian.PutUint16(e[kmes.EmitEntryTypeLenOff:], uint16(len(ev.typ)))
		binary.LittleEndian.PutUint64(e[kmes.EmitEntryPayloadOff:], uint64(uintptr(unsafe.Pointer(&ev.payload[0]))))
		binary.LittleEndian.PutUint32(e[kmes.EmitEntryPayloadLenOff:], uint32(len(ev.payload)))
	}
	return b
}

// emit is kmes_emit_batch(entries, count, &emitted); it fails unless every
// entry was emitted.
func (b batch) emit() error {
	_, _, errno := unix.RawSyscall(kmes.SysEmitBatch,
		uintptr(unsafe.Pointer(&b.entries[0])), uintptr(b.count), uintptr(unsafe.Pointer(b.emitted)))
	runtime.KeepAlive(b)
	if errno != 0 {
		return fmt.Errorf("%w after %d of %d events", errno, *b.emitted, b.count)
	}
	if int(*b.emitted) != b.count {
		return fmt.Errorf("emitted %d of %d events", *b.emitted, b.count)
	}
	return nil
}

// TestKernelEmit64 runs the in-kernel emit of a 64-byte payload through
// debugfs kmes/bench, which times only the emissions.
func TestKernelEmit64(t *testing.T) {
	mountDebugfs(t)
	const path = debugfs + "/kmes/bench"
	if err := os.WriteFile(path, []byte("1000000"), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]uint64{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, _ := strings.Cut(line, " ")
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s: bad line %q", path, line)
		}
		fields[k] = n
	}
	if fields["events"] != 1000000 || fields["elapsed_ns"] == 0 {
		t.Fatalf("%s: %q, want 1000000 events and a time", path, b)
	}
	guest.Record(t, "kernel_emit_64B", float64(fields["elapsed_ns"])/float64(fields["events"]), "ns/event")
	fmt.Printf("kernel emit ran on cpu %d\n", fields["cpu"])
}
