package kmes

import (
	"container/heap"
	"errors"
	"sync"
	"time"
)

// Options configure a Consumer or a set of Readers. The zero value reads
// the kernel's rings from their oldest surviving events, each on a thread
// pinned to its ring's NUMA node.
type Options struct {
	// FromEnd starts at the current end of each ring instead of at the
	// oldest surviving event.
	FromEnd bool
	// NoPin leaves the reading threads unpinned. By default each runs on
	// a locked OS thread allowed only on the CPUs of its ring's NUMA node
	// (§9.1.8), so the ring is read from node-local memory.
	NoPin bool
	// Source gives the rings; nil means KernelRings.
	Source RingSource
	// ReorderWindow is how long ReadMerged holds an event back so that
	// an earlier event from another CPU can still go before it.
	// Default DefaultReorderWindow.
	ReorderWindow time.Duration
	// OnError, if set, is told of the corruption a reader found and got
	// past (a *CorruptError); it may be called from several goroutines.
	// Corruption is counted in Stats either way.
	OnError func(error)
}

// DefaultReorderWindow is the reorder window ReadMerged uses by default.
const DefaultReorderWindow = 20 * time.Millisecond

// mergeMaxHeld bounds what ReadMerged holds back: when more events than
// this wait, the oldest goes out at once.
const mergeMaxHeld = 1 << 16

// Stats is what a reader counted on one CPU's ring.
type Stats struct {
	CPU        int
	Generation uint64 // of the ring being read
	Capacity   uint64 // of the ring being read, in bytes
	Events     uint64 // events returned
	// Lost counts events overwritten before this reader got to them:
	// the sequence gaps across a lap (or a resynchronisation).
	Lost uint64
	// Dropped counts events the kernel dropped before they reached the
	// ring: the other sequence gaps.
	Dropped uint64
	// Corrupt counts impossible events the reader skipped.
	Corrupt uint64
	// LastSequence is the sequence number of the last event returned;
	// before the first, of the one before where the reader started.
	LastSequence uint64
}

// Consumer drains every CPU's ring, one goroutine per ring.
type Consumer struct {
	opts    Options
	readers []*Reader
	mu      sync.Mutex
	running bool
}

// NewConsumer attaches to every CPU's ring. Close it when done.
func NewConsumer(opts *Options) (*Consumer, error) {
	c := &Consumer{}
	if opts != nil {
		c.opts = *opts
	}
	if c.opts.ReorderWindow <= 0 {
		c.opts.ReorderWindow = DefaultReorderWindow
	}
	rds, err := NewReaders(&c.opts)
	if err != nil {
		return nil, err
	}
	c.readers = rds
	return c, nil
}

// Rings returns the number of rings the consumer reads.
func (c *Consumer) Rings() int { return len(c.readers) }

// Stats returns each ring's counts, in ring order. It is safe to call
// while reading.
func (c *Consumer) Stats() []Stats {
	s := make([]Stats, len(c.readers))
	for i, rd := range c.readers {
		s[i] = rd.Stats()
	}
	return s
}

// Close stops the readers, waking those that sleep. ReadPerCPU and
// ReadMerged then return nil.
func (c *Consumer) Close() error {
	for _, rd := range c.readers {
		rd.Close()
	}
	return nil
}

// ReadPerCPU calls fn for every event, from one goroutine per ring, until
// Close is called (it then returns nil) or fn returns an error (it then
// stops every reader and returns that error). The Record is reused once fn
// returns.
func (c *Consumer) ReadPerCPU(fn func(*Record) error) error {
	if err := c.start(); err != nil {
		return err
	}
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, rd := range c.readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.drain(rd, fn); err != nil {
				once.Do(func() { first = err })
				c.Close()
			}
		}()
	}
	wg.Wait()
	return first
}

func (c *Consumer) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		return errors.New("kmes: consumer is already reading")
	}
	c.running = true
	return nil
}

// drain reads one ring on its own OS thread until the reader is closed or
// fn fails.
func (c *Consumer) drain(rd *Reader, fn func(*Record) error) error {
	if !c.opts.NoPin {
		// The thread stays locked: it dies with the goroutine rather than
		// go back to the runtime with a narrowed affinity.
		if err := pinToNode(rd.CPU()); err != nil && c.opts.OnError != nil {
			c.opts.OnError(err)
		}
	}
	return rd.each(fn, func(err error) {
		if c.opts.OnError != nil {
			c.opts.OnError(err)
		}
	})
}

// ReadMerged calls fn, from the calling goroutine, for every event in
// (timestamp, cpu, sequence) order across CPUs, until Close is called or
// fn returns an error. An event goes out once every other ring has either
// returned a later event or is idle and the event is older than the
// reorder window (an event is published within microseconds of its
// timestamp, so an idle ring cannot still hold an older one). So a backlog
// comes out in exact order and a live event waits about the window. At
// most 65536 events are held back: past that the oldest go out at once.
// fn may keep the Record.
func (c *Consumer) ReadMerged(fn func(*Record) error) error {
	type item struct {
		ring int
		rec  *Record // nil: the ring is idle
	}
	in := make(chan item, 1024)
	index := make(map[int]int, len(c.readers))
	for i, rd := range c.readers {
		index[rd.CPU()] = i
		rd.onIdle = func() { in <- item{ring: i} }
	}
	errc := make(chan error, 1)
	go func() {
		errc <- c.ReadPerCPU(func(r *Record) error {
			in <- item{ring: index[r.CPU], rec: r.Clone()}
			return nil
		})
		close(in)
	}()

	window := c.opts.ReorderWindow
	type mark struct {
		lastTS int64 // timestamp of the ring's last event
		any    bool  // it returned an event
		idle   bool  // it found itself empty since its last event
	}
	marks := make([]mark, len(c.readers))
	var held recordHeap
	// ready reports whether no ring can still return an event that goes
	// before r.
	ready := func(r *Record, now time.Time) bool {
		old := r.Timestamp <= now.Add(-window).UnixNano()
		for i, m := range marks {
			switch {
			case i == index[r.CPU]:
			case m.any && !m.idle && m.lastTS >= r.Timestamp:
			case m.idle && old:
			default:
				return false
			}
		}
		return true
	}
	release := func(all bool) error {
		now := time.Now()
		for held.Len() > 0 && (all || held.Len() > mergeMaxHeld || ready(held[0], now)) {
			if err := fn(heap.Pop(&held).(*Record)); err != nil {
				return err
			}
		}
		return nil
	}
	tick := time.NewTicker(window / 4)
	defer tick.Stop()
	for {
		select {
		case it, ok := <-in:
			if !ok {
				if err := <-errc; err != nil {
					return err
				}
				return release(true)
			}
			m := &marks[it.ring]
			m.idle = it.rec == nil
			if it.rec != nil {
				m.lastTS, m.any = it.rec.Timestamp, true
				heap.Push(&held, it.rec)
			}
		case <-tick.C:
		}
		if err := release(false); err != nil {
			return abandon(c, in, errc, err)
		}
	}
}

// abandon stops the readers after fn failed and waits for them.
func abandon[T any](c *Consumer, in <-chan T, errc <-chan error, err error) error {
	c.Close()
	for range in {
	}
	<-errc
	return err
}

// recordHeap orders records by (timestamp, cpu, sequence).
type recordHeap []*Record

func (h recordHeap) Len() int { return len(h) }
func (h recordHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	if a.Timestamp != b.Timestamp {
		return a.Timestamp < b.Timestamp
	}
	if a.CPU != b.CPU {
		return a.CPU < b.CPU
	}
	return a.Sequence < b.Sequence
}
func (h recordHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *recordHeap) Push(x any)   { *h = append(*h, x.(*Record)) }
func (h *recordHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return r
}
