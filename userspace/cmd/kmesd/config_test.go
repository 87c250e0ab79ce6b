package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDefaults(t *testing.T) {
	cfg, help, err := parseConfig(nil, nil)
	if err != nil || help {
		t.Fatal(help, err)
	}
	want := config{db: "/var/lib/kmes/events.db", batch: 1024, flushInterval: 200 * time.Millisecond,
		maxBytes: 1 << 30, maxAge: 30 * 24 * time.Hour, retentionInterval: time.Minute,
		otlpBatch: 512, otlpTimeout: 10 * time.Second}
	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("defaults %+v, want %+v", *cfg, want)
	}
}

func TestConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kmesd.conf")
	os.WriteFile(path, []byte(`# kmesd's settings
db = /srv/kmes/ev.db
batch=4096   # per transaction
flush-interval = 1s
max-bytes = 512MiB
max-age = 7d

retention-interval = 10m
otlp-endpoint = https://collector.example:4318/v1/logs
otlp-batch = 100
otlp-timeout = 3s
otlp-header = Authorization=Bearer a=b
otlp-header = X-Tenant = kmes
`), 0o644)
	cfg, _, err := parseConfig([]string{"--config", path, "--batch", "10", "--max-age=12h", "--otlp-timeout=5s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Flags win.
	want := config{db: "/srv/kmes/ev.db", batch: 10, flushInterval: time.Second,
		maxBytes: 512 << 20, maxAge: 12 * time.Hour, retentionInterval: 10 * time.Minute,
		otlpEndpoint: "https://collector.example:4318/v1/logs", otlpBatch: 100, otlpTimeout: 5 * time.Second,
		otlpHeaders: http.Header{"Authorization": {"Bearer a=b"}, "X-Tenant": {"kmes"}}}
	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("got %+v, want %+v", *cfg, want)
	}
}

func TestBadConfig(t *testing.T) {
	dir := t.TempDir()
	files := 0
	write := func(text string) string {
		files++
		path := filepath.Join(dir, fmt.Sprintf("%d.conf", files))
		os.WriteFile(path, []byte(text), 0o644)
		return path
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", write("bacth = 3\n")}, `:1: unknown setting "bacth" (settings: db, batch,`},
		{[]string{"--config", write("\n\nbatch\n")}, `:3: "batch" is not a setting: write name = value`},
		{[]string{"--config", write("max-bytes = lots\n")}, `:1: max-bytes = lots: not a size: give bytes, or a number with K, M, G or T`},
		{[]string{"--config", write("config = x\n")}, `unknown setting "config"`},
		{[]string{"--config", filepath.Join(dir, "none")}, "read config: open " + dir + "/none: no such file or directory"},
		{[]string{"--max-age", "a week"}, `invalid value "a week" for flag -max-age: not a duration: give 30d, 12h, 1m, 500ms`},
		{[]string{"--batch", "0"}, "--batch 0: give 1 or more events"},
		{[]string{"--flush-interval", "0s"}, "--flush-interval 0s: give a positive duration"},
		{[]string{"--bogus"}, "flag provided but not defined: -bogus: run 'kmesd --help'"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--otlp-endpoint", "collector:4318"}, `--otlp-endpoint "collector:4318": give an http:// or https:// URL`},
		{[]string{"--otlp-batch", "0"}, "--otlp-batch 0: give 1 or more events"},
		{[]string{"--otlp-timeout", "0s"}, "--otlp-timeout 0s: give a positive duration"},
		{[]string{"--otlp-header", "Authorization"}, "not a header: give KEY=VALUE"},
	} {
		_, _, err := parseConfig(tc.args, nil)
		var uerr *usageError
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.As(err, &uerr) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v, want a usage error of one line with %q", tc.args, err, tc.want)
		}
	}
}

func TestSizes(t *testing.T) {
	for s, want := range map[string]int64{"0": 0, "1073741824": 1 << 30, "1G": 1 << 30, "1GiB": 1 << 30, "512M": 512 << 20,
		"64k": 64 << 10, "2T": 2 << 40, "100B": 100} {
		var n int64
		if err := (sizeValue{&n}).Set(s); err != nil || n != want {
			t.Errorf("%q: %d, %v; want %d", s, n, err, want)
		}
	}
	for _, s := range []string{"", "G", "-1", "1.5G", "1X", "99999999T"} {
		var n int64
		if err := (sizeValue{&n}).Set(s); err == nil {
			t.Errorf("%q: %d, want an error", s, n)
		}
	}
}

func TestHelp(t *testing.T) {
	var out bytes.Buffer
	_, help, err := parseConfig([]string{"--help"}, &out)
	if !help || err != nil {
		t.Fatal(help, err)
	}
	for _, f := range []string{"-db", "-config", "-batch", "-flush-interval", "-max-bytes", "-max-age", "-retention-interval", "(default 1GiB)", "(default 30d)"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("--help does not list %s:\n%s", f, out.String())
		}
	}
}
