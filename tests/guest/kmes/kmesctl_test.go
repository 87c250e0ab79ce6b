package kmesguest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/userspace/kmes/abi"
	"github.com/kmes-project/kmes/vm/guest"
)

// command returns cmd from the initramfs (u-root puts its commands in
// /bbin, on PATH), run with a deadline.
func command(t *testing.T, ctx context.Context, name string, args ...string) *exec.Cmd {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not in the initramfs: %v", name, err)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.WaitDelay = time.Second
	return cmd
}

// needWake maps cpu's ring through kmes_attach itself and returns its
// consumer page's need_wake word, which every consumer of the ring shares:
// a consumer sets it before it sleeps on the futex, once it has read all
// there is.
func needWake(t *testing.T, cpu int) *uint32 {
	t.Helper()
	m := mapRingOf(t, cpu)
	t.Cleanup(func() { unix.Munmap(m) })
	// need_wake is the byte at the start of the consumer page, whose
	// other bytes are zero: the aligned word is non-zero exactly when
	// need_wake is.
	return (*uint32)(unsafe.Pointer(&m[abi.MetaNeedWakeOff]))
}

// mapRingOf attaches, maps the ring of cpu (read-write, shared, as a
// consumer does) and closes every descriptor: the mapping, which the
// caller unmaps, is all that holds the ring.
func mapRingOf(t *testing.T, cpu int) []byte {
	t.Helper()
	fds := make([]int32, 1024)
	count := int32(len(fds))
	var capacity uint64
	if _, _, errno := unix.Syscall(abi.SysAttach, uintptr(unsafe.Pointer(&fds[0])), uintptr(unsafe.Pointer(&count)), uintptr(unsafe.Pointer(&capacity))); errno != 0 {
		t.Fatalf("kmes_attach: %v", errno)
	}
	defer func() {
		for _, fd := range fds[:count] {
			unix.Close(int(fd))
		}
	}()
	if int(count) <= cpu {
		t.Fatalf("kmes_attach returned %d rings, none of cpu %d", count, cpu)
	}
	m, err := unix.Mmap(int(fds[cpu]), 0, int(abi.MapSize(capacity)), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap the ring of cpu %d: %v", cpu, err)
	}
	return m
}

// tailLine is kmesctl tail's line for r, whose payload is
// {"i": <fixint>, "s": "abc"}.
func tailLine(r *kmes.Record) string {
	return fmt.Sprintf(`{"cpu":%d,"seq":%d,%s,"origin":%d,"type":%q,"payload":{"i":%d,"s":"abc"}}`,
		r.CPU, r.Sequence, tailTime(r), r.Origin, r.Type, r.Payload[3])
}

// tailTime is the "ts" and "ts_ns" fields of kmesctl tail's line for r:
// ts_ns, nanoseconds since the epoch, is a string.
func tailTime(r *kmes.Record) string {
	return fmt.Sprintf(`"ts":"%s","ts_ns":"%d"`,
		time.Unix(0, r.Timestamp).UTC().Format("2006-01-02T15:04:05.000000000Z07:00"), r.Timestamp)
}

// TestKmesctlTail starts 'kmesctl tail' with every filter, waits until it
// sleeps at the end of the ring, then emits a known set of events, among
// them events the filters must leave out. It must print exactly the lines
// of the wanted events, which a Reader reads too; 'kmesctl tail -n all'
// must then print the same lines, and -o short and -o json-pretty the
// same events in their forms.
func TestKmesctlTail(t *testing.T) {
	const typ, n = "kmes.test.kmesctl", 8
	cpu := targetCPU()
	pin(t, cpu)
	rd := readerFor(t, cpu, true)
	// Only this test's consumer can set need_wake from here on: it is
	// cleared, and the Reader above does not read until the events are in.
	wake := needWake(t, cpu)
	atomic.StoreUint32(wake, 0)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cpuArg := strconv.Itoa(cpu)
	tail := command(t, ctx, "kmesctl", "tail", "-f", "-n", "0", "--type", typ, "--cpu", cpuArg, "--origin", "0", "--count", strconv.Itoa(n))
	var out, errOut bytes.Buffer
	tail.Stdout, tail.Stderr = &out, &errOut
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	for atomic.LoadUint32(wake) == 0 {
		if ctx.Err() != nil {
			t.Fatalf("kmesctl tail never waited for events on cpu %d; stderr:\n%s", cpu, errOut.String())
		}
		time.Sleep(time.Millisecond)
	}

	// Decoys: another type on this CPU, and this type on another CPU.
	other := make(chan error, 1)
	go func() {
		if runtime.NumCPU() == 1 {
			other <- nil
			return
		}
		if err := pinTo(0); err != nil {
			other <- err
			return
		}
		other <- kmes.Emit(typ, mp(0x82, 0xa1, "i", 0x7f, 0xa1, "s", 0xa3, "abc"))
	}()
	for i := 0; i < n; i++ {
		emit(t, typ+".decoy", mp(0xc0))
		emit(t, typ, mp(0x82, 0xa1, "i", i, 0xa1, "s", 0xa3, "abc"))
	}
	if err := <-other; err != nil {
		t.Fatalf("emit on cpu 0: %v", err)
	}
	var want, short []string
	for _, r := range readUntil(t, rd, n, ofType(typ)) {
		want = append(want, tailLine(r))
		short = append(short, fmt.Sprintf(`%s cpu %d seq %d %s {"i":%d,"s":"abc"}`,
			time.Unix(0, r.Timestamp).Format("2006-01-02 15:04:05.000000"), r.CPU, r.Sequence, r.Type, r.Payload[3]))
	}
	if err := tail.Wait(); err != nil {
		t.Fatalf("kmesctl tail: %v; stderr:\n%s", err, errOut.String())
	}
	compareLines(t, "kmesctl tail", out.String(), want)
	if errOut.Len() > 0 {
		t.Errorf("kmesctl tail wrote to stderr:\n%s", errOut.String())
	}

	out.Reset()
	errOut.Reset()
	for _, mode := range []string{"json", "short", "json-pretty"} {
		out.Reset()
		errOut.Reset()
		again := command(t, ctx, "kmesctl", "tail", "-n", "all", "-o", mode, "--type", typ, "--cpu", cpuArg)
		again.Stdout, again.Stderr = &out, &errOut
		if err := again.Run(); err != nil {
			t.Fatalf("kmesctl tail -n all -o %s: %v; stderr:\n%s", mode, err, errOut.String())
		}
		// Earlier tests dropped events on this CPU: -n all from the
		// oldest event may report them, on a line of their own.
		switch mode {
		case "json":
			compareLines(t, "kmesctl tail -n all", withoutLoss(t, out.String()), want)
		case "short":
			compareLines(t, "kmesctl tail -n all -o short", out.String(), short)
			if bad := strings.TrimSpace(lossLineShort.ReplaceAllString(errOut.String(), "")); bad != "" {
				t.Errorf("kmesctl tail -o short wrote to stderr:\n%s", bad)
			}
		case "json-pretty":
			// The same objects, indented: compacted, the JSON lines.
			var got bytes.Buffer
			dec := json.NewDecoder(&out)
			for dec.More() {
				var obj json.RawMessage
				if err := dec.Decode(&obj); err != nil {
					t.Fatalf("kmesctl tail -o json-pretty: %v", err)
				}
				if err := json.Compact(&got, obj); err != nil {
					t.Fatal(err)
				}
				got.WriteByte('\n')
			}
			compareLines(t, "kmesctl tail -n all -o json-pretty, compacted", withoutLoss(t, got.String()), want)
		}
	}
}

// lossLine is tail's report of lost and dropped events in JSON, and
// lossLineShort on stderr in -o short.
var (
	lossLine      = regexp.MustCompile(`(?m)^\{"cpu":\d+,"lost":\d+,"dropped":\d+\}\n`)
	lossLineShort = regexp.MustCompile(`(?m)^kmesctl tail: cpu \d+: lost \d+ events \(overwritten\), dropped \d+ \(before the ring\)\n`)
)

// withoutLoss returns out without its loss lines.
func withoutLoss(t *testing.T, out string) string {
	t.Helper()
	return lossLine.ReplaceAllString(out, "")
}

// demoLine is a tail line: cpu, seq, ts, ts_ns and the rest.
var demoLine = regexp.MustCompile(`^\{"cpu":(\d+),"seq":([1-9]\d*),"ts":"([^"]+)","ts_ns":"(-?\d+)",(.*)$`)

func compareLines(t *testing.T, what, out string, want []string) {
	t.Helper()
	got := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if !slices.Equal(got, want) {
		t.Errorf("%s printed:\n%s\nwant:\n%s", what, out, strings.Join(want, "\n"))
	}
}

// TestDemo runs what 'make run' runs (guest.DemoPlan), with a count: the
// emitter's ticks from every CPU, then the tail over them. Every CPU's
// ticks are there, each in its own CPU's ring, as kmesctl shows them.
func TestDemo(t *testing.T) {
	const ticks = 2
	d := guest.DemoPlan()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	emitter := command(t, ctx, d.Emitter[0], append(d.Emitter[1:], "-count", strconv.Itoa(ticks))...)
	if out, err := emitter.CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("%s: %v; it printed %q (it reports only errors)", emitter, err, out)
	}
	ncpu := runtime.NumCPU()
	tail := command(t, ctx, d.Tail[0], append(d.Tail[1:], "-n", "all", "--type", "demo.tick", "--count", strconv.Itoa(ticks*ncpu))...)
	var stderr bytes.Buffer
	tail.Stderr = &stderr
	out, err := tail.Output()
	if err != nil {
		t.Fatalf("%s: %v; stderr:\n%s", tail, err, stderr.String())
	}
	var want []string
	for cpu := 0; cpu < ncpu; cpu++ {
		for i := 1; i <= ticks; i++ {
			want = append(want, fmt.Sprintf(`"cpu":%d,"origin":0,"type":"demo.tick","payload":{"cpu":%d,"n":%d,"msg":"hello from cpu %d"}}`, cpu, cpu, i, cpu))
		}
	}
	var got []string
	// Loss lines may come first: events dropped on a CPU since boot.
	for _, l := range strings.Split(strings.TrimSuffix(withoutLoss(t, string(out)), "\n"), "\n") {
		// seq and ts vary: keep cpu, origin, type and payload.
		m := demoLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("%s printed %q, not a tail line", tail, l)
		}
		ts, err := time.Parse(time.RFC3339Nano, m[3])
		if err != nil {
			t.Errorf("line %q: ts: %v", l, err)
		}
		if ns, err := strconv.ParseInt(m[4], 10, 64); err != nil || ns != ts.UnixNano() {
			t.Errorf("line %q: ts_ns is not ts in nanoseconds (%v)", l, err)
		}
		got = append(got, `"cpu":`+m[1]+","+m[5])
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s printed:\n%s\nwant, less seq and ts, in any order:\n%s", tail, out, strings.Join(want, "\n"))
	}
}
