package vm

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hugelgupf/vmtest/qemu"

	"github.com/kmes-project/kmes/vm/guest"
)

// GuestRun is one boot that runs guest test suites.
type GuestRun struct {
	Kernel    Kernel
	Initramfs string
	Topology  Topology
	Machine   Machine
	Suites    []string // test binaries in the initramfs, e.g. "boot"
	// Selftests are kselftest collections in the initramfs, e.g. "kmes".
	Selftests []string
	Args      []string // extra arguments for every test binary
	// Timeout is when the host kills QEMU (guest.DefaultVMTimeout if 0);
	// the guest's tests get a deadline before it (guest.Deadline).
	Timeout time.Duration
	// LogDir receives <test name>.serial.log; empty means the test's temp
	// directory.
	LogDir string
}

// RunGuestTests boots r and reports every guest test, every kselftest and
// every KUnit suite the kernel has built in, as a subtest of t. A guest test
// or kselftest that fails or skips, a suite or kselftest program that runs
// no test or dies, a KUnit suite that fails, skips or is missing, and a
// warning in the kernel log all fail t.
func RunGuestTests(t *testing.T, r GuestRun) *Results {
	t.Helper()
	res := r.Boot(t)
	for _, p := range res.KernelProblems {
		t.Errorf("kernel log: %s", p)
	}
	reportKUnit(t, r.Kernel.KUnitSuites, ParseKTAP(res.Serial).Subtests)
	for _, s := range r.Suites {
		res.reportSuite(t, s)
	}
	for _, c := range r.Selftests {
		res.reportSelftests(t, c)
	}
	return res
}

// reportKUnit fails t for every expected suite that is missing, failed or
// skipped, naming the failed cases and their diagnostics.
func reportKUnit(t *testing.T, want []string, got []KTAPTest) {
	t.Helper()
	for _, name := range want {
		t.Run("kunit/"+name, func(t *testing.T) {
			i := slices.IndexFunc(got, func(s KTAPTest) bool { return s.Name == name })
			if i < 0 {
				t.Fatalf("KUnit suite %s is built in but did not report at boot", name)
			}
			s := got[i]
			passed := 0
			for _, c := range s.Subtests {
				switch c.Result {
				case "ok":
					passed++
				case "not ok":
					t.Errorf("%s failed:\n%s", c.Name, strings.Join(c.Diagnostics, "\n"))
				case "skip":
					t.Logf("%s skipped", c.Name)
				}
			}
			t.Logf("%d of %d cases passed", passed, len(s.Subtests))
			switch s.Result {
			case "ok":
			case "skip":
				t.Errorf("KUnit suite %s skipped (in the project's VM a missing feature is a failure)", name)
			case "not ok":
				t.Errorf("KUnit suite %s failed", name)
			default:
				t.Errorf("KUnit suite %s did not finish", name)
			}
		})
	}
}

// Results is what a boot left behind.
type Results struct {
	ShareDir       string
	Serial         []string
	KernelProblems []string
}

// Boot boots r, runs its suites and returns what the boot left behind,
// without judging it.
func (r GuestRun) Boot(t testing.TB) *Results {
	share := t.TempDir()
	timeout, run := r.runDescription()
	if err := run.Write(share); err != nil {
		t.Fatal(err)
	}
	cmd, err := QEMUCommand(r.Machine, r.Topology)
	if err != nil {
		t.Fatal(err)
	}
	logDir := r.LogDir
	if logDir == "" {
		logDir = t.TempDir()
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(logDir, strings.ReplaceAll(t.Name(), "/", "_")+".serial.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	serial := &lineCollector{w: logFile}
	t.Logf("booting %s (%s) with %s, -cpu %s; serial log: %s", r.Topology.Name, r.Topology.Description, r.Kernel.Path, r.Machine.For(r.Topology).CPUModel(), logPath)
	vm := qemu.StartT(t, r.Topology.Name, qemu.ArchAMD64,
		qemu.WithQEMUCommand(strings.Join(cmd, " ")),
		qemu.WithKernel(r.Kernel.Path),
		qemu.WithInitramfs(r.Initramfs),
		qemu.WithAppendKernel(KernelCmdline(r.Topology)),
		qemu.P9Directory(share, guest.ShareTag),
		qemu.WithVMTimeout(timeout),
		qemu.WithSerialOutput(serial),
	)
	if err := vm.Wait(); err != nil {
		t.Errorf("QEMU: %v (a timeout means the guest hung: see %s)", err, logPath)
	}
	return &Results{ShareDir: share, Serial: serial.Lines(), KernelProblems: KernelLogProblems(serial.Lines())}
}

// runDescription returns when the host kills QEMU and the run
// description for the guest, whose deadline comes before that.
func (r GuestRun) runDescription() (time.Duration, guest.Run) {
	timeout := r.Timeout
	if timeout == 0 {
		timeout = guest.DefaultVMTimeout
	}
	return timeout, guest.Run{
		Suites:    r.Suites,
		Selftests: r.Selftests,
		Args:      r.Args,
		Deadline:  guest.Deadline(timeout),
		Topology:  r.Topology.ExpectOn(r.Machine),
		Kernel:    guest.Kernel{Release: r.Kernel.Release, Version: r.Kernel.Version},
	}
}

// SuiteExit returns the exit status of a guest suite's test binary.
func (res *Results) SuiteExit(suite string) (int, error) {
	b, err := os.ReadFile(filepath.Join(res.ShareDir, suite+".exit"))
	if err != nil {
		return -1, fmt.Errorf("guest suite %s did not finish (the guest crashed or hung): see the serial log", suite)
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// Metrics returns what guest tests recorded with guest.Record.
func (res *Results) Metrics() ([]guest.Metric, error) {
	return guest.ReadMetrics(filepath.Join(res.ShareDir, guest.MetricsFile))
}

// FailedOutput returns the output of a guest suite's failed tests, or its
// whole output when none failed (it died).
func (res *Results) FailedOutput(suite string) string {
	out, err := os.ReadFile(filepath.Join(res.ShareDir, suite+".out"))
	if err != nil {
		return err.Error()
	}
	rep, err := ParseTestOutput(suite, out)
	if err != nil {
		return string(out)
	}
	var b strings.Builder
	for _, tc := range rep.Tests {
		if tc.Action != "pass" {
			b.WriteString(tc.Output)
		}
	}
	if b.Len() == 0 {
		return string(out)
	}
	return b.String()
}

// reportSuite turns one suite's test2json stream into subtests of t.
func (res *Results) reportSuite(t *testing.T, suite string) {
	t.Helper()
	exit, err := res.SuiteExit(suite)
	if err != nil {
		t.Errorf("%v (or the initramfs lacks %s/%s.test)", err, guest.TestDir, suite)
		return
	}
	out, err := os.ReadFile(filepath.Join(res.ShareDir, suite+".out"))
	if err != nil {
		t.Errorf("guest suite %s: %v", suite, err)
		return
	}
	rep, err := ParseTestOutput(suite, out)
	if err != nil {
		t.Errorf("guest suite %s: %v", suite, err)
		return
	}
	if len(rep.Tests) == 0 {
		t.Errorf("guest suite %s ran no test (exit status %d):\n%s", suite, exit, rep.Output)
		return
	}
	failed := false
	for _, tc := range rep.Tests {
		t.Run(suite+"/"+tc.Name, func(t *testing.T) {
			switch tc.Action {
			case "pass":
			case "fail":
				failed = true
				t.Errorf("failed in the guest:\n%s", tc.Output)
			case "skip":
				failed = true
				t.Errorf("skipped in the guest (in the project's VM a missing feature is a failure):\n%s", tc.Output)
			default:
				failed = true
				t.Errorf("did not finish in the guest (%q):\n%s", tc.Action, tc.Output)
			}
		})
	}
	if exit != 0 && !failed {
		t.Errorf("guest suite %s exited with status %d:\n%s", suite, exit, rep.Output)
	}
}

// reportSelftests reports every test of every program of a kselftest
// collection as a subtest of t: selftests/<collection>/<program>/<test>.
func (res *Results) reportSelftests(t *testing.T, collection string) {
	t.Helper()
	list, err := os.ReadFile(filepath.Join(res.ShareDir, guest.SelftestListPath(collection)))
	if err != nil {
		t.Errorf("kselftest collection %s did not run: the initramfs lacks it or the guest died first (see the serial log)", collection)
		return
	}
	progs := strings.Fields(string(list))
	if len(progs) == 0 {
		t.Errorf("kselftest collection %s lists no program", collection)
	}
	for _, prog := range progs {
		t.Run("selftests/"+collection+"/"+prog, func(t *testing.T) {
			name := guest.SelftestPath(collection, prog)
			out, _ := os.ReadFile(filepath.Join(res.ShareDir, name+".out"))
			exit, err := res.SuiteExit(name)
			if err != nil {
				t.Errorf("%s did not finish (the guest crashed or hung):\n%s", prog, out)
				return
			}
			rep := JudgeSelftest(out, exit)
			for _, tc := range rep.Tests {
				t.Run(tc.Name, func(t *testing.T) {
					if tc.Problem != "" {
						t.Error(tc.Problem)
					}
				})
			}
			if len(rep.Problems) > 0 {
				t.Errorf("%s %s; its output:\n%s", prog, strings.Join(rep.Problems, "; "), out)
			}
		})
	}
}

// SelftestReport is the verdict on one kselftest program's run.
type SelftestReport struct {
	Tests []SelftestCase
	// Problems are what went wrong with the program as a whole.
	Problems []string
}

// SelftestCase is one test of a kselftest program.
type SelftestCase struct {
	Name    string
	Problem string // why it failed, with its output; "" if it passed
}

// JudgeSelftest reads a kselftest program's output as KTAP. A test passes
// when it reports "ok" without a directive: "not ok", SKIP (in the project's
// VM a missing feature is a failure), XFAIL and TODO fail it. The program
// fails when its output has no plan, no result, fewer or more results than
// planned (it crashed or was killed), or when it exited non-zero without a failed test
// to show for it.
func JudgeSelftest(out []byte, exit int) SelftestReport {
	doc := ParseKTAP(strings.Split(strings.TrimRight(string(out), "\n"), "\n"))
	var rep SelftestReport
	failed := false
	for _, tc := range doc.Subtests {
		c := SelftestCase{Name: tc.Name}
		if c.Name == "" {
			c.Name = strconv.Itoa(tc.Number)
		}
		output := strings.Join(tc.Diagnostics, "\n")
		switch tc.Result {
		case "ok":
		case "not ok":
			c.Problem = "failed:\n" + output
		case "skip":
			c.Problem = "skipped (in the project's VM a missing feature is a failure):\n" + output
		default:
			c.Problem = fmt.Sprintf("reported %s, not ok:\n%s", strings.ToUpper(tc.Result), output)
		}
		failed = failed || c.Problem != ""
		rep.Tests = append(rep.Tests, c)
	}
	switch {
	case doc.Plan < 0:
		rep.Problems = append(rep.Problems, "printed no KTAP plan (1..N)")
	case len(doc.Subtests) == 0:
		rep.Problems = append(rep.Problems, "ran no test")
	case doc.Plan != len(doc.Subtests):
		rep.Problems = append(rep.Problems, fmt.Sprintf("planned %d tests but reported %d", doc.Plan, len(doc.Subtests)))
	}
	if exit != 0 && !failed {
		rep.Problems = append(rep.Problems, "exited with status "+exitMeaning(exit))
	}
	return rep
}

// exitMeaning explains a kselftest program's exit status.
func exitMeaning(exit int) string {
	switch {
	case exit == 4:
		return "4 (KSFT_SKIP: the program skipped)"
	case exit > 128:
		return fmt.Sprintf("%d (killed by signal %d)", exit, exit-128)
	}
	return strconv.Itoa(exit)
}

// kernelLine matches a printk line with CONFIG_PRINTK_TIME's stamp, so that
// test output on the console is not mistaken for the kernel's.
var kernelLine = regexp.MustCompile(`^\[\s*\d+\.\d+\]`)

// kernelTrouble are the markers of a kernel splat: WARN, BUG, oops,
// KASAN/UBSAN reports, lockdep and sleeping-in-atomic reports, hung tasks.
var kernelTrouble = regexp.MustCompile(`WARNING:|BUG:|Oops|Kernel panic|general protection fault|KASAN|UBSAN|possible circular locking|possible recursive locking|inconsistent lock state|suspicious RCU usage|sleeping function called from invalid context|INFO: task .* blocked|Call Trace:|kmemleak`)

// KernelLogProblems returns the kernel log lines that show a warning or
// worse.
func KernelLogProblems(lines []string) []string {
	var bad []string
	for _, l := range lines {
		if kernelLine.MatchString(l) && kernelTrouble.MatchString(l) {
			bad = append(bad, l)
		}
	}
	return bad
}

// lineCollector keeps the serial output as lines and copies it to w.
type lineCollector struct {
	mu      sync.Mutex
	w       io.WriteCloser
	partial []byte
	lines   []string
}

func (c *lineCollector) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.partial = append(c.partial, p...)
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			break
		}
		c.lines = append(c.lines, strings.TrimRight(string(c.partial[:i]), "\r"))
		c.partial = c.partial[i+1:]
	}
	return c.w.Write(p)
}

func (c *lineCollector) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.partial) > 0 {
		c.lines = append(c.lines, string(c.partial))
		c.partial = nil
	}
	return c.w.Close()
}

func (c *lineCollector) Lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}
