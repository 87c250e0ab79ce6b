//go:build linux && amd64

package kmes

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The ring's futex_counter is a shared futex (no FUTEX_PRIVATE_FLAG): the
// kernel wakes it by its page, which every mapping of the ring shares.
const (
	futexWaitOp = 0 // FUTEX_WAIT
	futexWakeOp = 1 // FUTEX_WAKE
)

// futexWait sleeps while *word == val. A wake-up, a changed value
// (EAGAIN) and a signal return nil: the caller re-checks the ring. Any
// other error would recur on every wait, so it is returned.
func futexWait(word *atomic.Uint32, val uint32) error {
	_, _, errno := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(word)), futexWaitOp, uintptr(val), 0, 0, 0)
	switch errno {
	case 0, unix.EAGAIN, unix.EINTR:
		return nil
	}
	return fmt.Errorf("futex_wait: %w", errno)
}

// futexWake wakes every waiter on word.
func futexWake(word *atomic.Uint32) {
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(word)), futexWakeOp, uintptr(1<<31-1), 0, 0, 0)
}
