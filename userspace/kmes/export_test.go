package kmes

import (
	"sync/atomic"
	"unsafe"
)

// MisalignFutex points rd's futex word at an unaligned address in its
// consumer page (zero bytes), where FUTEX_WAIT fails with EINVAL.
func MisalignFutex(rd *Reader) {
	rd.rings[0].ring.futex = (*atomic.Uint32)(unsafe.Add(unsafe.Pointer(rd.rings[0].ring.needWake), 65))
}

// SetCloser makes r.Close call f, as it does for a ring Attach mapped.
func SetCloser(r *Ring, f func() error) { r.closer = f }
