package vm

// Tests of mk/kernel.sh, the kernel half of the harness, against a fake
// kernel tarball: the tree layout, stamps, export and every bad input.

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeMergeConfig stands for the kernel's merge_config.sh -n -O OBJ
// FRAGMENT...: a later fragment's setting of an option wins, and
// CONFIG_DROPPED never makes it into OBJ/.config.
const fakeMergeConfig = `#!/bin/sh
shift 2; out=$1; shift
awk '/^(# )?CONFIG_/ { o = $0; sub(/^# /, "", o); sub(/[= ].*/, "", o); if (!(o in v)) k[n++] = o; v[o] = $0 }
	END { for (i = 0; i < n; i++) print v[k[i]] }' "$@" | grep -v DROPPED > "$out/.config"
`

// fakeKbuild is what make distro-check asks of the kernel's Makefile:
// olddefconfig changes nothing, hello.o reports hello.c's line that says
// "warning:", if any, as gcc would, and headers installs none.
const fakeKbuild = `
olddefconfig:
hello.o:
	@grep -h warning: hello.c || true
headers:
`

type kernelSh struct {
	t       *testing.T
	top     string
	tarball string
}

func newKernelSh(t *testing.T) *kernelSh {
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("git is needed: run 'make deps'")
	}
	top := t.TempDir()
	script, err := os.ReadFile("../mk/kernel.sh")
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "linux-6.12.1")
	files := map[string]string{
		filepath.Join(top, "mk/kernel.sh"):                    string(script),
		filepath.Join(top, "patches/series"):                  "",
		filepath.Join(top, "kernel-config/base.config"):       "# base\nCONFIG_KEPT=y\nCONFIG_DROPPED=y\n",
		filepath.Join(top, "kernel-config/kmes.config"):       "# kmes\n",
		filepath.Join(top, "kernel-config/kmes-test.config"):  "# kmes-test\n",
		filepath.Join(top, "kernel-config/kselftest.config"):  "# kselftest\n",
		filepath.Join(top, "kernel-config/debug.config"):      "# debug\n",
		filepath.Join(top, "kernel-config/bench.config"):      "# bench\n",
		filepath.Join(top, "kernel-config/nokmes.config"):     "# CONFIG_KMES is not set\n",
		filepath.Join(src, "Makefile"):                        "VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 1\n" + fakeKbuild,
		filepath.Join(src, "Kconfig"):                         "config DROPPED\n\tbool \"dropped\"\n\tdepends on NOTHERE\n",
		filepath.Join(src, "hello.c"):                         "int hello;\n",
		filepath.Join(src, "scripts/kconfig/merge_config.sh"): fakeMergeConfig,
	}
	for p, s := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tarball := filepath.Join(t.TempDir(), "linux-6.12.1.tar.gz")
	if out, err := exec.Command("tar", "-czf", tarball, "-C", filepath.Dir(src), "linux-6.12.1").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	return &kernelSh{t: t, top: top, tarball: tarball}
}

// run runs kernel.sh and returns its combined output and whether it
// succeeded.
func (k *kernelSh) run(env []string, args ...string) (string, bool) {
	cmd := exec.Command(filepath.Join(k.top, "mk/kernel.sh"), args...)
	cmd.Env = append(append(os.Environ(), "LINUX_TARBALL="+k.tarball, "FORCE="), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err == nil
}

func (k *kernelSh) mustRun(args ...string) string {
	k.t.Helper()
	return k.mustRunEnv(nil, args...)
}

func (k *kernelSh) mustRunEnv(env []string, args ...string) string {
	k.t.Helper()
	out, ok := k.run(env, args...)
	if !ok {
		k.t.Fatalf("kernel.sh %s failed:\n%s", strings.Join(args, " "), out)
	}
	return out
}

func (k *kernelSh) git(args ...string) string {
	k.t.Helper()
	out, err := exec.Command("git", append([]string{"-C", filepath.Join(k.top, "build/linux")}, args...)...).CombinedOutput()
	if err != nil {
		k.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func (k *kernelSh) write(rel, s string) {
	k.t.Helper()
	if err := os.WriteFile(filepath.Join(k.top, rel), []byte(s), 0o644); err != nil {
		k.t.Fatal(err)
	}
}

// commit makes a commit in build/linux changing hello.c.
func (k *kernelSh) commit(content, subject string) {
	k.t.Helper()
	k.write("build/linux/hello.c", content)
	k.git("commit", "-qam", subject)
}

func wantFail(t *testing.T, out string, ok bool, words ...string) {
	t.Helper()
	if ok {
		t.Fatalf("succeeded, want a failure mentioning %q:\n%s", words, out)
	}
	for _, w := range words {
		if !strings.Contains(out, w) {
			t.Errorf("message lacks %q:\n%s", w, out)
		}
	}
}

func TestKernelShTreeAndExport(t *testing.T) {
	k := newKernelSh(t)
	if out := k.mustRun("tree"); !strings.Contains(out, "unpacking") {
		t.Errorf("first run: %q, want it to unpack", out)
	}
	base := k.git("rev-parse", "kmes-base")
	if head := k.git("rev-parse", "HEAD"); head != base {
		t.Errorf("empty series: HEAD %s, want kmes-base %s", head, base)
	}
	if out := k.mustRun("tree"); out != "" {
		t.Errorf("second run with nothing changed printed %q, want nothing", out)
	}

	k.commit("int hello = 1;\n", "kmes: set hello")
	out := k.mustRun("export")
	if !strings.Contains(out, "exported 1 patches") {
		t.Errorf("export said %q", out)
	}
	series, _ := os.ReadFile(filepath.Join(k.top, "patches/series"))
	if strings.TrimSpace(string(series)) != "0001-kmes-set-hello.patch" {
		t.Errorf("series = %q", series)
	}
	head := k.git("rev-parse", "HEAD")
	if out := k.mustRun("tree"); out != "" {
		t.Errorf("tree after export printed %q, want nothing", out)
	}
	if k.git("rev-parse", "HEAD") != head {
		t.Error("tree after export re-applied the series it came from")
	}

	// A fresh tree from the exported series has the same content.
	if err := os.RemoveAll(filepath.Join(k.top, "build")); err != nil {
		t.Fatal(err)
	}
	if out := k.mustRun("tree"); !strings.Contains(out, "applying 1 patches") {
		t.Errorf("fresh tree: %q", out)
	}
	if b, _ := os.ReadFile(filepath.Join(k.top, "build/linux/hello.c")); string(b) != "int hello = 1;\n" {
		t.Errorf("hello.c = %q after applying the series", b)
	}
	if k.git("rev-parse", "kmes-base") != base {
		t.Error("the base commit differs between two unpackings of one tarball")
	}
}

// The cover letter (patches/0000-cover-letter.patch) is not in the series:
// git am never applies it, and export keeps its hand-written header,
// subject and blurb while it rewrites the patch count, the shortlog and
// the diffstat from the commits exported.
func TestKernelShExportKeepsCoverLetter(t *testing.T) {
	k := newKernelSh(t)
	k.mustRun("tree")
	k.commit("int hello = 1;\n", "kmes: one")
	k.mustRun("export")
	coverPath := filepath.Join(k.top, "patches/0000-cover-letter.patch")
	if _, err := os.Stat(coverPath); err == nil {
		t.Fatal("export wrote a cover letter that nobody started")
	}

	const head = "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n" +
		"From: KMES Developers <kmes-dev@example.org>\n" +
		"Date: Thu, 1 Jan 2026 00:00:00 +0000\n"
	const blurb = "\nWhy KMES, in two paragraphs.\n\n" +
		"  An indented line (2):\n- a list\n\n"
	k.write("patches/0000-cover-letter.patch", head+"Subject: [PATCH 0/1] kmes: the subject\n"+blurb+
		"Stale Author (1):\n  kmes: stale\n\n stale.c | 1 +\n 1 file changed, 1 insertion(+)\n\n")
	if out, ok := k.run(nil, "tree"); !ok {
		t.Fatalf("tree refused the cover letter: %s", out)
	}

	k.commit("int hello = 2;\n", "kmes: two")
	k.mustRun("export")
	b, err := os.ReadFile(coverPath)
	if err != nil {
		t.Fatalf("export dropped the cover letter: %v", err)
	}
	cover := string(b)
	if want := head + "Subject: [PATCH 0/2] kmes: the subject\n" + blurb + "KMES build (2):\n  kmes: one\n  kmes: two\n\n"; !strings.HasPrefix(cover, want) {
		t.Errorf("cover letter after export:\n%s\nwant it to start with:\n%s", cover, want)
	}
	if !strings.Contains(cover, " hello.c | 2 +-\n") || strings.Contains(cover, "stale") {
		t.Errorf("cover letter's diffstat is not the series':\n%s", cover)
	}
	series, _ := os.ReadFile(filepath.Join(k.top, "patches/series"))
	if strings.Contains(string(series), "cover") {
		t.Errorf("series lists the cover letter:\n%s", series)
	}
	k.mustRun("export")
	if again, _ := os.ReadFile(coverPath); string(again) != cover {
		t.Errorf("a second export changed the cover letter:\n%s", again)
	}

	// A fresh tree applies the two patches, not the cover letter.
	if err := os.RemoveAll(filepath.Join(k.top, "build")); err != nil {
		t.Fatal(err)
	}
	if out := k.mustRun("tree"); !strings.Contains(out, "applying 2 patches") {
		t.Errorf("fresh tree: %q", out)
	}

	k.write("patches/series", string(series)+"0000-cover-letter.patch\n")
	out, ok := k.run(nil, "tree")
	wantFail(t, out, ok, "patches/series names 0000-cover-letter.patch", "must not be in the series")
}

func TestKernelShPatchDoesNotApply(t *testing.T) {
	k := newKernelSh(t)
	k.mustRun("tree")
	k.commit("int hello = 2;\n", "kmes: two")
	k.mustRun("export")
	// Corrupt the patch's context so that it no longer applies.
	p := filepath.Join(k.top, "patches/0001-kmes-two.patch")
	b, _ := os.ReadFile(p)
	k.write("patches/0001-kmes-two.patch", strings.Replace(string(b), "-int hello;", "-int goodbye;", 1))
	for i := 0; i < 2; i++ {
		out, ok := k.run(nil, "tree")
		wantFail(t, out, ok, "kmes: two", "does not apply", "build/logs/git-am.log")
		if head, base := k.git("rev-parse", "HEAD"), k.git("rev-parse", "kmes-base"); head != base {
			t.Errorf("after a failed apply HEAD is %s, want the base %s", head, base)
		}
		if _, err := os.Stat(filepath.Join(k.top, "build/linux/.git/kmes-applied")); err == nil {
			t.Error("a half-applied tree is stamped as applied")
		}
	}
}

func TestKernelShBadSeries(t *testing.T) {
	k := newKernelSh(t)
	k.write("patches/series", "0001-missing.patch\n")
	out, ok := k.run(nil, "tree")
	wantFail(t, out, ok, "patches/0001-missing.patch does not exist")

	k.write("patches/series", "")
	k.write("patches/0001-stray.patch", "")
	out, ok = k.run(nil, "tree")
	wantFail(t, out, ok, "patches/0001-stray.patch is not listed in patches/series")
}

func TestKernelShMissingTarball(t *testing.T) {
	k := newKernelSh(t)
	k.tarball = "/nonexistent/linux.tar.xz"
	out, ok := k.run(nil, "tree")
	wantFail(t, out, ok, "/nonexistent/linux.tar.xz not found", "make deps", "LINUX_TARBALL")
}

func TestKernelShKeepsUnexportedWork(t *testing.T) {
	k := newKernelSh(t)
	k.mustRun("tree")
	k.commit("int hello = 3;\n", "kmes: three")
	k.write("patches/series", "# changed\n")
	out, ok := k.run(nil, "tree")
	wantFail(t, out, ok, "make export-patches", "FORCE=1")
	if b, _ := os.ReadFile(filepath.Join(k.top, "build/linux/hello.c")); string(b) != "int hello = 3;\n" {
		t.Fatal("the refused run still discarded the commit")
	}

	k.write("build/linux/hello.c", "int hello = 4;\n")
	out, ok = k.run(nil, "tree")
	wantFail(t, out, ok, "uncommitted changes", "FORCE=1")

	if out, ok := k.run([]string{"FORCE=1"}, "tree"); !ok {
		t.Fatalf("FORCE=1: %s", out)
	}
	if b, _ := os.ReadFile(filepath.Join(k.top, "build/linux/hello.c")); string(b) != "int hello;\n" {
		t.Errorf("FORCE=1 left hello.c = %q, want the base", b)
	}
}

func TestKernelShConfigMustStick(t *testing.T) {
	k := newKernelSh(t)
	k.mustRun("tree")
	out, ok := k.run(nil, "build", "plain")
	wantFail(t, out, ok, "kernel-config/base.config: CONFIG_DROPPED=y did not stick")
	if strings.Contains(out, "CONFIG_KEPT") {
		t.Errorf("an option that stuck is reported:\n%s", out)
	}
	out, ok = k.run(nil, "build", "fancy")
	wantFail(t, out, ok, "unknown FLAVOR 'fancy'")
}

// Each flavor names its fragments: one that no flavor names, or a named one
// that is missing, is refused rather than left out.
func TestKernelShFragmentsNamed(t *testing.T) {
	k := newKernelSh(t)
	k.mustRun("tree")
	k.write("kernel-config/extra.config", "CONFIG_EXTRA=y\n")
	out, ok := k.run(nil, "build", "plain")
	wantFail(t, out, ok, "kernel-config/extra.config is used by no flavor", "flavor_frags()")
	if err := os.Remove(filepath.Join(k.top, "kernel-config/extra.config")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(k.top, "kernel-config/kmes-test.config")); err != nil {
		t.Fatal(err)
	}
	out, ok = k.run(nil, "build", "plain")
	wantFail(t, out, ok, "kernel-config/kmes-test.config is missing")
}

// The nokmes flavor is the debug config with KMES off and nothing else
// changed, so that ccache serves it from the debug build.
func TestKernelShNokmesIsDebugWithoutKMES(t *testing.T) {
	k := newKernelSh(t)
	k.mustRun("tree")
	k.write("kernel-config/base.config", "CONFIG_KEPT=y\n")
	k.write("kernel-config/kmes.config", "CONFIG_KMES=y\n")
	k.write("kernel-config/kmes-test.config", "CONFIG_KMES_BENCH=y\nCONFIG_KUNIT_DEFAULT_ENABLED=y\n")
	k.write("kernel-config/debug.config", "CONFIG_KASAN=y\n")
	k.write("kernel-config/nokmes.config", "# CONFIG_KMES is not set\n")
	k.write("kernel-config/bench.config", "CONFIG_FTRACE=y\n")
	for flavor, frags := range map[string]string{
		"plain":  "base.config kmes.config kmes-test.config kselftest.config",
		"bench":  "base.config kmes.config kmes-test.config kselftest.config bench.config",
		"debug":  "base.config kmes.config kmes-test.config kselftest.config debug.config",
		"nokmes": "base.config kmes.config kmes-test.config kselftest.config debug.config nokmes.config",
	} {
		// The fake tree configures but has no kernel to build.
		out, ok := k.run(nil, "build", flavor)
		wantFail(t, out, ok, "configuring "+flavor+" from "+frags+"\n", "the "+flavor+" kernel did not build")
	}
	config, _ := os.ReadFile(filepath.Join(k.top, "build/obj-nokmes/.config"))
	for _, want := range []string{"CONFIG_KASAN=y", "CONFIG_KUNIT_DEFAULT_ENABLED=y", "# CONFIG_KMES is not set"} {
		if !strings.Contains(string(config), want+"\n") {
			t.Errorf("the nokmes .config lacks %q:\n%s", want, config)
		}
	}

	// Turning off anything but KMES is refused, and named.
	k.write("kernel-config/nokmes.config", "# CONFIG_KMES is not set\n# CONFIG_KASAN is not set\n")
	out, ok := k.run(nil, "build", "nokmes")
	wantFail(t, out, ok, "debug:  CONFIG_KASAN=y", "nokmes: # CONFIG_KASAN is not set", "differs from the debug one in more than KMES's options")
	if strings.Contains(out, "CONFIG_KMES") {
		t.Errorf("KMES's own options are reported as a difference:\n%s", out)
	}

	// So is a nokmes config that leaves KMES on.
	k.write("kernel-config/nokmes.config", "# nothing\n")
	out, ok = k.run(nil, "build", "nokmes")
	wantFail(t, out, ok, "the nokmes config still has CONFIG_KMES=y")
}

// make test builds the nokmes kernel after the debug one (vmtest), so that
// ccache serves it.
func TestMakeTestBuildsNokmesAfterDebug(t *testing.T) {
	b, err := os.ReadFile("../mk/test.mk")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if prereqs, ok := strings.CutPrefix(line, "test:"); ok {
			f := strings.Fields(prereqs)
			v, n := slices.Index(f, "vmtest"), slices.Index(f, "kernel-nokmes")
			if v < 0 || n < 0 || n < v {
				t.Errorf("mk/test.mk: %q: want kernel-nokmes after vmtest", line)
			}
			return
		}
	}
	t.Error("mk/test.mk has no test: rule")
}

// make distro-check merges kernel-config/kmes.config alone into the
// distribution's config, names an option that does not stick and why, and
// fails on a warning from the objects the series changes.
func TestKernelShDistroCheck(t *testing.T) {
	k := newKernelSh(t)
	k.mustRun("tree")
	k.commit("int hello = 2;\n", "kmes: two")
	distro := filepath.Join(k.top, "distro.config")
	k.write("distro.config", "CONFIG_KEPT=y\n# CONFIG_KMES is not set\n")
	k.write("kernel-config/kmes.config", "CONFIG_KMES=y\nCONFIG_DROPPED=y\n")
	k.write("kernel-config/kmes-test.config", "CONFIG_KMES_TESTONLY=y\n")
	env := []string{"DISTRO_CONFIG=" + distro}

	out, ok := k.run(env, "distro-check")
	wantFail(t, out, ok, "kernel-config/kmes.config: CONFIG_DROPPED=y did not stick",
		"Kconfig: depends on NOTHERE, with NOTHERE=n", "kernel-config/kmes.config does not stick on distro.config")
	if strings.Contains(out, "CONFIG_KMES=") {
		t.Errorf("an option that stuck is reported:\n%s", out)
	}

	k.write("kernel-config/kmes.config", "CONFIG_KMES=y\n")
	out = k.mustRunEnv(env, "distro-check")
	if !strings.Contains(out, "building hello.o and the UAPI headers") || !strings.Contains(out, "passed") {
		t.Errorf("want hello.o, the object of the series' change, built and passed:\n%s", out)
	}
	config, _ := os.ReadFile(filepath.Join(k.top, "build/obj-distro/.config"))
	for _, want := range []string{"CONFIG_KEPT=y\n", "CONFIG_KMES=y\n"} {
		if !strings.Contains(string(config), want) {
			t.Errorf("the distro .config lacks %q:\n%s", want, config)
		}
	}
	if strings.Contains(string(config), "TESTONLY") {
		t.Errorf("the distro .config has kmes-test.config's option:\n%s", config)
	}
	if out := k.mustRunEnv(env, "distro-check"); !strings.Contains(out, "passed already") {
		t.Errorf("second run with nothing changed: %q, want it to skip", out)
	}

	k.commit("int hello = 3; /* warning: fake */\n", "kmes: three")
	out, ok = k.run(env, "distro-check")
	wantFail(t, out, ok, "warning: fake", "builds with warnings with distro.config")

	out, ok = k.run([]string{"DISTRO_CONFIG=/nonexistent/config.xz"}, "distro-check")
	wantFail(t, out, ok, "/nonexistent/config.xz not found", "make deps", "linux-config-6.12")
}
