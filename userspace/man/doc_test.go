// Package man holds the man pages of the KMES system calls, kmes_emit(2),
// kmes_emit_batch(2) and kmes_attach(2), and their tests: the pages
// against the kernel code of the patch series (patches/), its UAPI header
// and the Go ABI constants, so that they cannot drift apart.
package man

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/kmes-project/kmes/userspace/internal/series"
	"github.com/kmes-project/kmes/userspace/kmes/abi"
)

// errItem is one item of a page's ERRORS section: the errno and a phrase
// of its text that names the condition, so that an errno listed twice
// (EINVAL for the type and for the payload) is checked per condition.
type errItem struct{ errno, phrase string }

type page struct {
	name   string // the system call, and the page's file without ".2"
	nrName string // its number's name in include/uapi/linux/kmes.h
	nr     int64  // that number, as package abi has it
	// The kernel files of the series whose error returns are the call's
	// (and its mmap's, for kmes_attach): each errno they return must be
	// named in the page.
	sources []string
	// Errnos the call returns from kernel code outside the series: a
	// kernel without it, fd allocation.
	external []string
	// Exactly the items of ERRORS, in order, derived from the code.
	errors []errItem
}

// The checks of kmes_emit and kmes_emit_batch are in syscall.c; the rate
// limit's (EAGAIN, and ENOMEM for the bucket) in rate.c; the copy from
// userspace (EFAULT) is kmes_copy_in() in internal.h. kmes_attach and the
// mapping of a ring are file.c; the fds come from get_unused_fd_flags()
// (EMFILE) and alloc_file_pseudo() (ENFILE, ENOMEM).
var pages = []page{
	{
		name:     "kmes_emit",
		nrName:   "KMES_NR_EMIT_X86_64",
		nr:       abi.SysEmit,
		sources:  []string{"kernel/kmes/syscall.c", "kernel/kmes/rate.c", "kernel/kmes/internal.h"},
		external: []string{"ENOSYS"},
		errors: []errItem{
			{"EAGAIN", "rate limit"},
			{"EFAULT", "accessible address space"},
			{"EINVAL", ".I type_len\nis 0."},
			{"EINVAL", "UINT32_MAX"},
			{"EINVAL", "UTF-8"},
			{"EINVAL", "msgpack"},
			{"ENOMEM", "rate limit"},
			{"ENOSPC", "kernel.kmes.max_event_size"},
			{"ENOSYS", "CONFIG_KMES=n"},
			{"EPERM", "CAP_AUDIT_WRITE"},
		},
	},
	{
		name:     "kmes_emit_batch",
		nrName:   "KMES_NR_EMIT_BATCH_X86_64",
		nr:       abi.SysEmitBatch,
		sources:  []string{"kernel/kmes/syscall.c", "kernel/kmes/rate.c", "kernel/kmes/internal.h"},
		external: []string{"ENOSYS"},
		errors: []errItem{
			{"EAGAIN", "tokens"},
			{"EFAULT", ".I emitted_out\nis not writable"},
			{"EFAULT", ".I entries\n"},
			{"EFAULT", "entry\n.I N\nis outside"},
			{"EFAULT", "stopped being writable"},
			{"EINVAL", ".I count\nis 0"},
			{"EINVAL", "UINT32_MAX"},
			{"EINVAL", "UTF-8"},
			{"EINVAL", "msgpack"},
			{"ENOMEM", "a phase"},
			{"ENOSPC", "kernel.kmes.max_event_size"},
			{"ENOSYS", "CONFIG_KMES=n"},
			{"EPERM", "CAP_AUDIT_WRITE"},
		},
	},
	{
		name:     "kmes_attach",
		nrName:   "KMES_NR_ATTACH_X86_64",
		nr:       abi.SysAttach,
		sources:  []string{"kernel/kmes/file.c"},
		external: []string{"EMFILE", "ENFILE", "ENOMEM", "ENOSYS"},
		errors: []errItem{
			{"EFAULT", ".I count\nis not readable"},
			{"EMFILE", "RLIMIT_NOFILE"},
			{"ENFILE", "system-wide"},
			{"ENOMEM", "memory"},
			{"ENOSYS", "CONFIG_KMES=n"},
			{"EPERM", "CAP_AUDIT_READ"},
			{"ERANGE", "smaller than the number of rings"},
		},
	},
}

func (p page) file() string { return p.name + ".2" }

func (p page) text(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(p.file())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// section returns the text of the page's section sh, without its .SH line.
func section(t *testing.T, p page, sh string) string {
	t.Helper()
	_, sec, ok := strings.Cut(p.text(t), "\n.SH "+sh+"\n")
	if !ok {
		t.Fatalf("%s has no %s section", p.file(), sh)
	}
	sec, _, _ = strings.Cut(sec, "\n.SH ")
	return sec
}

// The sections man-pages(7) gives a system call's page, in its order.
func TestManPageSections(t *testing.T) {
	want := []string{"NAME", "LIBRARY", "SYNOPSIS", "DESCRIPTION", "RETURN VALUE", "ERRORS",
		"VERSIONS", "STANDARDS", "HISTORY", "NOTES", "EXAMPLES", "SEE ALSO"}
	for _, p := range pages {
		var got []string
		for l := range strings.Lines(p.text(t)) {
			if sh, ok := strings.CutPrefix(strings.TrimSuffix(l, "\n"), ".SH "); ok {
				got = append(got, strings.Trim(sh, `"`))
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: sections %q, want %q", p.file(), got, want)
		}
		if th := fmt.Sprintf("\n.TH %s 2 ", p.name); !strings.Contains("\n"+p.text(t), th) {
			t.Errorf("%s: no %q line", p.file(), strings.TrimSpace(th))
		}
	}
}

// mandoc, and groff where it is installed, find nothing to say.
func TestManPageLint(t *testing.T) {
	if _, err := exec.LookPath("mandoc"); err != nil {
		t.Fatal("mandoc is not installed: run 'make deps', which installs it (mk/deps.list)")
	}
	_, err := exec.LookPath("groff")
	groff := err == nil
	if !groff {
		t.Log("groff is not installed: only mandoc lints the pages")
	}
	for _, p := range pages {
		out, err := exec.Command("mandoc", "-T", "lint", "-W", "warning", p.file()).CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("mandoc -T lint -W warning %s: %v\n%s", p.file(), err, out)
		}
		if groff {
			out, err := exec.Command("groff", "-ww", "-man", "-z", p.file()).CombinedOutput()
			if err != nil || len(out) > 0 {
				t.Errorf("groff -ww -man -z %s: %v\n%s", p.file(), err, out)
			}
		}
	}
}

var (
	// An errno as the kernel code returns it: -EINVAL.
	kernelErrno = regexp.MustCompile(`-(E[A-Z]+)\b`)
	// An errno as a page names it.
	pageErrno = regexp.MustCompile(`\bE[A-Z]{3,}\b`)
)

// ERRORS lists exactly the items derived from the kernel code, and the
// page names every errno that code returns; ERRORS lists none that
// neither the code nor the kernel functions it calls return.
func TestManPageErrors(t *testing.T) {
	tree := series.Files(t, "kernel/kmes/*", "kernel/kmes/syscall.c", "kernel/kmes/file.c")
	for _, p := range pages {
		text := p.text(t)
		named := map[string]bool{}
		for _, e := range pageErrno.FindAllString(text, -1) {
			named[e] = true
		}
		returned := map[string]bool{}
		for _, src := range p.sources {
			b, err := os.ReadFile(filepath.Join(tree, src))
			if err != nil {
				t.Fatalf("the series has no %s: update doc_test.go's sources: %v", src, err)
			}
			for _, m := range kernelErrno.FindAllStringSubmatch(string(b), -1) {
				returned[m[1]] = true
			}
		}
		for _, e := range slices.Sorted(maps.Keys(returned)) {
			if !named[e] {
				t.Errorf("%s does not name %s, which %s returns", p.file(), e, strings.Join(p.sources, ", "))
			}
		}

		// The items: a line .B EXXX after each .TP.
		lines := strings.Split(section(t, p, "ERRORS"), "\n")
		type item struct{ errno, text string }
		var items []item
		for i := 0; i+1 < len(lines); i++ {
			if lines[i] != ".TP" {
				if len(items) > 0 {
					items[len(items)-1].text += lines[i] + "\n"
				}
				continue
			}
			e, ok := strings.CutPrefix(lines[i+1], ".B ")
			if !ok || !pageErrno.MatchString(e) {
				t.Errorf("%s: ERRORS item %q is not .B EXXX", p.file(), lines[i+1])
			}
			items = append(items, item{errno: e})
			i++
		}
		if len(items) != len(p.errors) {
			var got, want []string
			for _, it := range items {
				got = append(got, it.errno)
			}
			for _, it := range p.errors {
				want = append(want, it.errno)
			}
			t.Errorf("%s: ERRORS lists %q, want %q", p.file(), got, want)
		}
		for i, want := range p.errors {
			if i >= len(items) {
				break
			}
			if items[i].errno != want.errno || !strings.Contains(items[i].text, want.phrase) {
				t.Errorf("%s: ERRORS item %d is %s, want %s with %q", p.file(), i+1, items[i].errno, want.errno, want.phrase)
			}
			if !returned[want.errno] && !slices.Contains(p.external, want.errno) {
				t.Errorf("%s: ERRORS lists %s, which %s never returns", p.file(), want.errno, strings.Join(p.sources, ", "))
			}
		}
	}
}

// A constant of <linux/kmes.h> with its value, as the pages write it:
// ".B KMES_EMIT_BATCH_MAX\n(256)", ".BR KMES_MAP_DATA_OFF \" (8192)...".
var constValue = regexp.MustCompile(`\b(KMES_[A-Z0-9_]+)[\s"]+\((\d+)\)`)

// Every value the pages give a constant is the header's (checked by the
// compiler, against the series' header), and each page gives its system
// call's number, package abi's, and calls syscall(2) with its name.
func TestManPageConstants(t *testing.T) {
	var asserts strings.Builder
	asserts.WriteString("#include <linux/kmes.h>\n")
	n := 0
	for _, p := range pages {
		text := p.text(t)
		own := false
		for _, m := range constValue.FindAllStringSubmatch(text, -1) {
			fmt.Fprintf(&asserts, "_Static_assert(%s == %s, \"%s: %s is not %s\");\n", m[1], m[2], p.file(), m[1], m[2])
			n++
			if m[1] == p.nrName {
				own = true
				if m[2] != fmt.Sprint(p.nr) {
					t.Errorf("%s gives %s as %s, package abi as %d", p.file(), m[1], m[2], p.nr)
				}
			}
		}
		if !own {
			t.Errorf("%s does not give its number: .B %s then (%d)", p.file(), p.nrName, p.nr)
		}
		if !strings.Contains(section(t, p, "SYNOPSIS"), "int syscall("+p.nrName+",") {
			t.Errorf("%s: SYNOPSIS does not call syscall(%s, ...)", p.file(), p.nrName)
		}
	}
	if n < 30 {
		t.Fatalf("found only %d constants with values in the pages: is constValue right?", n)
	}
	compile(t, "constants.c", asserts.String(), "-fsyntax-only")
}

// unroff returns the C source that a .EX block of the pages shows.
func unroff(t *testing.T, s string) string {
	t.Helper()
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		rest := s[i+1:]
		switch {
		case strings.HasPrefix(rest, "e"):
			b.WriteByte('\\')
			i++
		case strings.HasPrefix(rest, "-"):
			b.WriteByte('-')
			i++
		case strings.HasPrefix(rest, "&"):
			i++
		case strings.HasPrefix(rest, "(aq"):
			b.WriteByte('\'')
			i += 3
		case strings.HasPrefix(rest, "(dq"):
			b.WriteByte('"')
			i += 3
		default:
			t.Fatalf("unknown roff escape in an example: %.8q", s[i:])
		}
	}
	return b.String()
}

// compile runs gcc -Wall -Wextra -Werror on src, with the series' UAPI
// header as <linux/kmes.h>, and returns the program it built.
func compile(t *testing.T, name, src string, flags ...string) string {
	t.Helper()
	cc, err := exec.LookPath("gcc")
	if err != nil {
		t.Fatal("gcc is not installed: run 'make deps'")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	prog := strings.TrimSuffix(file, ".c")
	args := append([]string{"-Wall", "-Wextra", "-Werror", "-I", series.IncludeDir(t), "-o", prog}, flags...)
	out, err := exec.Command(cc, append(args, file)...).CombinedOutput()
	if err != nil {
		t.Errorf("gcc -Wall -Wextra -Werror %s: %v\n%s", name, err, out)
	}
	return prog
}

// example returns the C source of the page's example program, or ""
// after reporting that it has none.
func example(t *testing.T, p page) string {
	t.Helper()
	_, src, ok := strings.Cut(section(t, p, "EXAMPLES"), ".\\\" SRC BEGIN ("+p.name+".c)\n.EX\n")
	src, _, ok2 := strings.Cut(src, "\n.EE\n.\\\" SRC END")
	if !ok || !ok2 {
		t.Errorf("%s: EXAMPLES has no program between .\\\" SRC BEGIN (%s.c), .EX and .EE, .\\\" SRC END", p.file(), p.name)
		return ""
	}
	return unroff(t, src) + "\n"
}

// Each page's example program compiles against the series' UAPI header,
// warning-free, and handles errors with err(3).
func TestManPageExamples(t *testing.T) {
	for _, p := range pages {
		c := example(t, p)
		if c == "" {
			continue
		}
		if !strings.Contains(c, "err(EXIT_FAILURE, \""+p.name+"\"") && !strings.Contains(c, "err(EXIT_FAILURE, \""+p.name+":") {
			t.Errorf("%s: the example does not report a failed %s with err(3)", p.file(), p.name)
		}
		if !strings.Contains(c, "syscall("+p.nrName+",") {
			t.Errorf("%s: the example does not call syscall(%s, ...)", p.file(), p.nrName)
		}
		compile(t, p.name+".c", c)
	}
}

// With KMES_MAN_EXAMPLES=DIR, TestWriteExamples writes each page's
// example program to DIR/<call>.c: mk/selftests.sh builds them for the
// guest, which runs them (testdata/examples.c) on the kernel.
func TestWriteExamples(t *testing.T) {
	dir := os.Getenv("KMES_MAN_EXAMPLES")
	if dir == "" {
		t.Skip("KMES_MAN_EXAMPLES is not set: nothing to write")
	}
	for _, p := range pages {
		if c := example(t, p); c != "" {
			if err := os.WriteFile(filepath.Join(dir, p.name+".c"), []byte(c), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// SEE ALSO names the other pages and those of the tools and calls a
// reader needs next.
func TestManPageSeeAlso(t *testing.T) {
	for _, p := range pages {
		sec := section(t, p, "SEE ALSO")
		want := []string{".BR kmesctl (1)", ".BR futex (2)", ".BR mmap (2)", ".BR kmesd (8)"}
		for _, o := range pages {
			if o.name != p.name {
				want = append(want, ".BR "+o.name+" (2)")
			}
		}
		for _, w := range want {
			if !strings.Contains(sec, w) {
				t.Errorf("%s: SEE ALSO does not name %s", p.file(), w)
			}
		}
	}
}

// make install-man installs every page here (mk/install.mk), and the
// tests above check every one.
func TestManPagesInstalled(t *testing.T) {
	mk, err := os.ReadFile(filepath.Join(series.Top(t), "mk", "install.mk"))
	if err != nil {
		t.Fatal(err)
	}
	var installed []string
	for l := range strings.Lines(string(mk)) {
		if v, ok := strings.CutPrefix(l, "SYSCALL_PAGES :="); ok {
			installed = strings.Fields(v)
		}
	}
	files, err := filepath.Glob("*.2")
	if err != nil {
		t.Fatal(err)
	}
	var here, tested []string
	for _, f := range files {
		here = append(here, strings.TrimSuffix(f, ".2"))
	}
	for _, p := range pages {
		tested = append(tested, p.name)
	}
	slices.Sort(installed)
	slices.Sort(tested)
	if !slices.Equal(installed, here) || !slices.Equal(tested, here) {
		t.Errorf("pages %q, mk/install.mk's SYSCALL_PAGES %q, tested %q: they must be the same", here, installed, tested)
	}
}
