//go:build !(linux && amd64)

package kmes

import (
	"fmt"
	"sync/atomic"
	"time"
)

// KMES is wired for linux/amd64 only: its system call numbers are
// x86-64's. Elsewhere the package builds, and what would reach the kernel
// fails with ErrUnsupported.

func unsupported(call string) error { return fmt.Errorf("%s: %w", call, ErrUnsupported) }

func attach() ([]int, uint64, error) { return nil, 0, unsupported("kmes_attach") }

func closeFDs([]int) {}

func mapRing(int, uint64) (*Ring, error) { return nil, unsupported("mmap ring") }

func sysEmit(string, []byte) error { return unsupported("kmes_emit") }

type batch struct{}

func newBatch(int) *batch { return &batch{} }

func (*batch) emit([]Event) (int, error) { return 0, unsupported("kmes_emit_batch") }

type futexWaiter struct{}

const futexWaitvMax = 128

func sharedWaiter(*atomic.Uint32, uint32) futexWaiter { return futexWaiter{} }

func privateWaiter(*atomic.Uint32, uint32) futexWaiter { return futexWaiter{} }

func futexWaitv([]futexWaiter, time.Time) (int, error) { return -1, unsupported("futex_waitv") }

func futexWait(*atomic.Uint32, uint32) error { return unsupported("futex_wait") }

func futexWake(*atomic.Uint32) {}

func pinToNode(cpu int) error { return unsupported(fmt.Sprintf("pin reader of cpu %d", cpu)) }

func nodeCPUs(cpu int) ([]int, error) {
	return nil, unsupported(fmt.Sprintf("find the NUMA node of cpu %d", cpu))
}

func possibleCPUs() ([]int, error) { return nil, unsupported("list the possible cpus") }
