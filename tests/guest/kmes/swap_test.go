package kmesguest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/userspace/kmes/abi"
	"github.com/kmes-project/kmes/vm/guest"
)

// Swaps (KMES.md §4): a write of kernel.kmes.buffer_capacity replaces
// every CPU's ring by one of the new capacity, of the next generation,
// holding the newest events of the old one that fit. Readers drain the old
// ring, attach again and go on in the new one; until every reader has left
// a replaced ring, the next write fails with EBUSY. Every test here
// restores the default capacity when it ends.

// swapPayload is the payload of the swap tests' events: their index on
// the emitting CPU, a msgpack uint32 (a long swap loop emits more than
// 65535 per CPU). beforeStart marks events emitted before the reader under
// test started, which it must never return.
func swapPayload(i uint32) []byte { return mp(0xce, i) }

const beforeStart = 0xffffffff

func swapIndex(r *kmes.Record) (uint32, bool) {
	if len(r.Payload) != 5 || r.Payload[0] != 0xce {
		return 0, false
	}
	return binary.BigEndian.Uint32(r.Payload[1:]), true
}

// seqLog checks one CPU's events as a reader returns them: sequence
// numbers with no gap or repeat, and the test's events (of type typ) in
// the order of their indices, each once, none from before the start.
// Its methods are for the reader's goroutine, but count and ahead, which
// readInto reads rd in a goroutine until Read fails, adding every record
// to log and handing it to each (if not nil); the channel receives the
// error that ended it.
func readInto(rd *kmes.Reader, log *seqLog, each func(*kmes.Record)) <-chan error {
	readErr := make(chan error, 1)
	go func() {
		var rec kmes.Record
		for {
			if err := rd.Read(&rec); err != nil {
				readErr <- err
				return
			}
			log.add(&rec)
			if each != nil {
				each(&rec)
			}
		}
	}()
	return readErr
}

// are for any.
type seqLog struct {
	cpu     int
	typ     string
	lastSeq uint64
	next    uint32 // index of the next event of typ
	count   atomic.Uint32
	events  int // every event read
	errs    []string
}

func (l *seqLog) add(r *kmes.Record) {
	l.events++
	if l.lastSeq != 0 && r.Sequence != l.lastSeq+1 {
		l.errorf("sequence %d (%s) after %d", r.Sequence, r.Type, l.lastSeq)
	}
	if r.CPU != l.cpu {
		l.errorf("event %d of cpu %d in cpu %d's ring", r.Sequence, r.CPU, l.cpu)
	}
	l.lastSeq = r.Sequence
	if r.Type != l.typ {
		return
	}
	i, ok := swapIndex(r)
	switch {
	case !ok:
		l.errorf("event %d: payload % x", r.Sequence, r.Payload)
	case i == beforeStart:
		l.errorf("event %d was emitted before the reader started at the end of the ring", r.Sequence)
	case i != l.next:
		l.errorf("event %d is the %d-th emitted, want the %d-th", r.Sequence, i, l.next)
	}
	l.next = i + 1
	l.count.Add(1)
}

func (l *seqLog) errorf(format string, args ...any) {
	if len(l.errs) < 10 {
		l.errs = append(l.errs, fmt.Sprintf("cpu %d: ", l.cpu)+fmt.Sprintf(format, args...))
	}
}

// ahead returns how many of the events up to the i-th are not read yet.
func (l *seqLog) ahead(i int) int { return i - int(l.count.Load()) }

// swapWindow bounds how far an emitter of the swap tests runs ahead of
// the reader: 256 events of under 64 bytes are a quarter of the smallest
// ring, so a reader that keeps up is never lapped, however the guest is
// scheduled, and a lost event is a bug.
const swapWindow = 256

// emitter emits events of typ on cpu, from a thread pinned there, every
// pause, never more than swapWindow ahead of log, until stop is closed.
// It sends the number emitted, or -1 after reporting an error.
func emitter(t *testing.T, cpu int, typ string, pause time.Duration, log *seqLog, stop <-chan struct{}, done chan<- int) {
	if err := pinTo(cpu); err != nil {
		t.Error(err)
		done <- -1
		return
	}
	for i := 0; ; i++ {
		for log.ahead(i) >= swapWindow {
			select {
			case <-stop:
				done <- i
				return
			case <-time.After(time.Millisecond):
			}
		}
		select {
		case <-stop:
			done <- i
			return
		default:
		}
		if err := kmes.Emit(typ, swapPayload(uint32(i))); err != nil {
			t.Errorf("cpu %d: emit event %d: %v", cpu, i, err)
			done <- -1
			return
		}
		time.Sleep(pause)
	}
}

// emitBefore emits n events of typ marked beforeStart on every CPU.
func emitBefore(t *testing.T, typ string, n int) {
	t.Helper()
	for cpu := range runtime.NumCPU() {
		errc := make(chan error, 1)
		go func() {
			if err := pinTo(cpu); err != nil {
				errc <- err
				return
			}
			for range n {
				if err := kmes.Emit(typ, swapPayload(beforeStart)); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
		if err := <-errc; err != nil {
			t.Fatalf("emit on cpu %d: %v", cpu, err)
		}
	}
}

// waitUntil polls cond every millisecond for up to readTimeout.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(readTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, readTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSwapReaderFollows swaps the rings while a Reader started at the end
// of the target CPU's ring reads it: first before any event came (the
// reader has read nothing), then, while a pinned emitter emits, 4 MiB to
// 8 MiB and back, and 4 MiB to 64 KiB. The Reader moves to each new
// generation and capacity; every event emitted is read once, in order,
// with no sequence gap, none of those emitted before it started (which
// the swaps copy into the new rings) is returned, Stats show nothing lost
// or dropped, and the kernel's dropped count did not move.
func TestSwapReaderFollows(t *testing.T) {
	const typ = "kmes.test.swap.reader"
	requireSysAdmin(t)
	restoreCapacity(t)
	cpu := targetCPU()
	pin(t, cpu)
	emitBefore(t, typ, 5)
	before := rings(t)[cpu]
	rd := readerFor(t, cpu, true)
	log := &seqLog{cpu: cpu, typ: typ}
	readErr := readInto(rd, log, nil)
	gen := before.generation
	swap := func(capacity uint64) {
		t.Helper()
		busy := setCapacity(t, capacity)
		gen++
		waitUntil(t, fmt.Sprintf("the reader moves to generation %d", gen), func() bool { return rd.Stats()[0].Generation == gen })
		if c := rd.Stats()[0].Capacity; c != capacity {
			t.Fatalf("the reader is at generation %d, capacity %d; want %d", gen, c, capacity)
		}
		t.Logf("swap to %d bytes, generation %d (%d writes refused with EBUSY); %d events read", capacity, gen, busy, log.count.Load())
	}

	// The reader has read nothing yet; what the swap copies is from
	// before its start.
	time.Sleep(20 * time.Millisecond) // it sleeps on the ring
	if before.capacity == defaultCapacity {
		swap(defaultCapacity / 2)
	} else {
		swap(defaultCapacity)
	}

	stop, done := make(chan struct{}), make(chan int, 1)
	stopEmitting := sync.OnceFunc(func() { close(stop) })
	defer stopEmitting() // also when the test fails on the way
	go emitter(t, cpu, typ, 200*time.Microsecond, log, stop, done)
	some := func() {
		t.Helper()
		n := log.count.Load() + 50
		waitUntil(t, fmt.Sprintf("%d events read", n), func() bool { return log.count.Load() >= n })
	}
	for _, c := range []uint64{defaultCapacity, 2 * defaultCapacity, defaultCapacity, abi.CapacityMin} {
		some()
		if c != readSysctl(t, capacitySysctl) {
			swap(c)
		}
	}
	some()
	stopEmitting()
	emitted := <-done
	if emitted < 0 {
		t.FailNow()
	}
	waitUntil(t, fmt.Sprintf("all %d events read", emitted), func() bool { return int(log.count.Load()) == emitted })
	rd.Close()
	if err := <-readErr; !errors.Is(err, kmes.ErrClosed) {
		t.Fatalf("Read: %v", err)
	}
	for _, e := range log.errs {
		t.Error(e)
	}
	st := rd.Stats()[0]
	t.Logf("%d events emitted, %d read in all; stats %+v", emitted, log.events, st)
	if st.Lost != 0 || st.Dropped != 0 || st.Corrupt != 0 || st.Events != uint64(log.events) ||
		st.Generation != gen || st.Capacity != abi.CapacityMin || st.LastSequence != log.lastSeq {
		t.Errorf("stats %+v; want nothing lost, dropped or corrupt, %d events, generation %d, capacity %d, last sequence %d",
			st, log.events, gen, abi.CapacityMin, log.lastSeq)
	}
	if after := rings(t)[cpu]; after.dropped != before.dropped {
		t.Errorf("the kernel dropped %d events on cpu %d during the test", after.dropped-before.dropped, cpu)
	}
}

// statJSON runs 'kmesctl stat --json'.
func statJSON(t *testing.T, ctx context.Context) []map[string]uint64 {
	t.Helper()
	out, err := command(t, ctx, "kmesctl", "stat", "--json").Output()
	if err != nil {
		t.Fatalf("kmesctl stat --json: %v", err)
	}
	var st []map[string]uint64
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("kmesctl stat --json printed %q: %v", out, err)
	}
	return st
}

// checkStat runs 'kmesctl stat' and 'kmesctl stat --json': every CPU's
// line must show generation and capacity, the page size the topology's
// rings are on (a swap's new rings included), and the dropped count of
// the ring's producer page.
func checkStat(t *testing.T, ctx context.Context, generation, capacity uint64) {
	t.Helper()
	pageSize := uint64(guest.Current(t).Topology.RingPageSize)
	pageText := map[uint64]string{guest.HugePageSize: "2MiB", guest.BasePageSize: "4KiB"}[pageSize]
	want := rings(t)
	js := statJSON(t, ctx)
	var stderr bytes.Buffer
	table := command(t, ctx, "kmesctl", "stat")
	table.Stderr = &stderr
	out, err := table.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("kmesctl stat: %v; stderr %q", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(js) != len(want) || len(lines) != len(want)+1 || strings.Join(strings.Fields(lines[0]), " ") != "cpu generation capacity write_pos tail_pos in use dropped page size" {
		t.Fatalf("kmesctl stat for %d rings:\n%s\n--json: %v", len(want), out, js)
	}
	for i, w := range want {
		if w.pageSize != pageSize {
			t.Errorf("%v: want page size %d", w, pageSize)
		}
		j := js[i]
		if j["cpu"] != uint64(w.cpu) || j["generation"] != generation || j["capacity"] != capacity || j["page_size"] != pageSize || j["dropped"] != w.dropped {
			t.Errorf("kmesctl stat --json: %v; want cpu %d, generation %d, capacity %d, page_size %d, dropped %d", j, w.cpu, generation, capacity, pageSize, w.dropped)
		}
		f := strings.Fields(lines[i+1])
		want := []string{strconv.Itoa(w.cpu), strconv.FormatUint(generation, 10), strconv.FormatUint(capacity, 10)}
		if len(f) != 8 || !slices.Equal(f[:3], want) || f[6] != strconv.FormatUint(w.dropped, 10) || f[7] != pageText {
			t.Errorf("kmesctl stat line %q; want cpu %s, generation %s, capacity %s, dropped %d, page size %s", lines[i+1], want[0], want[1], want[2], w.dropped, pageText)
		}
	}
}

// TestSwapKmesctl runs 'kmesctl tail' (from the end of the rings, as by
// default) across two swaps, 8 MiB and back, with events emitted on the
// target CPU before, between and after them: it prints each of them once,
// in order, as a Reader reads them, nothing from before its start (copied
// into the new rings by the swaps), and reports no loss. After each swap
// 'kmesctl stat' shows the new generation and capacity and the dropped
// counts.
func TestSwapKmesctl(t *testing.T) {
	const typ, per = "kmes.test.swap.kmesctl", 20
	requireSysAdmin(t)
	restoreCapacity(t)
	cpu := targetCPU()
	emitBefore(t, typ, 5)
	pin(t, cpu)
	gen := rings(t)[cpu].generation

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	asleep := sleepProbe(t, cpu)
	tail := command(t, ctx, "kmesctl", "tail", "-f", "-n", "0", "--type", typ, "--count", strconv.Itoa(3*per))
	var out, errOut bytes.Buffer
	tail.Stdout, tail.Stderr = &out, &errOut
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	asleep(time.Minute, "kmesctl tail")
	// The reference: a Reader of the target CPU, reading throughout.
	rd := readerFor(t, cpu, true)
	log := &seqLog{cpu: cpu, typ: typ}
	var want []string
	readErr := readInto(rd, log, func(rec *kmes.Record) {
		if i, ok := swapIndex(rec); ok && rec.Type == typ {
			want = append(want, fmt.Sprintf(`{"cpu":%d,"seq":%d,%s,"origin":0,"type":%q,"payload":%d}`,
				rec.CPU, rec.Sequence, tailTime(rec), rec.Type, i))
		}
	})

	next := 0
	emitSome := func() {
		t.Helper()
		for range per {
			emit(t, typ, swapPayload(uint32(next)))
			next++
		}
	}
	emitSome()
	setCapacity(t, 2*defaultCapacity)
	gen++
	checkStat(t, ctx, gen, 2*defaultCapacity)
	emitSome()
	// Refused until tail's readers and the Reader left the 4 MiB rings.
	busy := setCapacity(t, defaultCapacity)
	gen++
	t.Logf("the swap back to 4 MiB was refused %d times with EBUSY", busy)
	checkStat(t, ctx, gen, defaultCapacity)
	emitSome()

	err := tail.Wait()
	waitUntil(t, "the Reader reads every event", func() bool { return int(log.count.Load()) == next })
	rd.Close()
	if err := <-readErr; !errors.Is(err, kmes.ErrClosed) {
		t.Fatalf("Read: %v", err)
	}
	if err != nil {
		t.Fatalf("kmesctl tail: %v; stderr:\n%s", err, errOut.String())
	}
	for _, e := range log.errs {
		t.Error(e)
	}
	compareLines(t, "kmesctl tail", out.String(), want)
	if errOut.Len() > 0 {
		t.Errorf("kmesctl tail wrote to stderr:\n%s", errOut.String())
	}
	if st := rd.Stats()[0]; st.Generation != gen || st.Lost != 0 || st.Dropped != 0 {
		t.Errorf("the Reader's stats %+v; want generation %d, nothing lost or dropped", st, gen)
	}
}

// swapLoops sets the number of swaps of TestSwapLoop ('make swap-stress'
// passes a large one); 0 means $KMES_SWAP_LOOPS, else defaultSwapLoops.
var swapLoops = flag.Int("kmes.swap-loops", 0, "swaps of TestSwapLoop (0: $KMES_SWAP_LOOPS, else a count sized for the debug kernel)")

const (
	// defaultSwapLoops and defaultSwapBudget keep TestSwapLoop within
	// about a minute on the debug kernel, where a system call costs 20
	// times what it does on the plain one: the loop stops at the budget
	// if it has not made its swaps by then.
	defaultSwapLoops  = 200
	defaultSwapBudget = 40 * time.Second
)

// swapLoopCount returns the swaps TestSwapLoop makes, and whether they
// were asked for (then they must all be made).
func swapLoopCount(t *testing.T) (int, bool) {
	t.Helper()
	if *swapLoops > 0 {
		return *swapLoops, true
	}
	if s := os.Getenv("KMES_SWAP_LOOPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("KMES_SWAP_LOOPS=%q: want a number of swaps", s)
		}
		return n, true
	}
	return defaultSwapLoops, false
}

// TestSwapLoop swaps the rings over and over, alternately to 64 and
// 128 KiB, while an emitter pinned to each CPU emits at a modest pace
// (never more than 256 events ahead of its CPU's reader) and a Reader per
// ring reads. A write refused with EBUSY (a reader has not followed the
// last swap yet) is retried a millisecond later. Every CPU's reader must
// read every event emitted there once, in order, with no sequence gap,
// nothing lost or dropped, and end at the last generation; the kernel's
// dropped counts must not move. -kmes.swap-loops (or $KMES_SWAP_LOOPS)
// sets the number of swaps.
func TestSwapLoop(t *testing.T) {
	const typ = "kmes.test.swap.loop"
	requireSysAdmin(t)
	restoreCapacity(t)
	loops, asked := swapLoopCount(t)
	budget := defaultSwapBudget
	if dl, ok := t.Deadline(); asked && ok {
		budget = time.Until(dl) - time.Minute
	} else if asked {
		budget = 24 * time.Hour
	}
	before := rings(t)
	ncpu := len(before)
	gen := before[0].generation

	rds, err := kmes.NewReaders(&kmes.Options{FromEnd: true})
	if err != nil {
		t.Fatalf("NewReaders: %v", err)
	}
	logs := make([]*seqLog, ncpu)
	var readers sync.WaitGroup
	readErr := make(chan error, ncpu)
	for i, rd := range rds {
		logs[i] = &seqLog{cpu: rd.CPUs()[0], typ: typ}
		readers.Add(1)
		go func() {
			defer readers.Done()
			var rec kmes.Record
			for {
				if err := rd.Read(&rec); err != nil {
					if !errors.Is(err, kmes.ErrClosed) {
						readErr <- fmt.Errorf("cpu %d: Read: %w", rd.CPUs()[0], err)
					}
					return
				}
				logs[i].add(&rec)
			}
		}()
	}
	closeReaders := sync.OnceFunc(func() {
		for _, rd := range rds {
			rd.Close()
		}
		readers.Wait()
	})
	t.Cleanup(closeReaders) // before the capacity is restored

	stop := make(chan struct{})
	stopEmitting := sync.OnceFunc(func() { close(stop) })
	defer stopEmitting() // also when the test fails on the way
	done := make([]chan int, ncpu)
	for cpu := range ncpu {
		done[cpu] = make(chan int, 1)
		go emitter(t, cpu, typ, 500*time.Microsecond, logs[cpu], stop, done[cpu])
	}
	start := time.Now()
	busy, made := 0, 0
	for made < loops && time.Since(start) < budget {
		busy += setCapacity(t, abi.CapacityMin<<(made%2))
		made++
		gen++
		if made%100 == 0 {
			t.Logf("%d swaps in %v (%d refused with EBUSY)", made, time.Since(start).Round(time.Millisecond), busy)
		}
	}
	took := time.Since(start)
	stopEmitting()
	emitted := make([]int, ncpu)
	for cpu := range ncpu {
		if emitted[cpu] = <-done[cpu]; emitted[cpu] < 0 {
			t.FailNow()
		}
	}
	for cpu := range ncpu {
		waitUntil(t, fmt.Sprintf("cpu %d: all %d events read", cpu, emitted[cpu]), func() bool { return int(logs[cpu].count.Load()) == emitted[cpu] })
		waitUntil(t, fmt.Sprintf("cpu %d: the reader moves to generation %d", cpu, gen), func() bool { return rds[cpu].Stats()[0].Generation == gen })
	}
	closeReaders()
	close(readErr)
	for err := range readErr {
		t.Error(err)
	}
	t.Logf("%d swaps in %v (%.1f ms each), %d refused with EBUSY and retried; events emitted per CPU: %v",
		made, took.Round(time.Millisecond), float64(took.Microseconds())/1000/float64(max(made, 1)), busy, emitted)
	if made < loops {
		msg := fmt.Sprintf("%d of %d swaps made in %v", made, loops, took.Round(time.Second))
		if asked {
			t.Errorf("%s, the time the test had: ask for fewer, or give the VM more time", msg)
		} else {
			t.Logf("%s, the budget of the default run", msg)
		}
	}
	after := rings(t)
	for i, l := range logs {
		for _, e := range l.errs {
			t.Error(e)
		}
		st := rds[i].Stats()[0]
		if st.Lost != 0 || st.Dropped != 0 || st.Corrupt != 0 || st.Events != uint64(l.events) || st.Generation != gen ||
			st.LastSequence != l.lastSeq || int(l.count.Load()) != emitted[l.cpu] {
			t.Errorf("cpu %d: %d of %d events read; stats %+v; want nothing lost, dropped or corrupt, %d events, generation %d, last sequence %d",
				l.cpu, l.count.Load(), emitted[l.cpu], st, l.events, gen, l.lastSeq)
		}
		if after[i].dropped != before[i].dropped {
			t.Errorf("the kernel dropped %d events on cpu %d during the test", after[i].dropped-before[i].dropped, before[i].cpu)
		}
	}
}
