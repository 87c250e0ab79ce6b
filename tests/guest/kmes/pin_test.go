package kmesguest

import (
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/vm/guest"
)

// nodeOf returns the CPUs of every NUMA node, as the guest's sysfs lists
// them, indexed by CPU: the set each ring's reader must be pinned to.
func nodeOf(t *testing.T) map[int][]int {
	t.Helper()
	lists, err := filepath.Glob("/sys/devices/system/node/node[0-9]*/cpulist")
	if err != nil || len(lists) == 0 {
		t.Fatalf("no NUMA nodes in sysfs (%v): the base config has CONFIG_NUMA=y", err)
	}
	byCPU := map[int][]int{}
	for _, l := range lists {
		cpus := guest.ReadCPUList(t, l)
		for _, c := range cpus {
			byCPU[c] = cpus
		}
	}
	return byCPU
}

// TestConsumerPinsReadersToTheirNode checks §9.1.8 with Options.Pin: each
// ring's events are handed out on a thread allowed only on the CPUs of
// that ring's node.
func TestConsumerPinsReadersToTheirNode(t *testing.T) {
	const typ = "kmes.test.pin"
	want := nodeOf(t)
	ncpu := runtime.NumCPU()
	c, err := kmes.NewConsumer(&kmes.Options{FromEnd: true, Pin: true})
	if err != nil {
		t.Fatalf("NewConsumer: %v", err)
	}
	defer c.Close()
	for cpu := range ncpu {
		if err := emitOn(cpu, typ, mp(0xc0)); err != nil {
			t.Fatalf("emit on cpu %d: %v", cpu, err)
		}
	}
	var mu sync.Mutex
	got := map[int][]int{}
	readErr := make(chan error, 1)
	go func() {
		readErr <- c.ReadPerCPU(func(r *kmes.Record) error {
			if r.Type != typ {
				return nil
			}
			var set unix.CPUSet
			if err := unix.SchedGetaffinity(0, &set); err != nil {
				return err
			}
			var cpus []int
			for c := range ncpu {
				if set.IsSet(c) {
					cpus = append(cpus, c)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			got[r.CPU] = cpus
			if len(got) == ncpu {
				go c.Close()
			}
			return nil
		})
	}()
	select {
	case err := <-readErr:
		if err != nil {
			t.Fatalf("ReadPerCPU: %v", err)
		}
	case <-time.After(readTimeout):
		c.Close()
		<-readErr
		t.Fatalf("read the event of %d of %d CPUs", len(got), ncpu)
	}
	for cpu := range ncpu {
		if !slices.Equal(got[cpu], want[cpu]) {
			t.Errorf("ring of cpu %d read on a thread allowed on cpus %v, want its node's %v", cpu, got[cpu], want[cpu])
		}
	}
}
