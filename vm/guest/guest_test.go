package guest

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestReadMetrics(t *testing.T) {
	p := filepath.Join(t.TempDir(), MetricsFile)
	if err := os.WriteFile(p, []byte("kernel_emit_64B 312.5 instr/event\ngetppid 246 instr/call\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ReadMetrics(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []Metric{{"kernel_emit_64B", 312.5, "instr/event"}, {"getppid", 246, "instr/call"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ReadMetrics = %+v, want %+v", got, want)
	}
	if err := os.WriteFile(p, []byte("half-a-line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadMetrics(p); err == nil {
		t.Error("bad line: want an error")
	}
}

func TestRunRoundTrip(t *testing.T) {
	dir := t.TempDir()
	r := Run{Suites: []string{"boot"}, Topology: Topology{Name: "smp1", CPUs: 1, Nodes: 1, CPUNode: []int{0}, THP: true, RingPageSize: HugePageSize, CPUModel: "max,-avx2", ValidatorWalk: WalkSSSE3}, Kernel: Kernel{Release: "6.12.117-kmes"}}
	if err := r.Write(dir); err != nil {
		t.Fatal(err)
	}
	got, err := ReadRun(filepath.Join(dir, RunFile))
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Errorf("ReadRun = %+v, %v; want %+v", got, err, r)
	}
}

func TestReadMeminfo(t *testing.T) {
	m := ReadMeminfo(t)
	if m["MemTotal"] <= 0 || m["MemFree"] <= 0 || m["MemFree"] > m["MemTotal"] {
		t.Errorf("MemTotal %d kB, MemFree %d kB", m["MemTotal"], m["MemFree"])
	}
	if _, ok := m["HugePages_Total"]; !ok {
		t.Errorf("no HugePages_Total in %v", m)
	}
}
