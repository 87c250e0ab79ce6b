// Command kmes-vm builds the KMES guest initramfs and boots the patched
// kernel under QEMU.
//
//	kmes-vm initramfs [-o FILE] [-selftests DIR]... [PATTERN...]
//	                                            build the initramfs with the guest tests in PATTERN
//	                                            and the kselftest collections in DIR
//	kmes-vm run [-topology NAME] [-icount] -kernel BZIMAGE -initramfs FILE
//	kmes-vm topologies                          list the topology presets
//
// KMES_ACCEL=kvm uses KVM instead of TCG.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"text/tabwriter"

	"github.com/kmes-project/kmes/vm"
)

const usage = `usage: kmes-vm initramfs [-o FILE] [-selftests DIR]... [PATTERN...]
       kmes-vm run [-topology NAME] [-icount] -kernel BZIMAGE -initramfs FILE
       kmes-vm topologies`

func main() {
	if err := run(os.Stdout, os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "kmes-vm: %v\n", err)
		os.Exit(1)
	}
}

func run(out io.Writer, args []string) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "initramfs":
		return initramfs(out, args[1:])
	case "run":
		return boot(args[1:])
	case "topologies":
		return topologies(out)
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(out, usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", args[0], usage)
}

func initramfs(out io.Writer, args []string) error {
	fs := flag.NewFlagSet("initramfs", flag.ContinueOnError)
	output := fs.String("o", "build/initramfs.cpio", "the cpio `file` to write")
	var selftests []string
	fs.Func("selftests", "a kselftest collection `dir` built by 'make selftests' (repeatable)", func(dir string) error {
		selftests = append(selftests, dir)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	in := vm.Initramfs{Output: *output, ModuleDir: wd, GuestTests: fs.Args(), Selftests: selftests}
	built, err := in.Build(context.Background())
	if err != nil {
		return err
	}
	if built {
		fmt.Fprintf(out, "initramfs: wrote %s\n", *output)
	} else {
		fmt.Fprintf(out, "initramfs: %s is up to date\n", *output)
	}
	return nil
}

func boot(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	topo := fs.String("topology", vm.DefaultTopology, "topology preset (kmes-vm topologies lists them)")
	kernel := fs.String("kernel", "", "the bzImage to boot")
	initrd := fs.String("initramfs", "build/initramfs.cpio", "the initramfs")
	icount := fs.Bool("icount", false, "count instructions as time (-icount shift=0,sleep=off)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *kernel == "" {
		return errors.New("run: -kernel is required (make run passes build/kernel-plain/bzImage)")
	}
	t, err := vm.LookupTopology(*topo)
	if err != nil {
		return err
	}
	m, err := vm.MachineFromEnv()
	if err != nil {
		return err
	}
	m.ICount = m.ICount || *icount
	for _, f := range []string{*kernel, *initrd} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("run: %w", err)
		}
	}
	cmd, err := vm.QEMUCommand(m, t)
	if err != nil {
		return err
	}
	cmd = append(cmd, "-nographic", "-kernel", *kernel, "-initrd", *initrd, "-append", vm.KernelCmdline(t))
	fmt.Fprintf(os.Stderr, "kmes-vm: booting %s (%s) with -cpu %s; Ctrl-A X quits\n", t.Name, t.Description, m.For(t).CPUModel())
	c := exec.Command(cmd[0], cmd[1:]...)
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s: %w", cmd[0], err)
	}
	return nil
}

func topologies(out io.Writer) error {
	w := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tDESCRIPTION")
	for _, t := range vm.Topologies() {
		fmt.Fprintf(w, "%s\t%s\n", t.Name, t.Description)
	}
	return w.Flush()
}
