package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kmes-project/kmes/userspace/internal/eventdb"
)

// config is kmesd's settings, from the flags and the --config file.
type config struct {
	db                string
	batch             int
	flushInterval     time.Duration
	maxBytes          int64
	maxAge            time.Duration
	retentionInterval time.Duration
	otlpEndpoint      string
	otlpBatch         int
	otlpTimeout       time.Duration
	otlpHeaders       http.Header
}

const usage = `Usage: kmesd [--db PATH] [--config FILE] [--batch N] [--flush-interval D]
             [--max-bytes SIZE] [--max-age D] [--retention-interval D]
             [--otlp-endpoint URL] [--otlp-batch N] [--otlp-timeout D]
             [--otlp-header KEY=VALUE]...

kmesd drains every CPU's KMES ring (kmes_attach, which needs
CAP_AUDIT_READ) and stores each event in an SQLite database, which
'kmesctl query' reads. It resumes after the last event it stored; events
overwritten while it was not running are recorded as lost. SIGINT or
SIGTERM stores what was read and exits. With --otlp-endpoint it also
forwards the stored events to an OpenTelemetry collector (OTLP/HTTP logs).

--config FILE reads "name = value" lines with the flags' names ("#"
starts a comment); flags win. SIZE takes K, M, G, T (powers of 1024);
durations Go's units (ms, s, m, h) and d for days.

Flags:
`

// usageError is a command line or configuration kmesd cannot run with:
// exit status 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// sizeValue is a flag of a size in bytes: 1073741824, 1G, 1GiB, 512M.
type sizeValue struct{ n *int64 }

func (v sizeValue) String() string {
	if v.n == nil {
		return ""
	}
	n := *v.n
	for _, u := range []string{"T", "G", "M", "K"} {
		if m := sizeUnit(u); n > 0 && n%m == 0 {
			return strconv.FormatInt(n/m, 10) + u + "iB"
		}
	}
	return strconv.FormatInt(n, 10)
}

func (v sizeValue) Set(s string) error {
	num := strings.TrimSuffix(strings.TrimSuffix(s, "iB"), "B")
	mult := int64(1)
	if num != "" {
		if m := sizeUnit(num[len(num)-1:]); m > 0 {
			mult, num = m, num[:len(num)-1]
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return errors.New("not a size: give bytes, or a number with K, M, G or T (1G, 512MiB)")
	}
	*v.n = n * mult
	return nil
}

func sizeUnit(u string) int64 {
	switch strings.ToUpper(u) {
	case "K":
		return 1 << 10
	case "M":
		return 1 << 20
	case "G":
		return 1 << 30
	case "T":
		return 1 << 40
	}
	return 0
}

// durationValue is a duration flag that also takes days: 30d.
type durationValue struct{ d *time.Duration }

func (v durationValue) String() string {
	if v.d == nil {
		return ""
	}
	if d := *v.d; d > 0 && d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	return v.d.String()
}

func (v durationValue) Set(s string) error {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 32)
		if err != nil || n < 0 {
			return errors.New("not a duration: give 30d, 12h, 1m, 500ms")
		}
		*v.d = time.Duration(n) * 24 * time.Hour
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return errors.New("not a duration: give 30d, 12h, 1m, 500ms")
	}
	*v.d = d
	return nil
}

// parseConfig reads the flags, then the --config file for the settings
// not given as flags, and checks them. help is true after --help.
func parseConfig(args []string, stderr io.Writer) (cfg *config, help bool, err error) {
	cfg = &config{
		db:                eventdb.DefaultPath,
		batch:             1024,
		flushInterval:     200 * time.Millisecond,
		maxBytes:          1 << 30,
		maxAge:            30 * 24 * time.Hour,
		retentionInterval: time.Minute,
		otlpBatch:         512,
		otlpTimeout:       10 * time.Second,
	}
	fs := flag.NewFlagSet("kmesd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&cfg.db, "db", cfg.db, "store events in the SQLite database at `PATH` (created with its directory)")
	configFile := fs.String("config", "", "read settings from `FILE` (name = value lines); flags win")
	fs.IntVar(&cfg.batch, "batch", cfg.batch, "store at most `N` events per transaction")
	fs.Var(durationValue{&cfg.flushInterval}, "flush-interval", "store a batch at most `D` after its first event was read")
	fs.Var(sizeValue{&cfg.maxBytes}, "max-bytes", "delete the oldest events while the database uses more than `SIZE` (0: no limit)")
	fs.Var(durationValue{&cfg.maxAge}, "max-age", "delete events older than `D` (0: no limit)")
	fs.Var(durationValue{&cfg.retentionInterval}, "retention-interval", "apply --max-bytes and --max-age every `D`")
	fs.StringVar(&cfg.otlpEndpoint, "otlp-endpoint", "", "forward the stored events to the OTLP/HTTP logs `URL` (http://collector:4318/v1/logs; empty: off)")
	fs.IntVar(&cfg.otlpBatch, "otlp-batch", cfg.otlpBatch, "forward at most `N` events per request")
	fs.Var(durationValue{&cfg.otlpTimeout}, "otlp-timeout", "give up a request to the collector after `D`, and send it again")
	fs.Var(headerValue{&cfg.otlpHeaders}, "otlp-header", "send the header `KEY=VALUE` with each request (repeatable)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, usage)
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return nil, true, nil
		}
		return nil, false, usagef("%v: run 'kmesd --help'", err)
	}
	if fs.NArg() > 0 {
		return nil, false, usagef("unexpected argument %q: kmesd takes only flags", fs.Arg(0))
	}
	if *configFile != "" {
		given := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
		if err := readConfigFile(*configFile, fs, given); err != nil {
			return nil, false, err
		}
	}
	switch {
	case cfg.batch < 1:
		return nil, false, usagef("--batch %d: give 1 or more events", cfg.batch)
	case cfg.flushInterval <= 0:
		return nil, false, usagef("--flush-interval %s: give a positive duration", cfg.flushInterval)
	case cfg.retentionInterval <= 0:
		return nil, false, usagef("--retention-interval %s: give a positive duration", cfg.retentionInterval)
	case cfg.db == "":
		return nil, false, usagef("--db \"\": give the database's path")
	case cfg.otlpBatch < 1:
		return nil, false, usagef("--otlp-batch %d: give 1 or more events", cfg.otlpBatch)
	case cfg.otlpTimeout <= 0:
		return nil, false, usagef("--otlp-timeout %s: give a positive duration", cfg.otlpTimeout)
	}
	if cfg.otlpEndpoint != "" {
		u, err := url.Parse(cfg.otlpEndpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, false, usagef("--otlp-endpoint %q: give an http:// or https:// URL (http://collector:4318/v1/logs)", cfg.otlpEndpoint)
		}
	}
	return cfg, false, nil
}

// readConfigFile sets fs's flags from the file's "name = value" lines,
// except those in given (set on the command line).
func readConfigFile(path string, fs *flag.FlagSet, given map[string]bool) error {
	f, err := os.Open(path)
	if err != nil {
		return usagef("read config: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		name, value, ok := strings.Cut(text, "=")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if !ok || name == "" {
			return usagef("config %s:%d: %q is not a setting: write name = value", path, line, text)
		}
		if name == "config" || fs.Lookup(name) == nil {
			return usagef("config %s:%d: unknown setting %q (settings: db, batch, flush-interval, max-bytes, max-age, retention-interval, otlp-endpoint, otlp-batch, otlp-timeout, otlp-header)", path, line, name)
		}
		if given[name] {
			continue
		}
		if err := fs.Set(name, value); err != nil {
			return usagef("config %s:%d: %s = %s: %v", path, line, name, value, err)
		}
	}
	if err := sc.Err(); err != nil {
		return usagef("read config %s: %w", path, err)
	}
	return nil
}
