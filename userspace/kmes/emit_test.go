//go:build linux && amd64

package kmes

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hostHasKMES skips a test that needs the host kernel to lack KMES.
func hostHasKMES(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/proc/sys/kernel/kmes"); err == nil {
		t.Skip("the kernel has KMES; this test needs one without it")
	}
}

// withSysctls points the limits at a directory holding the given sysctl
// values for the test's duration.
func withSysctls(t *testing.T, values map[string]string) {
	t.Helper()
	dir := t.TempDir()
	for name, v := range values {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := sysctlDir
	sysctlDir = dir
	cachedLimits.Store(nil)
	t.Cleanup(func() {
		sysctlDir = old
		cachedLimits.Store(nil)
	})
}

func TestEmitRejectsBeforeSyscall(t *testing.T) {
	withSysctls(t, map[string]string{"max_event_size": "1024", "max_nesting_depth": "4"})
	deep := []byte{0x91, 0x91, 0x91, 0x91, 0x91, 0xc0} // depth 5
	for _, c := range []struct {
		name    string
		typ     string
		payload []byte
		errno   unix.Errno
		reason  error
		text    string
	}{
		{"empty type", "", []byte{0xc0}, unix.EINVAL, ErrInvalidType,
			"kmes_emit: invalid argument (invalid event type: empty)"},
		{"bad UTF-8 type", "a\xffb", []byte{0xc0}, unix.EINVAL, ErrInvalidType,
			"kmes_emit: invalid argument (invalid event type: not UTF-8 at offset 1)"},
		{"empty payload", "t", nil, unix.EINVAL, ErrInvalidPayload,
			"kmes_emit: invalid argument (invalid payload: msgpack: empty payload)"},
		{"trailing bytes", "t", []byte{0xc0, 0xc0}, unix.EINVAL, ErrInvalidPayload,
			"kmes_emit: invalid argument (invalid payload: msgpack: trailing bytes at offset 1 (1 after the value))"},
		{"too deep for the sysctl", "t", deep, unix.EINVAL, ErrInvalidPayload,
			"kmes_emit: invalid argument (invalid payload: msgpack: nesting deeper than 4 at offset 4)"},
		{"larger than max_event_size", "tt", make([]byte, 1024-29-1), unix.ENOSPC, nil,
			"kmes_emit: no space left on device (event of 1025 bytes is larger than kernel.kmes.max_event_size 1024)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := Emit(c.typ, c.payload)
			if !errors.Is(err, c.errno) {
				t.Fatalf("Emit: %v, want errno %v", err, c.errno)
			}
			if c.reason != nil && !errors.Is(err, c.reason) {
				t.Errorf("Emit: %v does not wrap %v", err, c.reason)
			}
			if errors.Is(err, unix.ENOSYS) {
				t.Errorf("Emit: %v reached the system call", err)
			}
			if err.Error() != c.text {
				t.Errorf("Emit: %q\nwant      %q", err, c.text)
			}
		})
	}
}

func TestEmitNestingDepthDefault(t *testing.T) {
	hostHasKMES(t)
	withSysctls(t, nil)
	nest := func(n int) []byte {
		b := make([]byte, n+1)
		for i := range n {
			b[i] = 0x91
		}
		b[n] = 0xc0
		return b
	}
	if err := Emit("t", nest(DefaultMaxNestingDepth+1)); !errors.Is(err, ErrInvalidPayload) {
		t.Errorf("Emit of depth %d: %v, want ErrInvalidPayload", DefaultMaxNestingDepth+1, err)
	}
	if err := Emit("t", nest(DefaultMaxNestingDepth)); !errors.Is(err, unix.ENOSYS) {
		t.Errorf("Emit of depth %d: %v, want ENOSYS from the host kernel", DefaultMaxNestingDepth, err)
	}
}

// A limit raised after the first read must not make Emit refuse what the
// kernel now takes.
func TestEmitRereadsLimitsBeforeRefusing(t *testing.T) {
	hostHasKMES(t)
	withSysctls(t, map[string]string{"max_event_size": "1024"})
	big := append([]byte{0xc5, 0x04, 0x00}, make([]byte, 1024)...) // bin16 of 1024 bytes
	if err := Emit("t", big); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("Emit: %v, want ENOSPC", err)
	}
	if err := os.WriteFile(filepath.Join(sysctlDir, "max_event_size"), []byte("4096\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Emit("t", big); !errors.Is(err, unix.ENOSYS) {
		t.Errorf("Emit after the limit was raised: %v, want ENOSYS from the host kernel", err)
	}
}

func TestEmitWithoutKMES(t *testing.T) {
	hostHasKMES(t)
	err := Emit("test.event", []byte{0x81, 0xa1, 'k', 0x01})
	if !errors.Is(err, unix.ENOSYS) {
		t.Fatalf("Emit: %v, want ENOSYS", err)
	}
	var se *SyscallError
	if !errors.As(err, &se) || se.Call != "kmes_emit" {
		t.Errorf("Emit: %#v, want a *SyscallError of kmes_emit", err)
	}
	if want := "kmes_emit: function not implemented (the kernel lacks KMES: "; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Emit: %q, want it to start with %q", err, want)
	}
}

func TestEmitValue(t *testing.T) {
	hostHasKMES(t)
	if err := EmitValue("t", map[string]any{"a": []int{1, 2}}); !errors.Is(err, unix.ENOSYS) {
		t.Errorf("EmitValue: %v, want ENOSYS from the host kernel", err)
	}
	err := EmitValue("t", make(chan int))
	if err == nil || !strings.HasPrefix(err.Error(), "kmes_emit: encode payload: ") {
		t.Errorf("EmitValue of a channel: %v, want an encode error", err)
	}
	if err := EmitValue("", 1); !errors.Is(err, ErrInvalidType) {
		t.Errorf("EmitValue with an empty type: %v, want ErrInvalidType", err)
	}
}

func TestSyscallErrorEPERM(t *testing.T) {
	err := syscallError("kmes_emit", unix.EPERM)
	if !errors.Is(err, unix.EPERM) {
		t.Errorf("%v is not EPERM", err)
	}
	if got, want := err.Error(), "kmes_emit: operation not permitted (needs CAP_AUDIT_WRITE)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := syscallError("kmes_attach", unix.EPERM).Error(),
		"kmes_attach: operation not permitted (needs CAP_AUDIT_READ)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestEmitBatch(t *testing.T) {
	hostHasKMES(t)
	withSysctls(t, nil)
	good := Event{"t", []byte{0xc0}}
	many := func(n, bad int) []Event {
		evs := make([]Event, n)
		for i := range evs {
			evs[i] = good
		}
		if bad >= 0 {
			evs[bad].Payload = []byte{0xc1}
		}
		return evs
	}

	if n, err := EmitBatch(nil); n != 0 || err != nil {
		t.Errorf("EmitBatch(nil) = %d, %v; want 0, nil", n, err)
	}
	// The first bad event stops the batch before any system call when it
	// is the first event.
	n, err := EmitBatch(many(3, 0))
	if n != 0 || !errors.Is(err, unix.EINVAL) || !errors.Is(err, ErrInvalidPayload) {
		t.Errorf("EmitBatch with event 0 bad = %d, %v; want 0, EINVAL", n, err)
	}
	if want := "kmes_emit_batch: invalid argument (event 0: invalid payload: msgpack: never used type byte 0xc1 at offset 0)"; err.Error() != want {
		t.Errorf("EmitBatch: %q, want %q", err, want)
	}
	// Events before the bad one go to the kernel, which here lacks KMES.
	n, err = EmitBatch(many(300, 299))
	if n != 0 || !errors.Is(err, unix.ENOSYS) {
		t.Errorf("EmitBatch with event 299 bad = %d, %v; want 0, ENOSYS", n, err)
	}
	if !strings.HasPrefix(err.Error(), "kmes_emit_batch: function not implemented (the kernel lacks KMES") {
		t.Errorf("EmitBatch: %q", err)
	}
	n, err = EmitBatch(many(1000, -1))
	if n != 0 || !errors.Is(err, unix.ENOSYS) {
		t.Errorf("EmitBatch = %d, %v; want 0, ENOSYS", n, err)
	}
	// The empty type is checked after the size in a batch, as the kernel
	// does.
	withSysctls(t, map[string]string{"max_event_size": "1024"})
	_, err = EmitBatch([]Event{{"", make([]byte, 1000)}})
	if !errors.Is(err, unix.ENOSPC) {
		t.Errorf("EmitBatch of an empty type in an oversized event: %v, want ENOSPC", err)
	}
	if err := Emit("", make([]byte, 1000)); !errors.Is(err, ErrInvalidType) {
		t.Errorf("Emit of an empty type in an oversized event: %v, want ErrInvalidType", err)
	}
}

func TestBatchSpans(t *testing.T) {
	for _, c := range []struct {
		n, max int
		want   [][2]int
	}{
		{0, 256, nil},
		{1, 256, [][2]int{{0, 1}}},
		{255, 256, [][2]int{{0, 255}}},
		{256, 256, [][2]int{{0, 256}}},
		{257, 256, [][2]int{{0, 256}, {256, 257}}},
		{512, 256, [][2]int{{0, 256}, {256, 512}}},
		{513, 256, [][2]int{{0, 256}, {256, 512}, {512, 513}}},
		{1000, 256, [][2]int{{0, 256}, {256, 512}, {512, 768}, {768, 1000}}},
		{5, 2, [][2]int{{0, 2}, {2, 4}, {4, 5}}},
	} {
		if got := batchSpans(c.n, c.max); !reflect.DeepEqual(got, c.want) {
			t.Errorf("batchSpans(%d, %d) = %v, want %v", c.n, c.max, got, c.want)
		}
	}
}

func TestBatchEntries(t *testing.T) {
	evs := []Event{{"ab", []byte{0xc0}}, {"xyz", []byte{0x92, 1, 2}}}
	b := newBatch(len(evs))
	entries := b.fill(evs)
	if len(entries) != len(evs) {
		t.Fatalf("%d entries for %d events", len(entries), len(evs))
	}
	for i, ev := range evs {
		want := emitEntry{
			Type:       uint64(uintptr(unsafe.Pointer(unsafe.StringData(ev.Type)))),
			TypeLen:    uint16(len(ev.Type)),
			Payload:    uint64(uintptr(unsafe.Pointer(&ev.Payload[0]))),
			PayloadLen: uint32(len(ev.Payload)),
		}
		if entries[i] != want {
			t.Errorf("entry %d: %+v, want %+v", i, entries[i], want)
		}
	}
}

// TestEmitUncheckedSkipsTheLibrarysCheck: an event Emit refuses before the
// system call reaches the kernel through EmitUnchecked and
// EmitBatchUnchecked (on a host without KMES: ENOSYS, not EINVAL).
func TestEmitUncheckedSkipsTheLibrarysCheck(t *testing.T) {
	hostHasKMES(t)
	bad := []byte{0x91} // an array missing its element
	if err := Emit("test.event", bad); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("Emit of a bad payload: %v, want EINVAL before the system call", err)
	}
	if err := EmitUnchecked("test.event", bad); !errors.Is(err, unix.ENOSYS) {
		t.Errorf("EmitUnchecked: %v, want the kernel's ENOSYS", err)
	}
	n, err := EmitBatchUnchecked([]Event{{"test.event", bad}})
	var se *SyscallError
	if n != 0 || !errors.As(err, &se) || se.Call != "kmes_emit_batch" || se.Errno != unix.ENOSYS {
		t.Errorf("EmitBatchUnchecked: %d, %v; want the kernel's ENOSYS", n, err)
	}
	if n, err := EmitBatchUnchecked(nil); n != 0 || err != nil {
		t.Errorf("EmitBatchUnchecked of nothing: %d, %v", n, err)
	}
}
