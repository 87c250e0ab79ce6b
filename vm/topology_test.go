package vm

import (
	"slices"
	"strings"
	"testing"
)

func TestPresets(t *testing.T) {
	numa2 := []string{"-smp", "4,sockets=2,cores=2,threads=1", "-m", "2048M",
		"-object", "memory-backend-ram,id=mem0,size=1024M", "-numa", "node,nodeid=0,cpus=0-1,memdev=mem0",
		"-object", "memory-backend-ram,id=mem1,size=1024M", "-numa", "node,nodeid=1,cpus=2-3,memdev=mem1"}
	for _, tc := range []struct {
		name      string
		qemu      []string
		kernel    []string
		cpuNode   []int
		hugePages int
		thp       bool
		ringPage  int
		cpu       string
		walk      string
	}{
		{
			name:     "smp1",
			qemu:     []string{"-smp", "1,sockets=1,cores=1,threads=1", "-m", "1024M"},
			cpuNode:  []int{0},
			thp:      true,
			ringPage: 2 << 20,
			cpu:      "max",
			walk:     "AVX2",
		},
		{
			name:     "smp4-numa2",
			qemu:     numa2,
			cpuNode:  []int{0, 0, 1, 1},
			thp:      true,
			ringPage: 2 << 20,
			cpu:      "max",
			walk:     "AVX2",
		},
		{
			name:      "hugepages",
			qemu:      numa2,
			kernel:    []string{"hugepagesz=2M", "hugepages=128"},
			cpuNode:   []int{0, 0, 1, 1},
			hugePages: 128,
			thp:       true,
			ringPage:  2 << 20,
			cpu:       "max",
			walk:      "AVX2",
		},
		{
			// The 4 KiB fallback, forced, on a CPU without AVX2.
			name: "nohuge",
			qemu: numa2,
			kernel: []string{"hugepages=0", "transparent_hugepage=never",
				"kmes.hugepages=0", "kmes.buffer_capacity=1048576", "sysctl.kernel.kmes.buffer_capacity=4194304"},
			cpuNode:  []int{0, 0, 1, 1},
			ringPage: 4096,
			cpu:      "max,-avx2",
			walk:     "SSSE3",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topo, err := LookupTopology(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if err := topo.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := topo.QEMUArgs(); !slices.Equal(got, tc.qemu) {
				t.Errorf("QEMUArgs:\n got %q\nwant %q", got, tc.qemu)
			}
			if got := topo.KernelArgs(); !slices.Equal(got, tc.kernel) {
				t.Errorf("KernelArgs: got %q, want %q", got, tc.kernel)
			}
			if got := topo.CPUModel(); got != tc.cpu {
				t.Errorf("CPUModel() = %q, want %q", got, tc.cpu)
			}
			e := topo.Expect()
			if !slices.Equal(e.CPUNode, tc.cpuNode) || e.HugePages != tc.hugePages || e.THP != tc.thp || e.Name != tc.name || e.RingPageSize != tc.ringPage ||
				e.CPUModel != tc.cpu || e.ValidatorWalk != tc.walk {
				t.Errorf("Expect: got %+v, want cpu_node %v hugepages %d thp %v ring_page_size %d cpu_model %q validator_walk %q",
					e, tc.cpuNode, tc.hugePages, tc.thp, tc.ringPage, tc.cpu, tc.walk)
			}
			// On the machine of make test (TCG, no model of its own) the
			// guest expects the same.
			if on := topo.ExpectOn(Machine{Accel: "tcg"}); on.CPUModel != tc.cpu || on.ValidatorWalk != tc.walk {
				t.Errorf("ExpectOn(TCG): cpu_model %q validator_walk %q, want %q %q", on.CPUModel, on.ValidatorWalk, tc.cpu, tc.walk)
			}
		})
	}
	if got, want := TopologyNames(), []string{"smp1", "smp4-numa2", "hugepages", "nohuge"}; !slices.Equal(got, want) {
		t.Errorf("TopologyNames() = %q, want %q", got, want)
	}
	// make test boots every preset: at least one must show each vector
	// walk.
	walks := map[string]bool{}
	for _, topo := range Topologies() {
		walks[topo.Expect().ValidatorWalk] = true
	}
	if !walks["AVX2"] || !walks["SSSE3"] {
		t.Errorf("the presets' validator walks are %v: want AVX2 and SSSE3 among them", walks)
	}
	if _, err := LookupTopology(DefaultTopology); err != nil {
		t.Errorf("DefaultTopology: %v", err)
	}
}

func TestUnknownTopology(t *testing.T) {
	_, err := LookupTopology("smp3")
	if err == nil || !strings.Contains(err.Error(), `unknown topology "smp3"`) || !strings.Contains(err.Error(), "smp4-numa2") {
		t.Errorf("LookupTopology(smp3) = %v, want an error naming it and listing the presets", err)
	}
}

func TestValidateRejects(t *testing.T) {
	for _, topo := range []Topology{
		{Name: "", CPUs: 1, Nodes: 1, MemoryMiB: 1024},
		{Name: "zero", CPUs: 0, Nodes: 1, MemoryMiB: 1024},
		{Name: "uneven", CPUs: 3, Nodes: 2, MemoryMiB: 1024},
		{Name: "unevenmem", CPUs: 2, Nodes: 2, MemoryMiB: 1025},
		{Name: "toomanyhuge", CPUs: 1, Nodes: 1, MemoryMiB: 1024, HugePages: 256},
		{Name: "both", CPUs: 1, Nodes: 1, MemoryMiB: 1024, HugePages: 8, NoHuge: true},
		{Name: "emptyarg", CPUs: 1, Nodes: 1, MemoryMiB: 1024, Cmdline: []string{""}},
		{Name: "twoargs", CPUs: 1, Nodes: 1, MemoryMiB: 1024, Cmdline: []string{"a=1 b=2"}},
		{Name: "cpuwords", CPUs: 1, Nodes: 1, MemoryMiB: 1024, CPU: "max, -avx2"},
	} {
		if err := topo.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", topo)
		}
	}
}

// The machine's CPU model wins over the topology's (make bench's models on
// smp1), KVM boots the host's, and the guest's expected validator walk
// follows the model it boots.
func TestExpectOn(t *testing.T) {
	nohuge, err := LookupTopology("nohuge")
	if err != nil {
		t.Fatal(err)
	}
	smp1, err := LookupTopology("smp1")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		m          Machine
		topo       Topology
		cpu, walk  string
		argsSubset []string
	}{
		{Machine{Accel: "tcg"}, nohuge, "max,-avx2", "SSSE3", []string{"-cpu", "max,-avx2"}},
		{Machine{Accel: "tcg", ICount: true}, nohuge, "max,-avx2", "SSSE3", []string{"-cpu", "max,-avx2"}},
		{Machine{Accel: "tcg", ICount: true, CPU: "max,-erms,-fsrm"}, smp1, "max,-erms,-fsrm", "AVX2", []string{"-cpu", "max,-erms,-fsrm"}},
		{Machine{Accel: "tcg", CPU: "max"}, nohuge, "max", "AVX2", []string{"-cpu", "max"}},
		{Machine{Accel: "kvm"}, nohuge, "host", "", []string{"-cpu", "host"}},
	} {
		e := tc.topo.ExpectOn(tc.m)
		if e.CPUModel != tc.cpu || e.ValidatorWalk != tc.walk {
			t.Errorf("%s on %+v: cpu_model %q validator_walk %q, want %q %q", tc.topo.Name, tc.m, e.CPUModel, e.ValidatorWalk, tc.cpu, tc.walk)
		}
		args := tc.m.For(tc.topo).Args()
		if i := slices.Index(args, "-cpu"); i < 0 || !slices.Equal(args[i:i+2], tc.argsSubset) {
			t.Errorf("%s on %+v: QEMU arguments %q, want %q", tc.topo.Name, tc.m, args, tc.argsSubset)
		}
	}
}

func TestValidatorWalk(t *testing.T) {
	for _, tc := range []struct {
		cpu  string
		args []string
		want string
	}{
		{"max", nil, "AVX2"},
		{"max,-erms,-fsrm", nil, "AVX2"},
		{"max,-avx2", nil, "SSSE3"},
		{"max,avx2=off", nil, "SSSE3"},
		{"max,-erms,-avx2,-fsrm", nil, "SSSE3"},
		{"max,+avx2", nil, "AVX2"},
		{"max,avx2=on", nil, "AVX2"},
		{"max,-avx2", []string{"kmes.simd=0"}, "scalar"},
		{"max", []string{"kmes.hugepages=0", "kmes.simd=0"}, "scalar"},
		{"host", []string{"kmes.simd=0"}, "scalar"},
		// The host cannot tell: the guest reads /proc/cpuinfo.
		{"host", nil, ""},
		{"qemu64", nil, ""},
		{"Haswell", nil, ""},
		{"max,-avx", nil, ""},
		{"max,-ssse3", nil, ""},
		{"max,xsave=off", nil, ""},
	} {
		if got := ValidatorWalk(tc.cpu, tc.args); got != tc.want {
			t.Errorf("ValidatorWalk(%q, %q) = %q, want %q", tc.cpu, tc.args, got, tc.want)
		}
	}
}
