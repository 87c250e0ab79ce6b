package main

// The man page (kmesd.8) against the flags kmesd defines, so that the two
// cannot drift.

import (
	"bytes"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// definedFlags returns kmesd's flags as --help lists them, as they are
// typed: --db.
func definedFlags(t *testing.T) []string {
	t.Helper()
	var out bytes.Buffer
	if _, help, err := parseConfig([]string{"--help"}, &out); !help || err != nil {
		t.Fatal(help, err)
	}
	_, list, ok := strings.Cut(out.String(), "\nFlags:\n")
	if !ok {
		t.Fatalf("kmesd --help lists no flags:\n%s", out.String())
	}
	var flags []string
	for l := range strings.Lines(list) {
		if strings.HasPrefix(l, "  -") {
			flags = append(flags, "-"+strings.Fields(l)[0]) // without its VALUE
		}
	}
	if len(flags) < 7 {
		t.Fatalf("kmesd --help lists %q", flags)
	}
	return flags
}

// roff is s as the man page writes it: every - escaped.
func roff(s string) string { return strings.ReplaceAll(s, "-", `\-`) }

// manItems returns the items (.TP) of the page's section sh: the first
// line of each, which names what it describes, and its text.
func manItems(t *testing.T, sh string) (heads []string, texts map[string]string) {
	t.Helper()
	page, err := os.ReadFile("kmesd.8")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(page), "\n.SH "+sh+"\n")
	if !ok {
		t.Fatalf("kmesd.8 has no %s section", sh)
	}
	sec, _, _ = strings.Cut(sec, "\n.SH ")
	texts = map[string]string{}
	lines := strings.Split(sec, "\n")
	head := ""
	for i, l := range lines {
		if l == ".TP" && i+1 < len(lines) {
			head = lines[i+1]
			heads = append(heads, head)
			continue
		}
		if head != "" {
			texts[head] += l + "\n"
		}
	}
	return heads, texts
}

// Each flag kmesd defines has an item in OPTIONS, which names its
// setting of the configuration file (all but --config); each flag an
// item names is one kmesd defines.
func TestManPageFlags(t *testing.T) {
	flags := definedFlags(t)
	heads, texts := manItems(t, "OPTIONS")
	for _, f := range append(flags, "-h", "--help") {
		found := false
		for _, h := range heads {
			if slices.Contains(strings.Fields(strings.NewReplacer(`\-`, "-", `"`, " ", ",", " ").Replace(h)), f) {
				found = true
				if name := strings.TrimLeft(f, "-"); f != "--config" && f != "--help" && f != "-h" &&
					!strings.Contains(texts[h], "Setting:\n.BR "+roff(name)+" .\n") {
					t.Errorf("kmesd.8: the item of %s does not name its setting (Setting: .BR %s .)", f, roff(name))
				}
			}
		}
		if !found {
			t.Errorf("kmesd.8 OPTIONS has no item for %s", f)
		}
	}
	for _, h := range heads {
		for _, w := range strings.Fields(strings.NewReplacer(`\-`, "-", `"`, " ", ",", " ").Replace(h)) {
			if strings.HasPrefix(w, "-") && w != "-h" && w != "--help" && !slices.Contains(flags, w) {
				t.Errorf("kmesd.8 describes %s, which kmesd does not define", w)
			}
		}
	}
	// The synopsis too.
	page, _ := os.ReadFile("kmesd.8")
	_, syn, _ := strings.Cut(string(page), "\n.SH SYNOPSIS\n")
	syn, _, _ = strings.Cut(syn, "\n.SH ")
	for _, f := range flags {
		if !strings.Contains(syn, roff(f)+"\n") {
			t.Errorf("kmesd.8 SYNOPSIS does not show %s", f)
		}
	}
	// The settings the configuration file's error lists are the page's.
	_, _, err := parseConfig([]string{"--config", writeTemp(t, "nope = 1\n")}, nil)
	for _, f := range flags {
		if name := strings.TrimPrefix(f, "--"); name != "config" && (err == nil || !strings.Contains(err.Error(), name)) {
			t.Errorf("the unknown-setting error does not list %s: %v", name, err)
		}
	}
}

func writeTemp(t *testing.T, text string) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "kmesd-*.conf")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// mandoc finds nothing to say about the page.
func TestManPageLint(t *testing.T) {
	if _, err := exec.LookPath("mandoc"); err != nil {
		t.Fatal("mandoc is not installed: run 'make deps', which installs it (mk/deps.list)")
	}
	out, err := exec.Command("mandoc", "-T", "lint", "-W", "warning", "kmesd.8").CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("mandoc -T lint -W warning kmesd.8: %v\n%s", err, out)
	}
}
