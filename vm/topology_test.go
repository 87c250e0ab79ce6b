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
	}{
		{
			name:     "smp1",
			qemu:     []string{"-smp", "1,sockets=1,cores=1,threads=1", "-m", "1024M"},
			cpuNode:  []int{0},
			thp:      true,
			ringPage: 2 << 20,
		},
		{
			name:     "smp4-numa2",
			qemu:     numa2,
			cpuNode:  []int{0, 0, 1, 1},
			thp:      true,
			ringPage: 2 << 20,
		},
		{
			name:      "hugepages",
			qemu:      numa2,
			kernel:    []string{"hugepagesz=2M", "hugepages=128"},
			cpuNode:   []int{0, 0, 1, 1},
			hugePages: 128,
			thp:       true,
			ringPage:  2 << 20,
		},
		{
			// The 4 KiB fallback, forced.
			name: "nohuge",
			qemu: numa2,
			kernel: []string{"hugepages=0", "transparent_hugepage=never",
				"kmes.hugepages=0", "kmes.buffer_capacity=1048576", "sysctl.kernel.kmes.buffer_capacity=4194304"},
			cpuNode:  []int{0, 0, 1, 1},
			ringPage: 4096,
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
			e := topo.Expect()
			if !slices.Equal(e.CPUNode, tc.cpuNode) || e.HugePages != tc.hugePages || e.THP != tc.thp || e.Name != tc.name || e.RingPageSize != tc.ringPage {
				t.Errorf("Expect: got %+v, want cpu_node %v hugepages %d thp %v ring_page_size %d", e, tc.cpuNode, tc.hugePages, tc.thp, tc.ringPage)
			}
		})
	}
	if got, want := TopologyNames(), []string{"smp1", "smp4-numa2", "hugepages", "nohuge"}; !slices.Equal(got, want) {
		t.Errorf("TopologyNames() = %q, want %q", got, want)
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
	} {
		if err := topo.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", topo)
		}
	}
}
