package kmesguest

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/kmes-project/kmes/userspace/kmes"
)

// This file sorts first in the package, so its test runs before any other
// emits much or swaps the rings: it sees the rings as the boot left them.

// bootCPU is the CPU KMES starts on, whose ring gets the kmes.init event:
// CPU 0 on x86.
const bootCPU = 0

// cmdlineValue returns the value of the numeric kernel parameter key on
// the kernel command line, and whether it is there.
func cmdlineValue(t *testing.T, key string) (uint64, bool) {
	t.Helper()
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	for _, arg := range strings.Fields(string(b)) {
		k, val, ok := strings.Cut(arg, "=")
		if !ok || strings.ReplaceAll(k, "/", ".") != key {
			continue
		}
		n, err := strconv.ParseUint(val, 10, 64)
		if err != nil {
			t.Fatalf("/proc/cmdline: %s is not a number", arg)
		}
		return n, true
	}
	return 0, false
}

// cmdlineCapacity returns the value of sysctl.kernel.kmes.buffer_capacity
// on the kernel command line (the nohuge topology sets 4 MiB, after 1 MiB rings at boot), and
// whether it is there.
func cmdlineCapacity(t *testing.T) (uint64, bool) {
	return cmdlineValue(t, "sysctl.kernel.kmes.buffer_capacity")
}

// bootCapacity is the capacity the rings were created with:
// kmes.buffer_capacity= on the command line (nohuge sets 1 MiB), else the
// kernel's default.
func bootCapacity(t *testing.T) uint64 {
	if n, ok := cmdlineValue(t, "kmes.buffer_capacity"); ok {
		return n
	}
	return defaultCapacity
}

// TestCapacityFromTheCommandLine: kmes.buffer_capacity= on the kernel
// command line is the capacity the rings are created with, and
// sysctl.kernel.kmes.buffer_capacity is applied before init, as a swap of
// the boot rings: every ring is of generation 2 and of that capacity, the
// sysctl reads it, and the boot CPU's ring still starts with the kmes.init
// event (origin 1, sequence 1), copied from the boot ring, whose capacity
// (kmes.buffer_capacity=, or the default) its payload names. Without the parameter, the rings have the sysctl's
// capacity; the kmes.init check is made if the boot ring is still there
// whole (generation 1, tail_pos 0).
func TestCapacityFromTheCommandLine(t *testing.T) {
	want, onCmdline := cmdlineCapacity(t)
	sysctl := readSysctl(t, capacitySysctl)
	st := rings(t)
	for _, s := range st {
		t.Logf("%v", s)
		if s.capacity != sysctl {
			t.Errorf("%v: the sysctl says capacity %d", s, sysctl)
		}
		if onCmdline && (s.generation != 2 || s.capacity != want) {
			t.Errorf("%v; the command line's sysctl.kernel.kmes.buffer_capacity=%d wants generation 2 (one swap at boot), capacity %d", s, want, want)
		}
	}
	switch {
	case onCmdline:
		if sysctl != want {
			t.Errorf("%s reads %d; the command line set %d", capacitySysctl, sysctl, want)
		}
	case st[bootCPU].generation != 1 || st[bootCPU].tailPos != 0:
		t.Logf("no sysctl.kernel.kmes.buffer_capacity on the command line, and the boot ring was replaced or lapped: kmes.init not checked")
		return
	default:
		t.Logf("no sysctl.kernel.kmes.buffer_capacity on the command line: the boot rings, %d bytes", st[bootCPU].capacity)
	}

	rs, err := kmes.Attach()
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	defer func() {
		for _, r := range rs {
			r.Close()
		}
	}()
	r := rs[bootCPU]
	if tail := r.TailPos(); tail != 0 {
		t.Fatalf("cpu %d's ring: tail_pos %d, want 0: the newest of the boot ring's events start the new ring, and the boot has not filled %d bytes", bootCPU, tail, r.Capacity())
	}
	var rec kmes.Record
	if ok, err := r.Read(&rec); !ok || err != nil {
		t.Fatalf("cpu %d's ring holds no event (%v): want kmes.init", bootCPU, err)
	}
	if rec.Type != "kmes.init" || rec.Origin != kmes.OriginKMES || rec.Sequence != 1 || rec.CPU != bootCPU {
		t.Fatalf("cpu %d's first event: %q, origin %d, sequence %d, cpu %d; want kmes.init, origin 1, sequence 1, cpu %d",
			bootCPU, rec.Type, rec.Origin, rec.Sequence, rec.CPU, bootCPU)
	}
	var p struct {
		Capacity uint64 `msgpack:"capacity"`
		CPUs     int    `msgpack:"cpus"`
	}
	if err := msgpack.Unmarshal(rec.Payload, &p); err != nil {
		t.Fatalf("kmes.init payload % x: %v", rec.Payload, err)
	}
	// kmes.init was emitted into the boot ring, of the capacity the rings
	// were created with.
	if boot := bootCapacity(t); p.Capacity != boot || p.CPUs != len(rs) {
		t.Errorf("kmes.init says capacity %d, %d CPUs; want the boot rings' %d, %d CPUs", p.Capacity, p.CPUs, boot, len(rs))
	}
}
