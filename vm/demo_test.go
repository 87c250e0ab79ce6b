package vm

import (
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/kmes-project/kmes/vm/guest"
)

// Every command 'make run' starts in the guest is in the initramfs's
// busybox, and the demo's command lines are the ones the README describes.
func TestDemoPlan(t *testing.T) {
	d := guest.DemoPlan()
	var names []string
	for _, c := range GuestCommands {
		names = append(names, path.Base(c))
	}
	for _, cmd := range [][]string{d.Emitter, d.Daemon, d.Tail, d.Query, d.Shell} {
		if len(cmd) == 0 || !slices.Contains(names, cmd[0]) {
			t.Errorf("the demo runs %q, which is not among the guest commands %q", cmd, names)
		}
	}
	if got, want := strings.Join(d.Emitter, " "), "kmes-demo -interval 500ms"; got != want {
		t.Errorf("emitter %q, want %q", got, want)
	}
	if got, want := strings.Join(d.Tail, " "), "kmesctl tail -f"; got != want {
		t.Errorf("tail %q, want %q", got, want)
	}
	if got, want := strings.Join(d.Daemon, " "), "kmesd"; got != want {
		t.Errorf("daemon %q, want %q", got, want)
	}
	if !slices.Contains(d.Env, "PS1=kmes# ") {
		t.Errorf("shell environment %q lacks the prompt", d.Env)
	}
}

// The banner tells how to leave the tail: Ctrl-C with a controlling
// terminal, Ctrl-A X always.
func TestDemoBanner(t *testing.T) {
	d := guest.DemoPlan()
	for _, ctty := range []bool{true, false} {
		b := strings.Join(guest.DemoBanner(d, ctty), "\n")
		for _, want := range []string{"kmes-demo -interval 500ms", "kmesd", "/var/lib/kmes/events.db", "kmesctl tail -f", "kmesctl query -o short --since -1m", "Ctrl-A X", "shutdown"} {
			if !strings.Contains(b, want) {
				t.Errorf("ctty=%v: banner lacks %q:\n%s", ctty, want, b)
			}
		}
		if got := strings.Contains(b, "Ctrl-C stops the tail"); got != ctty {
			t.Errorf("ctty=%v: banner offers Ctrl-C: %v:\n%s", ctty, got, b)
		}
	}
}
