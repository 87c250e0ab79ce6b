package vm

// Tests of mk/deps.sh, which installs and checks what mk/deps.list names.

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// depsList reads mk/deps.list: what each line needs and its package.
func depsList(t *testing.T) (needs, pkgs []string) {
	t.Helper()
	f, err := os.Open("../mk/deps.list")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if len(fields) < 2 || strings.HasPrefix(fields[1], "#") {
			t.Fatalf("mk/deps.list: %q names no package", s.Text())
		}
		needs, pkgs = append(needs, fields[0]), append(pkgs, fields[1])
	}
	return needs, pkgs
}

// runDeps runs mk/deps.sh with PATH set to path alone.
func runDeps(t *testing.T, path string, env []string, args ...string) (string, bool) {
	t.Helper()
	cmd := exec.Command("/bin/bash", append([]string{"../mk/deps.sh"}, args...)...)
	cmd.Env = append([]string{"PATH=" + path}, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err == nil
}

// pathWithout returns a directory holding a link to every command of
// mk/deps.list that this machine has, except the ones left out.
func pathWithout(t *testing.T, leftOut ...string) string {
	t.Helper()
	dir := t.TempDir()
	needs, _ := depsList(t)
	for _, n := range needs {
		if strings.HasPrefix(n, "/") || contains(leftOut, n) {
			continue
		}
		p, err := exec.LookPath(n)
		if err != nil {
			t.Fatalf("%s is not on this machine's PATH: run 'make deps'", n)
		}
		if err := os.Symlink(p, filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// The class of bug of a fresh machine without rsync: a command the kernel's
// headers_install calls, installed by nothing. The check names it and its
// package.
func TestDepsCheckNamesTheMissingCommand(t *testing.T) {
	if out, ok := runDeps(t, pathWithout(t), nil, "check"); !ok || out != "" {
		t.Fatalf("everything of mk/deps.list on PATH: check failed or spoke:\n%s", out)
	}
	out, ok := runDeps(t, pathWithout(t, "rsync", "qemu-system-x86_64"), nil, "check")
	if ok {
		t.Fatalf("check passed with rsync and qemu-system-x86_64 missing:\n%s", out)
	}
	want := "deps: rsync not found (Debian package rsync)\n" +
		"deps: qemu-system-x86_64 not found (Debian package qemu-system-x86)\n"
	if out != want {
		t.Errorf("check said\n%s\nwant\n%s", out, want)
	}
	out, ok = runDeps(t, pathWithout(t, "go"), nil, "check")
	if ok || !strings.Contains(out, "deps: go not found: install Go 1.") || !strings.Contains(out, "https://go.dev/doc/install") {
		t.Errorf("check without go: ok=%v, said:\n%s", ok, out)
	}
}

func TestDepsCheckFiles(t *testing.T) {
	list := filepath.Join(t.TempDir(), "deps.list")
	if err := os.WriteFile(list, []byte(
		"# comment\n"+
			"bash bash # the shell\n"+
			"/nonexistent/gelf.h libelf-dev # objtool\n"+
			"/nonexistent/linux-source-6.12.tar.xz linux-source-6.12\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bash, _ := exec.LookPath("bash")
	path := filepath.Dir(bash)
	out, ok := runDeps(t, path, []string{"DEPS_LIST=" + list}, "check")
	want := "deps: /nonexistent/gelf.h not found (Debian package libelf-dev)\n" +
		"deps: /nonexistent/linux-source-6.12.tar.xz not found (Debian package linux-source-6.12)\n"
	if ok || out != want {
		t.Errorf("check: ok=%v, said\n%s\nwant\n%s", ok, out, want)
	}
	// LINUX_TARBALL replaces Debian's kernel source.
	out, _ = runDeps(t, path, []string{"DEPS_LIST=" + list, "LINUX_TARBALL=/somewhere/linux.tar.xz"}, "check")
	if strings.Contains(out, "linux-source") {
		t.Errorf("with LINUX_TARBALL set, check still asks for linux-source:\n%s", out)
	}

	if err := os.WriteFile(list, []byte("bash # no package\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, ok = runDeps(t, path, []string{"DEPS_LIST=" + list}, "check")
	if ok || !strings.Contains(out, "'bash' names no package") {
		t.Errorf("a line without a package: ok=%v, said:\n%s", ok, out)
	}
}

// mk/deps.list is the one list: the packages make deps installs are its
// packages, with the ones the kernel's own targets need among them.
func TestDepsPackages(t *testing.T) {
	out, ok := runDeps(t, os.Getenv("PATH"), nil, "packages")
	if !ok {
		t.Fatalf("packages: %s", out)
	}
	got := strings.Fields(out)
	_, pkgs := depsList(t)
	for _, p := range pkgs {
		if p != "go.dev" && !contains(got, p) {
			t.Errorf("package %s of mk/deps.list is not installed by make deps", p)
		}
	}
	for _, p := range []string{"rsync", "bison", "flex", "bc", "libelf-dev", "qemu-system-x86", "linux-source-6.12"} {
		if !contains(got, p) {
			t.Errorf("make deps does not install %s", p)
		}
	}
	if contains(got, "go.dev") {
		t.Error("go.dev is not a Debian package")
	}
	seen := map[string]bool{}
	for _, p := range got {
		if seen[p] {
			t.Errorf("%s listed twice", p)
		}
		seen[p] = true
	}
	mk, err := os.ReadFile("../mk/deps.mk")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mk), "rsync") {
		t.Error("mk/deps.mk names packages itself: mk/deps.list is the one list")
	}
}
