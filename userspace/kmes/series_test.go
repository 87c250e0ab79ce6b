package kmes

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fromSeries lays out the files the patch series adds or changes that
// match the git pathspec glob include (git apply --include of every patch
// in patches/series, in order) in a temporary directory and returns it.
// It fails the test if any of want (paths relative to the tree) is missing.
func fromSeries(t testing.TB, include string, want ...string) string {
	t.Helper()
	top := filepath.Join("..", "..")
	series, err := os.ReadFile(filepath.Join(top, "patches", "series"))
	if err != nil {
		t.Fatal(err)
	}
	var patches []string
	for _, name := range strings.Fields(string(series)) {
		p, err := filepath.Abs(filepath.Join(top, "patches", name))
		if err != nil {
			t.Fatal(err)
		}
		patches = append(patches, p)
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
