package bench

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kmes-project/kmes/vm/guest"
)

const tracefs = "/sys/kernel/tracing"

// The user_events ioctls of include/uapi/linux/user_events.h. The UAPI
// declares them with a pointer type, so the size field is 8, not the size
// of the structure.
const (
	diagIocsreg   = 0xc0082a00 // _IOWR('*', 0, struct user_reg *)
	diagIocsunreg = 0x40082a02 // _IOW('*', 2, struct user_unreg *)
)

// The packed struct user_reg and struct user_unreg.
const (
	userRegSize          = 28
	userRegEnableBitOff  = 4
	userRegEnableSizeOff = 5
	userRegEnableAddrOff = 8
	userRegNameArgsOff   = 16
	userRegWriteIndexOff = 24
	userUnregSize        = 16
	userUnregAddrOff     = 8
)

// TestPeerWrites measures, like TestSyscalls measures kmes_emit, a write of
// a 64-byte and a 1 KiB record through the kernel's existing ways for a
// process to put records in a ring buffer, all into the ftrace ring buffer
// of CPU 0 (the thread is pinned there):
//
//   - user_events: writev(user_events_data, [write_index, data]) of a
//     registered and enabled event whose one field is char[N] data; the
//     trace entry is a trace_entry header and the N bytes.
//   - trace_marker_raw: write(trace_marker_raw, 4-byte id + N-4 bytes); the
//     entry is a raw_data_entry: a trace_entry header and the N bytes.
//   - trace_marker: write(trace_marker, N printable bytes); the entry is a
//     print_entry (trace_entry and ip) with the text, a '\n' and a NUL.
//
// N, 64 or 1024, is the caller's bytes: the size of the whole KMES event of
// the same name (emit_64B, emit_1KiB), whose 29-byte header is part of it;
// the peers add their own headers (and the ring buffer's event header) to
// the N bytes. Each measurement fails unless CPU 0's ring buffer counted
// (as entries plus overwritten entries) at least one entry per write: a
// write to a disabled event would measure nothing.
func TestPeerWrites(t *testing.T) {
	pinCPU0(t)
	mountTracefs(t)
	tracingOn(t)

	sizes := []struct{ size, n int }{{64, 100000}, {1024, 50000}}
	// user_events first: enabling its event expands the ring buffer to
	// its full size, which a trace_marker write does not, and every peer
	// should write into the same buffer.
	for _, s := range sizes {
		ev := newUserEvent(t, s.size)
		guest.Record(t, "user_events_"+sizeName(s.size), peerPerOp(t, "user_events "+ev.name, s.n, ev.write), "ns/event")
		ev.close(t)
	}
	for _, s := range sizes {
		m := newMarker(t, "trace_marker_raw", s.size)
		guest.Record(t, "trace_marker_raw_"+sizeName(s.size), peerPerOp(t, "trace_marker_raw", s.n, m.write), "ns/event")
		m.close()
	}
	for _, s := range sizes {
		m := newMarker(t, "trace_marker", s.size)
		guest.Record(t, "trace_marker_"+sizeName(s.size), peerPerOp(t, "trace_marker", s.n, m.write), "ns/event")
		m.close()
	}
}

// peerPerOp is perOp(n, 1, write) that fails the test when CPU 0's ring
// buffer did not count an entry for each write, warm-up included.
func peerPerOp(t *testing.T, what string, n int, write func() error) float64 {
	t.Helper()
	before := cpu0Stats(t)
	v := perOp(n, 1, func() {
		if err := write(); err != nil {
			t.Fatal(err)
		}
	})
	after := cpu0Stats(t)
	writes := int64(n + n/10)
	counted := after["entries"] + after["overrun"] - before["entries"] - before["overrun"]
	if counted < writes {
		t.Fatalf("%s: %d writes, but %s/per_cpu/cpu0/stats counted %d more entries (entries %d -> %d, overrun %d -> %d): the events were not recorded",
			what, writes, tracefs, counted, before["entries"], after["entries"], before["overrun"], after["overrun"])
	}
	if d := after["dropped events"] - before["dropped events"]; d != 0 {
		t.Fatalf("%s: the ring buffer of cpu 0 dropped %d events", what, d)
	}
	t.Logf("%s: %d writes, %d entries counted on cpu 0", what, writes, counted)
	return v
}

// mountTracefs mounts tracefs at /sys/kernel/tracing unless it is there.
func mountTracefs(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(tracefs + "/tracing_on"); err == nil {
		return
	}
	if err := os.MkdirAll(tracefs, 0o755); err != nil {
		t.Fatalf("mkdir %s: %v", tracefs, err)
	}
	if err := unix.Mount("tracefs", tracefs, "tracefs", 0, ""); err != nil && err != unix.EBUSY {
		t.Fatalf("mount(tracefs, %s): %v", tracefs, err)
	}
	if _, err := os.Stat(tracefs + "/tracing_on"); err != nil {
		t.Fatalf("tracefs: %v (a kernel without CONFIG_FTRACE?)", err)
	}
}

// tracingOn sets tracing_on to 1, and back to 0 at the end of the test if
// it was 0.
func tracingOn(t *testing.T) {
	t.Helper()
	const path = tracefs + "/tracing_on"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if strings.TrimSpace(string(b)) == "1" {
		return
	}
	writeTracefs(t, path, "1")
	t.Cleanup(func() {
		if err := os.WriteFile(path, []byte("0"), 0); err != nil {
			t.Errorf("write 0 to %s: %v", path, err)
		}
	})
}

func writeTracefs(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0); err != nil {
		t.Fatalf("write %s to %s: %v", s, path, err)
	}
}

// cpu0Stats returns the integer fields of per_cpu/cpu0/stats ("entries",
// "overrun", "dropped events", ...).
func cpu0Stats(t *testing.T) map[string]int64 {
	t.Helper()
	const path = tracefs + "/per_cpu/cpu0/stats"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	stats := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); ok && err == nil {
			stats[k] = n
		}
	}
	if _, ok := stats["entries"]; !ok {
		t.Fatalf("%s: no entries in %q", path, b)
	}
	if _, ok := stats["overrun"]; !ok {
		t.Fatalf("%s: no overrun in %q", path, b)
	}
	return stats
}

// userEvent is a registered and enabled user_event with one char[size]
// field, and the writev that emits it.
type userEvent struct {
	name    string
	fd      int
	enabled *uint32 // the enable word the kernel sets bit 0 of
	index   *uint32 // the write_index, the first 4 bytes of each write
	data    []byte
	iov     []unix.Iovec
}

func newUserEvent(t *testing.T, size int) *userEvent {
	t.Helper()
	const dataPath = tracefs + "/user_events_data"
	fd, err := unix.Open(dataPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v (a kernel without CONFIG_USER_EVENTS?)", dataPath, err)
	}
	ev := &userEvent{
		name: fmt.Sprintf("kmes_bench_%d", size), fd: fd,
		enabled: new(uint32), index: new(uint32), data: make([]byte, size),
	}
	for i := range ev.data {
		ev.data[i] = byte('a' + i%26)
	}
	nameArgs := append([]byte(fmt.Sprintf("%s char[%d] data", ev.name, size)), 0)
	reg := make([]byte, userRegSize)
	binary.LittleEndian.PutUint32(reg, userRegSize)
	reg[userRegEnableBitOff] = 0 // bit 0 of *ev.enabled
	reg[userRegEnableSizeOff] = 4
	binary.LittleEndian.PutUint64(reg[userRegEnableAddrOff:], uint64(uintptr(unsafe.Pointer(ev.enabled))))
	binary.LittleEndian.PutUint64(reg[userRegNameArgsOff:], uint64(uintptr(unsafe.Pointer(&nameArgs[0]))))
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), diagIocsreg, uintptr(unsafe.Pointer(&reg[0])))
	runtime.KeepAlive(nameArgs)
	if errno != 0 {
		unix.Close(fd)
		t.Fatalf("ioctl(DIAG_IOCSREG %s): %v", nameArgs[:len(nameArgs)-1], errno)
	}
	*ev.index = binary.LittleEndian.Uint32(reg[userRegWriteIndexOff:])
	ev.iov = make([]unix.Iovec, 2)
	ev.iov[0].Base, ev.iov[1].Base = (*byte)(unsafe.Pointer(ev.index)), &ev.data[0]
	ev.iov[0].SetLen(4)
	ev.iov[1].SetLen(size)

	enable := fmt.Sprintf("%s/events/user_events/%s/enable", tracefs, ev.name)
	if err := os.WriteFile(enable, []byte("1"), 0); err != nil {
		ev.close(t)
		t.Fatalf("write 1 to %s: %v", enable, err)
	}
	if atomic.LoadUint32(ev.enabled)&1 == 0 {
		ev.close(t)
		t.Fatalf("%s: enabled in %s, but the kernel did not set bit 0 of the enable word (%#x)", ev.name, enable, atomic.LoadUint32(ev.enabled))
	}
	return ev
}

// write is writev(fd, [write_index, data]).
func (ev *userEvent) write() error {
	n, _, errno := unix.RawSyscall(unix.SYS_WRITEV, uintptr(ev.fd), uintptr(unsafe.Pointer(&ev.iov[0])), uintptr(len(ev.iov)))
	if errno != 0 {
		return fmt.Errorf("writev(user_events_data %s): %w", ev.name, errno)
	}
	if int(n) != 4+len(ev.data) {
		return fmt.Errorf("writev(user_events_data %s): wrote %d of %d bytes", ev.name, n, 4+len(ev.data))
	}
	return nil
}

// close disables the event, unregisters the enable word and closes the
// file, the event's last reference: the kernel then deletes the event
// (it was not registered USER_EVENT_REG_PERSIST).
func (ev *userEvent) close(t *testing.T) {
	t.Helper()
	enable := fmt.Sprintf("%s/events/user_events/%s/enable", tracefs, ev.name)
	if err := os.WriteFile(enable, []byte("0"), 0); err != nil {
		t.Errorf("write 0 to %s: %v", enable, err)
	}
	unreg := make([]byte, userUnregSize)
	binary.LittleEndian.PutUint32(unreg, userUnregSize)
	binary.LittleEndian.PutUint64(unreg[userUnregAddrOff:], uint64(uintptr(unsafe.Pointer(ev.enabled))))
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(ev.fd), diagIocsunreg, uintptr(unsafe.Pointer(&unreg[0]))); errno != 0 {
		t.Errorf("ioctl(DIAG_IOCSUNREG %s): %v", ev.name, errno)
	}
	if err := unix.Close(ev.fd); err != nil {
		t.Errorf("close %s/user_events_data: %v", tracefs, err)
	}
	runtime.KeepAlive(ev.enabled)
	runtime.KeepAlive(ev.index)
	runtime.KeepAlive(ev.data)
}

// marker is an open trace_marker or trace_marker_raw and the size bytes
// written to it per call: for trace_marker_raw a 4-byte id and size-4
// bytes, for trace_marker size printable bytes.
type marker struct {
	file string
	fd   int
	buf  []byte
}

func newMarker(t *testing.T, file string, size int) *marker {
	t.Helper()
	path := tracefs + "/" + file
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	m := &marker{file: file, fd: fd, buf: make([]byte, size)}
	for i := range m.buf {
		m.buf[i] = byte('a' + i%26)
	}
	if file == "trace_marker_raw" {
		binary.LittleEndian.PutUint32(m.buf, 0x6b6d6573) // the id
	}
	return m
}

// write is write(fd, buf).
func (m *marker) write() error {
	n, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(m.fd), uintptr(unsafe.Pointer(&m.buf[0])), uintptr(len(m.buf)))
	if errno != 0 {
		return fmt.Errorf("write(%s): %w", m.file, errno)
	}
	if int(n) != len(m.buf) {
		return fmt.Errorf("write(%s): wrote %d of %d bytes", m.file, n, len(m.buf))
	}
	return nil
}

func (m *marker) close() {
	unix.Close(m.fd)
	runtime.KeepAlive(m.buf)
}
