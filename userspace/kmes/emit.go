package kmes

import (
	"fmt"
	"github.com/kmes-project/kmes/userspace/kmes/abi"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/vmihailenco/msgpack/v5"
)

// Event is one event for EmitBatch.
type Event struct {
	Type    string
	Payload []byte // one msgpack value
}

// sysctlDir holds the kernel.kmes.* sysctls; a variable so that tests can
// point it at files of their own.
var sysctlDir = "/proc/sys/kernel/kmes"

// limits are the kernel's limits on a system call's event, as far as they
// could be read.
type limits struct {
	depth    int    // kernel.kmes.max_nesting_depth
	maxEvent uint64 // kernel.kmes.max_event_size, 0 if unknown
}

// cachedLimits are read once: reading two files per event would cost more
// than the system call itself.
var cachedLimits atomic.Pointer[limits]

func currentLimits() *limits {
	if l := cachedLimits.Load(); l != nil {
		return l
	}
	return reloadLimits()
}

// reloadLimits reads the sysctls again. Emit calls it before refusing an
// event, so that a limit raised since the first read never makes it refuse
// what the kernel would take.
func reloadLimits() *limits {
	l := &limits{depth: DefaultMaxNestingDepth}
	if v, ok := readSysctl("max_nesting_depth"); ok {
		l.depth = int(min(v, msgpackDepthMax))
	}
	if v, ok := readSysctl("max_event_size"); ok {
		l.maxEvent = v
	}
	cachedLimits.Store(l)
	return l
}

func readSysctl(name string) (uint64, bool) {
	b, err := os.ReadFile(filepath.Join(sysctlDir, name))
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return v, err == nil
}

// argError is an event the kernel would refuse, caught before the system
// call. It is both the errno the kernel would have returned and the reason
// (ErrInvalidType, ErrInvalidPayload or a size), so errors.Is holds for
// syscall.EINVAL and ErrInvalidPayload alike.
type argError struct {
	call   string
	errno  syscall.Errno
	where  string // "event N: " in a batch
	reason error
}

func (e *argError) Error() string {
	return e.call + ": " + e.errno.Error() + " (" + e.where + strings.TrimPrefix(e.reason.Error(), "kmes: ") + ")"
}

func (e *argError) Unwrap() []error { return []error{e.errno, e.reason} }

// checkEvent returns the errno the kernel would fail the event with, and
// why, in the kernel's order of checks: empty type, size, UTF-8 type,
// payload. The limit of half the ring capacity is left to the kernel: the
// rings' capacity may differ from the buffer_capacity sysctl while a
// resize is pending or after one failed. The batch call checks the empty type after the size; the
// difference only shows for an empty type in an oversized event.
func checkEvent(typ string, payload []byte, l *limits, batch bool) (syscall.Errno, error) {
	if typ == "" && !batch {
		return syscall.EINVAL, ValidateType(typ)
	}
	size := uint64(abi.HdrBaseSize) + uint64(len(typ)) + uint64(len(payload))
	if l.maxEvent > 0 && size > l.maxEvent {
		return syscall.ENOSPC, fmt.Errorf("event of %d bytes is larger than kernel.kmes.max_event_size %d", size, l.maxEvent)
	}
	if err := ValidateType(typ); err != nil {
		return syscall.EINVAL, err
	}
	if err := ValidatePayload(payload, l.depth); err != nil {
		return syscall.EINVAL, err
	}
	return 0, nil
}

// check is checkEvent against the cached limits, confirmed against fresh
// ones before it refuses.
func check(call string, typ string, payload []byte, batch bool) error {
	if _, err := checkEvent(typ, payload, currentLimits(), batch); err == nil {
		return nil
	}
	errno, err := checkEvent(typ, payload, reloadLimits(), batch)
	if err == nil {
		return nil
	}
	return &argError{call: call, errno: errno, reason: err}
}

// Emit emits one event of type typ with the msgpack payload (kmes_emit).
// It checks the event as the kernel would first, so that a bad event fails
// with the kernel's errno (errors.Is(err, syscall.EINVAL) or syscall.ENOSPC) and
// says what is wrong with it; ErrInvalidType or ErrInvalidPayload is
// wrapped too. A kernel error is a *SyscallError.
func Emit(typ string, payload []byte) error {
	if err := check("kmes_emit", typ, payload, false); err != nil {
		return err
	}
	return sysEmit(typ, payload)
}

// EmitUnchecked is Emit without the library's own check of the event:
// for callers that built or validated the payload already and want to
// save its cost. The kernel still validates the event; one it refuses
// fails with its errno (a *SyscallError), without Emit's explanation of
// what is wrong.
func EmitUnchecked(typ string, payload []byte) error {
	if typ == "" {
		// The system call reads nothing for an empty type.
		return syscallError("kmes_emit", syscall.EINVAL)
	}
	return sysEmit(typ, payload)
}

// EmitValue emits v encoded with msgpack as the payload of an event of type
// typ.
func EmitValue(typ string, v any) error {
	payload, err := msgpack.Marshal(v)
	if err != nil {
		return fmt.Errorf("kmes_emit: encode payload: %w", err)
	}
	return Emit(typ, payload)
}

// EmitBatch emits events with as few kmes_emit_batch calls as it can (at
// most abi.EmitBatchMax events each) and returns how many were emitted. All
// events of one call share a timestamp and reach consumers together.
//
// As the kernel does, it stops at the first bad event: the ones before it
// are emitted, emitted is its index, and err says what is wrong with it
// (see Emit). A kernel error stops it too: emitted then counts the events
// the kernel took before failing.
func EmitBatch(events []Event) (emitted int, err error) {
	good := len(events)
	var bad error
	for i, ev := range events {
		if err := check("kmes_emit_batch", ev.Type, ev.Payload, true); err != nil {
			good = i
			e := err.(*argError)
			e.where = fmt.Sprintf("event %d: ", i)
			bad = e
			break
		}
	}
	if emitted, err = emitBatch(events[:good]); err != nil {
		return emitted, err
	}
	return emitted, bad
}

// EmitBatchUnchecked is EmitBatch without the library's own check of
// each event (see EmitUnchecked): the kernel's is the only one, and it
// stops the batch at the first event it refuses.
func EmitBatchUnchecked(events []Event) (emitted int, err error) {
	return emitBatch(events)
}

func emitBatch(events []Event) (emitted int, err error) {
	if len(events) == 0 {
		return 0, nil
	}
	b := batchPool.Get().(*batch)
	defer batchPool.Put(b)
	for _, span := range batchSpans(len(events), abi.EmitBatchMax) {
		n, err := b.emit(events[span[0]:span[1]])
		emitted += n
		if err != nil {
			return emitted, err
		}
	}
	return emitted, nil
}

// batchPool saves EmitBatch the allocation of its entries (12 KiB) on
// every call. A pooled batch holds no pointers to events.
var batchPool = sync.Pool{New: func() any { return newBatch(abi.EmitBatchMax) }}

// batchSpans splits n events into [start, end) runs of at most max events,
// one per system call.
func batchSpans(n, max int) [][2]int {
	if n <= 0 || max <= 0 {
		return nil
	}
	spans := make([][2]int, 0, (n+max-1)/max)
	for start := 0; start < n; start += max {
		spans = append(spans, [2]int{start, min(start+max, n)})
	}
	return spans
}
