package kmesguest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/userspace/kmes/abi"
)

// batchEvents returns n events of type typ whose payloads are uint32 i.
func batchEvents(typ string, n int) []kmes.Event {
	evs := make([]kmes.Event, n)
	for i := range evs {
		evs[i] = kmes.Event{Type: typ, Payload: mp(0xce, uint32(i))}
	}
	return evs
}

// TestEmitBatch1000 emits 1000 events with one EmitBatch from one CPU and
// reads all of them back in order, with consecutive sequence numbers, and
// one timestamp per system call (the library splits at 256 events).
func TestEmitBatch1000(t *testing.T) {
	const n, typ = 1000, "kmes.test.batch"
	cpu := targetCPU()
	pin(t, cpu)
	rd := readerFor(t, cpu, true)
	evs := batchEvents(typ, n)
	emitted, err := kmes.EmitBatch(evs)
	if err != nil || emitted != n {
		t.Fatalf("EmitBatch of %d events: emitted %d, %v", n, emitted, err)
	}
	got := readUntil(t, rd, n, ofType(typ))
	for i, r := range got {
		if err := checkRecord(r, cpu, typ, evs[i].Payload); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if i == 0 {
			continue
		}
		prev := got[i-1]
		if r.Sequence != prev.Sequence+1 {
			t.Errorf("event %d: sequence %d after %d, want consecutive", i, r.Sequence, prev.Sequence)
		}
		// One system call per 256 events, one timestamp per call.
		sameCall := i%abi.EmitBatchMax != 0
		if sameCall && r.Timestamp != prev.Timestamp {
			t.Errorf("event %d: timestamp %d, event %d of the same kmes_emit_batch call has %d", i, r.Timestamp, i-1, prev.Timestamp)
		}
		if !sameCall && r.Timestamp < prev.Timestamp {
			t.Errorf("event %d: timestamp %d before the previous call's %d", i, r.Timestamp, prev.Timestamp)
		}
	}
}

// TestLateReader emits first and then starts a Reader at the oldest
// surviving event (FromEnd false): it reads every byte between tail_pos and
// write_pos, ending with the events just emitted, in order.
func TestLateReader(t *testing.T) {
	const n, typ = 50, "kmes.test.late"
	cpu := targetCPU()
	pin(t, cpu)
	evs := batchEvents(typ, n)
	for _, ev := range evs {
		emit(t, ev.Type, ev.Payload)
	}
	rings, err := kmes.Attach()
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	var tail, write uint64
	for _, r := range rings {
		if r.CPU() == cpu {
			tail, write = r.TailPos(), r.WritePos()
		}
		r.Close()
	}
	if write-tail < uint64(n*eventSize(typ, evs[0].Payload)) {
		t.Fatalf("cpu %d's ring holds %d bytes (tail_pos %d, write_pos %d): less than the %d events just emitted", cpu, write-tail, tail, write, n)
	}

	rd := readerFor(t, cpu, false)
	var bytesRead uint64
	var all []*kmes.Record
	got := readUntil(t, rd, n, func(r *kmes.Record) bool {
		bytesRead += uint64(len(r.Raw()))
		all = append(all, r.Clone())
		return r.Type == typ
	})
	if bytesRead != write-tail {
		t.Errorf("read %d bytes in %d events up to the last one emitted; the ring held %d (tail_pos %d, write_pos %d)", bytesRead, len(all), write-tail, tail, write)
	}
	if last := all[len(all)-1]; last.Type != typ || last.Sequence != got[n-1].Sequence {
		t.Errorf("the last event read is %q seq %d, want the last emitted", last.Type, last.Sequence)
	}
	for i := 1; i < len(all); i++ {
		if all[i].Sequence <= all[i-1].Sequence {
			t.Errorf("sequence %d after %d", all[i].Sequence, all[i-1].Sequence)
		}
	}
	for i, r := range got {
		if err := checkRecord(r, cpu, typ, evs[i].Payload); err != nil {
			t.Errorf("event %d: %v", i, err)
		}
		if i > 0 && r.Sequence != got[i-1].Sequence+1 {
			t.Errorf("event %d: sequence %d after %d, want consecutive", i, r.Sequence, got[i-1].Sequence)
		}
	}
}

// TestOverload pins an emitter to one CPU and has it write several ring
// capacities of 1 KiB events while the consumer of that CPU crawls (its
// callback sleeps), so the producer laps it. After a drain, the consumer's
// Lost count must be exactly the sequence gaps the callback saw, and
// nothing was dropped.
func TestOverload(t *testing.T) {
	const (
		typ       = "kmes.test.overload"
		startType = "kmes.test.overload.start"
		endType   = "kmes.test.overload.end"
		laps      = 4
		perEvent  = 1024
	)
	requireSysAdmin(t)
	cpu := targetCPU()
	pin(t, cpu)
	c, err := kmes.NewConsumer(&kmes.Options{FromEnd: true})
	if err != nil {
		t.Fatalf("NewConsumer: %v", err)
	}
	defer c.Close()
	capacity := c.Stats()[0].Capacity
	var (
		mu       sync.Mutex
		last     = map[int]uint64{} // per CPU: the last sequence seen
		gaps     = map[int]uint64{} // per CPU: the sequences skipped
		events   = map[int]uint64{}
		flood    = map[int]uint64{} // per CPU: the flood events seen
		flooding atomic.Bool
		started  = make(chan struct{})
		ended    = make(chan struct{})
	)
	readErr := make(chan error, 1)
	go func() {
		readErr <- c.ReadPerCPU(func(r *kmes.Record) error {
			mu.Lock()
			if l := last[r.CPU]; l != 0 {
				if r.Sequence <= l {
					mu.Unlock()
					return fmt.Errorf("cpu %d: sequence %d after %d", r.CPU, r.Sequence, l)
				}
				gaps[r.CPU] += r.Sequence - l - 1
			}
			last[r.CPU] = r.Sequence
			events[r.CPU]++
			if r.Type == typ {
				flood[r.CPU]++
			}
			mu.Unlock()
			if r.CPU != cpu {
				return nil
			}
			switch r.Type {
			case startType:
				close(started)
			case endType:
				close(ended)
			}
			if flooding.Load() {
				// The throttled reader: far slower than the emitter.
				time.Sleep(time.Millisecond)
			}
			return nil
		})
	}()
	// The consumer has seen the start marker: every later loss is a gap
	// between two events it returned.
	emit(t, startType, mp(0xc0))
	waitFor(t, started, readErr, "the start marker")

	payload := bin(perEvent-abi.HdrBaseSize-len(typ), 0)
	n := laps * int(capacity) / perEvent
	evs := make([]kmes.Event, abi.EmitBatchMax)
	for i := range evs {
		evs[i] = kmes.Event{Type: typ, Payload: payload}
	}
	flooding.Store(true)
	start := time.Now()
	for sent := 0; sent < n; {
		k := min(len(evs), n-sent)
		emitted, err := kmes.EmitBatch(evs[:k])
		if err != nil || emitted != k {
			t.Fatalf("EmitBatch after %d events: emitted %d of %d, %v", sent, emitted, k, err)
		}
		sent += k
	}
	t.Logf("emitted %d events of %d bytes (%d MiB, %d ring capacities) in %v", n, perEvent, n*perEvent>>20, laps, time.Since(start).Round(time.Millisecond))
	flooding.Store(false)
	emit(t, endType, mp(0xc0))
	waitFor(t, ended, readErr, "the end marker")
	c.Close()
	if err := <-readErr; err != nil {
		t.Fatalf("ReadPerCPU: %v", err)
	}

	mu.Lock()
	defer mu.Unlock()
	for _, s := range c.Stats() {
		if s.Lost != gaps[s.CPU] || s.Dropped != 0 || s.Corrupt != 0 || s.Events != events[s.CPU] || s.LastSequence != last[s.CPU] {
			t.Errorf("cpu %d: stats %+v; the callback saw %d events, last sequence %d, %d sequences missing, and nothing may be dropped or corrupt",
				s.CPU, s, events[s.CPU], last[s.CPU], gaps[s.CPU])
		}
	}
	// Every flood event was either read or lost, and with four ring
	// capacities against a crawling reader, some were lost.
	if flood[cpu]+gaps[cpu] != uint64(n) {
		t.Errorf("cpu %d: %d flood events read + %d lost != %d emitted", cpu, flood[cpu], gaps[cpu], n)
	}
	if gaps[cpu] == 0 {
		t.Errorf("cpu %d: no event lost: the emitter never lapped the reader", cpu)
	}
	t.Logf("cpu %d: %d flood events read, %d lost", cpu, flood[cpu], gaps[cpu])
}

// waitFor waits until ch is closed, failing on a reader error or after
// readTimeout.
func waitFor(t *testing.T, ch <-chan struct{}, readErr <-chan error, what string) {
	t.Helper()
	select {
	case <-ch:
	case err := <-readErr:
		t.Fatalf("the consumer stopped before %s: %v", what, err)
	case <-time.After(readTimeout):
		t.Fatalf("the consumer did not see %s in %v", what, readTimeout)
	}
}

// TestCloseDuringWait blocks a Reader of every (idle) ring in Read, which
// then sleeps on the ring's futex, and closes each from another goroutine:
// Read must return ErrClosed within 100 ms of the Close call.
func TestCloseDuringWait(t *testing.T) {
	const bound = 100 * time.Millisecond
	rds, err := kmes.NewReaders(&kmes.Options{FromEnd: true})
	if err != nil {
		t.Fatalf("NewReaders: %v", err)
	}
	type result struct {
		err error
		at  time.Time
	}
	done := make([]chan result, len(rds))
	for i, rd := range rds {
		done[i] = make(chan result, 1)
		go func() {
			var rec kmes.Record
			for {
				// An event another emitter slips in is read past: only
				// the end of the wait matters.
				if err := rd.Read(&rec); err != nil {
					done[i] <- result{err, time.Now()}
					return
				}
			}
		}()
	}
	// Long enough for every reader to give up spinning and sleep in
	// FUTEX_WAIT.
	time.Sleep(500 * time.Millisecond)
	for i, rd := range rds {
		select {
		case r := <-done[i]:
			t.Fatalf("cpu %d: Read returned %v before Close", rd.CPUs()[0], r.err)
		default:
		}
		closing := time.Now()
		if err := rd.Close(); err != nil {
			t.Errorf("cpu %d: Close: %v", rd.CPUs()[0], err)
		}
		select {
		case r := <-done[i]:
			took := r.at.Sub(closing)
			if !errors.Is(r.err, kmes.ErrClosed) {
				t.Errorf("cpu %d: Read returned %v, want ErrClosed", rd.CPUs()[0], r.err)
			}
			if took >= bound {
				t.Errorf("cpu %d: Read returned %v after Close, want under %v", rd.CPUs()[0], took, bound)
			}
			t.Logf("cpu %d: Read returned %v after Close", rd.CPUs()[0], took)
		case <-time.After(5 * time.Second):
			t.Fatalf("cpu %d: Read still blocked 5 s after Close", rd.CPUs()[0])
		}
	}
}

// TestReadMerged emits round-robin over every CPU from one thread that
// moves itself (sched_setaffinity migrates it before returning), so the
// events' timestamps increase in emission order; ReadMerged must return
// them in that order, each from the CPU it was emitted on.
func TestReadMerged(t *testing.T) {
	const rounds, typ = 3, "kmes.test.merged"
	ncpu := runtime.NumCPU()
	// The events are all in the rings before reading starts: a window of
	// a second covers the readers' start on a loaded TCG host.
	c, err := kmes.NewConsumer(&kmes.Options{FromEnd: true, ReorderWindow: time.Second})
	if err != nil {
		t.Fatalf("NewConsumer: %v", err)
	}
	defer c.Close()
	var wantCPU []int
	for i := 0; i < rounds*ncpu; i++ {
		cpu := i % ncpu
		pin(t, cpu)
		emit(t, typ, mp(0xcd, uint16(i)))
		wantCPU = append(wantCPU, cpu)
	}
	type got struct {
		cpu int
		i   uint16
		seq uint64
		ts  int64
	}
	var recs []got
	readErr := make(chan error, 1)
	go func() {
		readErr <- c.ReadMerged(func(r *kmes.Record) error {
			if r.Type != typ {
				return nil
			}
			recs = append(recs, got{r.CPU, binary.BigEndian.Uint16(r.Payload[1:]), r.Sequence, r.Timestamp})
			if len(recs) == len(wantCPU) {
				c.Close()
			}
			return nil
		})
	}()
	select {
	case err := <-readErr:
		if err != nil {
			t.Fatalf("ReadMerged: %v", err)
		}
	case <-time.After(readTimeout):
		c.Close()
		<-readErr
		t.Fatalf("ReadMerged returned %d of %d events in %v", len(recs), len(wantCPU), readTimeout)
	}
	for i, r := range recs {
		if int(r.i) != i || r.cpu != wantCPU[i] {
			t.Errorf("merged event %d: emitted %d-th, cpu %d (ts %d, seq %d); want the %d-th, from cpu %d", i, r.i, r.cpu, r.ts, r.seq, i, wantCPU[i])
		}
		if i > 0 && r.ts <= recs[i-1].ts {
			t.Errorf("merged event %d: timestamp %d not after %d", i, r.ts, recs[i-1].ts)
		}
	}
}

// requireSysAdmin fails unless the test has CAP_SYS_ADMIN, which exempts
// its emits from the rate limit (kernel.kmes.max_emit_rate_per_process):
// a flood without it would fail with EAGAIN, not test the ring.
func requireSysAdmin(t *testing.T) {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^CapEff:\s*([0-9a-f]+)$`).FindSubmatch(status)
	if m == nil {
		t.Fatalf("/proc/self/status has no CapEff")
	}
	caps, err := strconv.ParseUint(string(m[1]), 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	if caps&(1<<unix.CAP_SYS_ADMIN) == 0 {
		t.Fatalf("CapEff %s lacks CAP_SYS_ADMIN: the guest tests must run as root, exempt from the emit rate limit", m[1])
	}
}

// TestReadersShareWakeUps has a second Reader of the target CPU's ring,
// which shares the first's consumer page and so its need_wake, wait and
// close over and over while the first sleeps: every event must wake the
// first. A reader that withdrew the shared request when it woke would
// leave the other asleep until some later event.
func TestReadersShareWakeUps(t *testing.T) {
	const rounds, typ = 20, "kmes.test.sharedwake"
	cpu := targetCPU()
	pin(t, cpu)
	sleeper := readerFor(t, cpu, true)
	taken := make(chan uint16, rounds)
	go func() {
		var rec kmes.Record
		for sleeper.Read(&rec) == nil {
			if rec.Type == typ {
				taken <- binary.BigEndian.Uint16(rec.Payload[1:])
			}
		}
	}()
	for i := range uint16(rounds) {
		other := readerFor(t, cpu, true)
		done := make(chan error, 1)
		go func() {
			var rec kmes.Record
			for {
				if err := other.Read(&rec); err != nil {
					done <- err
					return
				}
			}
		}()
		time.Sleep(20 * time.Millisecond) // both readers spin out and sleep
		other.Close()
		if err := <-done; !errors.Is(err, kmes.ErrClosed) {
			t.Fatalf("round %d: the other reader's Read: %v", i, err)
		}
		emit(t, typ, mp(0xcd, i))
		select {
		case got := <-taken:
			if got != i {
				t.Fatalf("round %d: read the event of round %d", i, got)
			}
		case <-time.After(readTimeout):
			t.Fatalf("round %d: the sleeping reader was not woken within %v", i, readTimeout)
		}
	}
}
