package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// unitSettings reads a systemd unit file: each section's keys, with
// their values in order (a key may be given more than once).
func unitSettings(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	units := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "" || l[0] == '#' || l[0] == ';':
		case l[0] == '[' && l[len(l)-1] == ']':
			section = l[1 : len(l)-1]
			units[section] = map[string][]string{}
		case section == "":
			t.Errorf("%s:%d: %q before any [section]", path, line, l)
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok || strings.TrimSpace(k) == "" || strings.HasSuffix(l, `\`) {
				t.Errorf("%s:%d: %q is not key=value on one line", path, line, l)
				continue
			}
			k = strings.TrimSpace(k)
			units[section][k] = append(units[section][k], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return units
}

// kmesd.service has the settings kmesd needs and the sandbox it is
// meant to run in, and systemd-analyze verify (where systemd is) finds
// nothing wrong with it.
func TestUnitFile(t *testing.T) {
	const unit = "kmesd.service"
	got := unitSettings(t, unit)
	for _, w := range []struct{ section, key, value string }{
		{"Unit", "Documentation", "man:kmesd(8)"},
		{"Unit", "ConditionPathIsDirectory", "/proc/sys/kernel/kmes"},
		{"Service", "Type", "simple"},
		{"Service", "ExecStart", "/usr/local/bin/kmesd"},
		{"Service", "StateDirectory", "kmes"}, // /var/lib/kmes: the default --db's directory
		{"Service", "Restart", "on-failure"},
		{"Service", "AmbientCapabilities", "CAP_AUDIT_READ"},
		{"Service", "CapabilityBoundingSet", "CAP_AUDIT_READ"},
		{"Service", "NoNewPrivileges", "yes"},
		{"Service", "ProtectSystem", "strict"},
		{"Service", "ReadWritePaths", "/var/lib/kmes"},
		{"Service", "ProtectHome", "yes"},
		{"Service", "PrivateTmp", "yes"},
		{"Install", "WantedBy", "multi-user.target"},
	} {
		if v := got[w.section][w.key]; len(v) != 1 || v[0] != w.value {
			t.Errorf("%s [%s] %s=%q, want %q once", unit, w.section, w.key, v, w.value)
		}
	}
	if dir := filepath.Dir(defaultConfig(t).db); got["Service"]["ReadWritePaths"][0] != dir {
		t.Errorf("%s: kmesd's default --db is in %s, not in ReadWritePaths", unit, dir)
	}

	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("no systemd-analyze: the unit's keys alone are checked")
		return
	}
	// verify wants ExecStart's program to exist: a copy of the unit
	// runs this test binary instead. The man page is not installed.
	text, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), unit)
	copyText := strings.Replace(string(text), "\nExecStart=/usr/local/bin/kmesd\n", "\nExecStart="+self+"\n", 1)
	if err := os.WriteFile(copyPath, []byte(copyText), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", "--man=no", copyPath).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
	}
}

func defaultConfig(t *testing.T) *config {
	t.Helper()
	cfg, _, err := parseConfig(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
