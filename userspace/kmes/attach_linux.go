//go:build linux && amd64

package kmes

import (
	"fmt"
	"github.com/kmes-project/kmes/userspace/kmes/abi"
	"unsafe"

	"golang.org/x/sys/unix"
)

// attach calls kmes_attach with room for every possible CPU, growing the
// array when the kernel asks for more (ERANGE).
func attach() (fds []int, capacity uint64, err error) {
	n := int32(64)
	for {
		buf := make([]int32, n)
		count := n
		_, _, errno := unix.Syscall(abi.SysAttach, uintptr(unsafe.Pointer(&buf[0])),
			uintptr(unsafe.Pointer(&count)), uintptr(unsafe.Pointer(&capacity)))
		if errno == unix.ERANGE && count > n {
			n = count
			continue
		}
		if errno != 0 {
			return nil, 0, syscallError("kmes_attach", errno)
		}
		fds = make([]int, count)
		for i := range fds {
			fds[i] = int(buf[i])
		}
		return fds, capacity, nil
	}
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// mapRing maps a ring read-write as KMES.md §4 says: the kernel keeps the
// producer page and the data read-only whatever is asked, and only the
// consumer page (need_wake) is written.
func mapRing(fd int, capacity uint64) (*Ring, error) {
	m, err := unix.Mmap(fd, 0, int(abi.MapSize(capacity)), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap ring (%d bytes): %w", abi.MapSize(capacity), err)
	}
	r, err := NewMappedRing(m, func() error { return unix.Munmap(m) })
	if err != nil {
		unix.Munmap(m)
		return nil, err
	}
	if r.Capacity() != capacity {
		r.Close()
		return nil, fmt.Errorf("map ring of cpu %d: capacity %d, kmes_attach said %d", r.CPU(), r.Capacity(), capacity)
	}
	return r, nil
}
