package vm

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kmes-project/kmes/vm/guest"
)

func TestKernelLogProblems(t *testing.T) {
	lines := []string{
		"[    0.000000] Linux version 6.12.117-kmes",
		"[    1.234567] ------------[ cut here ]------------",
		"[    1.234568] WARNING: CPU: 0 PID: 1 at kernel/kmes/ring.c:10 kmes_emit+0x10/0x20",
		"[    2.000000] BUG: KASAN: slab-out-of-bounds in kmes_write+0x1/0x2",
		"[    3.000000] WARNING: possible circular locking dependency detected",
		"[    4.000000] BUG: sleeping function called from invalid context at mm/slab.c:1",
		"[   50.100000] Call Trace:",
		"    t.Log: WARNING: this is test output, not the kernel",
		"kmes-guest: running /kmes/tests/boot.test",
		"[    5.000000] cgroup: Unknown subsys name 'memory'",
	}
	got := KernelLogProblems(lines)
	want := []string{lines[2], lines[3], lines[4], lines[5], lines[6]}
	if !slices.Equal(got, want) {
		t.Errorf("KernelLogProblems:\n got %q\nwant %q", got, want)
	}
}

func TestParseTestEvents(t *testing.T) {
	js := `{"Action":"start","Package":"boot"}
{"Action":"run","Package":"boot","Test":"TestA"}
{"Action":"output","Package":"boot","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"pass","Package":"boot","Test":"TestA"}
{"Action":"run","Package":"boot","Test":"TestB"}
{"Action":"run","Package":"boot","Test":"TestB/sub"}
{"Action":"output","Package":"boot","Test":"TestB/sub","Output":"    b_test.go:9: boom\n"}
{"Action":"fail","Package":"boot","Test":"TestB/sub"}
{"Action":"fail","Package":"boot","Test":"TestB"}
{"Action":"run","Package":"boot","Test":"TestC"}
{"Action":"skip","Package":"boot","Test":"TestC"}
{"Action":"run","Package":"boot","Test":"TestD"}
{"Action":"output","Package":"boot","Output":"panic: test timed out\n"}
{"Action":"fail","Package":"boot"}
`
	rep, err := parseTestEvents([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tc := range rep.Tests {
		got = append(got, tc.Name+"="+tc.Action)
	}
	if want := []string{"TestA=pass", "TestB=fail", "TestC=skip", "TestD=run"}; !slices.Equal(got, want) {
		t.Errorf("tests = %q, want %q", got, want)
	}
	if !strings.Contains(rep.Tests[1].Output, "boom") {
		t.Errorf("TestB output %q lacks its subtest's output", rep.Tests[1].Output)
	}
	if !strings.Contains(rep.Output, "timed out") {
		t.Errorf("package output %q lacks the panic", rep.Output)
	}
	if _, err := parseTestEvents([]byte("{not json")); err == nil {
		t.Error("bad JSON: want an error")
	}
}

func TestLineCollector(t *testing.T) {
	var sink nopCloser
	c := &lineCollector{w: &sink}
	c.Write([]byte("one\r\ntw"))
	c.Write([]byte("o\nthree"))
	c.Close()
	if got, want := c.Lines(), []string{"one", "two", "three"}; !slices.Equal(got, want) {
		t.Errorf("Lines() = %q, want %q", got, want)
	}
}

type nopCloser struct{ strings.Builder }

func (*nopCloser) Close() error { return nil }

// The guest's deadline, in the run description, comes before the host
// kills QEMU (the guest runner's side is tested in vm/cmd/kmes-guest).
func TestRunDescriptionDeadline(t *testing.T) {
	topo, err := LookupTopology("smp1")
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range []time.Duration{0, 3 * time.Minute, 30 * time.Minute} {
		timeout, run := GuestRun{Topology: topo, Timeout: set}.runDescription()
		if set == 0 && timeout != guest.DefaultVMTimeout || set != 0 && timeout != set {
			t.Errorf("Timeout %v: the host kills QEMU after %v", set, timeout)
		}
		if run.Deadline != guest.Deadline(timeout) || run.Deadline <= 0 || run.Deadline+guest.KillGrace+30*time.Second > timeout {
			t.Errorf("Timeout %v: the guest's deadline is %v, the host kills QEMU after %v", set, run.Deadline, timeout)
		}
	}
}

// The run description tells the guest the CPU model it boots and the
// validator walk that follows: the topology's, unless the machine names
// its own model.
func TestRunDescriptionCPU(t *testing.T) {
	topo, err := LookupTopology("nohuge")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		m         Machine
		cpu, walk string
	}{
		{Machine{Accel: "tcg"}, "max,-avx2", guest.WalkSSSE3},
		{Machine{Accel: "tcg", ICount: true, CPU: "max,-erms,-fsrm"}, "max,-erms,-fsrm", guest.WalkAVX2},
	} {
		_, run := GuestRun{Topology: topo, Machine: tc.m}.runDescription()
		if run.Topology.CPUModel != tc.cpu || run.Topology.ValidatorWalk != tc.walk {
			t.Errorf("%+v: the guest expects -cpu %q and the %q walk, want %q and %q", tc.m, run.Topology.CPUModel, run.Topology.ValidatorWalk, tc.cpu, tc.walk)
		}
	}
}
