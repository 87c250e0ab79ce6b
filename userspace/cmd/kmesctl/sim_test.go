//go:build linux && amd64

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/userspace/kmestest"
)

// withSimRings makes tail and stat read n simulated rings.
func withSimRings(t *testing.T, n int) *kmestest.Source {
	t.Helper()
	src, err := kmestest.NewSource(n, 65536)
	if err != nil {
		t.Fatal(err)
	}
	ringSource = src
	t.Cleanup(func() {
		ringSource = nil
		src.Close()
	})
	return src
}

// sample holds the tail lines of the events emitSample emits.
type sample struct{ b, a, k, c string }

// emitSample emits, in time order: cpu 1 "b" [1]; cpu 0 "a" {"n":1};
// cpu 0 "a" from KMES with no payload (which is no msgpack value); cpu 1 a dropped event, then "c"
// "x". The events are stamped 1 µs apart a second ago: before tail
// starts, so they are the events present.
func emitSample(src *kmestest.Source) sample {
	base := time.Now().UTC().Add(-time.Second).Truncate(time.Millisecond)
	ts := base.UnixNano()
	now := func() int64 {
		ts += 1000
		return ts
	}
	// at is the "ts" and "ts_ns" fields of an event µs after base.
	at := func(µs int) string {
		return base.Format("2006-01-02T15:04:05.000") + fmt.Sprintf(`%03d000Z","ts_ns":"%d`, µs, base.UnixNano()+int64(µs)*1000)
	}
	p0, p1 := src.Producer(0), src.Producer(1)
	p0.Now, p1.Now = now, now
	p1.Emit(0, "b", []byte{0x91, 0x01})
	p0.Emit(0, "a", []byte{0x81, 0xa1, 'n', 0x01})
	p0.Emit(1, "a", nil)
	p1.Drop()
	p1.Emit(0, "c", []byte{0xa1, 'x'})
	return sample{
		b: `{"cpu":1,"seq":1,"ts":"` + at(1) + `","origin":0,"type":"b","payload":[1]}` + "\n",
		a: `{"cpu":0,"seq":1,"ts":"` + at(2) + `","origin":0,"type":"a","payload":{"n":1}}` + "\n",
		k: `{"cpu":0,"seq":2,"ts":"` + at(3) + `","origin":1,"type":"a"}` + "\n",
		c: `{"cpu":1,"seq":3,"ts":"` + at(4) + `","origin":0,"type":"c","payload":"x"}` + "\n",
	}
}

const dropLine = "kmesctl tail: cpu 1: lost 0 events (overwritten), dropped 1 (before the ring)\n"

// lossLine is dropLine in band, in -o json.
const lossLine = `{"cpu":1,"lost":0,"dropped":1}` + "\n"

func TestTailSimulated(t *testing.T) {
	for _, c := range []struct {
		args []string
		out  func(sample) string
	}{
		{[]string{"-n", "all", "--count", "4"}, func(s sample) string { return s.b + s.a + s.k + s.c }},
		{[]string{"-n", "all", "--count", "2", "--type", "a"}, func(s sample) string { return s.a + s.k }},
		{[]string{"-n", "all", "--count", "2", "--type", "[ab]", "--type", "x"}, func(s sample) string { return s.b + s.a }},
		{[]string{"-n", "all", "--count", "1", "--origin", "1"}, func(s sample) string { return s.k }},
		{[]string{"-n", "all", "--count", "2", "--cpu", "1"}, func(s sample) string { return s.b + s.c }},
		{[]string{"-n", "all", "--count", "1", "--cpu", "0,1", "--type", "?"}, func(s sample) string { return s.b }},
		{[]string{"-n", "all", "--count", "1", "--type", "c", "--cpu", "1", "--origin", "0"}, func(s sample) string { return s.c }},
	} {
		smp := emitSample(withSimRings(t, 2))
		want := c.out(smp)
		out, errOut, err := runArgs(t, "", append([]string{"tail"}, c.args...)...)
		if err != nil {
			t.Errorf("kmesctl tail %q: %v", c.args, err)
		}
		if got := withoutLoss(t, out, smp.c, strings.Contains(want, smp.c)); got != want {
			t.Errorf("kmesctl tail %q:\n%s\nwant\n%s", c.args, out, want)
		}
		if errOut != "" {
			t.Errorf("kmesctl tail %q: stderr %q", c.args, errOut)
		}
	}
}

// withoutLoss returns out without emitSample's loss report, which must be
// there once if c (the event after the drop) was printed, before c or at
// the end: a reader may count the drop only after tail had c, or tail may
// stop before c when the reader had already counted it.
func withoutLoss(t *testing.T, out, c string, printedC bool) string {
	t.Helper()
	n := strings.Count(out, lossLine)
	i := strings.Index(out, lossLine)
	after := out[max(i, 0)+len(lossLine)*min(n, 1):]
	if n > 1 || (printedC && n == 0) || (n == 1 && after != "" && !strings.HasPrefix(after, c)) {
		t.Errorf("the drop reported %d times, or not before the next event or at the end:\n%s", n, out)
	}
	return strings.Replace(out, lossLine, "", 1)
}

// -o short and -o json-pretty of the same events: short has the JSON
// line's fields, the loss is on stderr; json-pretty is the JSON lines
// indented.
func TestTailSimulatedModes(t *testing.T) {
	smp := emitSample(withSimRings(t, 2))
	out, errOut, err := runArgs(t, "", "tail", "-n", "all", "--count", "4", "-o", "short")
	var want string
	for _, l := range []string{smp.b, smp.a, smp.k, smp.c} {
		want += shortOf(t, l)
	}
	if err != nil || out != want || errOut != dropLine {
		t.Errorf("tail -o short: %v\n%s\nstderr %q\nwant\n%s\nstderr %q", err, out, errOut, want, dropLine)
	}

	for _, mode := range []string{"json", "json-pretty"} {
		smp = emitSample(withSimRings(t, 2))
		out, errOut, err = runArgs(t, "", "tail", "-n", "all", "--count", "4", "--output", mode)
		var compact bytes.Buffer
		dec := json.NewDecoder(strings.NewReader(out))
		for dec.More() {
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				t.Fatalf("-o %s: %v\n%s", mode, err, out)
			}
			json.Compact(&compact, v)
			compact.WriteByte('\n')
		}
		want = smp.b + smp.a + smp.k + lossLine + smp.c
		if err != nil || compact.String() != want || errOut != "" {
			t.Errorf("tail -o %s: %v\n%s\nstderr %q\nwant the objects\n%s", mode, err, out, errOut, want)
		}
	}
}

// shortOf is -o short's line of an event, made from its -o json line.
func shortOf(t *testing.T, line string) string {
	t.Helper()
	var ev struct {
		CPU     int             `json:"cpu"`
		Seq     uint64          `json:"seq"`
		TSNs    int64           `json:"ts_ns,string"`
		Type    string          `json:"type"`
		Payload json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal([]byte(line), &ev); err != nil {
		t.Fatal(err)
	}
	s := fmt.Sprintf("%s cpu %d seq %d %s", time.Unix(0, ev.TSNs).Format("2006-01-02 15:04:05.000000"), ev.CPU, ev.Seq, ev.Type)
	if ev.Payload != nil {
		s += " " + string(ev.Payload)
	}
	return s + "\n"
}

// tail without --count runs until SIGTERM or SIGINT, then exits 0.
func TestTailStopsOnSignal(t *testing.T) {
	// The test's own handler keeps a signal from killing the test binary
	// whatever the timing.
	mine := make(chan os.Signal, 2)
	signal.Notify(mine, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(mine)

	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		src := withSimRings(t, 2)
		smp := emitSample(src)
		var out, errOut syncBuffer
		done := make(chan error, 1)
		go func() {
			done <- run([]string{"tail", "-f", "-n", "all", "--type", "b"}, strings.NewReader(""), &out, &errOut)
		}()
		deadline := time.Now().Add(10 * time.Second)
		for out.String() == "" && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		// Events after the start go out too.
		src.Producer(1).Emit(0, "b", []byte{0xc0})
		for !strings.Contains(out.String(), `"payload":null}`) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if err := syscall.Kill(os.Getpid(), sig); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("tail after %v: %v", sig, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("tail did not stop on %v", sig)
		}
		if got := out.String(); !strings.HasPrefix(got, smp.b) || !strings.Contains(got, `"type":"b","payload":null}`) {
			t.Errorf("tail printed %q", got)
		}
	}
}

// -n 0 -f starts at the end of the rings: only new events.
func TestTailFromEnd(t *testing.T) {
	src := withSimRings(t, 1)
	p := src.Producer(0)
	p.Emit(0, "old", []byte{0xc0})
	var out, errOut syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run([]string{"tail", "-n", "0", "-f", "--count", "1"}, strings.NewReader(""), &out, &errOut)
	}()
	// The consumer may not be attached yet: emit until tail prints.
	deadline := time.Now().Add(10 * time.Second)
	for out.String() == "" && time.Now().Before(deadline) {
		p.Emit(0, "new", []byte{0xc0})
		time.Sleep(5 * time.Millisecond)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.Contains(got, `"type":"new"`) {
		t.Errorf("tail printed %q, want a new event", got)
	}
}

func TestStatSimulated(t *testing.T) {
	src := withSimRings(t, 2)
	emitSample(src) // cpu 1 dropped an event
	out, errOut, err := runArgs(t, "", "stat")
	if err != nil || errOut != "" {
		t.Fatalf("stat: %v, stderr %q", err, errOut)
	}
	want := "" +
		"  cpu  generation  capacity  write_pos  tail_pos  in use  dropped  page size\n" +
		"    0           1     65536         64         0      64        0       4KiB\n" +
		"    1           1     65536         64         0      64        1       4KiB\n"
	if out != want {
		t.Errorf("stat:\n%swant\n%s", out, want)
	}
	out, _, err = runArgs(t, "", "stat", "--json")
	wantJSON := `[{"cpu":0,"generation":1,"capacity":65536,"page_size":4096,"write_pos":64,"tail_pos":0,"in_use":64,"dropped":0},` +
		`{"cpu":1,"generation":1,"capacity":65536,"page_size":4096,"write_pos":64,"tail_pos":0,"in_use":64,"dropped":1}]` + "\n"
	if err != nil || out != wantJSON {
		t.Errorf("stat --json: %v\n%s\nwant\n%s", err, out, wantJSON)
	}

	// After a swap: the new generation and capacity, the new ring's
	// positions (the events copied from position 0), and the dropped
	// count carried over.
	src.Producer(0).SetDropped(7)
	if _, err := src.Swap(0, 131072); err != nil {
		t.Fatal(err)
	}
	out, _, err = runArgs(t, "", "stat", "--json")
	wantJSON = `[{"cpu":0,"generation":2,"capacity":131072,"page_size":4096,"write_pos":64,"tail_pos":0,"in_use":64,"dropped":7},` +
		`{"cpu":1,"generation":1,"capacity":65536,"page_size":4096,"write_pos":64,"tail_pos":0,"in_use":64,"dropped":1}]` + "\n"
	if err != nil || out != wantJSON {
		t.Errorf("stat --json after a swap: %v\n%s\nwant\n%s", err, out, wantJSON)
	}
}

// The page size column shows which ring fell back: each ring's
// data_page_size, "-" (0 in JSON) where the kernel does not say.
func TestStatPageSize(t *testing.T) {
	src := withSimRings(t, 3)
	src.Producer(0).SetPageSize(2 << 20)
	src.Producer(2).SetPageSize(0)
	out, errOut, err := runArgs(t, "", "stat")
	want := "" +
		"  cpu  generation  capacity  write_pos  tail_pos  in use  dropped  page size\n" +
		"    0           1     65536          0         0       0        0       2MiB\n" +
		"    1           1     65536          0         0       0        0       4KiB\n" +
		"    2           1     65536          0         0       0        0          -\n"
	if err != nil || errOut != "" || out != want {
		t.Errorf("stat: %v, stderr %q\n%swant\n%s", err, errOut, out, want)
	}
	out, _, err = runArgs(t, "", "stat", "--json")
	wantJSON := `[{"cpu":0,"generation":1,"capacity":65536,"page_size":2097152,"write_pos":0,"tail_pos":0,"in_use":0,"dropped":0},` +
		`{"cpu":1,"generation":1,"capacity":65536,"page_size":4096,"write_pos":0,"tail_pos":0,"in_use":0,"dropped":0},` +
		`{"cpu":2,"generation":1,"capacity":65536,"page_size":0,"write_pos":0,"tail_pos":0,"in_use":0,"dropped":0}]` + "\n"
	if err != nil || out != wantJSON {
		t.Errorf("stat --json: %v\n%s\nwant\n%s", err, out, wantJSON)
	}
}

// lateMapped maps rings that a swap already replaced: kmes_attach found
// them just before the swap, the mmap came after it.
type lateMapped struct {
	*kmestest.Source
	rings []*kmestest.Ring
}

func (s lateMapped) Rings() ([]*kmes.Ring, error) { return kmestest.Readers(s.rings) }

// A ring mapped after the swap that replaced it shows its own generation,
// the one of its capacity and positions, not the new ring's.
func TestStatOfARingMappedAfterItsSwap(t *testing.T) {
	src := withSimRings(t, 1)
	old := src.Producer(0)
	old.Emit(0, "a", nil)
	if err := src.SetCapacity(131072); err != nil {
		t.Fatal(err)
	}
	ringSource = lateMapped{src, []*kmestest.Ring{old}}
	out, _, err := runArgs(t, "", "stat", "--json")
	want := `[{"cpu":0,"generation":1,"capacity":65536,"page_size":4096,"write_pos":30,"tail_pos":0,"in_use":30,"dropped":0}]` + "\n"
	if err != nil || out != want {
		t.Errorf("stat --json: %v\n%s\nwant\n%s", err, out, want)
	}
	if n := src.Replaced(); n != 0 {
		t.Errorf("%d replaced rings still mapped after stat", n)
	}
}

// setCapacity swaps every simulated ring, retrying while a reader has not
// followed the last swap yet (EBUSY).
func setCapacity(t *testing.T, src *kmestest.Source, capacity uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := src.SetCapacity(capacity)
		if err == nil {
			return
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			t.Fatalf("set capacity %d: %v", capacity, err)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// tail follows swaps of the rings: every event once, in sequence on each
// CPU, and no loss reported.
func TestTailFollowsASwap(t *testing.T) {
	const per = 5 // events per CPU between swaps
	src := withSimRings(t, 2)
	emit := func(round int) {
		for cpu := range 2 {
			for range per {
				src.Emit(cpu, 0, "x", []byte{byte(round)})
			}
			src.Emit(cpu, 0, "other", []byte{0xc0})
		}
	}
	lines := func(out *syncBuffer) int { return strings.Count(out.String(), "\n") }
	var out, errOut syncBuffer
	done := make(chan error, 1)
	emit(0)
	go func() {
		done <- run([]string{"tail", "-f", "-n", "all", "--type", "x", "--count", fmt.Sprint(3 * 2 * per)}, strings.NewReader(""), &out, &errOut)
	}()
	deadline := time.Now().Add(10 * time.Second)
	waitLines := func(n int) {
		t.Helper()
		for lines(&out) < n {
			if time.Now().After(deadline) {
				t.Fatalf("tail printed %d lines, want %d:\n%s", lines(&out), n, out.String())
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitLines(2 * per)
	setCapacity(t, src, 131072)
	emit(1)
	waitLines(4 * per)
	setCapacity(t, src, 65536) // after tail followed the first swap
	emit(2)
	if err := <-done; err != nil {
		t.Fatalf("tail: %v", err)
	}
	last := map[int]int{}
	for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		var cpu, seq, round int
		if _, err := fmt.Sscanf(l, `{"cpu":%d,"seq":%d,`, &cpu, &seq); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if _, err := fmt.Sscanf(l[strings.Index(l, `"payload":`):], `"payload":%d}`, &round); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		// Each round's per events on a CPU, then an event of another
		// type, which tail leaves out.
		want := last[cpu] + 1
		if last[cpu]%(per+1) == per {
			want++
		}
		if seq != want || round != (seq-1)/(per+1) {
			t.Errorf("cpu %d: sequence %d of round %d after %d; want %d", cpu, seq, round, last[cpu], want)
		}
		last[cpu] = seq
	}
	if last[0] != 3*(per+1)-1 || last[1] != 3*(per+1)-1 {
		t.Errorf("tail stopped at sequences %v; output:\n%s", last, out.String())
	}
	if errOut.String() != "" {
		t.Errorf("tail reported: %s", errOut.String())
	}
	if n := src.Replaced(); n != 0 {
		t.Errorf("%d replaced rings still mapped after tail ended", n)
	}
}

// stat shows the new rings after a swap, and leaves nothing mapped that
// would refuse the next one.
func TestStatAcrossSwaps(t *testing.T) {
	src := withSimRings(t, 2)
	src.Producer(1).Drop()
	for i, capacity := range []uint64{131072, 65536, 131072} {
		if err := src.SetCapacity(capacity); err != nil {
			t.Fatalf("swap %d: %v (stat kept a ring mapped)", i+1, err)
		}
		out, _, err := runArgs(t, "", "stat", "--json")
		want := fmt.Sprintf(`[{"cpu":0,"generation":%d,"capacity":%d,"page_size":4096,"write_pos":0,"tail_pos":0,"in_use":0,"dropped":0},`+
			`{"cpu":1,"generation":%[1]d,"capacity":%[2]d,"page_size":4096,"write_pos":0,"tail_pos":0,"in_use":0,"dropped":1}]`+"\n", i+2, capacity)
		if err != nil || out != want {
			t.Errorf("stat --json after swap %d: %v\n%s\nwant\n%s", i+1, err, out, want)
		}
	}
}

// watchRow is one ring of a stat --watch --json line.
type watchRow struct {
	CPU          int     `json:"cpu"`
	Generation   uint64  `json:"generation"`
	WritePos     uint64  `json:"write_pos"`
	Dropped      uint64  `json:"dropped"`
	BytesPerSec  *uint64 `json:"bytes_per_sec"`
	DroppedDelta *uint64 `json:"dropped_delta"`
}

// stat --watch samples every interval until a signal, attaching afresh
// each time: capacity changes go through while it runs.
func TestStatWatch(t *testing.T) {
	src := withSimRings(t, 2)
	sigs := withSignals(t)
	var out, errOut syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run([]string{"stat", "--watch", "--json", "--interval", "5ms"}, strings.NewReader(""), &out, &errOut)
	}()
	var frames [][]watchRow
	deadline := time.Now().Add(10 * time.Second)
	// waitFor waits for a frame that ok accepts.
	waitFor := func(what string, ok func([]watchRow) bool) {
		t.Helper()
		for {
			lines := strings.SplitAfter(out.String(), "\n")
			frames = frames[:0]
			for _, l := range lines[:len(lines)-1] { // whole lines
				var f []watchRow
				if err := json.Unmarshal([]byte(l), &f); err != nil || len(f) != 2 || f[0].CPU != 0 || f[1].CPU != 1 {
					t.Fatalf("line %q: %v", l, err)
				}
				frames = append(frames, f)
				if ok(f) {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no frame with %s:\n%s", what, out.String())
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor("a first sample", func([]watchRow) bool { return true })
	src.Producer(0).Emit(0, "a", nil)
	src.Producer(1).Drop()
	waitFor("the event and the drop", func(f []watchRow) bool { return f[0].WritePos > 0 && f[1].Dropped == 1 })
	setCapacity(t, src, 131072)
	setCapacity(t, src, 65536) // refused if a ring of the first swap were still mapped
	waitFor("generation 3", func(f []watchRow) bool { return f[0].Generation == 3 })
	sigs <- syscall.SIGINT
	select {
	case err := <-done:
		if err != nil || errOut.String() != "" {
			t.Fatalf("stat --watch: %v, stderr %q", err, errOut.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stat --watch did not stop on SIGINT")
	}

	if f := frames[0]; f[0].BytesPerSec != nil || f[0].DroppedDelta != nil || f[1].BytesPerSec != nil || f[1].DroppedDelta != nil {
		t.Errorf("first frame has rates: %+v", f)
	}
	var drops uint64
	written, swapped := false, false
	for i, f := range frames[1:] {
		prev := frames[i]
		for cpu, r := range f {
			if r.DroppedDelta == nil || *r.DroppedDelta != r.Dropped-prev[cpu].Dropped {
				t.Errorf("frame %d cpu %d: dropped_delta %v after %d, %d", i+1, cpu, r.DroppedDelta, prev[cpu].Dropped, r.Dropped)
				continue
			}
			drops += *r.DroppedDelta
			sameRing := r.Generation == prev[cpu].Generation
			if (r.BytesPerSec == nil) == sameRing {
				t.Errorf("frame %d cpu %d: bytes_per_sec %v, generation %d after %d", i+1, cpu, r.BytesPerSec, r.Generation, prev[cpu].Generation)
			}
			if cpu == 0 && sameRing && r.WritePos > prev[cpu].WritePos {
				written = *r.BytesPerSec > 0
			}
			swapped = swapped || !sameRing
		}
	}
	if drops != 1 || !written || !swapped {
		t.Errorf("frames: %d drops, a rate of the write %v, a swap %v; want 1, true, true:\n%s", drops, written, swapped, out.String())
	}
	if n := src.Replaced(); n != 0 {
		t.Errorf("%d replaced rings still mapped after stat --watch", n)
	}
}

// The table is appended frame after frame when stdout is no terminal.
func TestStatWatchTable(t *testing.T) {
	withSimRings(t, 1)
	sigs := withSignals(t)
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run([]string{"stat", "--interval", "1ms", "--watch"}, strings.NewReader(""), &out, io.Discard)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(out.String(), "cpu") < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	sigs <- syscall.SIGTERM
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	first := "" +
		"  cpu  generation  capacity  write_pos  tail_pos  in use  dropped  page size  bytes/s  +dropped\n" +
		"    0           1     65536          0         0       0        0       4KiB        -         -\n"
	next := "\n" +
		"  cpu  generation  capacity  write_pos  tail_pos  in use  dropped  page size  bytes/s  +dropped\n" +
		"    0           1     65536          0         0       0        0       4KiB        0         0\n"
	got := out.String()
	if !strings.HasPrefix(got, first) || strings.ReplaceAll(got[len(first):], next, "") != "" {
		t.Errorf("got\n%s\nwant\n%s then frames of\n%s", got, first, next)
	}
}
