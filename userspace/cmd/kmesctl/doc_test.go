package main

// The man page (kmesctl.1) and the bash completion (kmesctl.bash) against
// the flags the commands define, so that the three cannot drift.

import (
	"bufio"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// flagChanges are tail's flags on their way in (the man page and the
// completion have them before tail's FlagSet does) and out (the man page
// says what replaced them; the completion no longer offers them).
var (
	comingFlags = map[string][]string{}
	goingFlags  = map[string][]string{}
)

// commandFlags returns the flags of a command as its --help lists them,
// as they are typed (-o, --output).
func commandFlags(t *testing.T, cmd string) []string {
	t.Helper()
	out, _, err := runArgs(t, "", cmd, "--help")
	if err != nil {
		t.Fatal(err)
	}
	_, list, ok := strings.Cut(out, "\nFlags:\n")
	if !ok {
		t.Fatalf("kmesctl %s --help lists no flags:\n%s", cmd, out)
	}
	var flags []string
	for l := range strings.Lines(list) {
		if !strings.HasPrefix(l, "  -") {
			continue
		}
		for n := range strings.SplitSeq(strings.TrimSpace(l), ", ") {
			flags = append(flags, strings.Fields(n)[0]) // without its VALUE
		}
	}
	return flags
}

// roff is s as the man page writes it: every - escaped.
func roff(s string) string { return strings.ReplaceAll(s, "-", `\-`) }

// manSections returns the text of each .SS subsection of the page's
// OPTIONS, by name, and the text before the first (the global options).
func manSections(t *testing.T) map[string]string {
	t.Helper()
	page, err := os.ReadFile("kmesctl.1")
	if err != nil {
		t.Fatal(err)
	}
	_, opts, ok := strings.Cut(string(page), "\n.SH OPTIONS\n")
	if !ok {
		t.Fatal("kmesctl.1 has no OPTIONS section")
	}
	opts, _, _ = strings.Cut(opts, "\n.SH ")
	sections := map[string]string{}
	name := ""
	for l := range strings.Lines(opts) {
		if s, ok := strings.CutPrefix(l, ".SS "); ok {
			name = strings.TrimSpace(s)
			continue
		}
		sections[name] += l
	}
	return sections
}

// Each flag a command defines is in its subsection of OPTIONS, and each
// flag an item there names is one it defines (or will).
func TestManPageFlags(t *testing.T) {
	sections := manSections(t)
	for _, f := range []string{"-h", "--help", "--version"} {
		if !strings.Contains(sections[""], roff(f)) {
			t.Errorf("kmesctl.1 OPTIONS does not describe kmesctl %s", f)
		}
	}
	for _, c := range commands {
		sec, ok := sections[c.name]
		if !ok {
			t.Errorf("kmesctl.1 OPTIONS has no subsection .SS %s", c.name)
			continue
		}
		flags := commandFlags(t, c.name)
		for _, f := range flags {
			if !strings.Contains(sec, roff(f)) {
				t.Errorf("kmesctl.1: %s %s is not under .SS %s", c.name, f, c.name)
			}
		}
		// The first line of each item names its flags (items inside
		// .RS, such as --since's TIME forms, are not flags).
		lines := strings.Split(sec, "\n")
		depth := 0
		for i, l := range lines[:len(lines)-1] {
			switch {
			case l == ".RS":
				depth++
			case l == ".RE":
				depth--
			}
			if l != ".TP" || depth > 0 {
				continue
			}
			for _, w := range strings.Fields(strings.NewReplacer(`\-`, "-", `"`, " ", ",", " ").Replace(lines[i+1])) {
				if strings.HasPrefix(w, "-") && !slices.Contains(flags, w) && !slices.Contains(comingFlags[c.name], w) {
					t.Errorf("kmesctl.1 describes %s %s, which it does not define", c.name, w)
				}
			}
		}
	}
}

// mandoc finds nothing to say about the page.
func TestManPageLint(t *testing.T) {
	if _, err := exec.LookPath("mandoc"); err != nil {
		t.Fatal("mandoc is not installed: run 'make deps', which installs it (mk/deps.list)")
	}
	out, err := exec.Command("mandoc", "-T", "lint", "-W", "warning", "kmesctl.1").CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("mandoc -T lint -W warning kmesctl.1: %v\n%s", err, out)
	}
	// make deps installs it: mk/deps.list names it.
	f, err := os.Open("../../../mk/deps.list")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	listed := false
	for s := bufio.NewScanner(f); s.Scan(); {
		fields := strings.Fields(s.Text())
		listed = listed || len(fields) >= 2 && fields[0] == "mandoc" && fields[1] == "mandoc"
	}
	if !listed {
		t.Error("mk/deps.list does not install mandoc")
	}
}

// complete runs the completion for words, the last the one under the
// cursor, and returns what it offers.
func complete(t *testing.T, words ...string) []string {
	t.Helper()
	script := `source ./kmesctl.bash || exit 1
COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _kmesctl; printf '%s\n' "${COMPREPLY[@]}"`
	out, err := exec.Command("bash", append([]string{"--norc", "--noprofile", "-c", script, "bash"}, words...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("completion of %q: %v\n%s", words, err, out)
	}
	return strings.Fields(string(out))
}

func TestBashCompletion(t *testing.T) {
	for _, c := range []struct {
		words []string
		want  string
	}{
		{[]string{"kmesctl", ""}, "emit tail stat bench query help --help --version"},
		{[]string{"kmesctl", "ta"}, "tail"},
		{[]string{"kmesctl", "s"}, "stat"},
		{[]string{"kmesctl", "--v"}, "--version"},
		{[]string{"kmesctl", "nope", ""}, ""},
		{[]string{"kmesctl", "tail", "-o", ""}, "json json-pretty short"},
		{[]string{"kmesctl", "tail", "--output", "json-"}, "json-pretty"},
		{[]string{"kmesctl", "tail", "--output", "=", ""}, "json json-pretty short"}, // --output=
		{[]string{"kmesctl", "tail", "--output", "=", "s"}, "short"},
		{[]string{"kmesctl", "tail", "-n", ""}, "all"},
		{[]string{"kmesctl", "tail", "--since", "y"}, "yesterday"},
		{[]string{"kmesctl", "tail", "--until", "to"}, "today tomorrow"},
		{[]string{"kmesctl", "tail", "--type", ""}, ""},
		{[]string{"kmesctl", "tail", "--type", "=", ""}, ""},
		{[]string{"kmesctl", "tail", "--cpu", ""}, ""},
		{[]string{"kmesctl", "tail", "--count", "5", "--t"}, "--type"},
		{[]string{"kmesctl", "tail", "--s"}, "--since"},
		{[]string{"kmesctl", "stat", "--w"}, "--watch"},
		{[]string{"kmesctl", "stat", "--watch", "--interval", ""}, ""},
		{[]string{"kmesctl", "emit", ""}, ""}, // TYPE
		{[]string{"kmesctl", "emit", "app.x", ""}, ""},
		{[]string{"kmesctl", "emit", "-"}, "--raw --help"},
		{[]string{"kmesctl", "bench", "--batch", ""}, ""},
		{[]string{"kmesctl", "query", "-o", "s"}, "short"},
		{[]string{"kmesctl", "query", "--d"}, "--db"},
	} {
		if got := strings.Join(complete(t, c.words...), " "); got != c.want {
			t.Errorf("completion of %q: %q, want %q", c.words, got, c.want)
		}
	}

	// Every flag of every command, and no other; a command without
	// arguments offers them on an empty word too.
	for _, cmd := range commands {
		want := []string{"--help"}
		for _, f := range append(commandFlags(t, cmd.name), comingFlags[cmd.name]...) {
			if !slices.Contains(goingFlags[cmd.name], f) {
				want = append(want, f)
			}
		}
		slices.Sort(want)
		got := complete(t, "kmesctl", cmd.name, "-")
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("completion of kmesctl %s -: %q, want %q", cmd.name, got, want)
		}
		if cmd.name != "emit" {
			if got := complete(t, "kmesctl", cmd.name, ""); len(got) != len(want) {
				t.Errorf("completion of kmesctl %s '': %q, want the flags", cmd.name, got)
			}
		}
	}
	// The completion offers each command --help lists.
	for _, cmd := range commands {
		if got := complete(t, "kmesctl", cmd.name); !slices.Contains(got, cmd.name) {
			t.Errorf("completion of kmesctl %s: %q", cmd.name, got)
		}
	}
}
