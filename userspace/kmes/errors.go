package kmes

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
)

// ErrClosed is returned by a Reader, Ring or Consumer that was closed.
// It is os.ErrClosed, so errors.Is(err, os.ErrClosed) holds.
var ErrClosed = os.ErrClosed

// ErrUnsupported is wrapped by the error of everything that needs the
// kernel's KMES on a platform other than linux/amd64, the only one KMES is
// wired for. errors.Is(err, errors.ErrUnsupported) holds too.
var ErrUnsupported = fmt.Errorf("kmes: %s/%s is not supported, only linux/amd64: %w",
	runtime.GOOS, runtime.GOARCH, errors.ErrUnsupported)

// ErrBusy is returned by a read of a Consumer that is being read already.
var ErrBusy = errors.New("kmes: consumer is already being read")

// ErrCorrupt is wrapped by a CorruptError.
var ErrCorrupt = errors.New("kmes: corrupt ring")

// CorruptError reports an event in a ring whose sizes cannot be right. The
// reader has already resynchronised, so reading may go on.
type CorruptError struct {
	CPU    int    // the ring's CPU
	Pos    uint64 // position of the bad event
	Size   uint32 // its event_size field
	Reason string
	// Skipped is the number of bytes the reader skipped to resynchronise.
	Skipped uint64
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("read ring of cpu %d: corrupt event at %d (event_size %d: %s), skipped %d bytes",
		e.CPU, e.Pos, e.Size, e.Reason, e.Skipped)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// SyscallError is the error of a KMES system call: the call, the errno, and
// what usually fixes it. errors.Is(err, syscall.EPERM) and the like hold.
type SyscallError struct {
	Call  string        // "kmes_emit", "kmes_emit_batch" or "kmes_attach"
	Errno syscall.Errno // what the kernel returned
	Hint  string        // what to do about it, or ""
}

func (e *SyscallError) Error() string {
	if e.Hint == "" {
		return e.Call + ": " + e.Errno.Error()
	}
	return e.Call + ": " + e.Errno.Error() + " (" + e.Hint + ")"
}

func (e *SyscallError) Unwrap() error { return e.Errno }

// syscallError wraps errno from call with the fix a user needs most often.
func syscallError(call string, errno syscall.Errno) error {
	return &SyscallError{Call: call, Errno: errno, Hint: hint(call, errno)}
}

func hint(call string, errno syscall.Errno) string {
	switch errno {
	case syscall.ENOSYS:
		return "the kernel lacks KMES: boot a kernel built with CONFIG_KMES=y"
	case syscall.EPERM:
		if call == "kmes_attach" {
			return "needs CAP_AUDIT_READ"
		}
		return "needs CAP_AUDIT_WRITE"
	case syscall.EAGAIN:
		if call != "kmes_attach" {
			return "rate limit kernel.kmes.max_emit_rate_per_process reached: retry later, or run with CAP_SYS_ADMIN"
		}
	case syscall.ENOSPC:
		return "event larger than kernel.kmes.max_event_size or half the ring capacity"
	case syscall.EINVAL:
		if call != "kmes_attach" {
			return "empty or invalid UTF-8 type, or payload not msgpack within kernel.kmes.max_nesting_depth"
		}
	case syscall.EMFILE, syscall.ENFILE:
		return "one file descriptor per CPU is needed: raise RLIMIT_NOFILE"
	}
	return ""
}
