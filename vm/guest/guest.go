// Package guest is the guest half of the VM harness: the run description the
// host shares with the guest, and what guest-side tests need to read it. It
// has no dependencies beyond the standard library, so that guest test
// binaries stay small.
package guest

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	// ShareTag is the 9p mount tag of the directory the host shares with
	// the guest: the run description in, test output out.
	ShareTag = "kmes"
	// ShareDir is where the guest mounts it.
	ShareDir = "/mnt/kmes"
	// RunFile is the run description inside the share.
	RunFile = "run.json"
	// TestDir holds the guest test binaries inside the initramfs.
	TestDir = "/kmes/tests"
	// ConfigEnv names the run description for guest tests.
	ConfigEnv = "KMES_GUEST_RUN"
	// MetricsFile in the share collects what Record reports.
	MetricsFile = "metrics.txt"
	// SelftestDir holds the kselftest collections inside the initramfs,
	// one directory each, with the programs to run listed in
	// SelftestList.
	SelftestDir  = "/kmes/selftests"
	SelftestList = "kselftest-list.txt"
	// SelftestTimeout is how long one kselftest program may run before the
	// guest kills it.
	SelftestTimeout = 120 * time.Second
)

// The host kills QEMU when a boot outlasts its timeout (DefaultVMTimeout
// unless the boot sets another). The guest's own timeouts must fire first,
// so that a hung guest test prints its goroutine dump (go test's
// -test.timeout panic) to the share instead of dying with the VM. So the
// host derives from its timeout the guest's deadline (Deadline) and puts it
// in the run description; the guest runner gives each suite the time left
// before it as -test.timeout, kills a suite KillGrace after that, stops
// each kselftest program at the deadline at the latest, and starts nothing
// with less than MinRun left.
//
// The deadline counts from the guest kernel's start on the guest's clock,
// which under TCG follows the host's. Under -icount (make bench) guest
// time counts instructions and may run slower than the host's: there the
// order is not guaranteed.
const (
	DefaultVMTimeout = 10 * time.Minute
	// KillGrace is how long after its -test.timeout the runner waits for
	// a suite to print its dump and exit before it kills it.
	KillGrace = 15 * time.Second
	// MinRun is the least time left before the deadline for which the
	// runner still starts a suite or a kselftest program.
	MinRun = 5 * time.Second
	// minMargin is the least time between the guest's deadline and the
	// host's kill: QEMU's start and the firmware before the kernel's clock
	// starts, KillGrace, writing the results and powering off.
	minMargin = 45 * time.Second
)

// Deadline returns when, counted from the guest kernel's start, the tests
// of a guest that the host kills after vmTimeout must be over: vmTimeout
// less a tenth of it, and at least minMargin less (half of vmTimeout for
// a timeout too short for that).
func Deadline(vmTimeout time.Duration) time.Duration {
	if vmTimeout <= 2*minMargin {
		return vmTimeout / 2
	}
	return vmTimeout - max(vmTimeout/10, minMargin)
}

// SelftestListPath is where in the share the guest copies the list of a
// kselftest collection's programs before it runs them.
func SelftestListPath(collection string) string {
	return path.Join("selftests", collection+".list")
}

// SelftestPath is where in the share a kselftest program's results go:
// like a suite's, its output in <path>.out and its exit status in
// <path>.exit.
func SelftestPath(collection, program string) string {
	return path.Join("selftests", collection, program)
}

// Metric is one measured number, such as instructions per event.
type Metric struct {
	Name  string
	Value float64
	Unit  string
}

// Record reports a measurement to the host (one "name value unit" line in
// the share's metrics file) and logs it.
func Record(t testing.TB, name string, value float64, unit string) {
	t.Helper()
	if strings.ContainsAny(name, " \n") || strings.ContainsAny(unit, " \n") {
		t.Fatalf("metric %q %q: name and unit must be single words", name, unit)
	}
	t.Logf("%s: %.2f %s", name, value, unit)
	f, err := os.OpenFile(filepath.Join(ShareDir, MetricsFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "%s %g %s\n", name, value, unit); err != nil {
		t.Fatal(err)
	}
}

// ReadMetrics parses a metrics file written by Record.
func ReadMetrics(path string) ([]Metric, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ms []Metric
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var m Metric
		if _, err := fmt.Sscanf(line, "%s %g %s", &m.Name, &m.Value, &m.Unit); err != nil {
			return nil, fmt.Errorf("%s: bad metric line %q: %w", path, line, err)
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// The sizes of the pages a KMES ring's data can be on (its
// data_page_size): 2 MiB pages, or the 4 KiB fallback.
const (
	HugePageSize = 2 << 20
	BasePageSize = 4096
)

// Topology is what a guest must observe of the machine it runs on.
type Topology struct {
	Name      string `json:"name"`
	CPUs      int    `json:"cpus"`
	Nodes     int    `json:"nodes"`
	CPUNode   []int  `json:"cpu_node"`
	HugePages int    `json:"hugepages"`
	THP       bool   `json:"thp"`
	// RingPageSize is the size of the pages every KMES ring's data must
	// be on (HugePageSize or BasePageSize), as its data_page_size says.
	RingPageSize int `json:"ring_page_size"`
	// CPUModel is QEMU's -cpu the guest boots under ("max",
	// "max,-avx2", "host" under KVM).
	CPUModel string `json:"cpu_model"`
	// ValidatorWalk is the walk the kernel's msgpack validator must pick
	// at boot (WalkAVX2, WalkSSSE3 or WalkScalar), or "" where the host
	// cannot tell from the CPU model (KVM's -cpu host): then the CPU's
	// features in /proc/cpuinfo decide.
	ValidatorWalk string `json:"validator_walk"`
}

// The walks of the kernel's msgpack validator, as its boot log line
// ("kmes: msgpack validator: AVX2 walk") and debugfs kmes/simd name them:
// AVX2 if the CPU has it, else SSSE3, else scalar (also with kmes.simd=0
// on the command line, or after 0 is written to kmes/simd).
const (
	WalkAVX2   = "AVX2"
	WalkSSSE3  = "SSSE3"
	WalkScalar = "scalar"
)

// Kernel identifies the kernel the host booted.
type Kernel struct {
	Release string `json:"release"` // uname -r
	Version string `json:"version"` // uname -v
}

// Run is the run description: which guest test binaries to run and what
// they should find.
type Run struct {
	Suites []string `json:"suites"`
	// Selftests are kselftest collections (directories of SelftestDir)
	// whose programs to run.
	Selftests []string `json:"selftests,omitempty"`
	Args      []string `json:"args,omitempty"` // extra arguments for every test binary
	// Deadline is when, counted from the guest kernel's start, the tests
	// must be over (see Deadline); 0 sets none.
	Deadline time.Duration `json:"deadline,omitempty"`
	Topology Topology      `json:"topology"`
	Kernel   Kernel        `json:"kernel"`
}

// Write stores r as dir/run.json.
func (r Run) Write(dir string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, RunFile), b, 0o644)
}

// ReadRun reads a run description.
func ReadRun(path string) (Run, error) {
	var r Run
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("parse %s: %w", path, err)
	}
	return r, nil
}

// InGuest reports whether this process was started by the guest runner.
func InGuest() bool { return os.Getenv(ConfigEnv) != "" }

// Main is TestMain for guest test packages. In the guest it runs the
// tests. On the host, where they would need the patched kernel, it reports
// each of them skipped (--- SKIP in go test -v, with the reason: 'make
// vmtest' runs them) instead of running nothing and printing ok.
func Main(m *testing.M) {
	if InGuest() {
		os.Exit(m.Run())
	}
	// testing.Main cannot write the go command's test log (which only
	// serves go test's caching).
	os.Args = slices.DeleteFunc(os.Args, func(a string) bool {
		return strings.HasPrefix(a, "-test.testlogfile=")
	})
	testing.Main(regexp.MatchString, hostSkips(testNames(m)), nil, nil)
}

// HostSkip is why a guest test skips on the host.
const HostSkip = "guest test: needs the KMES kernel, runs in the VM under 'make vmtest'"

// hostSkips returns a test that skips for each name; one for the whole
// package when the names are not known.
func hostSkips(names []string) []testing.InternalTest {
	if len(names) == 0 {
		names = []string{"TestGuestSuite"}
	}
	tests := make([]testing.InternalTest, len(names))
	for i, n := range names {
		tests[i] = testing.InternalTest{Name: n, F: func(t *testing.T) { t.Skip(HostSkip) }}
	}
	return tests
}

// testNames returns the names of m's tests. testing.M does not export
// them: reflect reads its tests field, and nil comes back if a Go release
// renames it (the test of Main fails then).
func testNames(m *testing.M) []string {
	v := reflect.ValueOf(m).Elem().FieldByName("tests")
	if !v.IsValid() || v.Kind() != reflect.Slice {
		return nil
	}
	var names []string
	for i := range v.Len() {
		e := v.Index(i)
		if e.Kind() != reflect.Struct {
			return nil
		}
		if n := e.FieldByName("Name"); n.Kind() == reflect.String {
			names = append(names, n.String())
		}
	}
	return names
}

// Current returns the run description of this guest test run.
func Current(t testing.TB) Run {
	t.Helper()
	r, err := ReadRun(os.Getenv(ConfigEnv))
	if err != nil {
		t.Fatalf("read run description: %v", err)
	}
	return r
}

// ReadMeminfo returns the numbers of /proc/meminfo by name, in the file's
// units (kB, or a count of pages).
func ReadMeminfo(t testing.TB) map[string]int {
	t.Helper()
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		name, rest, _ := strings.Cut(line, ":")
		f := strings.Fields(rest)
		if len(f) == 0 {
			t.Fatalf("/proc/meminfo: bad line %q", line)
		}
		n, err := strconv.Atoi(f[0])
		if err != nil {
			t.Fatalf("/proc/meminfo: bad line %q", line)
		}
		m[name] = n
	}
	return m
}

// ReadCPUList reads a sysfs CPU or node list such as "0-1,3".
func ReadCPUList(t testing.TB, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int
	for _, part := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, ok := strings.Cut(part, "-")
		if !ok {
			hi = lo
		}
		a, err1 := strconv.Atoi(lo)
		z, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil || z < a {
			t.Fatalf("%s: bad list %q", path, b)
		}
		for i := a; i <= z; i++ {
			ids = append(ids, i)
		}
	}
	return ids
}
