package kmes

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildsOnOtherPlatforms cross-builds the userspace code: KMES works
// on linux/amd64 only, but a program using the package must build
// anywhere and fail at run time with ErrUnsupported.
func TestBuildsOnOtherPlatforms(t *testing.T) {
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go tool to cross-build with: %v", err)
	}
	for _, c := range []struct{ goos, goarch, cmd string }{
		{"linux", "arm64", "build"},
		{"darwin", "arm64", "build"},
		{"windows", "amd64", "vet"}, // vet: the tests too
	} {
		t.Run(c.goos+"/"+c.goarch, func(t *testing.T) {
			t.Parallel()
			args := []string{c.cmd, "./userspace/..."}
			cmd := exec.Command(gotool, args...)
			cmd.Dir = filepath.Join("..", "..")
			cmd.Env = append(os.Environ(), "GOOS="+c.goos, "GOARCH="+c.goarch, "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("GOOS=%s GOARCH=%s go %s: %v\n%s", c.goos, c.goarch, strings.Join(args, " "), err, out)
			}
		})
	}
}
