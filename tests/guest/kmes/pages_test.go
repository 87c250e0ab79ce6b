package kmesguest

import (
	"bufio"
	"encoding/binary"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/userspace/kmes/abi"
	"github.com/kmes-project/kmes/vm/guest"
)

// The pages of a ring's data (KMES.md §9.1.2, issue 13): 2 MiB compound
// pages of the buddy allocator from the ring CPU's NUMA node, read through
// PMD entries, or 4 KiB pages when the kernel falls back, which it logs.
// The topology says which the rings must be on (kmes.hugepages=0 forces
// the fallback in nohuge), and the page tables and page flags, not the
// producer page, say which they are on.

// TestRingPageSize: every ring's data_page_size is the topology's.
func TestRingPageSize(t *testing.T) {
	topo := guest.Current(t).Topology
	rs, err := kmes.Attach()
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	for _, r := range rs {
		if ps := r.PageSize(); ps != uint64(topo.RingPageSize) {
			t.Errorf("cpu %d: ring of generation %d, %d bytes, has its data on %d-byte pages; topology %s wants %d",
				r.CPU(), r.RingGeneration(), r.Capacity(), ps, topo.Name, topo.RingPageSize)
		}
		r.Close()
	}
}

// fallbackLine is the kernel's line for a ring whose data is on 4 KiB
// pages.
var fallbackLine = regexp.MustCompile(`(?m)kmes: CPU (\d+): ring data on 4 KiB pages: (.*)$`)

// belowHuge is the fallback reason of a ring too small for a 2 MiB page.
var belowHuge = regexp.MustCompile(`^capacity (\d+) is below 2048 KiB$`)

// TestFallbackLogged: where kmes.hugepages=0 forces the fallback, the
// kernel logs it for every CPU (at least once: nohuge's boot rings and
// the rings its command line swaps in both fall back) and for no other
// reason than that or a ring below 2 MiB. Elsewhere no ring falls back
// but one below 2 MiB: none at boot, and only the tests of this suite
// that swap to small rings (after this one) make such.
func TestFallbackLogged(t *testing.T) {
	topo := guest.Current(t).Topology
	forced := topo.RingPageSize == guest.BasePageSize
	perCPU := make([]int, topo.CPUs)
	for _, m := range fallbackLine.FindAllStringSubmatch(guest.KernelLog(t), -1) {
		line, reason := m[0], m[2]
		cpu, err := strconv.Atoi(m[1])
		if err != nil || cpu >= topo.CPUs {
			t.Errorf("%q: no CPU %s in topology %s", line, m[1], topo.Name)
			continue
		}
		if b := belowHuge.FindStringSubmatch(reason); b != nil {
			if n, err := strconv.ParseUint(b[1], 10, 64); err != nil || n >= guest.HugePageSize {
				t.Errorf("%q: that capacity is not below 2 MiB", line)
			}
			continue
		}
		if forced && reason == "kmes.hugepages=0" {
			perCPU[cpu]++
			continue
		}
		t.Errorf("%q: topology %s wants rings on %d-byte pages", line, topo.Name, topo.RingPageSize)
	}
	if !forced {
		return
	}
	for cpu, n := range perCPU {
		t.Logf("cpu %d: %d rings fell back for kmes.hugepages=0", cpu, n)
		if n == 0 {
			t.Errorf("cpu %d: the kernel log has no line %q", cpu, "kmes: CPU "+strconv.Itoa(cpu)+": ring data on 4 KiB pages: kmes.hugepages=0")
		}
	}
}

// Page flags of /proc/kpageflags (<linux/kernel-page-flags.h>).
const (
	kpfCompoundHead = 1 << 15
	kpfCompoundTail = 1 << 16
	kpfHuge         = 1 << 17 // a hugetlb page
)

// PAGEMAP_SCAN (<linux/fs.h>): the categories of a range's pages.
const (
	pagemapScan   = 0xc0606610 // _IOWR('f', 16, struct pm_scan_arg)
	pageIsPresent = 1 << 3
	pageIsHuge    = 1 << 6 // mapped by a PMD entry
)

// pmScanArg is struct pm_scan_arg.
type pmScanArg struct {
	size, flags, start, end, walkEnd, vec, vecLen, maxPages uint64
	categoryInverted, categoryMask, categoryAnyofMask       uint64
	returnMask                                              uint64
}

// pageRegion is struct page_region.
type pageRegion struct{ start, end, categories uint64 }

// touched keeps the reads of the data from being optimised away.
var touched byte

// TestRingDataPages maps every ring, reads a few pages of its data in
// both copies, and checks in /proc/self/pagemap, /proc/kpageflags and
// /proc/zoneinfo that: both copies map the same pages; they are on the
// ring CPU's node; on 2 MiB pages the data starts 2 MiB-aligned, each
// page is at its place in a naturally aligned 2 MiB compound page (head,
// then tails) and, unless transparent hugepages are off, PMD-mapped; on
// 4 KiB pages none is compound or PMD-mapped; none is a hugetlb page, and
// the hugetlb pool is still all free.
func TestRingDataPages(t *testing.T) {
	topo := guest.Current(t).Topology
	pagemap := open(t, "/proc/self/pagemap")
	kpageflags := open(t, "/proc/kpageflags")
	zones := zoneSpans(t)
	for cpu, node := range topo.CPUNode {
		m := mapRingOf(t, cpu)
		defer unix.Munmap(m)
		r, err := kmes.NewRing(m)
		if err != nil {
			t.Fatalf("open the ring of cpu %d: %v", cpu, err)
		}
		capacity, pageSize := r.Capacity(), r.PageSize()
		if r.CPU() != cpu {
			t.Fatalf("descriptor %d maps the ring of cpu %d", cpu, r.CPU())
		}
		// What the topology wants, not what the ring says: the page
		// tables must agree with it.
		huge := topo.RingPageSize == guest.HugePageSize && capacity >= guest.HugePageSize
		t.Logf("cpu %d (node %d): %d bytes on %d-byte pages", cpu, node, capacity, pageSize)
		if pageSize != guest.HugePageSize && pageSize != guest.BasePageSize {
			t.Errorf("cpu %d: data_page_size %d", cpu, pageSize)
			continue
		}
		data := m[abi.MapDataOff:]
		base := uintptr(unsafe.Pointer(&data[0]))
		if huge && base%guest.HugePageSize != 0 {
			t.Errorf("cpu %d: the data is at %#x, not 2 MiB-aligned", cpu, base)
		}
		offs := []uint64{0, guest.BasePageSize, capacity / 2, capacity - guest.BasePageSize}
		for _, off := range offs {
			touched += data[off] + data[capacity+off]
		}
		regions := scanPages(t, pagemap, base, base+uintptr(2*capacity))
		for _, off := range offs {
			pfn := pfnAt(t, pagemap, base+uintptr(off))
			if again := pfnAt(t, pagemap, base+uintptr(capacity+off)); again != pfn {
				t.Errorf("cpu %d: data offset %#x is PFN %#x, its second copy PFN %#x", cpu, off, pfn, again)
			}
			if n, ok := nodeOfPFN(zones, pfn); !ok || n != node {
				t.Errorf("cpu %d: data offset %#x is PFN %#x, on node %d (known: %v); want node %d", cpu, off, pfn, n, ok, node)
			}
			// The data's first page is 512-aligned, and so on.
			if at := off % guest.HugePageSize / guest.BasePageSize; huge && pfn%(guest.HugePageSize/guest.BasePageSize) != at {
				t.Errorf("cpu %d: data offset %#x is PFN %#x, not page %d of a 2 MiB-aligned run of 512", cpu, off, pfn, at)
			}
			flags := entry(t, kpageflags, pfn)
			if flags&kpfHuge != 0 {
				t.Errorf("cpu %d: data offset %#x is PFN %#x, a hugetlb page (flags %#x)", cpu, off, pfn, flags)
			}
			head, tail := flags&kpfCompoundHead != 0, flags&kpfCompoundTail != 0
			if wantHead := huge && off%guest.HugePageSize == 0; head != wantHead || tail != (huge && !wantHead) {
				t.Errorf("cpu %d: data offset %#x is PFN %#x, compound head %v, tail %v; on %d-byte pages want head %v, tail %v",
					cpu, off, pfn, head, tail, pageSize, wantHead, huge && !wantHead)
			}
			for _, at := range []uint64{off, capacity + off} {
				c := categoriesAt(regions, uint64(base)+at)
				if wantPMD := huge && topo.THP; c&pageIsPresent == 0 || (c&pageIsHuge != 0) != wantPMD {
					t.Errorf("cpu %d: mapping offset %#x: PAGEMAP_SCAN categories %#x; want present, PMD-mapped %v", cpu, abi.MapDataOff+at, c, wantPMD)
				}
			}
		}
	}
	meminfo := guest.ReadMeminfo(t)
	if free, total := meminfo["HugePages_Free"], meminfo["HugePages_Total"]; free != total {
		t.Errorf("HugePages_Free %d of %d with every ring mapped and read: the rings must not come from the hugetlb pool", free, total)
	}
}

// open opens a file for the test.
func open(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// entry returns the i-th u64 of f: a page's entry in /proc/self/pagemap
// (by virtual page) or /proc/kpageflags (by PFN).
func entry(t *testing.T, f *os.File, i uint64) uint64 {
	t.Helper()
	var b [8]byte
	if _, err := f.ReadAt(b[:], int64(i*8)); err != nil {
		t.Fatalf("read entry %#x of %s: %v", i, f.Name(), err)
	}
	return binary.LittleEndian.Uint64(b[:])
}

// pfnAt returns the PFN of the page mapped at addr, which must be
// present; as root, pagemap shows PFNs.
func pfnAt(t *testing.T, pagemap *os.File, addr uintptr) uint64 {
	t.Helper()
	e := entry(t, pagemap, uint64(addr)/guest.BasePageSize)
	pfn := e & (1<<55 - 1)
	if e&(1<<63) == 0 || pfn == 0 {
		t.Fatalf("pagemap entry of %#x is %#x: not present, or no PFN shown", addr, e)
	}
	return pfn
}

// scanPages returns PAGEMAP_SCAN's regions of [start, end) in this
// process, with their PAGE_IS_PRESENT and PAGE_IS_HUGE categories.
func scanPages(t *testing.T, pagemap *os.File, start, end uintptr) []pageRegion {
	t.Helper()
	vec := make([]pageRegion, 4096)
	arg := pmScanArg{
		start: uint64(start), end: uint64(end),
		vec: uint64(uintptr(unsafe.Pointer(&vec[0]))), vecLen: uint64(len(vec)),
		returnMask: pageIsPresent | pageIsHuge,
	}
	arg.size = uint64(unsafe.Sizeof(arg))
	n, _, errno := unix.Syscall(unix.SYS_IOCTL, pagemap.Fd(), pagemapScan, uintptr(unsafe.Pointer(&arg)))
	if errno != 0 {
		t.Fatalf("ioctl(PAGEMAP_SCAN) of %#x-%#x: %v", start, end, errno)
	}
	if arg.walkEnd != uint64(end) {
		t.Fatalf("PAGEMAP_SCAN of %#x-%#x stopped at %#x after %d regions", start, end, arg.walkEnd, n)
	}
	return vec[:n]
}

// categoriesAt returns the categories of the region holding addr, 0 if
// none does.
func categoriesAt(regions []pageRegion, addr uint64) uint64 {
	for _, r := range regions {
		if r.start <= addr && addr < r.end {
			return r.categories
		}
	}
	return 0
}

// zoneSpan is the PFNs a zone of a node spans.
type zoneSpan struct {
	node       int
	start, end uint64
}

// zoneSpans reads every populated zone's span from /proc/zoneinfo. (The
// kernel has no CONFIG_MEMORY_HOTPLUG, so no memory blocks in sysfs.)
func zoneSpans(t *testing.T) []zoneSpan {
	t.Helper()
	zoneinfo := open(t, "/proc/zoneinfo")
	var spans []zoneSpan
	var cur zoneSpan
	var spanned uint64
	sc := bufio.NewScanner(zoneinfo)
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "Node "):
			n, err := strconv.Atoi(strings.TrimSuffix(f[1], ","))
			if err != nil {
				t.Fatalf("/proc/zoneinfo: %q", line)
			}
			cur, spanned = zoneSpan{node: n}, 0
		case len(f) == 2 && f[0] == "spanned":
			n, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatalf("/proc/zoneinfo: %q", line)
			}
			spanned = n
		case len(f) == 2 && f[0] == "start_pfn:" && spanned > 0:
			start, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatalf("/proc/zoneinfo: %q", line)
			}
			cur.start, cur.end = start, start+spanned
			spans = append(spans, cur)
		}
	}
	if err := sc.Err(); err != nil || len(spans) == 0 {
		t.Fatalf("/proc/zoneinfo: %d zones with PFNs (%v)", len(spans), err)
	}
	return spans
}

// nodeOfPFN returns the node whose zone spans pfn.
func nodeOfPFN(spans []zoneSpan, pfn uint64) (int, bool) {
	for _, s := range spans {
		if s.start <= pfn && pfn < s.end {
			return s.node, true
		}
	}
	return 0, false
}
