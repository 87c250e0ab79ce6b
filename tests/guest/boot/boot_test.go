// Package boot holds the guest tests that check the VM itself: the running
// kernel is the one built from patches/, and the machine has the shape its
// topology preset promises.
package boot

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmes-project/kmes/vm/guest"
)

func TestMain(m *testing.M) { guest.Main(m) }

func TestKernelIsTheOneBuilt(t *testing.T) {
	want := guest.Current(t).Kernel
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	release := unix.ByteSliceToString(u.Release[:])
	version := unix.ByteSliceToString(u.Version[:])
	if release != want.Release || version != want.Version {
		t.Errorf("running %q %q, built %q %q", release, version, want.Release, want.Version)
	}
	if !strings.HasSuffix(release, "-kmes") {
		t.Errorf("release %q lacks the -kmes local version", release)
	}
}

func TestCPUs(t *testing.T) {
	want := guest.Current(t).Topology
	online := guest.ReadCPUList(t, "/sys/devices/system/cpu/online")
	if len(online) != want.CPUs {
		t.Errorf("%d CPUs online %v, topology %s has %d", len(online), online, want.Name, want.CPUs)
	}
}

func TestNUMANodes(t *testing.T) {
	want := guest.Current(t).Topology
	nodes := guest.ReadCPUList(t, "/sys/devices/system/node/online")
	if len(nodes) != want.Nodes {
		t.Errorf("%d NUMA nodes online %v, topology %s has %d", len(nodes), nodes, want.Name, want.Nodes)
	}
	for cpu, node := range want.CPUNode {
		got, err := filepath.Glob(filepath.Join("/sys/devices/system/cpu", "cpu"+strconv.Itoa(cpu), "node[0-9]*"))
		if err != nil || len(got) != 1 {
			t.Errorf("cpu%d: node link %v (%v)", cpu, got, err)
			continue
		}
		if g := filepath.Base(got[0]); g != "node"+strconv.Itoa(node) {
			t.Errorf("cpu%d is on %s, want node%d", cpu, g, node)
		}
	}
}

// TestHugePages: the hugetlb pool is what the topology reserves on the
// command line, and all of it is still free: KMES's rings, allocated at
// boot, are 2 MiB pages of the buddy allocator (alloc_pages of order 9),
// not hugetlb pages, which nothing in the guest maps.
func TestHugePages(t *testing.T) {
	want := guest.Current(t).Topology
	meminfo := guest.ReadMeminfo(t)
	for _, k := range []string{"HugePages_Total", "HugePages_Free", "Hugepagesize"} {
		if _, ok := meminfo[k]; !ok {
			t.Fatalf("/proc/meminfo has no %s (CONFIG_HUGETLB_PAGE?)", k)
		}
	}
	if got := meminfo["HugePages_Total"]; got != want.HugePages {
		t.Errorf("HugePages_Total %d, topology %s reserves %d", got, want.Name, want.HugePages)
	}
	if free, total := meminfo["HugePages_Free"], meminfo["HugePages_Total"]; free != total {
		t.Errorf("HugePages_Free %d of %d: something took hugetlb pages (KMES's rings must not)", free, total)
	}
	if got := meminfo["Hugepagesize"]; got != 2048 {
		t.Errorf("Hugepagesize %d kB, want 2048", got)
	}
	thp, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil {
		t.Fatal(err)
	}
	if never := strings.Contains(string(thp), "[never]"); never == want.THP {
		t.Errorf("transparent_hugepage/enabled is %q, topology %s wants THP=%v", strings.TrimSpace(string(thp)), want.Name, want.THP)
	}
}
