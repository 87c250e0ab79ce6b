// Package series lays out files of the kernel patch series (patches/) for
// host tests that read or compile them without a kernel tree: the UAPI
// header, the validator's C source.
package series

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Top returns the top of the repository: the nearest directory above the
// test's working directory (its package) that holds go.mod.
func Top(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatal("no go.mod above the working directory: run the test with go test")
		}
		dir = up
	}
}

// Files lays out the files the patch series adds or changes that match
// the git pathspec glob include (git apply --include of every patch in
// patches/series, in order) in a temporary directory and returns it. It
// fails the test if any of want (paths relative to the tree) is missing.
func Files(t testing.TB, include string, want ...string) string {
	t.Helper()
	top := Top(t)
	list, err := os.ReadFile(filepath.Join(top, "patches", "series"))
	if err != nil {
		t.Fatal(err)
	}
	var patches []string
	for _, name := range strings.Fields(string(list)) {
		patches = append(patches, filepath.Join(top, "patches", name))
	}
	dir := t.TempDir()
	if len(patches) > 0 {
		cmd := exec.Command("git", append([]string{"apply", "--include=" + include}, patches...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git apply %s from patches/: %v\n%s", include, err, out)
		}
	}
	for _, f := range want {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("patches/ does not add %s: %v", f, err)
		}
	}
	return dir
}

// UAPIHeader is the series' UAPI header, relative to the tree.
const UAPIHeader = "include/uapi/linux/kmes.h"

// IncludeDir returns a directory to pass to the compiler with -I so that
// #include <linux/kmes.h> finds the series' UAPI header.
func IncludeDir(t testing.TB) string {
	t.Helper()
	return filepath.Join(Files(t, UAPIHeader, UAPIHeader), "include", "uapi")
}
