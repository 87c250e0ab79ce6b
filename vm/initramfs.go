package vm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/u-root/gobusybox/src/pkg/golang"
	"github.com/u-root/mkuimage/uimage"
	"github.com/u-root/uio/llog"

	"github.com/kmes-project/kmes/vm/guest"
)

// GuestCommands are built into the initramfs's busybox: u-root's init and
// shell, a few tools for 'make run', the KMES guest runner (uinit), and
// kmesctl, kmes-demo and kmesd, which 'make run' starts and the guest tests
// run.
// vm/guestcmds.go keeps the u-root ones in go.mod; the KMES ones are in
// this module.
var GuestCommands = []string{
	"github.com/u-root/u-root/cmds/core/init",
	"github.com/u-root/u-root/cmds/core/gosh",
	"github.com/u-root/u-root/cmds/core/cat",
	"github.com/u-root/u-root/cmds/core/dmesg",
	"github.com/u-root/u-root/cmds/core/kill",
	"github.com/u-root/u-root/cmds/core/ls",
	"github.com/u-root/u-root/cmds/core/mount",
	"github.com/u-root/u-root/cmds/core/ps",
	"github.com/u-root/u-root/cmds/core/shutdown",
	"github.com/u-root/u-root/cmds/core/uname",
	"github.com/kmes-project/kmes/vm/cmd/kmes-guest",
	"github.com/kmes-project/kmes/userspace/cmd/kmesctl",
	"github.com/kmes-project/kmes/userspace/cmd/kmes-demo",
	"github.com/kmes-project/kmes/userspace/cmd/kmesd",
}

// Initramfs describes the guest image.
type Initramfs struct {
	Output string // the cpio file to write
	// ModuleDir is the repository root: where go.mod is.
	ModuleDir string
	// GuestTests are package patterns (relative to ModuleDir) whose test
	// binaries go to /kmes/tests/<last path element>.test.
	GuestTests []string
	// Selftests are kselftest collections built by 'make selftests': each
	// directory goes to guest.SelftestDir/<its base name>.
	Selftests []string
	// Commands are extra Go commands (package paths) for the busybox.
	Commands []string
	Log      *llog.Logger
}

// Build compiles the guest test binaries and writes the initramfs. It does
// nothing when Output exists and no input changed since it was written: the
// busybox build takes half a minute.
func (in Initramfs) Build(ctx context.Context) (built bool, err error) {
	if in.Log == nil {
		in.Log = llog.Default()
	}
	key, err := in.inputKey()
	if err != nil {
		return false, err
	}
	stamp := in.Output + ".key"
	if old, err := os.ReadFile(stamp); err == nil && string(old) == key {
		if _, err := os.Stat(in.Output); err == nil {
			return false, nil
		}
	}
	os.Remove(stamp)
	if err := in.build(ctx); err != nil {
		return false, err
	}
	return true, os.WriteFile(stamp, []byte(key), 0o644)
}

// inputKey hashes everything the image is built from: the Go sources and
// module files of the repository, the kselftests, the Go version and the
// description.
func (in Initramfs) inputKey() (string, error) {
	h := sha256.New()
	fmt.Fprintln(h, runtime.Version(), in.GuestTests, in.Selftests, in.Commands, GuestCommands)
	for _, dir := range in.Selftests {
		files, err := selftestFiles(dir)
		if err != nil {
			return "", err
		}
		for _, f := range files {
			host, _, _ := strings.Cut(f, ":")
			b, err := os.ReadFile(host)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(h, "%s %d\n", f, len(b))
			h.Write(b)
		}
	}
	err := filepath.WalkDir(in.ModuleDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != in.ModuleDir && (name == "build" || strings.HasPrefix(name, ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") && name != "go.mod" && name != "go.sum" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %d\n", p, len(b))
		h.Write(b)
		return nil
	})
	return hex.EncodeToString(h.Sum(nil)), err
}

func (in Initramfs) build(ctx context.Context) error {
	tmp, err := os.MkdirTemp("", "kmes-initramfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	tests, err := in.buildTests(ctx, filepath.Join(tmp, "tests"))
	if err != nil {
		return err
	}
	work := filepath.Join(tmp, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(in.Output), 0o755); err != nil {
		return err
	}
	// The busybox builder resolves packages from the working directory's
	// module.
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	if err := os.Chdir(in.ModuleDir); err != nil {
		return err
	}
	defer os.Chdir(wd)

	mods := []uimage.Modifier{
		uimage.WithEnv(golang.DisableCGO(), golang.WithGOARCH("amd64"), golang.WithGOOS("linux")),
		uimage.WithTempDir(work),
		uimage.WithCPIOOutput(in.Output),
		uimage.WithBusyboxCommands(append(append([]string{}, GuestCommands...), in.Commands...)...),
		uimage.WithInit("init"),
		uimage.WithUinit("kmes-guest"),
		uimage.WithShell("gosh"),
		uimage.WithFiles(tests...),
	}
	for _, dir := range in.Selftests {
		files, err := selftestFiles(dir)
		if err != nil {
			return err
		}
		mods = append(mods, uimage.WithFiles(files...))
	}
	if err := uimage.Create(in.Log, mods...); err != nil {
		return fmt.Errorf("build initramfs %s: %w", in.Output, err)
	}
	return nil
}

// buildTests compiles every guest test package into dir and returns the
// "host:guest" file pairs for the archive.
func (in Initramfs) buildTests(ctx context.Context, dir string) ([]string, error) {
	if len(in.GuestTests) == 0 {
		return nil, nil
	}
	args := append([]string{"list", "-f", "{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}"}, in.GuestTests...)
	out, err := in.goCmd(ctx, args...)
	if err != nil {
		return nil, err
	}
	pkgs := strings.Fields(string(out))
	sort.Strings(pkgs)
	if len(pkgs) == 0 {
		return nil, fmt.Errorf("no guest test packages match %s", strings.Join(in.GuestTests, " "))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	seen := map[string]string{}
	for _, pkg := range pkgs {
		name := path.Base(pkg)
		if other, ok := seen[name]; ok {
			return nil, fmt.Errorf("guest test packages %s and %s would both be %s.test: rename one", other, pkg, name)
		}
		seen[name] = pkg
		bin := filepath.Join(dir, name+".test")
		if _, err := in.goCmd(ctx, "test", "-c", "-o", bin, pkg); err != nil {
			return nil, err
		}
		files = append(files, bin+":"+strings.TrimPrefix(path.Join(guest.TestDir, name+".test"), "/"))
	}
	return files, nil
}

func (in Initramfs) goCmd(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = in.ModuleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// selftestFiles returns the "host:guest" file pairs of a kselftest
// collection's directory, which must list its programs in
// guest.SelftestList.
func selftestFiles(dir string) ([]string, error) {
	if _, err := os.Stat(filepath.Join(dir, guest.SelftestList)); err != nil {
		return nil, fmt.Errorf("kselftests %s: %w (run 'make selftests')", dir, err)
	}
	dest := path.Join(guest.SelftestDir, filepath.Base(dir))
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		files = append(files, p+":"+strings.TrimPrefix(path.Join(dest, filepath.ToSlash(rel)), "/"))
		return nil
	})
	return files, err
}
