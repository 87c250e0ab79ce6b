// Command kmesd is the KMES event daemon: it drains every CPU's ring and
// stores each event in an SQLite database, which kmesctl query reads.
//
// Usage:
//
//	kmesd [--db PATH] [--config FILE] [--batch N] [--flush-interval D]
//	      [--max-bytes SIZE] [--max-age D] [--retention-interval D]
//	      [--otlp-endpoint URL] [--otlp-batch N] [--otlp-timeout D]
//	      [--otlp-header KEY=VALUE]...
//
// One kmes.Reader reads all the rings from their oldest events; events
// are copied into a batch, committed in one transaction when it holds
// --batch events or --flush-interval after its first event, whichever
// comes first. SIGINT or SIGTERM commits what was read and exits 0.
//
// # Database
//
// The database (default /var/lib/kmes/events.db; its directory is
// created) is in WAL mode with synchronous=NORMAL: kmesctl query reads it
// while kmesd writes, a crash of kmesd loses nothing committed, a power
// loss at most the last transactions. Its schema, version 1:
//
//	meta(key TEXT PRIMARY KEY, value TEXT)    -- schema_version = 1, created_ns
//	events(boot_id TEXT, cpu INTEGER, seq INTEGER, ts_ns INTEGER,
//	       origin INTEGER, type TEXT, payload BLOB,
//	       PRIMARY KEY(boot_id, cpu, seq)) WITHOUT ROWID
//	       -- and the index events_ts on ts_ns
//	losses(boot_id TEXT, cpu INTEGER, before_seq INTEGER, lost INTEGER,
//	       dropped INTEGER, noted_ns INTEGER,
//	       PRIMARY KEY(boot_id, cpu, before_seq)) WITHOUT ROWID//	positions(boot_id TEXT, cpu INTEGER, last_seq INTEGER,
//	       PRIMARY KEY(boot_id, cpu)) WITHOUT ROWID
//	forwarded(boot_id TEXT, cpu INTEGER, last_seq INTEGER,
//	       PRIMARY KEY(boot_id, cpu)) WITHOUT ROWID  -- created where missing
//
// boot_id is /proc/sys/kernel/random/boot_id, since sequence numbers
// start again at 1 on each boot; ts_ns is CLOCK_REALTIME in ns. A losses
// row says that on that boot and CPU, just before the event numbered
// before_seq, lost events were overwritten in the ring before kmesd read
// them (also while kmesd was not running, or while a full disk paused
// it) and dropped were dropped by the kernel before the ring; noted_ns is
// when kmesd noted it. It is written in the same transaction as its
// event. A positions row is the highest seq stored of that boot and CPU,
// updated in the transaction of each batch.
//
// # Restart
//
// On start kmesd loads the positions of the current boot and skips the
// events of the rings at or below them; ON CONFLICT DO NOTHING on the
// primary key guards against anything else stored twice. Positions are
// not taken from events, whose retention may have deleted every event of
// a CPU that its ring still holds. The gap between the last stored event
// and the first one read is a loss.
//
// # Retention
//
// Every --retention-interval (default 1m) and at start, kmesd deletes
// events older than --max-age (default 30d), then the oldest events
// while the database's pages in use exceed --max-bytes (default 1GiB),
// the losses of deleted events and the positions of past boots without
// events left. There is no VACUUM: SQLite reuses the
// freed pages, so the file stops growing at about --max-bytes (plus the
// WAL, a few MiB) but does not shrink.
//
// # Configuration
//
// --config FILE reads settings from lines "name = value" with the flags'
// names (db, batch, flush-interval, max-bytes, max-age,
// retention-interval, otlp-endpoint, otlp-batch, otlp-timeout,
// otlp-header); "#" starts a comment. Flags win over the file.
// Sizes take K, M, G, T (or KiB...; powers of 1024); durations Go's
// units and d for days.
//
// # Forwarding
//
// With --otlp-endpoint, a goroutine forwards the stored events to an
// OpenTelemetry collector over OTLP/HTTP (otlp.go): from the database,
// after the forwarded cursor, which advances after each 2xx.
//
// A full disk pauses storing: the batch is kept and stored again every
// few seconds; what the rings overwrite meanwhile is a loss.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/kmes-project/kmes/userspace/internal/eventdb"
	"github.com/kmes-project/kmes/userspace/kmes"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr, nil)
	stop()
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "kmesd: %v\n", err)
	var uerr *usageError
	if errors.As(err, &uerr) {
		os.Exit(2)
	}
	os.Exit(1)
}

// env is what tests replace: the rings and the boot id.
type env struct {
	source kmes.RingSource        // nil: the kernel's
	bootID func() (string, error) // nil: readBootID
	// tuneForwarder, if not nil, changes the forwarder before it starts
	// (shorter backoff and polling).
	tuneForwarder func(*forwarder)
}

// readBootID returns the kernel's boot id.
func readBootID() (string, error) {
	const path = "/proc/sys/kernel/random/boot_id"
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", fmt.Errorf("read boot id: %s is empty", path)
	}
	return id, nil
}

// run is kmesd with its arguments (without the program name), until ctx
// is done. Its error is one line, without "kmesd: ".
func run(ctx context.Context, args []string, stderr io.Writer, e *env) error {
	if e == nil {
		e = &env{}
	}
	cfg, help, err := parseConfig(args, stderr)
	if help || err != nil {
		return err
	}
	bootID := e.bootID
	if bootID == nil {
		bootID = readBootID
	}
	boot, err := bootID()
	if err != nil {
		return err
	}
	st, err := eventdb.Open(cfg.db)
	if err != nil {
		return err
	}
	var fwd *forwarder
	stopFwd := func() {}
	if cfg.otlpEndpoint != "" {
		fw, err := eventdb.OpenForwarding(cfg.db)
		if err != nil {
			return errors.Join(err, st.Close())
		}
		defer fw.Close()
		st.KeepUnforwarded()
		fwd = newForwarder(fw, cfg, stderr)
		if e.tuneForwarder != nil {
			e.tuneForwarder(fwd)
		}
		fctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			fwd.run(fctx)
		}()
		stopFwd = func() {
			cancel()
			<-done
		}
	}
	err = drain(ctx, st, cfg, boot, e.source, fwd, stderr)
	stopFwd() // before the database is closed
	return errors.Join(err, st.Close())
}

// drain reads the rings into st until ctx is done.
func drain(ctx context.Context, st *eventdb.DB, cfg *config, boot string, src kmes.RingSource, fwd *forwarder, stderr io.Writer) error {
	last, err := st.LastSeqs(boot)
	if err != nil {
		return err
	}
	rd, err := kmes.NewReader(&kmes.Options{Source: src})
	if err != nil {
		return err
	}
	defer rd.Close()
	d := newDrainer(rd, st, cfg, boot, last, stderr)
	if fwd != nil {
		d.stored = fwd.notify
	}
	d.retain(time.Now())
	err = d.run(ctx)
	fmt.Fprintf(stderr, "kmesd: %s\n", d.stats)
	return err
}
