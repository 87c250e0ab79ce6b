// Package eventdb is kmesd's SQLite database of events: the writing
// side, which kmesd uses, and the reading side, which kmesctl query uses.
// The schema is in kmesd's documentation (and Schema below).
package eventdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// SchemaVersion is the version of the schema below, kept in meta.
const SchemaVersion = 1

// Schema is the database kmesd writes (see its documentation).
const Schema = `
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE events(
	boot_id TEXT NOT NULL,
	cpu     INTEGER NOT NULL,
	seq     INTEGER NOT NULL,
	ts_ns   INTEGER NOT NULL,
	origin  INTEGER NOT NULL,
	type    TEXT NOT NULL,
	payload BLOB NOT NULL,
	PRIMARY KEY(boot_id, cpu, seq)
) WITHOUT ROWID;
CREATE INDEX events_ts ON events(ts_ns);
CREATE TABLE losses(
	boot_id    TEXT NOT NULL,
	cpu        INTEGER NOT NULL,
	before_seq INTEGER NOT NULL,
	lost       INTEGER NOT NULL,
	dropped    INTEGER NOT NULL,
	noted_ns   INTEGER NOT NULL,
	PRIMARY KEY(boot_id, cpu, before_seq)
) WITHOUT ROWID;
CREATE TABLE positions(
	boot_id  TEXT NOT NULL,
	cpu      INTEGER NOT NULL,
	last_seq INTEGER NOT NULL,
	PRIMARY KEY(boot_id, cpu)
) WITHOUT ROWID;
` + ForwardedSchema

// ForwardedSchema is the table of kmesd's forwarding to an OpenTelemetry
// collector: the highest seq of each boot and CPU the collector accepted
// (or that was skipped). It was added to version 1 without a new version:
// Open creates it in a database that lacks it, and readers ignore it.
const ForwardedSchema = `
CREATE TABLE IF NOT EXISTS forwarded(
	boot_id  TEXT NOT NULL,
	cpu      INTEGER NOT NULL,
	last_seq INTEGER NOT NULL,
	PRIMARY KEY(boot_id, cpu)
) WITHOUT ROWID;
`

// ErrFull marks an Insert that failed because the disk (or the
// database's size limit) is full: the batch may be stored again later.
var ErrFull = errors.New("database or disk is full")

// ErrNotKMESD marks a database that is not one kmesd can use.
var ErrNotKMESD = errors.New("not a kmesd database")

// DefaultPath is where kmesd keeps its database, and kmesctl query
// looks for it.
const DefaultPath = "/var/lib/kmes/events.db"

// DB is kmesd's database open for writing: one connection, one prepared
// insert for events, one for losses and one for positions, a transaction
// per batch.
type DB struct {
	path   string
	db     *sql.DB
	conn   *sql.Conn // the one connection: BEGIN, the inserts and COMMIT on it
	insEv  *sql.Stmt
	insLos *sql.Stmt
	setPos *sql.Stmt
	// pos is the highest sequence number of each CPU in the batch being
	// inserted, reused from batch to batch.
	pos []cpuSeq
	// keepUnforwarded makes Retain keep, within maxBytes, the events not
	// forwarded yet; unforwardedDeleted counts those it deleted anyway.
	keepUnforwarded    bool
	unforwardedDeleted int64
}

// KeepUnforwarded makes Retain delete by age only the events forwarded
// already (forwarded), and count those it deletes by size before they
// were forwarded (TakeUnforwardedDeleted).
func (s *DB) KeepUnforwarded() { s.keepUnforwarded = true }

// TakeUnforwardedDeleted returns how many events not forwarded yet Retain
// deleted (over maxBytes) since the last call.
func (s *DB) TakeUnforwardedDeleted() int64 {
	n := s.unforwardedDeleted
	s.unforwardedDeleted = 0
	return n
}

// unforwarded is the condition on events (the table, not aliased) of an
// event not forwarded yet.
const unforwarded = `events.seq > coalesce((SELECT f.last_seq FROM forwarded f
	WHERE f.boot_id = events.boot_id AND f.cpu = events.cpu), 0)`

type cpuSeq struct {
	cpu int
	seq uint64
}

// Open opens (creating it, and its directory, if need be) the database
// at path for writing. Its errors are one line that says what to do,
// naming kmesd's --db flag.
func Open(path string) (*DB, error) {
	if err := checkWritable(path); err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		if err := create(path); err != nil {
			return nil, err
		}
	}
	// WAL: readers (kmesctl query) do not block the writer nor it them;
	// synchronous=NORMAL syncs the WAL at checkpoints only, so a power
	// loss may lose the last transactions but never corrupts, and a
	// crash of kmesd alone loses nothing committed.
	// (init turns WAL on in a new database, and the file keeps it.)
	dsn := "file:" + path + "?_pragma=busy_timeout(5000)&_pragma=synchronous(NORMAL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	s := &DB{path: path, db: db}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// checkWritable creates path's directory if it is missing, and checks
// that kmesd can write the database and the files beside it, so that a
// path kmesd cannot write is reported with the system's reason rather
// than SQLite's "unable to open".
func checkWritable(path string) error {
	fail := func(err error) error {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("open database %s: %w (choose a writable --db)", path, err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(err)
	}
	if f, err := os.OpenFile(path, os.O_RDWR, 0); err == nil {
		f.Close()
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fail(err)
	}
	// The WAL and its index are files beside the database.
	tmp, err := os.CreateTemp(dir, ".kmesd-check-*")
	if err != nil {
		return fail(err)
	}
	tmp.Close()
	os.Remove(tmp.Name())
	return nil
}

// create makes a new database at path, whole: its schema is written in
// a file beside it, which is then linked to path. A reader (kmesctl
// query) never finds at path a database without its schema, and of two
// kmesd started at once the second opens the first's.
func create(path string) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".new-*")
	if err != nil {
		return fmt.Errorf("create database %s: %w (choose a writable --db)", path, err)
	}
	tmp := f.Name()
	defer func() {
		for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
			os.Remove(tmp + suffix)
		}
	}()
	err = f.Chmod(0o640)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("create database %s: %w", path, err)
	}
	db, err := sql.Open("sqlite", "file:"+tmp)
	if err != nil {
		return fmt.Errorf("create database %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	s := &DB{path: path, db: db}
	err = s.init()
	// Closing the last connection checkpoints the WAL into the file and
	// removes it.
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	err = os.Link(tmp, path)
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EOPNOTSUPP) {
		// A file system without hard links (vfat, some FUSE): rename,
		// which would replace a database another kmesd made meanwhile,
		// so only if there is none.
		if _, serr := os.Lstat(path); errors.Is(serr, fs.ErrNotExist) {
			err = os.Rename(tmp, path)
		} else {
			err = nil
		}
	}
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create database %s: %w", path, err)
	}
	return nil
}

// init checks the schema, creating it in an empty database, and prepares
// the inserts.
func (s *DB) init() error {
	ctx := context.Background()
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return s.openError(err)
	}
	s.conn = conn
	// page_size takes effect only in a new database, and only before WAL
	// is on: 16 KiB pages hold events of up to about 4 KiB in the tree
	// itself, where 4 KiB pages give each event of over about 1000 bytes
	// an overflow page of its own (a WITHOUT ROWID table's rows are index
	// entries, which keep at most about a quarter page in the tree).
	// WAL mode is kept in the file: it is set on a new database only, so
	// that another program's database, refused below, is left as it was.
	var tables int
	if err := conn.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE type = 'table'`).Scan(&tables); err != nil {
		return s.openError(err)
	}
	if tables == 0 {
		for _, p := range []string{"PRAGMA page_size = 16384", "PRAGMA journal_mode = WAL"} {
			if _, err := conn.ExecContext(ctx, p); err != nil {
				return s.openError(err)
			}
		}
		if err := s.tx(func() error {
			if _, err := conn.ExecContext(ctx, Schema); err != nil {
				return err
			}
			_, err := conn.ExecContext(ctx, `INSERT INTO meta VALUES('schema_version', ?), ('created_ns', ?)`,
				strconv.Itoa(SchemaVersion), strconv.FormatInt(time.Now().UnixNano(), 10))
			return err
		}); err != nil {
			return fmt.Errorf("create Schema in %s: %w", s.path, err)
		}
	}
	var v string
	err = conn.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&v)
	if err != nil {
		return s.openError(fmt.Errorf("%w: read its schema version: %w", ErrNotKMESD, err))
	}
	switch n, err := strconv.Atoi(v); {
	case err != nil:
		return s.openError(fmt.Errorf("%w: schema version %q", ErrNotKMESD, v))
	case n > SchemaVersion:
		return fmt.Errorf("database %s has schema version %d, newer than this kmesd's %d (use a newer kmesd, or another --db)", s.path, n, SchemaVersion)
	}
	// kmesd's database: WAL again, should something have turned it off.
	if _, err := conn.ExecContext(ctx, "PRAGMA journal_mode = WAL"); err != nil {
		return s.openError(err)
	}
	if _, err := conn.ExecContext(ctx, ForwardedSchema); err != nil {
		return s.openError(err)
	}
	// ON CONFLICT DO NOTHING, not INSERT OR IGNORE: an event stored
	// already is skipped, but OR IGNORE would also skip, silently, a row
	// that breaks NOT NULL.
	s.insEv, err = conn.PrepareContext(ctx, `INSERT INTO events VALUES(?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`)
	if err != nil {
		return s.openError(err)
	}
	s.insLos, err = conn.PrepareContext(ctx, `INSERT INTO losses VALUES(?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`)
	if err != nil {
		return s.openError(err)
	}
	// A position never goes back, whatever order batches come in.
	s.setPos, err = conn.PrepareContext(ctx, `INSERT INTO positions VALUES(?, ?, ?)
		ON CONFLICT DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)`)
	if err != nil {
		return s.openError(err)
	}
	return nil
}

// openError words an error found while opening the database.
func (s *DB) openError(err error) error {
	if errors.Is(err, ErrNotKMESD) || sqliteCode(err) == sqlite3.SQLITE_NOTADB || sqliteCode(err) == sqlite3.SQLITE_CORRUPT {
		return fmt.Errorf("database %s is not a kmesd database or is corrupt: %v (move it away, or choose another --db)", s.path, err)
	}
	return fmt.Errorf("open database %s: %w", s.path, err)
}

// sqliteCode returns the primary SQLite result code of err, or 0.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() & 0xff
	}
	return 0
}

// tx runs fn in a transaction on the DB's connection.
func (s *DB) tx(fn func() error) error { return s.txBegin("BEGIN", fn) }

// txBegin is tx starting with begin (BEGIN IMMEDIATE: the write lock
// before the first read).
func (s *DB) txBegin(begin string, fn func() error) error {
	ctx := context.Background()
	if _, err := s.conn.ExecContext(ctx, begin); err != nil {
		return err
	}
	if err := fn(); err != nil {
		s.conn.ExecContext(ctx, "ROLLBACK") // may fail if SQLite rolled back already
		return err
	}
	if _, err := s.conn.ExecContext(ctx, "COMMIT"); err != nil {
		s.conn.ExecContext(ctx, "ROLLBACK")
		return err
	}
	return nil
}

// LastSeqs returns the highest sequence number stored of each CPU of
// boot: where reading resumes. It is kept in positions, in the
// transaction of each batch, and not taken from events: retention may
// have deleted every event of a CPU, and its ring may still hold them.
func (s *DB) LastSeqs(boot string) (map[int]uint64, error) {
	rows, err := s.conn.QueryContext(context.Background(),
		`SELECT cpu, last_seq FROM positions WHERE boot_id = ?`, boot)
	if err != nil {
		return nil, fmt.Errorf("read last positions from %s: %w", s.path, err)
	}
	defer rows.Close()
	last := make(map[int]uint64)
	for rows.Next() {
		var cpu int
		var seq int64
		if err := rows.Scan(&cpu, &seq); err != nil {
			return nil, fmt.Errorf("read last positions from %s: %w", s.path, err)
		}
		last[cpu] = uint64(seq)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read last positions from %s: %w", s.path, err)
	}
	return last, nil
}

// Insert stores the batch in one transaction, all or nothing, with the
// position of each of its CPUs (LastSeqs); the batch is the caller's to
// keep or reset. An error that is the disk being full wraps ErrFull. An
// event stored already (its boot, CPU and sequence number) is left as it
// is.
func (s *DB) Insert(b *Batch) error {
	err := s.tx(func() error { return s.addAll(b) })
	if err != nil {
		if sqliteCode(err) == sqlite3.SQLITE_FULL {
			return fmt.Errorf("store %d events in %s: %w: %w", len(b.Events), s.path, ErrFull, err)
		}
		return fmt.Errorf("store %d events in %s: %w", len(b.Events), s.path, err)
	}
	return nil
}

// addAll inserts b's events, and its CPUs' positions, in the open
// transaction.
func (s *DB) addAll(b *Batch) error {
	s.pos = s.pos[:0]
	for i := range b.Events {
		e := &b.Events[i]
		if err := s.add(b, e); err != nil {
			return err
		}
		// A batch's events are a few CPUs' runs: the last CPU seen is
		// nearly always the one.
		j := len(s.pos) - 1
		for j >= 0 && s.pos[j].cpu != e.CPU {
			j--
		}
		switch {
		case j < 0:
			s.pos = append(s.pos, cpuSeq{e.CPU, e.Seq})
		case e.Seq > s.pos[j].seq:
			s.pos[j].seq = e.Seq
		}
	}
	ctx := context.Background()
	for _, p := range s.pos {
		if _, err := s.setPos.ExecContext(ctx, b.boot, p.cpu, int64(p.seq)); err != nil {
			return err
		}
	}
	return nil
}

// add inserts one event, and the loss before it, in the open transaction.
func (s *DB) add(b *Batch, e *Event) error {
	ctx := context.Background()
	if e.Lost > 0 || e.Dropped > 0 {
		if _, err := s.insLos.ExecContext(ctx, b.boot, e.CPU, int64(e.Seq), int64(e.Lost), int64(e.Dropped), b.noted); err != nil {
			return err
		}
	}
	_, err := s.insEv.ExecContext(ctx, b.boot, e.CPU, int64(e.Seq), e.Timestamp, int(e.Origin), e.Type, b.Payload(e))
	return err
}

// Retain deletes the oldest events, by timestamp, that are older than
// maxAge (if > 0) or beyond maxBytes of database pages in use (if > 0),
// the losses whose events are gone, and the positions of boots other
// than current that have no event left (current's are kept: its rings
// may still hold the deleted events). Freed pages are reused by later
// inserts (no VACUUM): the file stops growing at about maxBytes but does
// not shrink. It returns how many events it deleted.
func (s *DB) Retain(now time.Time, current string, maxAge time.Duration, maxBytes int64) (int64, error) {
	ctx := context.Background()
	var deleted int64
	del := func(query string, args ...any) error {
		return s.tx(func() error {
			_, err := s.conn.ExecContext(ctx, query, args...)
			return err
		})
	}
	delEvents := func(query string, args ...any) error {
		return s.tx(func() error {
			res, err := s.conn.ExecContext(ctx, query, args...)
			if err != nil {
				return err
			}
			n, _ := res.RowsAffected()
			deleted += n
			return nil
		})
	}
	if maxAge > 0 {
		q := `DELETE FROM events WHERE ts_ns < ?`
		if s.keepUnforwarded {
			q += ` AND NOT (` + unforwarded + `)`
		}
		if err := delEvents(q, now.Add(-maxAge).UnixNano()); err != nil {
			return deleted, fmt.Errorf("delete events older than %s from %s: %w", maxAge, s.path, err)
		}
	}
	// A few rounds: each deletes what the average event size says is
	// over, and 5% of maxBytes more so that the next check has room.
	for round := 0; maxBytes > 0 && round < 8; round++ {
		used, err := s.UsedBytes()
		if err != nil {
			return deleted, err
		}
		if used <= maxBytes {
			break
		}
		var count int64
		if err := s.conn.QueryRowContext(ctx, `SELECT count(*) FROM events`).Scan(&count); err != nil {
			return deleted, fmt.Errorf("count events in %s: %w", s.path, err)
		}
		if count == 0 {
			break // what is left is the schema and the losses
		}
		n := min(count, (used-maxBytes+maxBytes/20)/max(used/count, 1)+1)
		var cutoff int64
		if err := s.conn.QueryRowContext(ctx, `SELECT ts_ns FROM events ORDER BY ts_ns LIMIT 1 OFFSET ?`, n-1).Scan(&cutoff); err != nil {
			return deleted, fmt.Errorf("find the oldest events in %s: %w", s.path, err)
		}
		// Counting what was not forwarded and deleting are one
		// transaction, IMMEDIATE: the forwarder cannot advance between
		// them (its Advance waits for the write lock).
		var lost int64
		err = s.txBegin("BEGIN IMMEDIATE", func() error {
			if s.keepUnforwarded {
				err := s.conn.QueryRowContext(ctx, `SELECT count(*) FROM events WHERE ts_ns <= ? AND `+unforwarded, cutoff).Scan(&lost)
				if err != nil {
					return fmt.Errorf("count the events not forwarded yet: %w", err)
				}
			}
			res, err := s.conn.ExecContext(ctx, `DELETE FROM events WHERE ts_ns <= ?`, cutoff)
			if err != nil {
				return err
			}
			n, _ := res.RowsAffected()
			deleted += n
			return nil
		})
		if err != nil {
			return deleted, fmt.Errorf("delete the oldest events from %s: %w", s.path, err)
		}
		s.unforwardedDeleted += lost
	}
	if deleted > 0 {
		err := del(`DELETE FROM losses WHERE NOT EXISTS (SELECT 1 FROM events e
			WHERE e.boot_id = losses.boot_id AND e.cpu = losses.cpu AND e.seq = losses.before_seq)`)
		if err != nil {
			return deleted, fmt.Errorf("delete losses of deleted events from %s: %w", s.path, err)
		}
		err = del(`DELETE FROM positions WHERE boot_id <> ? AND NOT EXISTS (SELECT 1 FROM events e
			WHERE e.boot_id = positions.boot_id)`, current)
		if err != nil {
			return deleted, fmt.Errorf("delete positions of past boots from %s: %w", s.path, err)
		}
		err = del(`DELETE FROM forwarded WHERE boot_id <> ? AND NOT EXISTS (SELECT 1 FROM events e
			WHERE e.boot_id = forwarded.boot_id)`, current)
		if err != nil {
			return deleted, fmt.Errorf("delete forwarding positions of past boots from %s: %w", s.path, err)
		}
	}
	return deleted, nil
}

// UsedBytes is the size of the database's pages in use (not free).
func (s *DB) UsedBytes() (int64, error) {
	ctx := context.Background()
	var pages, free, size int64
	err := s.conn.QueryRowContext(ctx, `SELECT page_count, freelist_count, page_size FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()`).Scan(&pages, &free, &size)
	if err != nil {
		return 0, fmt.Errorf("read the size of %s: %w", s.path, err)
	}
	return (pages - free) * size, nil
}

// Close closes the database; the WAL is checkpointed into it.
func (s *DB) Close() error {
	var errs []error
	for _, st := range []*sql.Stmt{s.insEv, s.insLos, s.setPos} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	if s.conn != nil {
		errs = append(errs, s.conn.Close())
	}
	errs = append(errs, s.db.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close database %s: %w", s.path, err)
	}
	return nil
}
