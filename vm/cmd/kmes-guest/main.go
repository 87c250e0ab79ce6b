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
	for _, suite := range r.Suites {
		bin := filepath.Join(guest.TestDir, suite+".test")
		cmd := exec.Command(bin, append([]string{"-test.v=test2json", "-test.timeout=20m"}, r.Args...)...)
		cmd.Env = append(os.Environ(), guest.ConfigEnv+"="+filepath.Join(guest.ShareDir, guest.RunFile))
		if err := runProgram(out, suite, cmd, 0); err != nil {
			return fmt.Errorf("suite %s: %w", suite, err)
		}
	}
	for _, c := range r.Selftests {
		if err := runSelftests(out, c); err != nil {
			return fmt.Errorf("kselftests %s: %w", c, err)
		}
	}
	return nil
}

// runSelftests runs every program of a kselftest collection, each in its own
// process group, killed after guest.SelftestTimeout. It first copies the
// collection's list to the share, so that the host knows what should have
// run.
func runSelftests(console io.Writer, collection string) error {
	dir := filepath.Join(guest.SelftestDir, collection)
	list, err := os.ReadFile(filepath.Join(dir, guest.SelftestList))
	if err != nil {
		return fmt.Errorf("the initramfs has no kselftest collection %s: %w", collection, err)
	}
	if err := os.MkdirAll(filepath.Join(guest.ShareDir, guest.SelftestPath(collection, "")), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(guest.ShareDir, guest.SelftestListPath(collection)), list, 0o644); err != nil {
		return err
	}
	for _, prog := range strings.Fields(string(list)) {
		cmd := exec.Command(filepath.Join(dir, prog))
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := runProgram(console, guest.SelftestPath(collection, prog), cmd, guest.SelftestTimeout); err != nil {
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
func runProgram(console io.Writer, name string, cmd *exec.Cmd, timeout time.Duration) error {
	f, err := os.Create(filepath.Join(guest.ShareDir, name+".out"))
	if err != nil {
		return err
	}
	defer f.Close()
	status := -1
	defer func() {
		_ = os.WriteFile(filepath.Join(guest.ShareDir, name+".exit"), []byte(strconv.Itoa(status)+"\n"), 0o644)
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
	emitter := exec.Command(d.Emitter[0], d.Emitter[1:]...)
	emitter.Stdout, emitter.Stderr = os.Stdout, os.Stderr
	emitter.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := emitter.Start(); err != nil {
		fmt.Fprintf(out, "kmes-guest: start %s: %v\n", d.Emitter[0], err)
	} else {
		defer func() {
			_ = emitter.Process.Kill()
			_ = emitter.Wait()
		}()
	}
	tail := exec.Command(d.Tail[0], d.Tail[1:]...)
	tail.Stdout, tail.Stderr = os.Stdout, os.Stderr
	err := tail.Run()
	drain(sigs)
	fmt.Fprintf(out, "\nkmes-guest: %s ended (%v)", strings.Join(d.Tail, " "), describe(err))
	if emitter.Process != nil {
		fmt.Fprintf(out, "; %s still runs as pid %d ('kill %d' stops it)", d.Emitter[0], emitter.Process.Pid, emitter.Process.Pid)
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
