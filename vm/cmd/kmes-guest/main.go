// Command kmes-guest is the initramfs's uinit. When the host shares a run
// description (9p tag "kmes" with run.json), it runs the guest test binaries
// named there, writes each one's output and exit status back to the share,
// and powers the VM off. Without one ('make run') it prints what the guest
// is and starts a shell; leaving the shell powers off.
package main

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

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
		if err := runSuite(out, suite, r.Args); err != nil {
			return fmt.Errorf("suite %s: %w", suite, err)
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

// runSuite runs one test binary; its output goes to the console and to
// <suite>.out in the share, its exit status to <suite>.exit.
func runSuite(console io.Writer, suite string, extra []string) error {
	f, err := os.Create(filepath.Join(guest.ShareDir, suite+".out"))
	if err != nil {
		return err
	}
	defer f.Close()
	status := -1
	defer func() {
		_ = os.WriteFile(filepath.Join(guest.ShareDir, suite+".exit"), []byte(strconv.Itoa(status)+"\n"), 0o644)
	}()

	bin := filepath.Join(guest.TestDir, suite+".test")
	args := append([]string{"-test.v=test2json", "-test.timeout=20m"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), guest.ConfigEnv+"="+filepath.Join(guest.ShareDir, guest.RunFile))
	w := io.MultiWriter(console, f)
	cmd.Stdout, cmd.Stderr = w, w
	fmt.Fprintf(console, "kmes-guest: running %s\n", bin)
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		status = 0
	case errors.As(err, &ee):
		status = ee.ExitCode()
	default:
		fmt.Fprintf(w, "kmes-guest: start %s: %v\n", bin, err)
		return nil
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
