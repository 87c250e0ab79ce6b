package kmes

import (
	"container/heap"
	"fmt"
	"sync"
	"time"
)

// Options configure a Reader or a Consumer. The zero value reads the
// kernel's rings from their oldest surviving events.
type Options struct {
	// FromEnd starts at the current end of each ring instead of at the
	// oldest surviving event.
	FromEnd bool
	// CPUs, if not nil, are the only CPUs whose rings are read: the others
	// are not kept mapped. A CPU without a ring is an error.
	CPUs []int
	// Pin makes a Consumer read each NUMA node's rings on a thread of
	// their own, allowed only on that node's CPUs (§9.1.8), so that the
	// rings are read from node-local memory. It is off by default: no
	// measurement on NUMA hardware shows it helps yet (the test machines'
	// TCG guests model no NUMA cost), and it costs a thread per node.
	Pin bool
	// Source gives the rings; nil means KernelRings().
	Source RingSource
	// ReorderWindow is how long ReadMerged holds an event back, from the
	// moment it was read, so that an earlier event from another CPU can
	// still go before it. Default DefaultReorderWindow.
	ReorderWindow time.Duration
	// MaxHeldBytes bounds the events ReadMerged holds back, counted as
	// their types and payloads: past it the earliest goes out at once.
	// Default DefaultMaxHeldBytes.
	MaxHeldBytes int
	// OnIdle, if set, is called by ReadMerged, from the goroutine that
	// calls fn, each time it has handed out every event it read and every
	// ring was found empty since: the moment to flush buffered output.
	// An error stops ReadMerged as one from fn does.
	OnIdle func() error
	// OnError, if set, is told of the corruption a reader found and got
	// past (a *CorruptError); it may be called from several goroutines.
	// Corruption is counted in Stats either way.
	OnError func(error)
}

// DefaultReorderWindow is the reorder window ReadMerged uses by default.
const DefaultReorderWindow = 20 * time.Millisecond

// DefaultMaxHeldBytes is the MaxHeldBytes ReadMerged uses by default.
const DefaultMaxHeldBytes = 16 << 20

// mergeMaxHeld bounds the number of events ReadMerged holds back, for
// small ones: when more wait, the earliest goes out at once.
const mergeMaxHeld = 1 << 16

// Stats is what a reader counted on one CPU's ring.
type Stats struct {
	CPU        int
	Generation uint64 // of the ring being read: its own (Ring.RingGeneration)
	Capacity   uint64 // of the ring being read, in bytes
	PageSize   uint64 // of the ring being read: of its data pages, 0 if unknown (Ring.PageSize)
	Events     uint64 // events taken from the ring: returned, or in Read's batch
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

// Consumer drains every CPU's ring (or those of Options.CPUs) with one
// Reader, or with Options.Pin one per NUMA node. It is read once, by
// ReadPerCPU or ReadMerged: a read while another runs fails with ErrBusy,
// and one after it returned (the Consumer is closed by then) with
// ErrClosed.
type Consumer struct {
	opts    Options
	readers []*Reader
	mu      sync.Mutex
	state   readState
}

type readState int

const (
	unread readState = iota
	reading
	readDone
)

// NewConsumer attaches to the rings. Close it when done.
func NewConsumer(opts *Options) (*Consumer, error) {
	c := &Consumer{}
	if opts != nil {
		c.opts = *opts
	}
	if c.opts.ReorderWindow <= 0 {
		c.opts.ReorderWindow = DefaultReorderWindow
	}
	if c.opts.MaxHeldBytes <= 0 {
		c.opts.MaxHeldBytes = DefaultMaxHeldBytes
	}
	src, rings, err := openRings(&c.opts)
	if err != nil {
		return nil, err
	}
	if !c.opts.Pin {
		c.readers = []*Reader{newReader(src, rings)}
		return c, nil
	}
	// One Reader per NUMA node, named by the node's first CPU.
	var nodes []int
	byNode := make(map[int][]readerRing)
	for _, r := range rings {
		node := r.ring.CPU()
		if cpus, err := nodeCPUs(node); err == nil {
			node = cpus[0]
		}
		if _, ok := byNode[node]; !ok {
			nodes = append(nodes, node)
		}
		byNode[node] = append(byNode[node], r)
	}
	for _, node := range nodes {
		c.readers = append(c.readers, newReader(src, byNode[node]))
	}
	return c, nil
}

// Rings returns the number of rings the consumer reads.
func (c *Consumer) Rings() int {
	n := 0
	for _, rd := range c.readers {
		n += len(rd.rings)
	}
	return n
}

// Stats returns each ring's counts, in ring order. It is safe to call
// while reading.
func (c *Consumer) Stats() []Stats {
	var s []Stats
	for _, rd := range c.readers {
		s = append(s, rd.Stats()...)
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

// ReadPerCPU calls fn for every event until Close is called (it then
// returns nil) or fn returns an error (it then stops every reader and
// returns that error): each ring's events in order, the rings in turn, a
// chunk at a time. fn is called from one goroutine, or with Options.Pin
// from one per NUMA node at once. The Record is reused once fn returns.
func (c *Consumer) ReadPerCPU(fn func(*Record) error) error {
	if err := c.begin("ReadPerCPU"); err != nil {
		return err
	}
	defer c.end()
	return c.readPerCPU(fn)
}

func (c *Consumer) readPerCPU(fn func(*Record) error) error {
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

// begin claims the Consumer for the read op, or says why it cannot be.
func (c *Consumer) begin(op string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case reading:
		return fmt.Errorf("%s: %w", op, ErrBusy)
	case readDone:
		return fmt.Errorf("%s: %w", op, ErrClosed)
	}
	c.state = reading
	return nil
}

// end marks the read done: its readers are closed.
func (c *Consumer) end() {
	c.mu.Lock()
	c.state = readDone
	c.mu.Unlock()
}

// drain reads rd's rings until it is closed or fn fails; with Pin, on
// an OS thread of the rings' node.
func (c *Consumer) drain(rd *Reader, fn func(*Record) error) error {
	if c.opts.Pin {
		// The thread stays locked: it dies with the goroutine rather than
		// go back to the runtime with a narrowed affinity.
		if err := pinToNode(rd.CPUs()[0]); err != nil && c.opts.OnError != nil {
			c.opts.OnError(err)
		}
	}
	return rd.each(fn, func(err error) {
		if c.opts.OnError != nil {
			c.opts.OnError(err)
		}
	})
}

// ReadMerged calls fn, from the calling goroutine, for every event until
// Close is called or fn returns an error. It merges the rings: each ring's
// events in sequence order (KMES.md §1), and across rings the ring whose
// next event is earliest by (timestamp, cpu, sequence) first. That event
// goes out once it was read ReorderWindow ago and every other ring has an
// event waiting or was found empty by a look that began after it was
// read: an event is published within microseconds of its timestamp, so
// that ring cannot still hold an earlier one. So a backlog comes out in
// order, also when fn is slow, and a live event waits about the window,
// whatever the wall clock does. When more than
// MaxHeldBytes of events, or 65536 events, wait, the earliest goes out at
// once. fn may keep the Record.
func (c *Consumer) ReadMerged(fn func(*Record) error) error {
	if err := c.begin("ReadMerged"); err != nil {
		return err
	}
	defer c.end()
	type item struct {
		ring int
		rec  *Record   // nil: the ring was found empty
		at   time.Time // when rec was read, or the look that found the ring empty began
	}
	in := make(chan item, 1024)
	index := make(map[int]int) // a CPU's queue
	for _, rd := range c.readers {
		queue := make([]int, len(rd.rings))
		for i, cpu := range rd.CPUs() {
			queue[i] = len(index)
			index[cpu] = queue[i]
		}
		rd.onIdle = func(i int, at time.Time) { in <- item{ring: queue[i], at: at} }
		rd.idleEvery = c.opts.ReorderWindow / 4
	}
	errc := make(chan error, 1)
	go func() {
		errc <- c.readPerCPU(func(r *Record) error {
			in <- item{ring: index[r.CPU], rec: r.Clone(), at: time.Now()}
			return nil
		})
		close(in)
	}()

	m := newMerge(len(index), c.opts)
	tick := time.NewTicker(m.window / 4)
	defer tick.Stop()
	idleTold := false // OnIdle was called, and no event came since
	take := func(it item) {
		if it.rec == nil {
			m.queues[it.ring].idle, m.queues[it.ring].idleAt = true, it.at
		} else {
			m.add(it.ring, it.rec, it.at)
			idleTold = false
		}
	}
	for {
		open := true
		select {
		case it, ok := <-in:
			open = ok
			if ok {
				// A full channel may hold a reader back, with an earlier
				// event of another ring unread: nothing goes out by the
				// window this round.
				backedUp := len(in) == cap(in)-1
				take(it)
				// What was read already goes in before anything goes
				// out: an earlier event may be right behind this one.
				for drained := false; !drained && open; {
					select {
					case it, ok := <-in:
						if open = ok; ok {
							take(it)
						}
					default:
						drained = true
					}
				}
				m.backedUp = backedUp
			}
		case <-tick.C:
			m.backedUp = false
		}
		if !open {
			if err := <-errc; err != nil {
				return err
			}
			return m.release(fn, time.Now(), true)
		}
		if err := m.release(fn, time.Now(), false); err != nil {
			return abandon(c, in, errc, err)
		}
		if c.opts.OnIdle != nil && !idleTold && len(in) == 0 && m.drained() {
			idleTold = true
			if err := c.opts.OnIdle(); err != nil {
				return abandon(c, in, errc, err)
			}
		}
	}
}

// drained reports whether the merge holds no event and every ring was
// found empty after its last one.
func (m *merge) drained() bool {
	if m.held > 0 {
		return false
	}
	for i := range m.queues {
		if !m.queues[i].idle {
			return false
		}
	}
	return true
}

// abandon stops the readers after fn failed and waits for them.
func abandon[T any](c *Consumer, in <-chan T, errc <-chan error, err error) error {
	c.Close()
	for range in {
	}
	<-errc
	return err
}

// merge holds what ReadMerged has read and not handed out: a queue per
// ring, in the ring's order, and a heap of the queues that hold events,
// by their first event.
type merge struct {
	// backedUp: the readers may be held back by a full channel, so an
	// idle mark may hide an earlier event still in its ring.
	backedUp     bool
	queues       []ringQueue
	heads        headHeap
	held, bytes  int
	window       time.Duration
	maxHeldBytes int
}

type ringQueue struct {
	events []heldEvent
	// idle: the ring was found empty after its last event, by a look
	// that began at idleAt.
	idle   bool
	idleAt time.Time
}

type heldEvent struct {
	rec *Record
	at  time.Time // when it was read
}

func newMerge(rings int, opts Options) *merge {
	return &merge{queues: make([]ringQueue, rings), window: opts.ReorderWindow, maxHeldBytes: opts.MaxHeldBytes}
}

func (m *merge) add(ring int, rec *Record, at time.Time) {
	q := &m.queues[ring]
	q.idle = false
	q.events = append(q.events, heldEvent{rec, at})
	if len(q.events) == 1 {
		heap.Push(&m.heads, q)
	}
	m.held++
	m.bytes += heldBytes(rec)
}

func heldBytes(r *Record) int { return len(r.Type) + len(r.Payload) }

// release hands out events while the earliest is ready, or all of them.
func (m *merge) release(fn func(*Record) error, now time.Time, all bool) error {
	for len(m.heads) > 0 && (all || m.held > mergeMaxHeld || m.bytes > m.maxHeldBytes || m.ready(now)) {
		q := m.heads[0]
		e := q.events[0]
		q.events[0] = heldEvent{}
		q.events = q.events[1:]
		if len(q.events) == 0 {
			heap.Pop(&m.heads)
		} else {
			heap.Fix(&m.heads, 0)
		}
		m.held--
		m.bytes -= heldBytes(e.rec)
		if err := fn(e.rec); err != nil {
			return err
		}
	}
	return nil
}

// ready reports whether no ring can still return an event that goes
// before the first of the earliest queue, E: every other ring either has
// an event waiting, which goes after E, or was found empty by a look that
// began after E was read, and E has waited the window. An event that
// ring publishes later was stamped after that look began, give or take
// the moment between an event's stamp and its publication, which the
// window covers. (An idle mark older than E says nothing: the ring's
// events since may still be on their way, behind a busy reader.)
func (m *merge) ready(now time.Time) bool {
	first := m.heads[0]
	e := first.events[0]
	if m.backedUp || now.Sub(e.at) < m.window {
		return len(m.queues) == 1
	}
	for i := range m.queues {
		q := &m.queues[i]
		if q == first || len(q.events) > 0 {
			continue
		}
		if !q.idle || q.idleAt.Before(e.at) {
			return false
		}
	}
	return true
}

// headHeap orders queues by their first event's (timestamp, cpu,
// sequence).
type headHeap []*ringQueue

func (h headHeap) Len() int { return len(h) }
func (h headHeap) Less(i, j int) bool {
	a, b := h[i].events[0].rec, h[j].events[0].rec
	if a.Timestamp != b.Timestamp {
		return a.Timestamp < b.Timestamp
	}
	if a.CPU != b.CPU {
		return a.CPU < b.CPU
	}
	return a.Sequence < b.Sequence
}
func (h headHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *headHeap) Push(x any)   { *h = append(*h, x.(*ringQueue)) }
func (h *headHeap) Pop() any {
	old := *h
	q := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return q
}
