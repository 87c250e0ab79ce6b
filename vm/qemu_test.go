package vm

import (
	"slices"
	"strings"
	"testing"
)

func TestMachineArgs(t *testing.T) {
	for _, tc := range []struct {
		m    Machine
		want []string
	}{
		{Machine{Accel: "tcg"}, []string{"-accel", "tcg,thread=multi", "-cpu", "max"}},
		{Machine{Accel: "tcg", ICount: true}, []string{"-accel", "tcg,thread=single", "-cpu", "max", "-icount", "shift=0,sleep=off"}},
		{Machine{Accel: "tcg", ICount: true, CPU: "max,-erms,-fsrm"}, []string{"-accel", "tcg,thread=single", "-cpu", "max,-erms,-fsrm", "-icount", "shift=0,sleep=off"}},
		{Machine{Accel: "kvm"}, []string{"-accel", "kvm", "-cpu", "host"}},
		{Machine{Accel: "kvm", CPU: "max,-avx2"}, []string{"-accel", "kvm", "-cpu", "host"}},
		{Machine{Accel: "tcg"}.For(Topology{CPU: "max,-avx2"}), []string{"-accel", "tcg,thread=multi", "-cpu", "max,-avx2"}},
		{Machine{Accel: "tcg", CPU: "max"}.For(Topology{CPU: "max,-avx2"}), []string{"-accel", "tcg,thread=multi", "-cpu", "max"}},
	} {
		if got := tc.m.Args(); !slices.Equal(got, tc.want) {
			t.Errorf("%+v.Args() = %q, want %q", tc.m, got, tc.want)
		}
	}
}

func TestMachineFromEnv(t *testing.T) {
	t.Setenv("KMES_ACCEL", "")
	t.Setenv("KMES_ICOUNT", "1")
	m, err := MachineFromEnv()
	if err != nil || m.Accel != "tcg" || !m.ICount {
		t.Errorf("default: got %+v, %v; want TCG with icount", m, err)
	}
	t.Setenv("KMES_ACCEL", "hvf")
	if _, err := MachineFromEnv(); err == nil || !strings.Contains(err.Error(), "KMES_ACCEL") {
		t.Errorf("KMES_ACCEL=hvf: err = %v, want one naming KMES_ACCEL", err)
	}
	if err := (Machine{Accel: "kvm", ICount: true}).Validate(); err == nil {
		t.Error("kvm with icount: want an error")
	}
}

func TestQEMUCommand(t *testing.T) {
	t.Setenv("KMES_QEMU", "/opt/qemu/bin/qemu-system-x86_64")
	topo, err := LookupTopology("smp1")
	if err != nil {
		t.Fatal(err)
	}
	got, err := QEMUCommand(Machine{Accel: "tcg"}, topo)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/opt/qemu/bin/qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max", "-no-reboot", "-smp", "1,sockets=1,cores=1,threads=1", "-m", "1024M"}
	if !slices.Equal(got, want) {
		t.Errorf("QEMUCommand = %q, want %q", got, want)
	}
	// A preset's CPU model, and a machine's own, which wins.
	nohuge, err := LookupTopology("nohuge")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		m   Machine
		cpu string
	}{
		{Machine{Accel: "tcg"}, "max,-avx2"},
		{Machine{Accel: "tcg", CPU: "max,-erms,-fsrm"}, "max,-erms,-fsrm"},
	} {
		got, err := QEMUCommand(tc.m, nohuge)
		if err != nil {
			t.Fatal(err)
		}
		if i := slices.Index(got, "-cpu"); i < 0 || got[i+1] != tc.cpu {
			t.Errorf("QEMUCommand(%+v, nohuge) = %q, want -cpu %s", tc.m, got, tc.cpu)
		}
	}
	t.Setenv("KMES_QEMU", "")
	t.Setenv("PATH", t.TempDir())
	if _, err := QEMUCommand(Machine{Accel: "tcg"}, topo); err == nil || !strings.Contains(err.Error(), "make deps") {
		t.Errorf("without QEMU: err = %v, want one that says to run make deps", err)
	}
}

func TestKernelCmdline(t *testing.T) {
	topo, _ := LookupTopology("hugepages")
	got := KernelCmdline(topo, "quiet")
	want := "console=ttyS0 panic=-1 earlyprintk=serial hugepagesz=2M hugepages=128 quiet"
	if got != want {
		t.Errorf("KernelCmdline = %q, want %q", got, want)
	}
}
