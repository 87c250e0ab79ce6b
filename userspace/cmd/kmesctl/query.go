package main

import (
	"fmt"
	"io"
	"time"

	"github.com/kmes-project/kmes/userspace/internal/eventdb"
	"github.com/kmes-project/kmes/userspace/kmes"
)

const queryUsage = `Usage: kmesctl query [--db PATH] [-o MODE] [--type GLOB]... [--cpu LIST]
                     [--origin N] [--since TIME] [--until TIME]

Print the events kmesd stored in its database (default ` + eventdb.DefaultPath + `),
in timestamp order (then CPU, then sequence number), in tail's output
modes (-o json, json-pretty, short; see 'kmesctl tail --help'). Events of
a CPU that kmesd found lost (overwritten before it read them, also while
it was not running) or dropped (before the ring) are printed where they
happened, before the CPU's next event stored, as tail prints them:

  {"cpu":1,"lost":120,"dropped":0}

--type, --cpu, --origin, --since and --until select events as tail's do;
a loss is printed whatever --type and --origin say, for the CPUs and
times selected. The database is read while kmesd writes it, and never
changed (it needs read access to it only).
`

func runQuery(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("query")
	ff := filterFlags{cmd: "query"}
	ff.define(fs)
	var mode, db string
	fs.StringVar(&db, "db", eventdb.DefaultPath, "read the database at `PATH`")
	fs.StringVar(&mode, "o", "json", "print events in `MODE`: "+outputModes)
	fs.StringVar(&mode, "output", "json", "the same as -o")
	pos, help, err := parseFlags(fs, args, queryUsage, stdout)
	if help || err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("kmesctl query: unexpected argument %q: run 'kmesctl query --help'", pos[0])
	}
	f, err := ff.parse(time.Now())
	if err != nil {
		return err
	}
	p, err := newCommandPrinter("query", mode, stdout, stderr)
	if err != nil {
		return err
	}
	rd, err := eventdb.OpenReader(db)
	if err != nil {
		return fmt.Errorf("kmesctl query: %w", err)
	}
	defer rd.Close()
	err = rd.Events(eventdb.Query{Since: f.since, Until: f.until, CPUs: f.cpus()}, func(r *kmes.Record) error {
		if r.Lost > 0 || r.Dropped > 0 {
			// Loss happened on the CPU, whatever the filters.
			if err := p.loss(r.CPU, r.Lost, r.Dropped); err != nil {
				return fmt.Errorf("write output: %w", err)
			}
		}
		if !f.match(r) {
			return nil
		}
		if err := p.event(r); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		return nil
	})
	if ferr := p.flush(); err == nil && ferr != nil {
		err = fmt.Errorf("write output: %w", ferr)
	}
	if err != nil {
		return fmt.Errorf("kmesctl query: %w", err)
	}
	return nil
}
