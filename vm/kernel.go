package vm

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Kernel is a bzImage built by 'make kernel' and what mk/kernel.sh recorded
// about it in kernel.json beside it.
type Kernel struct {
	Path    string `json:"-"`
	Flavor  string `json:"flavor"`
	Release string `json:"release"` // uname -r
	Version string `json:"version"` // uname -v
	Series  string `json:"series"`  // content key of patches/ when applied
	Tree    string `json:"tree"`    // build/linux tree hash, in uname -v
	// KUnitSuites are the kmes_* KUnit suites built in: each must pass at
	// every boot.
	KUnitSuites []string `json:"kunit_suites"`
}

// LoadKernel reads the kernel at bzImage and its kernel.json.
func LoadKernel(bzImage string) (Kernel, error) {
	k := Kernel{Path: bzImage}
	if _, err := os.Stat(bzImage); err != nil {
		return k, fmt.Errorf("kernel %s: %w (run 'make kernel')", bzImage, err)
	}
	meta := filepath.Join(filepath.Dir(bzImage), "kernel.json")
	b, err := os.ReadFile(meta)
	if err != nil {
		return k, fmt.Errorf("kernel %s has no kernel.json: %w (run 'make kernel')", bzImage, err)
	}
	if err := json.Unmarshal(b, &k); err != nil {
		return k, fmt.Errorf("parse %s: %w", meta, err)
	}
	return k, nil
}

// CheckSeries fails when the kernel was built from another patch series than
// the one in top/patches now: the VM would test stale code.
func (k Kernel) CheckSeries(top string) error {
	out, err := exec.Command(filepath.Join(top, "mk", "kernel.sh"), "series-key").Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return fmt.Errorf("mk/kernel.sh series-key: %s", strings.TrimSpace(string(ee.Stderr)))
		}
		return fmt.Errorf("mk/kernel.sh series-key: %w", err)
	}
	if want := strings.TrimSpace(string(out)); k.Series != want {
		return fmt.Errorf("kernel %s was built from series %s but patches/ is now %s: run 'make kernel'", k.Path, k.Series, want)
	}
	return nil
}
