// Package bench measures KMES inside the guest for 'make bench'. Run under
// -icount shift=0, a guest nanosecond is one executed instruction, so the
// numbers are instructions and repeat exactly from run to run.
package bench

import (
	"bytes"
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
	"github.com/kmes-project/kmes/userspace/kmes/abi"
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
// events. The host checks the targets (vm.BenchTargets). The guest runs as
// root: CAP_SYS_ADMIN exempts it from the rate limit.
func TestSyscalls(t *testing.T) {
	guest.Record(t, "getppid", perOp(200000, 1, func() { unix.Getppid() }), "ns/call")

	ev64, ev1k := newEvent(t, 64), newEvent(t, 1024)
	if err := ev64.emit(); err == unix.ENOSYS {
		t.Fatalf("kmes_emit (syscall %d): ENOSYS: this kernel has no KMES system calls (built without the syscall patches or with CONFIG_KMES=n)", abi.SysEmit)
	} else if err != nil {
		t.Fatalf("kmes_emit of a 64-byte event: %v", err)
	}
	guest.Record(t, "emit_64B", perOp(200000, 1, func() { must(t, "kmes_emit", ev64.emit()) }), "ns/event")
	guest.Record(t, "emit_1KiB", perOp(100000, 1, func() { must(t, "kmes_emit", ev1k.emit()) }), "ns/event")

	for _, count := range []int{16, 64, 256} {
		b := newBatch(ev64, count)
		perEvent := perOp(400000/count, count, func() { must(t, "kmes_emit_batch", b.emit()) })
		guest.Record(t, fmt.Sprintf("emit_batch%d_64B", count), perEvent, "ns/event")
	}
}

// pinCPU0 locks the test's goroutine to its thread and the thread to
// CPU 0. It does not unlock: the thread ends with the test, and no other
// goroutine runs on it pinned.
func pinCPU0(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(0)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		t.Fatalf("sched_setaffinity: %v", err)
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
	n := size - abi.HdrBaseSize - len(benchType)
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
	_, _, errno := unix.RawSyscall6(abi.SysEmit,
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
	b := batch{ev: ev, entries: make([]byte, count*abi.EmitEntrySize), count: count, emitted: new(uint32)}
	for i := 0; i < count; i++ {
		e := b.entries[i*abi.EmitEntrySize:]
		binary.LittleEndian.PutUint64(e[abi.EmitEntryTypeOff:], uint64(uintptr(unsafe.Pointer(&ev.typ[0]))))
		binary.LittleEndian.PutUint16(e[abi.EmitEntryTypeLenOff:], uint16(len(ev.typ)))
		binary.LittleEndian.PutUint64(e[abi.EmitEntryPayloadOff:], uint64(uintptr(unsafe.Pointer(&ev.payload[0]))))
		binary.LittleEndian.PutUint32(e[abi.EmitEntryPayloadLenOff:], uint32(len(ev.payload)))
	}
	return b
}

// emit is kmes_emit_batch(entries, count, &emitted); it fails unless every
// entry was emitted.
func (b batch) emit() error {
	_, _, errno := unix.RawSyscall(abi.SysEmitBatch,
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

// TestKernelEmit64 runs the in-kernel emit of a 64-byte event (a 5-byte
// type and a 30-byte payload) through debugfs kmes/bench, which times only
// the emissions into a new ring of 4 MiB: kernel_emit_64B for 60,000
// events, which fit it (as a BPF ring buffer's records must), and
// kernel_emit_64B_full for 1,000,000, most of which overwrite the oldest
// event first, as a ring full with unread events does.
func TestKernelEmit64(t *testing.T) {
	for _, r := range []struct {
		name string
		n    uint64
	}{{"kernel_emit_64B", 60000}, {"kernel_emit_64B_full", 1000000}} {
		fields := debugfsRun(t, "bench", int(r.n))
		if fields["events"] != r.n || fields["elapsed_ns"] == 0 {
			t.Fatalf("kmes/bench: %v, want %d events and a time", fields, r.n)
		}
		guest.Record(t, r.name, float64(fields["elapsed_ns"])/float64(fields["events"]), "ns/event")
	}
}

// TestFloor records the floor of a 64-byte event: what each step KMES.md
// mandates for it costs on its own, done the cheapest way (debugfs
// kmes/floor), and their sums for the three ways to emit it:
//   - floor_emit_64B, one kmes_emit: a system call round trip (getppid),
//     a timestamp, a sequence number, the header, one copy from
//     userspace, the type and payload validation, the ring copy and the
//     release store of write_pos;
//   - floor_batch256_64B, per event of a kmes_emit_batch of 256: the
//     same, with the copy of its entry, and the round trip, the timestamp
//     and the release shared by the 256;
//   - floor_kernel_64B, kmes_emit() in the kernel: nothing to copy from
//     userspace or validate.
func TestFloor(t *testing.T) {
	const n = 800 * 256 // kmes/floor runs whole batches of 256 entries
	getppid := perOp(n, 1, func() { unix.Getppid() })
	f := debugfsRun(t, "floor", n)
	if f["iterations"] != n {
		t.Fatalf("kmes/floor: %v, want %d iterations", f, n)
	}
	step := map[string]float64{}
	for _, s := range []string{"timestamp", "sequence", "header", "copy_from_user", "validate", "ring_copy", "release", "entry_copy"} {
		v, ok := f[s]
		if !ok {
			t.Fatalf("kmes/floor has no step %q: %v", s, f)
		}
		step[s] = float64(v) / n
		guest.Record(t, "floor_"+s, step[s], "ns/event")
	}
	perEvent := step["sequence"] + step["header"] + step["copy_from_user"] + step["validate"] + step["ring_copy"]
	shared := getppid + step["timestamp"] + step["release"]
	guest.Record(t, "floor_emit_64B", perEvent+shared, "ns/event")
	guest.Record(t, "floor_batch256_64B", perEvent+step["entry_copy"]+shared/256, "ns/event")
	guest.Record(t, "floor_kernel_64B", step["timestamp"]+step["sequence"]+step["header"]+step["ring_copy"]+step["release"], "ns/event")
}

// debugfsRun writes n to debugfs kmes/<name> and returns the "key value"
// lines it then reads back.
func debugfsRun(t *testing.T, name string, n int) map[string]uint64 {
	t.Helper()
	mountDebugfs(t)
	path := debugfs + "/kmes/" + name
	if err := os.WriteFile(path, []byte(strconv.Itoa(n)), 0o600); err != nil {
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
	return fields
}

// TestDrain measures the consumer side: a Reader draining a ring that
// already holds its events (emitted first with EmitBatch, then only the
// drain is timed), per event, in MB/s and in events/s for 64-byte and
// 1 KiB events (TestBPFDrain records the same for the BPF ring buffer),
// beside a plain copy() of the 1 KiB events' bytes. Under icount a second
// is 1e9 instructions, so MB/s reads MB per 1e9 instructions. Three ways:
//
//   - drain_*: ReadEvents into 256 Views, every payload byte of every
//     event read (compared with what was emitted), as a consumer would;
//   - drain_views_*: the same without reading the payloads: the library's
//     own cost;
//   - drain_record_*: Read into a Record, one event a call, payloads not
//     read (the only way before ReadEvents).
//
// The ratios to the copy (goal >= 0.5 for drain_views) are recorded, not
// enforced.
func TestDrain(t *testing.T) {
	pinCPU0(t)
	rd, err := kmes.NewReader(&kmes.Options{FromEnd: true, CPUs: []int{0}})
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	defer rd.Close()
	capacity := rd.Stats()[0].Capacity
	// The first drain faults the mapping in; the next ones are timed.
	drain(t, rd, capacity, 64, drainViews)
	for _, size := range []int{64, 1024} {
		var views drainResult
		for _, how := range []drainHow{drainRead, drainViews, drainRecord} {
			d := drain(t, rd, capacity, size, how)
			name := "drain" + how.String() + "_" + sizeName(size)
			guest.Record(t, name, d.nsPerEvent, "ns/event")
			guest.Record(t, name+"_rate", d.mbps, "MB/s")
			guest.Record(t, name+"_events", 1e9/d.nsPerEvent, "events/s")
			if how == drainViews {
				views = d
			}
		}
		if size != 1024 {
			continue
		}
		cp := copyRate(views.bytes)
		guest.Record(t, "copy_1KiB_rate", cp, "MB/s")
		ratio := views.mbps / cp
		guest.Record(t, "drain_views_per_copy_1KiB", ratio, "ratio")
		if ratio < 0.5 {
			t.Logf("drain_views_per_copy_1KiB = %.3f: the goal is >= 0.5 (recorded, not enforced)", ratio)
		}
	}
}

type drainHow int

const (
	drainRead   drainHow = iota // views, every payload byte read
	drainViews                  // views, payloads not read
	drainRecord                 // Read into a Record, payloads not read
)

func (h drainHow) String() string { return [...]string{"", "_views", "_record"}[h] }

func sizeName(size int) string {
	if size%1024 == 0 {
		return fmt.Sprintf("%dKiB", size/1024)
	}
	return fmt.Sprintf("%dB", size)
}

type drainResult struct {
	nsPerEvent, mbps float64
	bytes            int
}

// drain fills nine tenths of CPU 0's ring (no event is overwritten) with
// events of size bytes and times rd, which is at the end of the ring,
// reading all of them the way how says.
func drain(t *testing.T, rd *kmes.Reader, capacity uint64, size int, how drainHow) drainResult {
	t.Helper()
	ev := newEvent(t, size)
	n := int(capacity) * 9 / 10 / size
	evs := make([]kmes.Event, n)
	for i := range evs {
		evs[i] = kmes.Event{Type: string(ev.typ), Payload: ev.payload}
	}
	if emitted, err := kmes.EmitBatch(evs); err != nil || emitted != n {
		t.Fatalf("EmitBatch of %d %d-byte events: emitted %d, %v", n, size, emitted, err)
	}
	views := make([]kmes.View, 256)
	var rec kmes.Record
	var first, last uint64
	var lastSize, differ int
	// A collection still marking after the allocations above would run
	// beside the drain on the one vCPU and be counted with it.
	runtime.GC()
	start := time.Now()
	switch how {
	case drainRecord:
		for i := 0; i < n; i++ {
			if err := rd.Read(&rec); err != nil {
				t.Fatalf("read event %d of %d: %v", i, n, err)
			}
			if i == 0 {
				first = rec.Sequence
			}
		}
		last, lastSize = rec.Sequence, len(rec.Raw())
	default:
		for i := 0; i < n; {
			got, err := rd.ReadEvents(views)
			if err != nil {
				t.Fatalf("read events %d.. of %d: %v", i, n, err)
			}
			if how == drainRead {
				for j := range views[:got] {
					if !bytes.Equal(views[j].Payload(), ev.payload) {
						differ++
					}
				}
			}
			if i == 0 {
				first = views[0].Sequence()
			}
			i += got
			last, lastSize = views[got-1].Sequence(), len(views[got-1].Raw())
		}
	}
	elapsed := time.Since(start)
	// Only the benchmark emits here: the drain must have read exactly the
	// events emitted, none lost, or it measured something else.
	if last-first != uint64(n-1) || lastSize != size || differ != 0 {
		t.Fatalf("drained sequences %d..%d (%d events, the last of %d bytes, %d payloads not as emitted), want %d events of %d bytes",
			first, last, n, lastSize, differ, n, size)
	}
	total := n * size
	return drainResult{
		nsPerEvent: float64(elapsed.Nanoseconds()) / float64(n),
		mbps:       float64(total) / 1e6 / elapsed.Seconds(),
		bytes:      total,
	}
}

// copyRate returns the MB/s of one copy() of n bytes between two buffers
// of their own, after a warm-up copy that faults the pages in.
func copyRate(n int) float64 {
	src, dst := make([]byte, n), make([]byte, n)
	for i := range src {
		src[i] = byte(i)
	}
	copy(dst, src)
	start := time.Now()
	copy(dst, src)
	elapsed := time.Since(start)
	runtime.KeepAlive(dst)
	return float64(n) / 1e6 / elapsed.Seconds()
}

// TestSwap fills every ring (4 MiB of 1 KiB events, from a thread pinned to
// each CPU), writes 8 MiB to kernel.kmes.buffer_capacity and reports how
// long the write took and what the kernel logged for the swap: the longest
// time a CPU took, and the longest it spent with preemption and with
// interrupts disabled. Under icount these are instructions, and a
// rep movsb counts one per byte, so the copy is overstated against real
// hardware (see README, make bench).
func TestSwap(t *testing.T) {
	const sysctl = "/proc/sys/kernel/kmes/buffer_capacity"
	old, err := os.ReadFile(sysctl)
	if err != nil {
		t.Fatalf("read %s: %v", sysctl, err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(sysctl, old, 0); err != nil {
			t.Errorf("restore %s: %v", sysctl, err)
		}
	})
	ev := newEvent(t, 1024)
	for cpu := 0; cpu < runtime.NumCPU(); cpu++ {
		fillCPU(t, cpu, ev, 5<<20/1024)
	}

	start := time.Now()
	if err := os.WriteFile(sysctl, []byte("8388608"), 0); err != nil {
		t.Fatalf("write 8388608 to %s: %v", sysctl, err)
	}
	guest.Record(t, "swap_4MiB_to_8MiB_write", float64(time.Since(start).Microseconds()), "us")

	line := kernelLogLine(t, "rings of 8388608 bytes")
	var nr, gen, longest, preempt, irqs uint64
	if _, err := fmt.Sscanf(line[strings.Index(line, "kmes: "):], "kmes: %d rings of 8388608 bytes, generation %d: longest CPU %d us, preemption off %d us, interrupts off %d ns",
		&nr, &gen, &longest, &preempt, &irqs); err != nil {
		t.Fatalf("kernel log line %q: %v", line, err)
	}
	guest.Record(t, "swap_4MiB_to_8MiB_longest_cpu", float64(longest), "us")
	guest.Record(t, "swap_4MiB_to_8MiB_preempt_off", float64(preempt), "us")
	guest.Record(t, "swap_4MiB_to_8MiB_irqs_off", float64(irqs), "ns")
}

// fillCPU emits n events from a thread pinned to cpu.
func fillCPU(t *testing.T, cpu int, ev event, n int) {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			errc <- fmt.Errorf("pin to cpu %d: %w", cpu, err)
			return
		}
		for i := 0; i < n; i++ {
			if err := ev.emit(); err != nil {
				errc <- fmt.Errorf("kmes_emit on cpu %d: %w", cpu, err)
				return
			}
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// kernelLogLine returns the last kernel log line that contains s.
func kernelLogLine(t *testing.T, s string) string {
	lines := strings.Split(guest.KernelLog(t), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], s) {
			return lines[i]
		}
	}
	t.Fatalf("no kernel log line with %q", s)
	return ""
}
