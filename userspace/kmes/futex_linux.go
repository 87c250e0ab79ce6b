//go:build linux && amd64

package kmes

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// futexWaiter is struct futex_waitv: one word of a futex_waitv call.
type futexWaiter struct {
	val   uint64
	uaddr uint64
	flags uint32
	_     uint32
}

const (
	// futexWaitvMax is the most words one futex_waitv call waits on.
	futexWaitvMax = 128
	// A ring's futex_counter is shared (the kernel wakes it by its page,
	// which every mapping of the ring shares); a Reader's own words are
	// private to the process.
	futex2SizeU32 = 0x02
	futex2Private = 128

	futexWaitPrivate = 0 | 128 // FUTEX_WAIT | FUTEX_PRIVATE_FLAG
	futexWakePrivate = 1 | 128 // FUTEX_WAKE | FUTEX_PRIVATE_FLAG
)

// sharedWaiter is the futex_waitv entry for a ring's futex_counter.
func sharedWaiter(word *atomic.Uint32, val uint32) futexWaiter {
	return futexWaiter{val: uint64(val), uaddr: uint64(uintptr(unsafe.Pointer(word))), flags: futex2SizeU32}
}

// privateWaiter is the futex_waitv entry for a word of the process's own.
func privateWaiter(word *atomic.Uint32, val uint32) futexWaiter {
	return futexWaiter{val: uint64(val), uaddr: uint64(uintptr(unsafe.Pointer(word))), flags: futex2SizeU32 | futex2Private}
}

// futexWaitv sleeps until a word of ws is woken, one no longer holds its
// value, a signal comes or deadline (on the monotonic clock; zero: none)
// passes. It returns the index of the word woken, or -1 for the other
// cases: the caller re-checks what it waits for. Any other error would
// recur on every wait, so it is returned. The words ws points at must
// stay alive and where they are (ring mappings, or words of the heap).
func futexWaitv(ws []futexWaiter, deadline time.Time) (int, error) {
	var ts *unix.Timespec
	// A deadline centuries away is no deadline: its absolute time would
	// overflow.
	if !deadline.IsZero() && time.Until(deadline) < 100*365*24*time.Hour {
		var now unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &now); err != nil {
			return -1, fmt.Errorf("futex_waitv: read CLOCK_MONOTONIC: %w", err)
		}
		abs := unix.NsecToTimespec(now.Nano() + max(time.Until(deadline), 0).Nanoseconds())
		ts = &abs
	}
	r, _, errno := unix.Syscall6(unix.SYS_FUTEX_WAITV, uintptr(unsafe.Pointer(unsafe.SliceData(ws))), uintptr(len(ws)),
		0, uintptr(unsafe.Pointer(ts)), unix.CLOCK_MONOTONIC, 0)
	runtime.KeepAlive(ws)
	runtime.KeepAlive(ts)
	switch errno {
	case 0:
		return int(r), nil
	case unix.EAGAIN, unix.EINTR, unix.ETIMEDOUT:
		return -1, nil
	}
	return -1, fmt.Errorf("futex_waitv: %w", errno)
}

// futexWait sleeps on a private word while it holds val. A wake-up, a
// changed value and a signal return nil.
func futexWait(word *atomic.Uint32, val uint32) error {
	_, _, errno := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(word)), futexWaitPrivate, uintptr(val), 0, 0, 0)
	switch errno {
	case 0, unix.EAGAIN, unix.EINTR:
		return nil
	}
	return fmt.Errorf("futex_wait: %w", errno)
}

// futexWake wakes every waiter on a private word.
func futexWake(word *atomic.Uint32) {
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(word)), futexWakePrivate, uintptr(1<<31-1), 0, 0, 0)
}
