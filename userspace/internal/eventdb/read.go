package eventdb

import (
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/kmes-project/kmes/userspace/kmes"
)

// Reader is a database open for reading, as kmesctl query reads it while
// kmesd writes (WAL: neither waits for the other).
type Reader struct {
	path string
	db   *sql.DB
}

// OpenReader opens the database at path read-only. It fails, in one line
// that says what to do, if there is none or it is not kmesd's.
func OpenReader(path string) (*Reader, error) {
	if _, err := os.Stat(path); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("open database %s: %w (is kmesd storing events there? choose --db)", path, err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	r := &Reader{path: path, db: db}
	var v string
	if err := db.QueryRow(`SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&v); err != nil {
		db.Close()
		return nil, fmt.Errorf("database %s is not a kmesd database or is corrupt: %v (choose another --db)", path, err)
	}
	if n, err := strconv.Atoi(v); err != nil || n > SchemaVersion {
		db.Close()
		return nil, fmt.Errorf("database %s has schema version %s; this program knows %d (use a newer one)", path, v, SchemaVersion)
	}
	return r, nil
}

// Close closes the database.
func (r *Reader) Close() error { return r.db.Close() }

// Query selects events by time, both bounds inclusive, and CPU.
type Query struct {
	Since, Until int64 // ns since the epoch
	CPUs         []int // none: every CPU
}

// Events calls fn with each event q selects, in (timestamp, CPU,
// sequence number) order, with the loss stored before it in its Lost and
// Dropped. The Record is reused for the next event.
func (r *Reader) Events(q Query, fn func(*kmes.Record) error) error {
	query := `SELECT e.cpu, e.seq, e.ts_ns, e.origin, e.type, e.payload,
		coalesce(l.lost, 0), coalesce(l.dropped, 0)
		FROM events e LEFT JOIN losses l
		ON l.boot_id = e.boot_id AND l.cpu = e.cpu AND l.before_seq = e.seq
		WHERE e.ts_ns BETWEEN ? AND ?`
	args := []any{q.Since, q.Until}
	if len(q.CPUs) > 0 {
		query += ` AND e.cpu IN (` + strings.Repeat("?, ", len(q.CPUs)-1) + `?)`
		for _, c := range q.CPUs {
			args = append(args, c)
		}
	}
	query += ` ORDER BY e.ts_ns, e.cpu, e.seq`
	rows, err := r.db.Query(query, args...)
	if err != nil {
		return fmt.Errorf("query %s: %w", r.path, err)
	}
	defer rows.Close()
	var rec kmes.Record
	var seq, lost, dropped int64
	for rows.Next() {
		// Scanning into a []byte copies the payload: the Record owns it.
		if err := rows.Scan(&rec.CPU, &seq, &rec.Timestamp, &rec.Origin, &rec.Type, &rec.Payload, &lost, &dropped); err != nil {
			return fmt.Errorf("read %s: %w", r.path, err)
		}
		rec.Sequence, rec.Lost, rec.Dropped = uint64(seq), uint64(lost), uint64(dropped)
		if err := fn(&rec); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read %s: %w", r.path, err)
	}
	return nil
}
