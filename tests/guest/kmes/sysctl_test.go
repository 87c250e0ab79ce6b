package kmesguest

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/userspace/kmes/abi"
)

// The sysctls of KMES.md §5, and what the tests that change the ring
// capacity need: each such test restores the default when it ends, after
// its rings are closed.

const (
	capacitySysctl = "/proc/sys/kernel/kmes/buffer_capacity"
	// defaultCapacity is kernel.kmes.buffer_capacity's default, which
	// every test that changes it restores.
	defaultCapacity = 4194304
	// busyTimeout bounds the retries of a capacity change refused with
	// EBUSY: a reader follows a swap within milliseconds, even on the
	// debug kernel; only a reader that keeps a replaced ring makes it
	// run out.
	busyTimeout = 20 * time.Second
)

// readSysctl returns the number in a sysctl file.
func readSysctl(t testing.TB, path string) uint64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("%s holds %q, not a number", path, b)
	}
	return n
}

// writeCapacity writes kernel.kmes.buffer_capacity once and returns the
// write's error (EBUSY while a replaced ring is still mapped).
func writeCapacity(capacity uint64) error {
	f, err := os.OpenFile(capacitySysctl, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(strconv.FormatUint(capacity, 10) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// setCapacity sets kernel.kmes.buffer_capacity, which swaps every CPU's
// ring. A write refused with EBUSY (a reader has not yet left a ring an
// earlier swap replaced) is retried after a millisecond, for up to
// busyTimeout. It returns the number of refusals.
func setCapacity(t testing.TB, capacity uint64) int {
	t.Helper()
	deadline := time.Now().Add(busyTimeout)
	for busy := 0; ; busy++ {
		err := writeCapacity(capacity)
		switch {
		case err == nil:
			if got := readSysctl(t, capacitySysctl); got != capacity {
				t.Fatalf("wrote %d to %s, it reads %d", capacity, capacitySysctl, got)
			}
			return busy
		case !errors.Is(err, unix.EBUSY):
			t.Fatalf("write %d to %s: %v", capacity, capacitySysctl, err)
		case time.Now().After(deadline):
			t.Fatalf("write %d to %s: still EBUSY after %v: a replaced ring stays mapped", capacity, capacitySysctl, busyTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// restoreCapacity makes the test set the default capacity back when it
// ends. Call it before the test opens a ring: cleanups run last first, so
// the rings are closed by then (a replaced ring still mapped would make
// the write fail with EBUSY).
func restoreCapacity(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		if readSysctl(t, capacitySysctl) != defaultCapacity {
			setCapacity(t, defaultCapacity)
		}
	})
}

// ringState is what a ring's producer page says.
type ringState struct {
	cpu                            int
	generation, capacity, pageSize uint64
	writePos, tailPos, dropped     uint64
}

func (s ringState) String() string {
	return fmt.Sprintf("cpu %d: generation %d, capacity %d, page size %d, write_pos %d, tail_pos %d, dropped %d",
		s.cpu, s.generation, s.capacity, s.pageSize, s.writePos, s.tailPos, s.dropped)
}

// rings returns every CPU's ring state; the rings are unmapped again.
func rings(t testing.TB) []ringState {
	t.Helper()
	rs, err := kmes.Attach()
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	var st []ringState
	for _, r := range rs {
		tail := r.TailPos()
		st = append(st, ringState{r.CPU(), r.Generation(), r.Capacity(), r.PageSize(), r.WritePos(), tail, r.Dropped()})
		r.Close()
	}
	return st
}

// sleepProbe maps cpu's ring and clears its need_wake: start the
// consumer to wait for after it. Its wait then waits, for up to timeout,
// until a consumer asks to be woken (sets need_wake): it read what there
// was and sleeps. A consumer asleep before the probe would not be woken by
// events: its request is cleared. When wait returns, nothing of the ring
// stays mapped or open, so no later swap is refused for it; it fails the
// test if the request never comes.
func sleepProbe(t *testing.T, cpu int) (wait func(timeout time.Duration, what string)) {
	t.Helper()
	m := mapRingOf(t, cpu)
	unmap := sync.OnceFunc(func() { unix.Munmap(m) })
	t.Cleanup(unmap)
	// need_wake is the first byte of the consumer page, the rest of the
	// page zero: the word is non-zero exactly when need_wake is.
	wake := (*uint32)(unsafe.Pointer(&m[abi.MetaNeedWakeOff]))
	atomic.StoreUint32(wake, 0)
	return func(timeout time.Duration, what string) {
		t.Helper()
		defer unmap()
		deadline := time.Now().Add(timeout)
		for atomic.LoadUint32(wake) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s never waited for events on cpu %d in %v", what, cpu, timeout)
			}
			time.Sleep(time.Millisecond)
		}
	}
}
