package eventdb

import (
	"context"
	"database/sql"
	"fmt"
)

// Forwarding is the database open beside kmesd's writer (DB) for its
// forwarder: it reads the events not forwarded yet and advances the
// forwarded table once the collector took them. Its own connection, in
// WAL mode, does not wait for the writer; its writes are one short
// transaction per batch.
//
// Its cursor is forwarded(boot_id, cpu, last_seq), not one row of an
// insertion order: events is WITHOUT ROWID (no rowid to follow), ts_ns
// is not in insertion order across CPUs (a late batch of a CPU has older
// timestamps than what was stored of another), but on each boot and CPU
// kmesd inserts events in increasing seq, never below one it stored.
type Forwarding struct {
	path string
	db   *sql.DB
	next int // the lagging CPU the next batch starts with, in turn
}

// FwdEvent is an event to forward, with the loss stored before it (Lost,
// Dropped, noted at LossNoted ns; all 0 if none).
type FwdEvent struct {
	Boot          string
	CPU           int
	Seq           uint64
	Timestamp     int64
	Origin        uint8
	Type          string
	Payload       []byte
	Lost, Dropped uint64
	LossNoted     int64
}

// FwdBatch is the events of one request to the collector, and how far
// each of its CPUs is forwarded once the collector accepted it.
type FwdBatch struct {
	Events []FwdEvent
	upTo   []fwdPos
}

type fwdPos struct {
	boot string
	cpu  int
	seq  uint64
}

// OpenForwarding opens the database at path, which kmesd's DB created,
// for its forwarder.
func OpenForwarding(path string) (*Forwarding, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		return nil, fmt.Errorf("open database %s for forwarding: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(ForwardedSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s for forwarding: %w", path, err)
	}
	return &Forwarding{path: path, db: db}, nil
}

// Close closes the database.
func (f *Forwarding) Close() error { return f.db.Close() }

// Next reads at most max events not forwarded yet, in increasing seq on
// each CPU, taking the lagging CPUs in turn from batch to batch. A batch
// without events may still advance (Advance) CPUs whose unforwarded
// events retention deleted.
func (f *Forwarding) Next(max int) (*FwdBatch, error) {
	ctx := context.Background()
	// One read transaction: the positions and the events of one snapshot.
	tx, err := f.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("read %s for forwarding: %w", f.path, err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT p.boot_id, p.cpu, p.last_seq, coalesce(f.last_seq, 0)
		FROM positions p LEFT JOIN forwarded f ON f.boot_id = p.boot_id AND f.cpu = p.cpu
		WHERE p.last_seq > coalesce(f.last_seq, 0) ORDER BY p.boot_id, p.cpu`)
	if err != nil {
		return nil, fmt.Errorf("read %s for forwarding: %w", f.path, err)
	}
	type lag struct {
		boot      string
		cpu       int
		pos, from int64
	}
	var lags []lag
	for rows.Next() {
		var l lag
		if err := rows.Scan(&l.boot, &l.cpu, &l.pos, &l.from); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read %s for forwarding: %w", f.path, err)
		}
		lags = append(lags, l)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s for forwarding: %w", f.path, err)
	}
	b := &FwdBatch{}
	if len(lags) == 0 {
		return b, nil
	}
	f.next++
	for i := range lags {
		room := max - len(b.Events)
		if room <= 0 {
			break
		}
		l := lags[(f.next+i)%len(lags)]
		n, last, err := f.read(ctx, tx, b, l.boot, l.cpu, l.from, room)
		if err != nil {
			return nil, err
		}
		upTo := last
		if n < room {
			upTo = l.pos // what is missing up to the position, retention deleted
		}
		if upTo > l.from {
			b.upTo = append(b.upTo, fwdPos{l.boot, l.cpu, uint64(upTo)})
		}
	}
	return b, nil
}

// read appends to b at most limit events of boot and cpu after seq from;
// it returns how many, and the last one's seq.
func (f *Forwarding) read(ctx context.Context, tx *sql.Tx, b *FwdBatch, boot string, cpu int, from int64, limit int) (n int, last int64, err error) {
	rows, err := tx.QueryContext(ctx, `SELECT e.seq, e.ts_ns, e.origin, e.type, e.payload,
		coalesce(l.lost, 0), coalesce(l.dropped, 0), coalesce(l.noted_ns, 0)
		FROM events e LEFT JOIN losses l
		ON l.boot_id = e.boot_id AND l.cpu = e.cpu AND l.before_seq = e.seq
		WHERE e.boot_id = ? AND e.cpu = ? AND e.seq > ? ORDER BY e.seq LIMIT ?`, boot, cpu, from, limit)
	if err != nil {
		return 0, 0, fmt.Errorf("read %s for forwarding: %w", f.path, err)
	}
	defer rows.Close()
	last = from
	for rows.Next() {
		e := FwdEvent{Boot: boot, CPU: cpu}
		var seq, lost, dropped int64
		if err := rows.Scan(&seq, &e.Timestamp, &e.Origin, &e.Type, &e.Payload, &lost, &dropped, &e.LossNoted); err != nil {
			return 0, 0, fmt.Errorf("read %s for forwarding: %w", f.path, err)
		}
		e.Seq, e.Lost, e.Dropped = uint64(seq), uint64(lost), uint64(dropped)
		b.Events = append(b.Events, e)
		n++
		last = seq
	}
	if err := rows.Err(); err != nil {
		return 0, 0, fmt.Errorf("read %s for forwarding: %w", f.path, err)
	}
	return n, last, nil
}

// Empty reports whether b neither holds events nor advances anything.
func (b *FwdBatch) Empty() bool { return len(b.Events) == 0 && len(b.upTo) == 0 }

// Advance records b as forwarded: its events are not read again, and
// retention may delete them.
func (f *Forwarding) Advance(b *FwdBatch) error {
	if len(b.upTo) == 0 {
		return nil
	}
	ctx := context.Background()
	conn, err := f.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("record forwarding in %s: %w", f.path, err)
	}
	defer conn.Close()
	// IMMEDIATE: the write lock first (waiting for the drain's
	// transaction), so that no snapshot goes stale in between.
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("record forwarding in %s: %w", f.path, err)
	}
	for _, p := range b.upTo {
		_, err := conn.ExecContext(ctx, `INSERT INTO forwarded VALUES(?, ?, ?)
			ON CONFLICT DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)`, p.boot, p.cpu, int64(p.seq))
		if err != nil {
			conn.ExecContext(ctx, "ROLLBACK")
			return fmt.Errorf("record forwarding in %s: %w", f.path, err)
		}
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		conn.ExecContext(ctx, "ROLLBACK")
		return fmt.Errorf("record forwarding in %s: %w", f.path, err)
	}
	return nil
}
