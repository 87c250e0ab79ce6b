package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/kmes-project/kmes/userspace/internal/eventdb"
	"github.com/kmes-project/kmes/userspace/kmes"
)

// eventStore is what the drain loop stores into: *store, or a test's.
type eventStore interface {
	Insert(b *eventdb.Batch) error
	Retain(now time.Time, current string, maxAge time.Duration, maxBytes int64) (int64, error)
}

// drainer moves events from a Reader into an eventStore, a batch at a
// time.
type drainer struct {
	rd    *kmes.Reader
	st    eventStore
	cfg   *config
	boot  string
	b     *eventdb.Batch
	views []kmes.View
	// last is the last sequence number stored of each CPU of this boot,
	// 0 before the first. An event at or below it was stored already (by
	// an earlier run of kmesd); a gap above it that the Reader did not
	// report (it started reading after the gap: kmesd was not running)
	// is lost. So every sequence number of the boot is accounted for.
	last   map[int]uint64
	stderr io.Writer
	// retry is how long a full disk pauses storing before the next try.
	retry time.Duration
	// stored, if not nil, is called after each batch is stored (it wakes
	// the forwarder, without blocking).
	stored func()
	stats  drainStats
}

// drainStats is what kmesd says when it stops: how much it stored, and
// the CPU time of its two steps. CPU time of the drain's thread, not
// wall time: a read that sleeps until events come costs none, so the
// two are the cost of reading and of storing even when idle.
type drainStats struct {
	events, txs    int64
	lost, dropped  uint64
	reading, store time.Duration
}

func (s drainStats) String() string {
	return fmt.Sprintf("%d events stored in %d transactions (%d lost, %d dropped before them); CPU time reading %.6f s, storing %.6f s",
		s.events, s.txs, s.lost, s.dropped, s.reading.Seconds(), s.store.Seconds())
}

func newDrainer(rd *kmes.Reader, st eventStore, cfg *config, boot string, last map[int]uint64, stderr io.Writer) *drainer {
	return &drainer{rd: rd, st: st, cfg: cfg, boot: boot, b: eventdb.NewBatch(boot, cfg.batch), views: make([]kmes.View, min(cfg.batch, 1024)),
		last: last, stderr: stderr, retry: 5 * time.Second}
}

// take adds the views to the batch, skipping those stored already and
// counting gaps the Reader could not see as lost.
func (d *drainer) take(views []kmes.View) {
	for i := range views {
		v := &views[i]
		cpu, seq := v.CPU(), v.Sequence()
		lost, dropped := v.Lost(), v.Dropped()
		last := d.last[cpu]
		if seq <= last {
			continue
		}
		if gap := seq - last - 1; gap > lost+dropped {
			lost = gap - dropped
		}
		d.last[cpu] = seq
		d.stats.lost += lost
		d.stats.dropped += dropped
		d.b.AddView(v, lost, dropped)
	}
}

// run drains until ctx is done, then commits what it read and returns
// nil; or returns the error that stopped it.
func (d *drainer) run(ctx context.Context) error {
	// Close wakes a waiting read, which then returns ErrClosed.
	stop := context.AfterFunc(ctx, func() { d.rd.Close() })
	defer stop()
	// One thread, so that its CPU time is the drain's (d.stats).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	nextRetention := time.Now().Add(d.cfg.retentionInterval)
	var flushAt time.Time // when the batch must be committed; zero: empty
	d.rd.SetDeadline(nextRetention)
	for {
		t0 := threadCPU()
		n, err := d.rd.ReadEvents(d.views[:min(len(d.views), d.cfg.batch-len(d.b.Events))])
		empty := len(d.b.Events) == 0
		d.take(d.views[:n])
		d.stats.reading += threadCPU() - t0
		if empty && len(d.b.Events) > 0 {
			flushAt = time.Now().Add(d.cfg.flushInterval)
			d.rd.SetDeadline(flushAt)
		}
		switch {
		case err == nil || errors.Is(err, os.ErrDeadlineExceeded):
		case errors.Is(err, kmes.ErrCorrupt):
			fmt.Fprintf(d.stderr, "kmesd: %v\n", err) // the Reader goes on past it
		case errors.Is(err, kmes.ErrClosed):
			return d.commit(ctx)
		default:
			return errors.Join(fmt.Errorf("read events: %w", err), d.commit(ctx))
		}
		now := time.Now()
		if len(d.b.Events) >= d.cfg.batch || (!flushAt.IsZero() && !now.Before(flushAt)) {
			if err := d.commit(ctx); err != nil {
				return err
			}
			flushAt = time.Time{}
			d.rd.SetDeadline(nextRetention)
		}
		if !now.Before(nextRetention) {
			d.retain(now)
			nextRetention = time.Now().Add(d.cfg.retentionInterval)
			if flushAt.IsZero() {
				d.rd.SetDeadline(nextRetention)
			}
		}
	}
}

// commit stores the batch. While the disk is full it keeps the batch and
// tries again every d.retry, reading nothing meanwhile: what the rings
// overwrite then is counted as lost, by the sequence gap, when reading
// resumes. It returns an error if ctx ends before the batch is stored.
func (d *drainer) commit(ctx context.Context) error {
	if len(d.b.Events) == 0 {
		return nil
	}
	paused := false
	for {
		t0 := threadCPU()
		err := d.st.Insert(d.b)
		d.stats.store += threadCPU() - t0
		if err == nil {
			d.stats.events += int64(len(d.b.Events))
			d.stats.txs++
			break
		}
		if !errors.Is(err, eventdb.ErrFull) {
			return err
		}
		if !paused {
			fmt.Fprintf(d.stderr, "kmesd: %v: storing paused, trying again every %s (free disk space or lower --max-bytes)\n", err, d.retry)
			paused = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped with %d events not stored: %w", len(d.b.Events), err)
		case <-time.After(d.retry):
		}
	}
	if paused {
		fmt.Fprintf(d.stderr, "kmesd: storing resumed\n")
	}
	d.b.Reset()
	if d.stored != nil {
		d.stored()
	}
	return nil
}

// retain applies --max-age and --max-bytes. Its failure is reported and
// is no reason to stop storing: the next check may succeed (a full disk
// can make a delete fail, and deleting is what frees it).
func (d *drainer) retain(now time.Time) {
	if _, err := d.st.Retain(now, d.boot, d.cfg.maxAge, d.cfg.maxBytes); err != nil {
		fmt.Fprintf(d.stderr, "kmesd: retention: %v\n", err)
	}
	if u, ok := d.st.(interface{ TakeUnforwardedDeleted() int64 }); ok {
		if n := u.TakeUnforwardedDeleted(); n > 0 {
			fmt.Fprintf(d.stderr, "kmesd: retention: %d events deleted before they were forwarded (over --max-bytes): lost for forwarding\n", n)
		}
	}
}
