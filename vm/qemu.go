package vm

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Machine says how QEMU runs the guest, apart from its topology.
type Machine struct {
	// Accel is "tcg" (the default) or "kvm". KVM guests hang on the
	// project's build machines, so KVM is only used when asked for.
	Accel string
	// ICount makes guest time count executed instructions
	// (-icount shift=0,sleep=off): the same numbers on every run, whatever
	// the host's load. For benchmarks; it forces single-threaded TCG.
	ICount bool
	// CPU is the TCG CPU model; empty means the topology's (Topology.CPU,
	// filled in by For), else DefaultCPUModel. Set, it wins over the
	// topology's: make bench boots "max" and "max,-erms,-fsrm" (without
	// them the kernel copies with a loop, not rep movsb, which TCG counts
	// as one instruction per byte). KVM ignores it: -cpu host.
	CPU string
}

// CPUModel is QEMU's -cpu of the machine: host under KVM, else the TCG
// CPU model (DefaultCPUModel if it names none).
func (m Machine) CPUModel() string {
	switch {
	case m.Accel == "kvm":
		return "host"
	case m.CPU == "":
		return DefaultCPUModel
	}
	return m.CPU
}

// For returns m as it boots topology t: with t's CPU model unless m names
// its own.
func (m Machine) For(t Topology) Machine {
	if m.CPU == "" {
		m.CPU = t.CPU
	}
	return m
}

// MachineFromEnv reads KMES_ACCEL (tcg or kvm) and KMES_ICOUNT (1 to count
// instructions).
func MachineFromEnv() (Machine, error) {
	m := Machine{Accel: os.Getenv("KMES_ACCEL"), ICount: os.Getenv("KMES_ICOUNT") == "1"}
	if m.Accel == "" {
		m.Accel = "tcg"
	}
	return m, m.Validate()
}

// Validate reports a machine QEMU cannot start.
func (m Machine) Validate() error {
	switch m.Accel {
	case "tcg":
	case "kvm":
		if m.ICount {
			return errors.New("KMES_ICOUNT=1 needs TCG: unset KMES_ACCEL=kvm")
		}
		if _, err := os.Stat("/dev/kvm"); err != nil {
			return fmt.Errorf("KMES_ACCEL=kvm: %w (unset KMES_ACCEL to use TCG)", err)
		}
	default:
		return fmt.Errorf("KMES_ACCEL=%q: use tcg or kvm", m.Accel)
	}
	return nil
}

// Args returns the accelerator and CPU arguments.
func (m Machine) Args() []string {
	switch {
	case m.Accel == "kvm":
		return []string{"-accel", "kvm", "-cpu", m.CPUModel()}
	case m.ICount:
		// icount is incompatible with multi-threaded TCG.
		return []string{"-accel", "tcg,thread=single", "-cpu", m.CPUModel(), "-icount", "shift=0,sleep=off"}
	}
	return []string{"-accel", "tcg,thread=multi", "-cpu", m.CPUModel()}
}

// QEMUBinary finds qemu-system-x86_64 (KMES_QEMU overrides the path).
func QEMUBinary() (string, error) {
	if p := os.Getenv("KMES_QEMU"); p != "" {
		return p, nil
	}
	p, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "", errors.New("qemu-system-x86_64 not found: run 'make deps' (installs qemu-system-x86)")
	}
	return p, nil
}

// BaseKernelArgs is the command line every boot gets: the serial console
// (the kernel has no other), and a panic that ends QEMU at once instead of
// waiting for the timeout.
var BaseKernelArgs = []string{"console=ttyS0", "panic=-1", "earlyprintk=serial"}

// QEMUCommand returns the QEMU binary and its fixed arguments for m and t,
// without kernel, initramfs or devices. The CPU model is m's, or t's if m
// names none (Machine.For).
func QEMUCommand(m Machine, t Topology) ([]string, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	bin, err := QEMUBinary()
	if err != nil {
		return nil, err
	}
	cmd := append([]string{bin}, m.For(t).Args()...)
	// -no-reboot turns the guest's reboot (and panic=-1) into QEMU's exit.
	cmd = append(cmd, "-no-reboot")
	return append(cmd, t.QEMUArgs()...), nil
}

// KernelCmdline returns the kernel command line for t plus extra.
func KernelCmdline(t Topology, extra ...string) string {
	args := append(append([]string{}, BaseKernelArgs...), t.KernelArgs()...)
	return strings.Join(append(args, extra...), " ")
}
