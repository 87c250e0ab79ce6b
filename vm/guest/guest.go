// Package guest is the guest half of the VM harness: the run description the
// host shares with the guest, and what guest-side tests need to read it. It
// has no dependencies beyond the standard library, so that guest test
// binaries stay small.
package guest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

const (
	// ShareTag is the 9p mount tag of the directory the host shares with
	// the guest: the run description in, test output out.
	ShareTag = "kmes"
	// ShareDir is where the guest mounts it.
	ShareDir = "/mnt/kmes"
	// RunFile is the run description inside the share.
	RunFile = "run.json"
	// TestDir holds the guest test binaries inside the initramfs.
	TestDir = "/kmes/tests"
	// ConfigEnv names the run description for guest tests.
	ConfigEnv = "KMES_GUEST_RUN"
)

// Topology is what a guest must observe of the machine it runs on.
type Topology struct {
	Name      string `json:"name"`
	CPUs      int    `json:"cpus"`
	Nodes     int    `json:"nodes"`
	CPUNode   []int  `json:"cpu_node"`
	HugePages int    `json:"hugepages"`
	THP       bool   `json:"thp"`
}

// Kernel identifies the kernel the host booted.
type Kernel struct {
	Release string `json:"release"` // uname -r
	Version string `json:"version"` // uname -v
}

// Run is the run description: which guest test binaries to run and what
// they should find.
type Run struct {
	Suites   []string `json:"suites"`
	Args     []string `json:"args,omitempty"` // extra arguments for every test binary
	Topology Topology `json:"topology"`
	Kernel   Kernel   `json:"kernel"`
}

// Write stores r as dir/run.json.
func (r Run) Write(dir string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, RunFile), b, 0o644)
}

// ReadRun reads a run description.
func ReadRun(path string) (Run, error) {
	var r Run
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("parse %s: %w", path, err)
	}
	return r, nil
}

// InGuest reports whether this process was started by the guest runner.
func InGuest() bool { return os.Getenv(ConfigEnv) != "" }

// Main is TestMain for guest test packages. On the host it runs nothing and
// says so: these tests need the patched kernel and run under 'make vmtest'.
func Main(m *testing.M) {
	if !InGuest() {
		fmt.Println("guest tests: not in a KMES VM, nothing run (make vmtest runs them)")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Current returns the run description of this guest test run.
func Current(t testing.TB) Run {
	t.Helper()
	r, err := ReadRun(os.Getenv(ConfigEnv))
	if err != nil {
		t.Fatalf("read run description: %v", err)
	}
	return r
}
