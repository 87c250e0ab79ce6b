// Package bench measures KMES inside the guest for 'make bench'. Run under
// -icount shift=0, a guest nanosecond is one executed instruction, so the
// numbers are instructions and repeat exactly from run to run.
package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmes-project/kmes/vm/guest"
)

func TestMain(m *testing.M) { guest.Main(m) }

const debugfs = "/sys/kernel/debug"

func mountDebugfs(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(debugfs + "/kmes"); err == nil {
		return
	}
	if err := unix.Mount("debugfs", debugfs, "debugfs", 0, ""); err != nil && err != unix.EBUSY {
		t.Fatalf("mount debugfs: %v", err)
	}
}

// TestGetppid is the baseline the syscall targets are stated against: one
// getppid round trip.
func TestGetppid(t *testing.T) {
	const n = 200000
	start := time.Now()
	for i := 0; i < n; i++ {
		unix.Getppid()
	}
	guest.Record(t, "getppid", float64(time.Since(start).Nanoseconds())/n, "ns/call")
}

// TestKernelEmit64 runs the in-kernel emit of a 64-byte payload through
// debugfs kmes/bench, which times only the emissions.
func TestKernelEmit64(t *testing.T) {
	mountDebugfs(t)
	const path = debugfs + "/kmes/bench"
	if err := os.WriteFile(path, []byte("1000000"), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]uint64{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, _ := strings.Cut(line, " ")
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s: bad line %q", path, line)
		}
		fields[k] = n
	}
	if fields["events"] != 1000000 || fields["elapsed_ns"] == 0 {
		t.Fatalf("%s: %q, want 1000000 events and a time", path, b)
	}
	guest.Record(t, "kernel_emit_64B", float64(fields["elapsed_ns"])/float64(fields["events"]), "ns/event")
	fmt.Printf("kernel emit ran on cpu %d\n", fields["cpu"])
}
