// Package kmes is the Go side of KMES: it emits events through the
// kernel's system calls and reads every CPU's event ring. The ABI itself
// (header and mapping layouts, system call numbers) is in package abi;
// package kmestest simulates rings for tests without a kernel.
//
// KMES is wired for linux/amd64 only. On other platforms the package
// builds, and what needs the kernel or x86 memory ordering fails with
// ErrUnsupported.
package kmes

import "github.com/kmes-project/kmes/userspace/kmes/abi"

// Origin classes (Record.Origin, View.Origin).
const (
	OriginUser = abi.OriginUser // kmes_emit, kmes_emit_batch
	OriginKMES = abi.OriginKMES // KMES itself
	OriginKACS = abi.OriginKACS // reserved
	OriginLCS  = abi.OriginLCS  // reserved
)

// emitEntry is struct kmes_emit_entry.
type emitEntry struct {
	Type       uint64
	TypeLen    uint16
	_          [6]byte
	Payload    uint64
	PayloadLen uint32
	_          uint32
}
