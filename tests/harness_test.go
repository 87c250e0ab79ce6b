// Package tests boots the patched kernel under QEMU and runs the guest test
// suites of tests/guest in it. 'make vmtest' sets the environment:
//
//	KMES_KERNEL      the bzImage (build/kernel-debug/bzImage)
//	KMES_INITRAMFS   the initramfs with the guest tests (build/initramfs.cpio)
//	KMES_LOG_DIR     where serial logs go (build/logs/vm)
//	KMES_TOPOLOGIES  optional comma-separated subset of the topologies to boot
package tests

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kmes-project/kmes/vm"
)

// vmEnv is what every VM test needs.
type vmEnv struct {
	kernel    vm.Kernel
	initramfs string
	machine   vm.Machine
	logDir    string
}

func setup(t testing.TB) vmEnv {
	t.Helper()
	bz, initrd := os.Getenv("KMES_KERNEL"), os.Getenv("KMES_INITRAMFS")
	if bz == "" || initrd == "" {
		t.Skip("VM tests need KMES_KERNEL and KMES_INITRAMFS: run 'make vmtest'")
	}
	k, err := vm.LoadKernel(bz)
	if err != nil {
		t.Fatal(err)
	}
	top, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if err := k.CheckSeries(top); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(initrd); err != nil {
		t.Fatalf("initramfs: %v (run 'make initramfs')", err)
	}
	m, err := vm.MachineFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	return vmEnv{kernel: k, initramfs: initrd, machine: m, logDir: os.Getenv("KMES_LOG_DIR")}
}

// topologies returns the named presets, less those KMES_TOPOLOGIES leaves
// out.
func topologies(t testing.TB, names ...string) []vm.Topology {
	t.Helper()
	only := strings.Split(os.Getenv("KMES_TOPOLOGIES"), ",")
	for _, n := range only {
		if _, err := vm.LookupTopology(n); n != "" && err != nil {
			t.Fatalf("KMES_TOPOLOGIES: %v", err)
		}
	}
	var ts []vm.Topology
	for _, n := range names {
		topo, err := vm.LookupTopology(n)
		if err != nil {
			t.Fatal(err)
		}
		if only[0] == "" || slices.Contains(only, n) {
			ts = append(ts, topo)
		}
	}
	return ts
}

// kmesTopologies run, in the same boot as the boot suite, the kmes guest
// suite (tests/guest/kmes: the Go library, kmesctl and kmes-demo against
// the kernel): all of them, as each says something of its own about the
// pages of the rings, and nohuge, booted on a CPU without AVX2, about the
// msgpack validator's SSSE3 walk (README, "Topologies").
var kmesTopologies = []string{"smp1", "smp4-numa2", "hugepages", "nohuge"}

// selftestTopologies also run the kmes kselftests (build/selftests/kmes),
// after the kmes guest suite: nohuge for the 4 KiB fallback (and rings
// resized on the command line), hugepages for rings beside a hugetlb pool.
var selftestTopologies = []string{"smp1", "smp4-numa2", "hugepages", "nohuge"}

// TestBoot boots every topology preset and checks that the guest is what
// the preset says and runs the kernel built from patches/; in
// kmesTopologies it also runs the kmes guest suite
// (TestBoot/<topology>/kmes/<test>) and in selftestTopologies the kmes
// kselftests (TestBoot/<topology>/selftests/kmes/<program>/<test>). Every
// topology runs, last, the man pages' EXAMPLES programs as root
// (TestBoot/<topology>/selftests/man/examples/<test>, mk/selftests.sh).
func TestBoot(t *testing.T) {
	e := setup(t)
	for _, topo := range topologies(t, vm.TopologyNames()...) {
		t.Run(topo.Name, func(t *testing.T) {
			r := vm.GuestRun{
				Kernel:    e.kernel,
				Initramfs: e.initramfs,
				Topology:  topo,
				Machine:   e.machine,
				Suites:    []string{"boot"},
				LogDir:    e.logDir,
			}
			if slices.Contains(kmesTopologies, topo.Name) {
				r.Suites = append(r.Suites, "kmes")
			}
			if slices.Contains(selftestTopologies, topo.Name) {
				r.Selftests = []string{"kmes"}
			}
			r.Selftests = append(r.Selftests, "man")
			vm.RunGuestTests(t, r)
		})
	}
}
