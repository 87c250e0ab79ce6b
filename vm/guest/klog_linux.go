package guest

import (
	"testing"

	"golang.org/x/sys/unix"
)

// KernelLog returns the kernel log buffer, as dmesg prints it (with each
// line's <level> prefix): what the kernel logged since boot, unless more
// than the buffer holds.
func KernelLog(t testing.TB) string {
	t.Helper()
	size, err := unix.Klogctl(unix.SYSLOG_ACTION_SIZE_BUFFER, nil)
	if err != nil {
		t.Fatalf("syslog(SYSLOG_ACTION_SIZE_BUFFER): %v", err)
	}
	buf := make([]byte, size)
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	if err != nil {
		t.Fatalf("syslog(SYSLOG_ACTION_READ_ALL): %v", err)
	}
	return string(buf[:n])
}
