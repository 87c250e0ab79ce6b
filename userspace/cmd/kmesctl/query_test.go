package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmes-project/kmes/userspace/internal/eventdb"
)

// queryDB writes a database as kmesd's store does: two boots' events on
// two CPUs, stored out of time order, with losses.
func queryDB(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "events.db")
	db, err := eventdb.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	base := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC).UnixNano()
	b := eventdb.NewBatch("boot-b", 0)
	b.Add(eventdb.Event{CPU: 1, Seq: 1, Timestamp: base + 2, Type: "app.tick"}, []byte{0x01})
	// A loss before an event the type filter below leaves out.
	b.Add(eventdb.Event{CPU: 0, Seq: 5, Timestamp: base + 3, Type: "kmes.sys", Origin: 1, Lost: 4}, []byte{0xc0})
	b.Add(eventdb.Event{CPU: 0, Seq: 7, Timestamp: base + 3, Type: "app.login", Dropped: 1}, []byte{0x81, 0xa1, 'u', 0xa3, 'a', 'd', 'a'})
	b.Add(eventdb.Event{CPU: 1, Seq: 2, Timestamp: base + 1000, Type: "app.tick"}, []byte{0x02})
	if err := db.Insert(b); err != nil {
		t.Fatal(err)
	}
	b = eventdb.NewBatch("boot-a", 0)
	b.Add(eventdb.Event{CPU: 0, Seq: 1, Timestamp: base + 1, Type: "app.boot"}, nil)
	if err := db.Insert(b); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestQuery(t *testing.T) {
	path := queryDB(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, `{"cpu":0,"seq":1,"ts":"2026-12-05T10:00:00.000000001Z","ts_ns":"1796464800000000001","origin":0,"type":"app.boot"}
{"cpu":1,"seq":1,"ts":"2026-12-05T10:00:00.000000002Z","ts_ns":"1796464800000000002","origin":0,"type":"app.tick","payload":1}
{"cpu":0,"lost":4,"dropped":0}
{"cpu":0,"seq":5,"ts":"2026-12-05T10:00:00.000000003Z","ts_ns":"1796464800000000003","origin":1,"type":"kmes.sys","payload":null}
{"cpu":0,"lost":0,"dropped":1}
{"cpu":0,"seq":7,"ts":"2026-12-05T10:00:00.000000003Z","ts_ns":"1796464800000000003","origin":0,"type":"app.login","payload":{"u":"ada"}}
{"cpu":1,"seq":2,"ts":"2026-12-05T10:00:00.000001000Z","ts_ns":"1796464800000001000","origin":0,"type":"app.tick","payload":2}
`},
		// Losses stay whatever --type says.
		{[]string{"--type", "app.l*"}, `{"cpu":0,"lost":4,"dropped":0}
{"cpu":0,"lost":0,"dropped":1}
{"cpu":0,"seq":7,"ts":"2026-12-05T10:00:00.000000003Z","ts_ns":"1796464800000000003","origin":0,"type":"app.login","payload":{"u":"ada"}}
`},
		{[]string{"--cpu", "1", "--since", "2026-12-05T10:00:00.000000002Z", "--until", "2026-12-05T10:00:00.000000999Z"},
			`{"cpu":1,"seq":1,"ts":"2026-12-05T10:00:00.000000002Z","ts_ns":"1796464800000000002","origin":0,"type":"app.tick","payload":1}
`},
		{[]string{"--origin", "1", "--cpu", "0", "-o", "json-pretty"}, `{
  "cpu": 0,
  "lost": 4,
  "dropped": 0
}
{
  "cpu": 0,
  "seq": 5,
  "ts": "2026-12-05T10:00:00.000000003Z",
  "ts_ns": "1796464800000000003",
  "origin": 1,
  "type": "kmes.sys",
  "payload": null
}
{
  "cpu": 0,
  "lost": 0,
  "dropped": 1
}
`},
	} {
		out, errOut, err := runArgs(t, "", append([]string{"query", "--db", path}, tc.args...)...)
		if err != nil || out != tc.want || errOut != "" {
			t.Errorf("query %q: %v\nstdout:\n%s\nwant:\n%s\nstderr: %s", tc.args, err, out, tc.want, errOut)
		}
	}
	// -o short: losses on standard error, named for query.
	out, errOut, err := runArgs(t, "", "query", "--db", path, "-o", "short", "--cpu", "0", "--until", "2026-12-05T10:00:00.000000001Z")
	if err != nil || !strings.HasSuffix(out, " cpu 0 seq 1 app.boot\n") || errOut != "" {
		t.Errorf("-o short: %v, %q, %q", err, out, errOut)
	}
	_, errOut, err = runArgs(t, "", "query", "--db", path, "-o", "short", "--type", "x")
	if err != nil || errOut != "kmesctl query: cpu 0: lost 4 events (overwritten), dropped 0 (before the ring)\nkmesctl query: cpu 0: lost 0 events (overwritten), dropped 1 (before the ring)\n" {
		t.Errorf("-o short losses: %v, %q", err, errOut)
	}
}

func TestQueryErrors(t *testing.T) {
	dir := t.TempDir()
	notDB := filepath.Join(dir, "x.db")
	os.WriteFile(notDB, []byte(strings.Repeat("not sqlite ", 500)), 0o644)
	for _, tc := range []struct {
		args []string
		want string
		code int
	}{
		{[]string{"--db", filepath.Join(dir, "none.db")}, "kmesctl query: open database " + dir + "/none.db: no such file or directory (is kmesd storing events there? choose --db)", 1},
		{[]string{"--db", notDB}, "kmesctl query: database " + notDB + " is not a kmesd database or is corrupt: ", 1},
		{[]string{"-o", "xml"}, "kmesctl query: -o xml: unknown output mode (json, json-pretty, short)", 2},
		{[]string{"--since", "soon"}, `kmesctl query: --since "soon" is not a time: use `, 2},
		{[]string{"extra"}, `kmesctl query: unexpected argument "extra": run 'kmesctl query --help'`, 2},
	} {
		_, _, err := runArgs(t, "", append([]string{"query"}, tc.args...)...)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) || exitCode(err) != tc.code {
			t.Errorf("query %q: %v (exit %d), want %q (exit %d)", tc.args, err, exitCode(err), tc.want, tc.code)
		}
	}
}
