//go:build linux

// Command kmes-demo emits a small event from every online CPU at a steady
// pace, so that 'kmesctl tail' has something to show: one goroutine per
// CPU, each locked to its CPU, emits
//
//	demo.tick {"cpu": N, "n": I, "msg": "hello from cpu N"}
//
// every -interval until it is killed or has emitted -count events. It
// prints nothing but errors. Emitting needs CAP_AUDIT_WRITE; without
// CAP_SYS_ADMIN the rate limit applies (one event per CPU per interval is
// far below it).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmes-project/kmes/userspace/kmes"
)

// EventType is the type of every event kmes-demo emits.
const EventType = "demo.tick"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stderr, os.Args[1:]); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "kmes-demo: %v\n", err)
		}
		os.Exit(1)
	}
}

// Tick is the payload of one event.
type Tick struct {
	CPU int    `msgpack:"cpu"`
	N   int    `msgpack:"n"`
	Msg string `msgpack:"msg"`
}

// NewTick returns the n-th tick of cpu (n counts from 1).
func NewTick(cpu, n int) Tick {
	return Tick{CPU: cpu, N: n, Msg: fmt.Sprintf("hello from cpu %d", cpu)}
}

// config is what the flags say.
type config struct {
	interval time.Duration
	count    uint64 // events per CPU; 0 means until killed
}

func parseFlags(stderr io.Writer, args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("kmes-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&c.interval, "interval", 500*time.Millisecond, "time between two events of one CPU")
	fs.Uint64Var(&c.count, "count", 0, "events per CPU, then exit (0: until killed)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.interval <= 0 {
		return c, fmt.Errorf("-interval %v: must be positive", c.interval)
	}
	return c, nil
}

func run(ctx context.Context, stderr io.Writer, args []string) error {
	c, err := parseFlags(stderr, args)
	if err != nil {
		return err
	}
	cpus, err := onlineCPUs()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(cpus))
	for _, cpu := range cpus {
		go func() { errs <- emitLoop(ctx, cpu, c.interval, c.count) }()
	}
	var first error
	for range cpus {
		if err := <-errs; err != nil && first == nil {
			// One CPU failing (no KMES, no privilege) stops them all.
			first = err
			cancel()
		}
	}
	return first
}

// onlineCPUs returns the CPUs this process may run on.
func onlineCPUs() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("sched_getaffinity: %w", err)
	}
	var cpus []int
	for cpu := 0; len(cpus) < set.Count(); cpu++ {
		if set.IsSet(cpu) {
			cpus = append(cpus, cpu)
		}
	}
	return cpus, nil
}

// emitLoop emits cpu's ticks from a thread bound to cpu, so that each event
// lands in that CPU's ring.
func emitLoop(ctx context.Context, cpu int, interval time.Duration, count uint64) error {
	// The thread stays locked (and is discarded) when the goroutine ends:
	// its affinity must not leak to other goroutines.
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("cpu %d: sched_setaffinity: %w", cpu, err)
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for n := uint64(1); count == 0 || n <= count; n++ {
		if err := kmes.EmitValue(EventType, NewTick(cpu, int(n))); err != nil {
			return fmt.Errorf("cpu %d: %w", cpu, err)
		}
		if count != 0 && n == count {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
	return nil
}
