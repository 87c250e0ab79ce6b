// Command kmes-guest is the initramfs's uinit. When the host shares a run
// description (9p tag "kmes" with run.json), it runs the guest test binaries
// named there, writes each one's output and exit status back to the share,
// and powers the VM off. Without one ('make run') it prints what the guest
// is and starts a shell; leaving the shell powers off.
package main

import (
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
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

func interactive(out io.Writer) error {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return err
	}
	nodes, _ := filepath.Glob("/sys/devices/system/node/node[0-9]*")
	fmt.Fprintf(out, "\nKMES guest: Linux %s %s, %d CPUs, %d NUMA nodes\n",
		unix.ByteSliceToString(u.Release[:]), unix.ByteSliceToString(u.Version[:]), runtime.NumCPU(), len(nodes))
	fmt.Fprintln(out, "Type 'shutdown' or Ctrl-D to power off; Ctrl-A X quits QEMU.")
	sh := exec.Command("gosh")
	sh.Stdin, sh.Stdout, sh.Stderr = os.Stdin, os.Stdout, os.Stderr
	sh.Env = append(os.Environ(), "PS1=kmes# ")
	if err := sh.Run(); err != nil && !strings.Contains(err.Error(), "exit status") {
		return err
	}
	return nil
}
