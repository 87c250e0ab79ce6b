// Package vm builds the KMES guest initramfs and boots the patched kernel
// under QEMU in named topologies, for tests, benchmarks and 'make run'.
package vm

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/kmes-project/kmes/vm/guest"
)

// Topology is a named machine shape: vCPUs, NUMA nodes, memory, hugepage
// reservation and CPU model. The presets are the only topologies; tests and
// 'make run' name them.
type Topology struct {
	Name        string
	Description string
	CPUs        int
	Nodes       int // NUMA nodes; 1 means no NUMA description at all
	MemoryMiB   int // split evenly over the nodes
	// HugePages is the number of 2 MiB hugetlb pages reserved on the
	// kernel command line. NoHuge reserves none and turns transparent
	// hugepages off; order-9 pages of the buddy allocator remain (KMES
	// rings leave them only with kmes.hugepages=0).
	HugePages int
	NoHuge    bool
	// Cmdline is what else the preset puts on the kernel command line,
	// after what its shape needs: settings the guest tests must also see
	// made at boot.
	Cmdline []string
	// CPU is the TCG CPU model (QEMU's -cpu) the preset boots under; ""
	// is the machine's default, DefaultCPUModel. A Machine that names its
	// own model (make bench) boots that instead, and KVM boots -cpu host
	// (Machine.For).
	CPU string
}

var presets = []Topology{
	{Name: "smp1", Description: "1 vCPU, 1 node, 1 GiB", CPUs: 1, Nodes: 1, MemoryMiB: 1024},
	{Name: "smp4-numa2", Description: "4 vCPUs on 2 NUMA nodes (CPUs 0-1 on node 0, 2-3 on node 1), 2 GiB", CPUs: 4, Nodes: 2, MemoryMiB: 2048},
	{Name: "hugepages", Description: "smp4-numa2 with 128 2 MiB hugepages reserved at boot", CPUs: 4, Nodes: 2, MemoryMiB: 2048, HugePages: 128},
	// nohuge forces every KMES ring onto 4 KiB pages (kmes.hugepages=0):
	// the guest tests check that the fallback is taken and reported. It
	// also boots with 1 MiB rings replaced by 4 MiB ones (a swap at boot,
	// before init): the guest tests check the rings' generation and
	// capacity, and that the kmes.init event survived. 4 MiB is the
	// default, which the kselftests start from. And it is the one
	// topology whose CPU has no AVX2 (-cpu max,-avx2): the kernel's
	// msgpack validator must pick its SSSE3 walk, where the others pick
	// AVX2, and give the scalar walk's verdicts with it.
	{Name: "nohuge", Description: "smp4-numa2 with no hugepages reserved and transparent hugepages off; KMES rings on 4 KiB pages (kmes.hugepages=0), resized from 1 MiB to 4 MiB on the command line; a CPU without AVX2 (-cpu max,-avx2: the SSSE3 validator walk)",
		CPUs: 4, Nodes: 2, MemoryMiB: 2048, NoHuge: true,
		Cmdline: []string{"kmes.hugepages=0", "kmes.buffer_capacity=1048576", "sysctl.kernel.kmes.buffer_capacity=4194304"},
		CPU:     "max,-avx2"},
}

// DefaultCPUModel is the TCG CPU model of a topology and machine that name
// none: every feature TCG emulates, AVX2 among them (QEMU 7.2 and later).
const DefaultCPUModel = "max"

// DefaultTopology is what 'make run' boots.
const DefaultTopology = "smp4-numa2"

// Topologies returns the presets in a fixed order.
func Topologies() []Topology { return slices.Clone(presets) }

// TopologyNames returns the preset names in a fixed order.
func TopologyNames() []string {
	names := make([]string, len(presets))
	for i, p := range presets {
		names[i] = p.Name
	}
	return names
}

// LookupTopology returns the preset called name.
func LookupTopology(name string) (Topology, error) {
	for _, p := range presets {
		if p.Name == name {
			return p, nil
		}
	}
	return Topology{}, fmt.Errorf("unknown topology %q: use one of %s", name, strings.Join(TopologyNames(), ", "))
}

// CPUNode returns the NUMA node of each vCPU: consecutive blocks of CPUs
// per node.
func (t Topology) CPUNode() []int {
	m := make([]int, t.CPUs)
	per := t.CPUs / t.Nodes
	for cpu := range m {
		m[cpu] = cpu / per
	}
	return m
}

// QEMUArgs returns the QEMU arguments that give the guest this shape. Each
// node is a socket of its own: a socket split over two nodes makes the
// kernel WARN in topology_sane().
func (t Topology) QEMUArgs() []string {
	smp := fmt.Sprintf("%d,sockets=%d,cores=%d,threads=1", t.CPUs, t.Nodes, t.CPUs/t.Nodes)
	args := []string{"-smp", smp, "-m", fmt.Sprintf("%dM", t.MemoryMiB)}
	if t.Nodes <= 1 {
		return args
	}
	per := t.CPUs / t.Nodes
	for n := 0; n < t.Nodes; n++ {
		id := fmt.Sprintf("mem%d", n)
		args = append(args,
			"-object", fmt.Sprintf("memory-backend-ram,id=%s,size=%dM", id, t.MemoryMiB/t.Nodes),
			"-numa", fmt.Sprintf("node,nodeid=%d,cpus=%d-%d,memdev=%s", n, n*per, (n+1)*per-1, id))
	}
	return args
}

// KernelArgs returns the kernel command line arguments this shape needs,
// then the preset's Cmdline.
func (t Topology) KernelArgs() []string {
	var args []string
	switch {
	case t.NoHuge:
		args = []string{"hugepages=0", "transparent_hugepage=never"}
	case t.HugePages > 0:
		args = []string{"hugepagesz=2M", "hugepages=" + strconv.Itoa(t.HugePages)}
	}
	return append(args, t.Cmdline...)
}

// Validate reports a preset that QEMU could not build.
func (t Topology) Validate() error {
	switch {
	case t.Name == "":
		return fmt.Errorf("topology has no name")
	case t.CPUs < 1 || t.Nodes < 1:
		return fmt.Errorf("topology %s: needs at least 1 CPU and 1 node", t.Name)
	case t.CPUs%t.Nodes != 0:
		return fmt.Errorf("topology %s: %d CPUs do not split evenly over %d nodes", t.Name, t.CPUs, t.Nodes)
	case t.MemoryMiB%t.Nodes != 0:
		return fmt.Errorf("topology %s: %d MiB do not split evenly over %d nodes", t.Name, t.MemoryMiB, t.Nodes)
	case t.HugePages*2 >= t.MemoryMiB/2:
		return fmt.Errorf("topology %s: %d hugepages leave too little memory", t.Name, t.HugePages)
	case t.NoHuge && t.HugePages > 0:
		return fmt.Errorf("topology %s: NoHuge with hugepages reserved", t.Name)
	case strings.ContainsAny(t.CPU, " \t\n"):
		return fmt.Errorf("topology %s: CPU model %q is not one word", t.Name, t.CPU)
	}
	for _, a := range t.Cmdline {
		if a == "" || strings.ContainsAny(a, " \t\n") {
			return fmt.Errorf("topology %s: command line argument %q is not one word", t.Name, a)
		}
	}
	return nil
}

// CPUModel is the TCG CPU model the preset boots under on a machine that
// names none.
func (t Topology) CPUModel() string {
	if t.CPU == "" {
		return DefaultCPUModel
	}
	return t.CPU
}

// Expect returns what a guest booted in this topology, under its own CPU
// model, must observe. ExpectOn is the same for a given machine.
func (t Topology) Expect() guest.Topology {
	return guest.Topology{
		Name:          t.Name,
		CPUs:          t.CPUs,
		Nodes:         t.Nodes,
		CPUNode:       t.CPUNode(),
		HugePages:     t.HugePages,
		THP:           !t.NoHuge,
		RingPageSize:  t.ringPageSize(),
		CPUModel:      t.CPUModel(),
		ValidatorWalk: ValidatorWalk(t.CPUModel(), t.KernelArgs()),
	}
}

// ExpectOn returns what a guest booted in this topology on m must observe:
// Expect, with the CPU model m boots instead of the preset's (its own, or
// the host's under KVM) and the validator walk that follows from it.
func (t Topology) ExpectOn(m Machine) guest.Topology {
	e := t.Expect()
	e.CPUModel = m.For(t).CPUModel()
	e.ValidatorWalk = ValidatorWalk(e.CPUModel, t.KernelArgs())
	return e
}

// ValidatorWalk returns the walk the kernel's msgpack validator picks at
// boot (guest.WalkAVX2, guest.WalkSSSE3 or guest.WalkScalar) on QEMU CPU
// model cpu with the kernel command line args: scalar with kmes.simd=0,
// else the CPU's best. Of CPU models only "max" and its variants are
// known: max has AVX2 (and SSSE3); max with AVX2 turned off ("-avx2" or
// "avx2=off") has SSSE3. For any other model ("host" under KVM, a named
// one), or a variant of max without a feature the walks need besides AVX2
// (AVX, XSAVE, SSSE3 and what it builds on), it returns "": the guest
// goes by the CPU's features in /proc/cpuinfo instead.
func ValidatorWalk(cpu string, args []string) string {
	if slices.Contains(args, "kmes.simd=0") {
		return guest.WalkScalar
	}
	model := strings.Split(cpu, ",")
	if model[0] != "max" {
		return ""
	}
	walk := guest.WalkAVX2
	for _, f := range model[1:] {
		name, off := strings.CutPrefix(f, "-")
		if n, v, ok := strings.Cut(f, "="); ok {
			name, off = n, v == "off" || v == "false"
		}
		switch {
		case !off:
		case name == "avx2":
			walk = guest.WalkSSSE3
		case slices.Contains([]string{"avx", "xsave", "ssse3", "sse3", "sse2", "sse"}, name):
			return ""
		}
	}
	return walk
}

// ringPageSize is the size of the pages every KMES ring's data is on in
// this topology: 2 MiB, unless the command line forces the 4 KiB
// fallback. Every preset's rings are 2 MiB or larger and its nodes have
// 2 MiB pages free for them, so no other fallback is expected.
func (t Topology) ringPageSize() int {
	if slices.Contains(t.Cmdline, "kmes.hugepages=0") {
		return guest.BasePageSize
	}
	return guest.HugePageSize
}
