package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmes-project/kmes/vm"
	"github.com/kmes-project/kmes/vm/guest"
)

// benchCPUModels are the CPU models make bench boots, one boot each: -cpu
// max, and max without ERMS and FSRM, where the kernel copies with a loop
// rather than rep movsb (which TCG counts as one instruction per byte).
var benchCPUModels = []string{"max", "max,-erms,-fsrm"}

// BenchmarkGuest boots the kernel once per topology and CPU model and
// reports what the guest bench suite measured. 'make bench' runs it with
// the bench kernel under -icount shift=0 (KMES_ICOUNT=1), where a guest
// nanosecond is one instruction (-benchtime=1x: one boot each): go test
// prints the numbers as metrics (ns/event under icount reads
// instructions/event), and the table of all of them, with the ratios
// taken within each boot, goes to build/logs/bench-table.md.
// KMES_BENCH_RUN, if set, is the guest's -test.run: only the guest tests
// it matches run.
func BenchmarkGuest(b *testing.B) {
	e := setup(b)
	var args []string
	if run := os.Getenv("KMES_BENCH_RUN"); run != "" {
		args = []string{"-test.run=" + run}
	}
	for _, topo := range topologies(b, "smp1") {
		var cols []vm.BenchColumn
		for _, cpu := range benchCPUModels {
			// The machine's model wins over the topology's own
			// (vm.Machine.For).
			m := e.machine
			m.CPU = cpu
			// Sub-benchmark names become log file names: no commas.
			b.Run(topo.Name+"/"+strings.ReplaceAll(cpu, ",", "_"), func(b *testing.B) {
				cols = append(cols, vm.BenchColumn{CPU: cpu, Metrics: benchBoot(b, e, topo, m, args)})
			})
		}
		if e.logDir != "" && len(cols) > 0 {
			table := vm.BenchTable(cols) + "\n" + vm.BenchTargetTable(cols, vm.BenchTargets)
			path := filepath.Join(e.logDir, "..", "bench-table-"+topo.Name+".md")
			if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
				b.Error(err)
			}
		}
	}
}

// benchBoot boots topo on m and returns the guest bench suite's metrics.
func benchBoot(b *testing.B, e vmEnv, topo vm.Topology, m vm.Machine, args []string) []guest.Metric {
	res := vm.GuestRun{
		Kernel: e.kernel, Initramfs: e.initramfs, Topology: topo, Machine: m,
		Suites: []string{"bench"}, Args: args, LogDir: e.logDir,
	}.Boot(b)
	for _, p := range res.KernelProblems {
		b.Errorf("kernel log: %s", p)
	}
	// What was measured is reported even when a test failed (a missed
	// target).
	ms, _ := res.Metrics()
	for _, m := range ms {
		b.ReportMetric(m.Value, m.Name+"-"+m.Unit)
	}
	if exit, err := res.SuiteExit("bench"); err != nil {
		b.Fatal(err)
	} else if exit != 0 {
		b.Errorf("guest bench suite exited with status %d:\n%s", exit, res.FailedOutput("bench"))
	}
	return ms
}
