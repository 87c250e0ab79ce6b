package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmes-project/kmes/vm/guest"
)

// testTimeout returns the -test.timeout a command gets, 0 if none.
func testTimeout(t *testing.T, cmd *exec.Cmd) time.Duration {
	t.Helper()
	for _, a := range cmd.Args {
		if v, ok := strings.CutPrefix(a, "-test.timeout="); ok {
			d, err := time.ParseDuration(v)
			if err != nil {
				t.Fatalf("%s: %v", a, err)
			}
			return d
		}
	}
	return 0
}

// The guest's timeouts fire before the host kills QEMU, whatever the VM
// timeout and however long the kernel took to boot: a suite's
// -test.timeout, the kill KillGrace after it and a kselftest program's
// kill all come at least 30 s (QEMU's start before the kernel's clock,
// writing the results, powering off) before the host's timeout.
func TestGuestTimeoutsFireBeforeTheHostKillsQEMU(t *testing.T) {
	const beforeKernel, after = 5 * time.Second, 25 * time.Second
	for _, vmTimeout := range []time.Duration{guest.DefaultVMTimeout, 2 * time.Minute, 90 * time.Second, 60 * time.Minute} {
		for _, boot := range []time.Duration{time.Second, 20 * time.Second, 60 * time.Second} {
			run := guest.Run{Suites: []string{"boot"}, Deadline: guest.Deadline(vmTimeout)}
			now := time.Now()
			rn := &runner{run: run, deadline: deadlineAt(run.Deadline, now, boot)}
			left, ok := rn.timeLeft()
			if !ok {
				if run.Deadline-boot >= guest.MinRun+time.Second {
					t.Errorf("VM timeout %v, boot %v: no time left to run a suite with deadline %v", vmTimeout, boot, run.Deadline)
				}
				continue
			}
			suite := testTimeout(t, rn.suiteCommand("boot", left))
			if suite <= 0 {
				t.Fatalf("VM timeout %v: the suite gets no -test.timeout", vmTimeout)
			}
			// Host time from QEMU's start at which each guest timeout fires.
			dump := beforeKernel + boot + suite
			kill := dump + guest.KillGrace
			selftest := beforeKernel + boot + min(guest.SelftestTimeout, left)
			if kill+after > vmTimeout || selftest+after > vmTimeout {
				t.Errorf("VM timeout %v, boot %v: the suite's -test.timeout (%v) fires at %v and its kill at %v, a kselftest's at %v: less than %v before the host kills QEMU",
					vmTimeout, boot, suite, dump, kill, selftest, after)
			}
			if vmTimeout >= 10*time.Minute && suite < vmTimeout*3/4 {
				t.Errorf("VM timeout %v: the suite gets only %v", vmTimeout, suite)
			}
		}
	}
}

func TestDeadlineAt(t *testing.T) {
	now := time.Unix(1000, 0)
	if got := deadlineAt(0, now, time.Minute); !got.IsZero() {
		t.Errorf("no deadline: got %v", got)
	}
	if got, want := deadlineAt(9*time.Minute, now, 20*time.Second), now.Add(8*time.Minute+40*time.Second); !got.Equal(want) {
		t.Errorf("deadline 9m after a boot 20s ago: %v, want %v", got, want)
	}
}

// A hung suite prints every goroutine's stack to the share before the
// deadline, and what comes after it is not started but says why.
func TestHungSuitePrintsItsGoroutinesBeforeTheDeadline(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a test binary")
	}
	dir := t.TempDir()
	share, tests := filepath.Join(dir, "share"), filepath.Join(dir, "tests")
	for _, d := range []string{share, tests} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("go", "test", "-c", "-o", filepath.Join(tests, "hang.test"), "./testdata/hang").CombinedOutput(); err != nil {
		t.Fatalf("go test -c: %v\n%s", err, out)
	}
	const budget = guest.MinRun + 3*time.Second
	start := time.Now()
	rn := &runner{
		console:  io.Discard,
		shareDir: share,
		testDir:  tests,
		run:      guest.Run{Suites: []string{"hang", "after"}, Deadline: budget},
		deadline: deadlineAt(budget, start, 0),
	}
	if err := rn.all(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > budget+guest.KillGrace/2 {
		t.Errorf("the runner took %v with a deadline %v away", took, budget)
	}
	out, _ := os.ReadFile(filepath.Join(share, "hang.out"))
	for _, want := range []string{"panic: test timed out after", "running tests:", "TestHang", "goroutine ", "time.Sleep", "hang_test.go"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the hung suite's output lacks %q:\n%s", want, out)
		}
	}
	if exit, _ := os.ReadFile(filepath.Join(share, "hang.exit")); strings.TrimSpace(string(exit)) != "2" {
		t.Errorf("hung suite's exit status %q, want 2 (go test's timeout panic)", exit)
	}
	after, _ := os.ReadFile(filepath.Join(share, "after.out"))
	if !strings.Contains(string(after), "after not run") || !strings.Contains(string(after), "before the deadline") {
		t.Errorf("the suite after the hung one: %q", after)
	}
	if exit, _ := os.ReadFile(filepath.Join(share, "after.exit")); strings.TrimSpace(string(exit)) != "-1" {
		t.Errorf("the suite not run has exit status %q, want -1", exit)
	}
}
