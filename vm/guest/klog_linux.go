package guest

import (
	"syscall"
	"testing"
)

// KernelLog returns the kernel log buffer, as dmesg prints it (with each
// line's <level> prefix): what the kernel logged since boot, unless more
// than the buffer holds.
func KernelLog(t testing.TB) string {
	t.Helper()
	const sizeBuffer, readAll = 10, 3 // SYSLOG_ACTION_SIZE_BUFFER, SYSLOG_ACTION_READ_ALL
	size, err := syscall.Klogctl(sizeBuffer, nil)
	if err != nil {
		t.Fatalf("syslog(SYSLOG_ACTION_SIZE_BUFFER): %v", err)
	}
	buf := make([]byte, size)
	n, err := syscall.Klogctl(readAll, buf)
	if err != nil {
		t.Fatalf("syslog(SYSLOG_ACTION_READ_ALL): %v", err)
	}
	return string(buf[:n])
}
