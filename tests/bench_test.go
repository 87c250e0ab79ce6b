package tests

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kmes-project/kmes/vm"
	"github.com/kmes-project/kmes/vm/guest"
)

// BenchmarkGuest boots the kernel once per topology and reports what the
// guest bench suite measured. 'make bench' runs it with the plain kernel
// under -icount shift=0 (KMES_ICOUNT=1), where a guest nanosecond is one
// instruction (-benchtime=1x: one boot each): go test prints the numbers as metrics (ns/event under icount
// reads instructions/event).
func BenchmarkGuest(b *testing.B) {
	e := setup(b)
	for _, topo := range topologies(b, "smp1") {
		b.Run(topo.Name, func(b *testing.B) {
			res := vm.GuestRun{
				Kernel: e.kernel, Initramfs: e.initramfs, Topology: topo, Machine: e.machine,
				Suites: []string{"bench"}, LogDir: e.logDir,
			}.Boot(b)
			for _, p := range res.KernelProblems {
				b.Errorf("kernel log: %s", p)
			}
			// What was measured is reported even when a test failed (a
			// missed target).
			ms, _ := res.Metrics()
			for _, m := range ms {
				b.ReportMetric(m.Value, m.Name+"-"+m.Unit)
			}
			if exit, err := res.SuiteExit("bench"); err != nil {
				b.Fatal(err)
			} else if exit != 0 {
				b.Errorf("guest bench suite exited with status %d:\n%s", exit, res.FailedOutput("bench"))
			}
			if e.logDir != "" {
				data, _ := os.ReadFile(filepath.Join(res.ShareDir, guest.MetricsFile))
				_ = os.WriteFile(filepath.Join(e.logDir, "..", "bench-"+topo.Name+".txt"), data, 0o644)
			}
		})
	}
}
