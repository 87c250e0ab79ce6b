//go:build linux && amd64

package kmes

import (
	"github.com/kmes-project/kmes/userspace/kmes/abi"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sysEmit is kmes_emit. The caller has checked that typ and payload are
// not empty.
func sysEmit(typ string, payload []byte) error {
	_, _, errno := unix.Syscall6(abi.SysEmit,
		uintptr(unsafe.Pointer(unsafe.StringData(typ))), uintptr(len(typ)),
		uintptr(unsafe.Pointer(unsafe.SliceData(payload))), uintptr(len(payload)),
		0, 0)
	if errno != 0 {
		return syscallError("kmes_emit", errno)
	}
	return nil
}

// batch is the memory of kmes_emit_batch calls, reused across the calls of
// one EmitBatch.
type batch struct {
	entries []emitEntry
	// keep holds the pointers the entries carry as integers. Storing them
	// in a heap slice makes the events' memory escape to the heap, where
	// it does not move, and keeps it alive until the call returns.
	keep []unsafe.Pointer
}

func newBatch(n int) *batch {
	return &batch{entries: make([]emitEntry, n), keep: make([]unsafe.Pointer, 2*n)}
}

// emit is one kmes_emit_batch call for len(events) <= len(b.entries)
// checked events. It returns how many the kernel emitted and its error.
func (b *batch) emit(events []Event) (int, error) {
	entries := b.fill(events)
	var out uint32
	_, _, errno := unix.Syscall(abi.SysEmitBatch,
		uintptr(unsafe.Pointer(unsafe.SliceData(entries))), uintptr(len(entries)),
		uintptr(unsafe.Pointer(&out)))
	runtime.KeepAlive(b)
	runtime.KeepAlive(events)
	clear(b.keep[:2*len(events)])
	if errno != 0 {
		return int(out), syscallError("kmes_emit_batch", errno)
	}
	return int(out), nil
}

// fill lays out the entries of events, len(events) <= len(b.entries).
func (b *batch) fill(events []Event) []emitEntry {
	entries := b.entries[:len(events)]
	for i, ev := range events {
		t := unsafe.Pointer(unsafe.StringData(ev.Type))
		p := unsafe.Pointer(unsafe.SliceData(ev.Payload))
		b.keep[2*i], b.keep[2*i+1] = t, p
		entries[i] = emitEntry{
			Type:       uint64(uintptr(t)),
			TypeLen:    uint16(len(ev.Type)),
			Payload:    uint64(uintptr(p)),
			PayloadLen: uint32(len(ev.Payload)),
		}
	}
	return entries
}
