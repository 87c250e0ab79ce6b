//go:build linux && amd64

package kmes

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// sysfsCPU is where the kernel lists each CPU's NUMA node (a nodeN link in
// cpuM/) and each node's CPUs; a variable so tests can point it elsewhere.
var sysfsCPU = "/sys/devices/system"

// pinToNode locks the calling goroutine to its OS thread and lets that
// thread run only on the CPUs of cpu's NUMA node.
func pinToNode(cpu int) error {
	cpus, err := nodeCPUs(cpu)
	if err != nil {
		return fmt.Errorf("pin reader of cpu %d: %w", cpu, err)
	}
	runtime.LockOSThread()
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("pin reader of cpu %d to cpus %v: %w", cpu, cpus, err)
	}
	return nil
}

// nodeCPUs returns the CPUs of cpu's NUMA node. Without NUMA in sysfs the
// whole machine is one node: all online CPUs.
func nodeCPUs(cpu int) ([]int, error) {
	links, err := filepath.Glob(filepath.Join(sysfsCPU, "cpu", fmt.Sprintf("cpu%d", cpu), "node[0-9]*"))
	if err != nil {
		return nil, err
	}
	list := filepath.Join(sysfsCPU, "cpu", "online")
	if len(links) == 1 {
		list = filepath.Join(sysfsCPU, "node", filepath.Base(links[0]), "cpulist")
	}
	b, err := os.ReadFile(list)
	if err != nil {
		return nil, err
	}
	return parseCPUList(strings.TrimSpace(string(b)))
}

// possibleCPUs returns the CPUs that can ever come online: those the
// kernel has a ring for.
func possibleCPUs() ([]int, error) {
	b, err := os.ReadFile(filepath.Join(sysfsCPU, "cpu", "possible"))
	if err != nil {
		return nil, err
	}
	return parseCPUList(strings.TrimSpace(string(b)))
}

// parseCPUList parses the kernel's CPU list format: "0-3,8,10-11".
func parseCPUList(s string) ([]int, error) {
	var cpus []int
	for _, part := range strings.Split(s, ",") {
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("parse cpu list %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("parse cpu list %q: bad range %q", s, part)
			}
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) == 0 {
		return nil, fmt.Errorf("parse cpu list %q: no cpus", s)
	}
	return cpus, nil
}
