// Command kmes-guest is the initramfs's uinit. When the host shares a run
// description (9p tag "kmes" with run.json), it runs the guest test binaries
// named there, writes each one's output and exit status back to the share,
// and powers the VM off. Without one ('make run') it prints what the guest
// is, runs the demo (kmes-demo emitting, 'kmesctl tail' showing the events
// until Ctrl-C) and then a shell; leaving the shell powers off.
package main

import (
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmes-project/kmes/vm/guest"
)

func main() {
	log.SetPrefix("kmes-guest: ")
	log.SetFlags(0)
	if err := run(os.Stdout); err != nil {
		log.Print(err)
	}
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		log.Printf("power off: %v", err)
	}
}

func run(out io.Writer) error {
	if err := mountShare(); err != nil {
		fmt.Fprintf(out, "kmes-guest: no run description from the host (%v): interactive\n", err)
		return interactive(out)
	}
	r, err := guest.ReadRun(filepath.Join(guest.ShareDir, guest.RunFile))
	if err != nil {
		return err
	}
	rn := &runner{
		console:     out,
		shareDir:    guest.ShareDir,
		testDir:     guest.TestDir,
		selftestDir: guest.SelftestDir,
		run:         r,
		deadline:    deadlineAt(r.Deadline, time.Now(), uptime()),
	}
	if !rn.deadline.IsZero() {
		fmt.Fprintf(out, "kmes-guest: the tests must be over %v after boot (in %v)\n", r.Deadline, time.Until(rn.deadline).Round(time.Second))
	}
	return rn.all()
}

// uptime is how long ago the kernel started.
func uptime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// deadlineAt turns a deadline counted from the kernel's start into a time,
// given the time and the uptime now; a zero deadline is none (zero time).
func deadlineAt(deadline time.Duration, now time.Time, uptime time.Duration) time.Time {
	if deadline == 0 {
		return time.Time{}
	}
	return now.Add(deadline - uptime)
}

// runner runs the suites and kselftests of a run description, each within
// what is left before the deadline (see guest.Deadline).
type runner struct {
	console     io.Writer
	shareDir    string // guest.ShareDir
	testDir     string // guest.TestDir
	selftestDir string // guest.SelftestDir
	run         guest.Run
	deadline    time.Time // zero: none
}

func (rn *runner) all() error {
	for _, suite := range rn.run.Suites {
		if err := rn.suite(suite); err != nil {
			return fmt.Errorf("suite %s: %w", suite, err)
		}
	}
	for _, c := range rn.run.Selftests {
		if err := rn.selftests(c); err != nil {
			return fmt.Errorf("kselftests %s: %w", c, err)
		}
	}
	return nil
}

// timeLeft returns the time left before the deadline (0 without one) and
// whether it is enough to start something.
func (rn *runner) timeLeft() (time.Duration, bool) {
	if rn.deadline.IsZero() {
		return 0, true
	}
	left := time.Until(rn.deadline)
	return left, left >= guest.MinRun
}

// suite runs a guest test binary with the time left as its -test.timeout,
// so that a hung test prints every goroutine before the host kills QEMU;
// it is killed KillGrace later if it has not ended by then.
func (rn *runner) suite(suite string) error {
	left, ok := rn.timeLeft()
	if !ok {
		return rn.notRun(suite, left)
	}
	kill := time.Duration(0)
	if left > 0 {
		kill = left + guest.KillGrace
	}
	return rn.runProgram(suite, rn.suiteCommand(suite, left), kill)
}

// suiteCommand is a suite's test binary, with -test.timeout set to left
// (rounded down to the second) when there is a deadline.
func (rn *runner) suiteCommand(suite string, left time.Duration) *exec.Cmd {
	args := []string{"-test.v=test2json"}
	if left > 0 {
		args = append(args, "-test.timeout="+left.Truncate(time.Second).String())
	}
	cmd := exec.Command(filepath.Join(rn.testDir, suite+".test"), append(args, rn.run.Args...)...)
	cmd.Env = append(os.Environ(), guest.ConfigEnv+"="+filepath.Join(rn.shareDir, guest.RunFile))
	return cmd
}

// notRun records, as the output and exit status of what should have run,
// that the deadline left no time for it.
func (rn *runner) notRun(name string, left time.Duration) error {
	msg := fmt.Sprintf("kmes-guest: %s not run: %v left before the deadline (%v after boot; what ran before took the time)\n",
		name, left.Round(time.Second), rn.run.Deadline)
	fmt.Fprint(rn.console, msg)
	if err := os.WriteFile(filepath.Join(rn.shareDir, name+".out"), []byte(msg), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(rn.shareDir, name+".exit"), []byte("-1\n"), 0o644)
}

// selftests runs every program of a kselftest collection, each in its own
// process group, killed after guest.SelftestTimeout or at the deadline. It
// first copies the collection's list to the share, so that the host knows
// what should have run.
func (rn *runner) selftests(collection string) error {
	dir := filepath.Join(rn.selftestDir, collection)
	list, err := os.ReadFile(filepath.Join(dir, guest.SelftestList))
	if err != nil {
		return fmt.Errorf("the initramfs has no kselftest collection %s: %w", collection, err)
	}
	if err := os.MkdirAll(filepath.Join(rn.shareDir, guest.SelftestPath(collection, "")), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(rn.shareDir, guest.SelftestListPath(collection)), list, 0o644); err != nil {
		return err
	}
	for _, prog := range strings.Fields(string(list)) {
		name := guest.SelftestPath(collection, prog)
		left, ok := rn.timeLeft()
		if !ok {
			if err := rn.notRun(name, left); err != nil {
				return err
			}
			continue
		}
		timeout := guest.SelftestTimeout
		if left > 0 {
			timeout = min(timeout, left)
		}
		cmd := exec.Command(filepath.Join(dir, prog))
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := rn.runProgram(name, cmd, timeout); err != nil {
			return fmt.Errorf("%s: %w", prog, err)
		}
	}
	return nil
}

func mountShare() error {
	if err := os.MkdirAll(guest.ShareDir, 0o755); err != nil {
		return err
	}
	// 9p's default msize of 8 KiB makes test output crawl.
	if err := unix.Mount(guest.ShareTag, guest.ShareDir, "9p", 0, "trans=virtio,version=9p2000.L,msize=1048576"); err != nil {
		return fmt.Errorf("mount 9p %s: %w", guest.ShareTag, err)
	}
	if _, err := os.Stat(filepath.Join(guest.ShareDir, guest.RunFile)); err != nil {
		return err
	}
	return nil
}

// runProgram runs cmd; its output goes to the console and to <name>.out in
// the share, its exit status (128+N for signal N) to <name>.exit. A
// timeout other than 0 kills cmd's process group when it runs out; a cmd
// in its own process group has the group killed when it ends.
func (rn *runner) runProgram(name string, cmd *exec.Cmd, timeout time.Duration) error {
	console := rn.console
	f, err := os.Create(filepath.Join(rn.shareDir, name+".out"))
	if err != nil {
		return err
	}
	defer f.Close()
	status := -1
	defer func() {
		_ = os.WriteFile(filepath.Join(rn.shareDir, name+".exit"), []byte(strconv.Itoa(status)+"\n"), 0o644)
	}()

	cmd.Dir = os.TempDir()
	w := io.MultiWriter(console, f)
	cmd.Stdout, cmd.Stderr = w, w
	// Children that outlive the program must not keep Wait waiting for
	// the end of their output.
	cmd.WaitDelay = 5 * time.Second
	fmt.Fprintf(console, "kmes-guest: running %s\n", cmd.Path)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(w, "kmes-guest: start %s: %v\n", cmd.Path, err)
		return nil
	}
	var timedOut atomic.Bool
	if timeout > 0 {
		timer := time.AfterFunc(timeout, func() {
			timedOut.Store(true)
			// The process group, when cmd has its own, else cmd alone.
			if unix.Kill(-cmd.Process.Pid, unix.SIGKILL) != nil {
				_ = cmd.Process.Kill()
			}
		})
		defer timer.Stop()
	}
	err = cmd.Wait()
	if cmd.SysProcAttr != nil && cmd.SysProcAttr.Setpgid {
		// What the program left running must not disturb the next one.
		_ = unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
	}
	if timedOut.Load() {
		fmt.Fprintf(w, "kmes-guest: %s timed out after %v: killed\n", cmd.Path, timeout)
	}
	if ps := cmd.ProcessState; ps != nil {
		ws := ps.Sys().(syscall.WaitStatus)
		status = ws.ExitStatus()
		if ws.Signaled() {
			status = 128 + int(ws.Signal())
		}
	}
	if err != nil && status == -1 {
		fmt.Fprintf(w, "kmes-guest: %s: %v\n", cmd.Path, err)
	}
	return f.Sync()
}

// interactive is 'make run': it starts the demo (guest.DemoPlan), kmes-demo
// in the background and 'kmesctl tail' in the foreground, then a shell once
// the tail ends (Ctrl-C). The emitter is stopped when the shell exits.
func interactive(out io.Writer) error {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return err
	}
	nodes, _ := filepath.Glob("/sys/devices/system/node/node[0-9]*")
	fmt.Fprintf(out, "\nKMES guest: Linux %s %s, %d CPUs, %d NUMA nodes\n",
		unix.ByteSliceToString(u.Release[:]), unix.ByteSliceToString(u.Version[:]), runtime.NumCPU(), len(nodes))

	// Ctrl-C at the console signals the whole foreground process group:
	// it must end the tail, not the runner (which would power off).
	// Notify, not Ignore: an ignored signal stays ignored in children.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt)
	defer signal.Stop(sigs)

	d := guest.DemoPlan()
	for _, l := range guest.DemoBanner(d, haveCtty()) {
		fmt.Fprintln(out, l)
	}
	fmt.Fprintln(out)
	emitter := background(out, d.Emitter)
	daemon := background(out, d.Daemon)
	defer func() {
		// kmesd stores what it read when it is told to stop.
		for _, c := range []*exec.Cmd{daemon, emitter} {
			if c != nil {
				_ = c.Process.Signal(unix.SIGTERM)
				_ = c.Wait()
			}
		}
	}()
	tail := exec.Command(d.Tail[0], d.Tail[1:]...)
	tail.Stdout, tail.Stderr = os.Stdout, os.Stderr
	err := tail.Run()
	drain(sigs)
	fmt.Fprintf(out, "\nkmes-guest: %s ended (%v)", strings.Join(d.Tail, " "), describe(err))
	for _, c := range []*exec.Cmd{emitter, daemon} {
		if c != nil {
			fmt.Fprintf(out, "; %s still runs as pid %d ('kill %d' stops it)", filepath.Base(c.Path), c.Process.Pid, c.Process.Pid)
		}
	}
	fmt.Fprintln(out, "\nType 'shutdown' or Ctrl-D to power off; Ctrl-A X quits QEMU.")

	sh := exec.Command(d.Shell[0], d.Shell[1:]...)
	sh.Stdin, sh.Stdout, sh.Stderr = os.Stdin, os.Stdout, os.Stderr
	sh.Env = append(os.Environ(), d.Env...)
	if err := sh.Run(); err != nil && !strings.Contains(err.Error(), "exit status") {
		return err
	}
	return nil
}

// background starts args in a process group of its own, its output on
// the console; nil if it could not start (said on out).
func background(out io.Writer, args []string) *exec.Cmd {
	c := exec.Command(args[0], args[1:]...)
	c.Stdout, c.Stderr = os.Stdout, os.Stderr
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.Start(); err != nil {
		fmt.Fprintf(out, "kmes-guest: start %s: %v\n", args[0], err)
		return nil
	}
	return c
}

// haveCtty reports whether the console (stdin) is this process's
// controlling terminal, which Ctrl-C needs to become SIGINT. u-root's init
// makes it so; without it the tail can only be left with Ctrl-A X.
func haveCtty() bool {
	_, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	return err == nil
}

// drain forgets the interrupts the runner caught meanwhile.
func drain(sigs <-chan os.Signal) {
	for {
		select {
		case <-sigs:
		default:
			return
		}
	}
}

func describe(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
