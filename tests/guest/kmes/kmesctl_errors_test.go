package kmesguest

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKmesctlErrors runs kmesctl where it must fail: each failure is one
// line on stderr that says what to do, and the exit status says whether
// the command line (2) or the system (1) was wrong.
func TestKmesctlErrors(t *testing.T) {
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cases := []struct {
		name   string
		args   []string
		attr   *syscall.SysProcAttr
		status int
		stderr string
	}{
		{"emit without CAP_AUDIT_WRITE", []string{"emit", "kmes.test.denied", "{}"}, nobody, 1,
			"kmesctl emit: kmes_emit: operation not permitted (needs CAP_AUDIT_WRITE)"},
		{"tail without CAP_AUDIT_READ", []string{"tail"}, nobody, 1,
			"kmesctl tail: kmes_attach: operation not permitted (needs CAP_AUDIT_READ)"},
		{"stat without CAP_AUDIT_READ", []string{"stat"}, nobody, 1,
			"kmesctl stat: kmes_attach: operation not permitted (needs CAP_AUDIT_READ)"},
		{"bad JSON", []string{"emit", "kmes.test.bad", "{oops"}, nil, 2,
			"kmesctl emit: payload is not JSON"},
		{"bad flag", []string{"tail", "--bogus"}, nil, 2, "kmesctl tail:"},
		{"unknown command", []string{"frobnicate"}, nil, 2,
			`kmesctl: unknown command "frobnicate": run 'kmesctl --help'`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := command(t, ctx, "kmesctl", c.args...)
			cmd.SysProcAttr = c.attr
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != c.status {
				t.Fatalf("kmesctl %s: %v, want exit status %d; stderr:\n%s", strings.Join(c.args, " "), err, c.status, stderr.String())
			}
			lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], c.stderr) {
				t.Errorf("stderr %q, want one line starting %q", stderr.String(), c.stderr)
			}
		})
	}
}
