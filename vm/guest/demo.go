package guest

import "strings"

// Demo is what the guest runs for 'make run' (no run description from the
// host): kmes-demo emitting and kmesd storing in the background, 'kmesctl
// tail' in the foreground until Ctrl-C, then the shell, where Query shows
// what kmesd stored. The guest tests run the same command lines, so what
// a newcomer sees first is tested.
type Demo struct {
	// Emitter and Daemon run in the background, each in a process group
	// of its own so that Ctrl-C at the console does not stop them.
	Emitter []string
	// Daemon is kmesd, with its default database.
	Daemon []string
	// Query is what the banner suggests in the shell: kmesd's events.
	Query []string
	// Tail runs in the foreground and prints every event as a JSON line.
	Tail []string
	// Shell runs when Tail ends; leaving it powers the guest off.
	Shell []string
	// Env is added to the shell's environment.
	Env []string
}

// DemoInterval is how often kmes-demo emits on each CPU in 'make run'.
const DemoInterval = "500ms"

// DemoPlan returns what 'make run' runs in the guest.
func DemoPlan() Demo {
	return Demo{
		Emitter: []string{"kmes-demo", "-interval", DemoInterval},
		Daemon:  []string{"kmesd"},
		Query:   []string{"kmesctl", "query", "-o", "short", "--since", "-1m"},
		Tail:    []string{"kmesctl", "tail", "-f"},
		Shell:   []string{"gosh"},
		Env:     []string{"PS1=kmes# "},
	}
}

// DemoBanner is what the guest prints before it starts the demo; ctty
// says whether the console is the runner's controlling terminal, without
// which Ctrl-C cannot reach the tail.
func DemoBanner(d Demo, ctty bool) []string {
	lines := []string{
		"Starting '" + strings.Join(d.Emitter, " ") + "' in the background (a demo.tick event per CPU every " + DemoInterval + ")",
		"and '" + strings.Join(d.Daemon, " ") + "', which stores every event in /var/lib/kmes/events.db,",
		"and '" + strings.Join(d.Tail, " ") + "' in the foreground: one JSON line per event.",
	}
	if ctty {
		lines = append(lines, "Ctrl-C stops the tail and starts a shell (kmes-demo keeps running: 'kmesctl tail' shows it again).")
	} else {
		lines = append(lines, "The console is no controlling terminal here: Ctrl-C cannot stop the tail; Ctrl-A X quits QEMU.")
	}
	return append(lines, "In the shell, '"+strings.Join(d.Query, " ")+"' prints what kmesd stored in the last minute;",
		"'shutdown' or Ctrl-D powers off; Ctrl-A X quits QEMU at any time.")
}
