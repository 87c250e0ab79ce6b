package tests

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/kmes-project/kmes/vm"
)

// swapStressTimeout is when the host kills a swap-stress boot: the guest's
// TestSwapLoop stops swapping a minute before its deadline, derived from
// it (guest.Deadline), and fails if it made fewer swaps than asked.
const swapStressTimeout = 45 * time.Minute

// TestSwapStress boots the kernel and runs only the kmes guest suite's
// TestSwapLoop, KMES_SWAP_LOOPS times (-kmes.swap-loops), in smp4-numa2
// or the KMES_TOPOLOGIES named. 'make swap-stress' runs it with the plain
// kernel and a large count; without KMES_SWAP_LOOPS it skips ('make
// vmtest' runs the loop in the kmes suite, sized for the debug kernel).
func TestSwapStress(t *testing.T) {
	loops := os.Getenv("KMES_SWAP_LOOPS")
	if loops == "" {
		t.Skip("'make swap-stress' runs it: set KMES_SWAP_LOOPS")
	}
	if n, err := strconv.Atoi(loops); err != nil || n < 1 {
		t.Fatalf("KMES_SWAP_LOOPS=%q: want a number of swaps", loops)
	}
	e := setup(t)
	names := []string{"smp4-numa2"}
	if os.Getenv("KMES_TOPOLOGIES") != "" {
		names = vm.TopologyNames()
	}
	for _, topo := range topologies(t, names...) {
		t.Run(topo.Name, func(t *testing.T) {
			vm.RunGuestTests(t, vm.GuestRun{
				Kernel:    e.kernel,
				Initramfs: e.initramfs,
				Topology:  topo,
				Machine:   e.machine,
				Suites:    []string{"kmes"},
				Args:      []string{"-test.run=^TestSwapLoop$", "-kmes.swap-loops=" + loops},
				Timeout:   swapStressTimeout,
				LogDir:    e.logDir,
			})
		})
	}
}
