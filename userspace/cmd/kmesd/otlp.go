package main

// Forwarding the stored events to an OpenTelemetry collector (OTLP/HTTP
// logs, protobuf), from the database, beside the drain.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kmes-project/kmes/userspace/internal/eventdb"
	"github.com/vmihailenco/msgpack/v5"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
)

// headerValue is a repeatable KEY=VALUE flag of HTTP headers.
type headerValue struct{ h *http.Header }

func (v headerValue) String() string {
	if v.h == nil || *v.h == nil {
		return ""
	}
	var s []string
	for k := range *v.h {
		s = append(s, k+"=...") // not the values: they may be secrets
	}
	return strings.Join(s, ",")
}

func (v headerValue) Set(s string) error {
	k, val, ok := strings.Cut(s, "=")
	k = strings.TrimSpace(k)
	if !ok || k == "" || strings.ContainsAny(k, " \t:") {
		return errors.New("not a header: give KEY=VALUE (Authorization=Bearer TOKEN)")
	}
	if *v.h == nil {
		*v.h = http.Header{}
	}
	v.h.Add(k, strings.TrimSpace(val))
	return nil
}

// forwarder sends the events of the database to the collector, a batch
// at a time, and advances the forwarded table once it accepted them.
type forwarder struct {
	fw       *eventdb.Forwarding
	endpoint string
	batch    int
	headers  http.Header
	client   *http.Client
	stderr   io.Writer
	// wake is signalled (without blocking) after each commit of the
	// drain; poll is how often the forwarder looks anyway.
	wake chan struct{}
	poll time.Duration
	// backoff is the first wait after a failure, doubled up to maxBackoff.
	backoff, maxBackoff time.Duration
	resource            pcommon.Map
}

func newForwarder(fw *eventdb.Forwarding, cfg *config, stderr io.Writer) *forwarder {
	f := &forwarder{fw: fw, endpoint: cfg.otlpEndpoint, batch: cfg.otlpBatch, headers: cfg.otlpHeaders,
		client: &http.Client{Timeout: cfg.otlpTimeout}, stderr: stderr,
		wake: make(chan struct{}, 1), poll: time.Second, backoff: time.Second, maxBackoff: time.Minute,
		resource: pcommon.NewMap()}
	f.resource.PutStr("service.name", "kmesd")
	if host, err := os.Hostname(); err == nil {
		f.resource.PutStr("host.name", host)
	}
	return f
}

// notify tells the forwarder that events were stored.
func (f *forwarder) notify() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// run forwards until ctx is done. Errors of the database are reported
// and tried again: forwarding never stops the drain. A batch the
// collector took whose Advance failed (a full disk, a long lock) is
// recorded again, not sent again.
func (f *forwarder) run(ctx context.Context) {
	failing := false
	var sent *eventdb.FwdBatch // sent, its Advance failed
	for ctx.Err() == nil {
		b := sent
		var err error
		if b == nil {
			b, err = f.fw.Next(f.batch)
			if err == nil && len(b.Events) > 0 && !f.send(ctx, b) {
				return // ctx done: the batch is sent again on the next start
			}
		}
		if err == nil && !b.Empty() {
			sent = nil
			if err = f.fw.Advance(b); err != nil {
				sent = b
			}
		}
		if err != nil {
			if !failing {
				fmt.Fprintf(f.stderr, "kmesd: forwarding: %v (trying again)\n", err)
			}
			failing = true
			// Not woken by the drain's commits: the database is failing.
			select {
			case <-ctx.Done():
			case <-time.After(f.poll):
			}
			continue
		}
		failing = false
		if !b.Empty() {
			continue
		}
		select {
		case <-ctx.Done():
		case <-f.wake:
		case <-time.After(f.poll):
		}
	}
}

// send posts b until the collector accepts it, or refuses it for good
// (reported, and skipped), and returns true; false if ctx ended first.
func (f *forwarder) send(ctx context.Context, b *eventdb.FwdBatch) bool {
	// An ExportLogsServiceRequest is, on the wire, a LogsData: both are
	// field 1, the repeated ResourceLogs. plog's marshaler writes it
	// without plogotlp, which links gRPC (the static kmesd would be
	// 25.5 MB, not 16.6).
	body, err := (&plog.ProtoMarshaler{}).MarshalLogs(f.logs(b, time.Now()))
	if err != nil { // cannot be: the request is built here
		fmt.Fprintf(f.stderr, "kmesd: forwarding: encode %d events: %v (skipped)\n", len(b.Events), err)
		return true
	}
	wait := f.backoff
	failing := false
	for {
		retryAfter, err := f.post(ctx, body)
		var perm *permanentError
		switch {
		case err == nil:
			if failing {
				fmt.Fprintf(f.stderr, "kmesd: forwarding resumed\n")
			}
			return true
		case errors.As(err, &perm):
			first, last := b.Events[0], b.Events[len(b.Events)-1]
			fmt.Fprintf(f.stderr, "kmesd: forwarding: %v: %d events skipped (boot %s, CPU %d seq %d to CPU %d seq %d)\n",
				err, len(b.Events), first.Boot, first.CPU, first.Seq, last.CPU, last.Seq)
			return true
		case ctx.Err() != nil:
			return false
		}
		// Exponential backoff with jitter (half to all of the wait), or
		// what Retry-After asks.
		d := wait/2 + rand.N(wait/2+1)
		if retryAfter > 0 {
			d = retryAfter
		}
		if !failing {
			fmt.Fprintf(f.stderr, "kmesd: forwarding: %v (trying again, backing off up to %s)\n", err, f.maxBackoff)
			failing = true
		}
		wait = min(wait*2, f.maxBackoff)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
		}
	}
}

// permanentError is a refusal by the collector that sending again cannot
// change: a 4xx other than 408 and 429.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }

// post sends one request. Its error is permanentError for a refusal for
// good; retryAfter is the collector's Retry-After, if any.
func (f *forwarder) post(ctx context.Context, body []byte) (retryAfter time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.endpoint, bytes.NewReader(body))
	if err != nil {
		return 0, &permanentError{err}
	}
	for k, v := range f.headers {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := f.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		// An ExportLogsServiceResponse: partial_success (1) holds
		// rejected_log_records (1) and error_message (2).
		if ps, _, ok := protoField(msg, 1); ok {
			if _, n, _ := protoField(ps, 1); n > 0 {
				m, _, _ := protoField(ps, 2)
				fmt.Fprintf(f.stderr, "kmesd: forwarding: the collector rejected %d records: %s\n", n, m)
			}
		}
		return 0, nil
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		return parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()), fmt.Errorf("POST %s: %s", f.endpoint, resp.Status)
	default:
		return 0, &permanentError{fmt.Errorf("POST %s: %s: %s", f.endpoint, resp.Status, statusMessage(msg))}
	}
}

// statusMessage is the message of an OTLP error body (a google.rpc.Status
// in protobuf: message is field 2), or the body if it is not one.
func statusMessage(b []byte) string {
	if m, _, ok := protoField(b, 2); ok {
		return string(m)
	}
	return strings.TrimSpace(string(b))
}

// protoField finds field num of the protobuf message b: its bytes if it
// is length-delimited, its value if it is a varint. Reading the two
// small messages kmesd gets back needs no protobuf library.
func protoField(b []byte, num uint64) (data []byte, varint uint64, ok bool) {
	for len(b) > 0 {
		tag, n := uvarint(b)
		if n <= 0 {
			return nil, 0, false
		}
		b = b[n:]
		var l uint64
		switch tag & 7 {
		case 0: // varint
			if l, n = uvarint(b); n <= 0 {
				return nil, 0, false
			}
			if tag>>3 == num {
				return nil, l, true
			}
			b = b[n:]
			continue
		case 1: // 64 bits
			l, n = 8, 0
		case 2: // length-delimited
			if l, n = uvarint(b); n <= 0 {
				return nil, 0, false
			}
		case 5: // 32 bits
			l, n = 4, 0
		default:
			return nil, 0, false
		}
		b = b[n:]
		if l > uint64(len(b)) {
			return nil, 0, false
		}
		if tag>>3 == num && tag&7 == 2 {
			return b[:l], 0, true
		}
		b = b[l:]
	}
	return nil, 0, false
}

func uvarint(b []byte) (uint64, int) {
	var x uint64
	for i, c := range b {
		if i == 10 {
			return 0, -1
		}
		x |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return x, i + 1
		}
	}
	return 0, -1
}

// parseRetryAfter reads a Retry-After of seconds or an HTTP date; 0 if
// none.
func parseRetryAfter(s string, now time.Time) time.Duration {
	if s == "" {
		return 0
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 {
		return time.Duration(min(n, int64(math.MaxInt64/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(s); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// logs is b as OTLP logs: a log record per event, with a record of its
// own before an event that has a loss before it.
func (f *forwarder) logs(b *eventdb.FwdBatch, now time.Time) plog.Logs {
	logs := plog.NewLogs()
	rl := logs.ResourceLogs().AppendEmpty()
	f.resource.CopyTo(rl.Resource().Attributes())
	sl := rl.ScopeLogs().AppendEmpty()
	sl.Scope().SetName("kmesd")
	recs := sl.LogRecords()
	recs.EnsureCapacity(len(b.Events))
	observed := pcommon.NewTimestampFromTime(now)
	for i := range b.Events {
		e := &b.Events[i]
		if e.Lost > 0 || e.Dropped > 0 {
			r := recs.AppendEmpty()
			r.SetTimestamp(pcommon.Timestamp(e.LossNoted))
			r.SetObservedTimestamp(observed)
			r.SetSeverityNumber(plog.SeverityNumberWarn)
			r.SetSeverityText("WARN")
			r.SetEventName("kmes.loss")
			r.Body().SetStr(fmt.Sprintf("%d events lost (overwritten in the ring) and %d dropped (before the ring) on CPU %d before seq %d", e.Lost, e.Dropped, e.CPU, e.Seq))
			a := r.Attributes()
			a.PutStr("kmes.boot_id", e.Boot)
			a.PutInt("kmes.cpu", int64(e.CPU))
			a.PutInt("kmes.seq", int64(e.Seq))
			a.PutInt("kmes.lost", int64(e.Lost))
			a.PutInt("kmes.dropped", int64(e.Dropped))
		}
		r := recs.AppendEmpty()
		r.SetTimestamp(pcommon.Timestamp(e.Timestamp))
		r.SetObservedTimestamp(observed)
		r.SetEventName(e.Type)
		setBody(r.Body(), e.Payload)
		a := r.Attributes()
		a.PutStr("kmes.boot_id", e.Boot)
		a.PutInt("kmes.cpu", int64(e.CPU))
		a.PutInt("kmes.seq", int64(e.Seq))
		a.PutInt("kmes.origin", int64(e.Origin))
		a.PutStr("kmes.type", e.Type)
	}
	return logs
}

// setBody sets v to the payload decoded from msgpack, if the whole
// payload is one msgpack value, or to its bytes.
func setBody(v pcommon.Value, payload []byte) {
	if len(payload) > 0 {
		br := bytes.NewReader(payload)
		x, err := msgpack.NewDecoder(br).DecodeInterface()
		if err == nil && br.Len() == 0 {
			tmp := pcommon.NewValueEmpty()
			if fromMsgpack(tmp, x, 0) {
				tmp.CopyTo(v)
				return
			}
		}
	}
	v.SetEmptyBytes().FromRaw(payload)
}

// fromMsgpack sets v to x, a value msgpack decoded; false if x has a
// kind OTLP cannot hold, or nests too deep.
func fromMsgpack(v pcommon.Value, x any, depth int) bool {
	if depth > 32 {
		return false
	}
	switch x := x.(type) {
	case nil:
		// the empty value
	case bool:
		v.SetBool(x)
	case string:
		v.SetStr(x)
	case []byte:
		v.SetEmptyBytes().FromRaw(x)
	case int8:
		v.SetInt(int64(x))
	case int16:
		v.SetInt(int64(x))
	case int32:
		v.SetInt(int64(x))
	case int64:
		v.SetInt(x)
	case uint8:
		v.SetInt(int64(x))
	case uint16:
		v.SetInt(int64(x))
	case uint32:
		v.SetInt(int64(x))
	case uint64:
		if x > math.MaxInt64 {
			v.SetStr(strconv.FormatUint(x, 10))
		} else {
			v.SetInt(int64(x))
		}
	case float32:
		v.SetDouble(float64(x))
	case float64:
		v.SetDouble(x)
	case time.Time:
		v.SetStr(x.UTC().Format(time.RFC3339Nano))
	case []any:
		s := v.SetEmptySlice()
		s.EnsureCapacity(len(x))
		for _, e := range x {
			if !fromMsgpack(s.AppendEmpty(), e, depth+1) {
				return false
			}
		}
	case map[string]any:
		m := v.SetEmptyMap()
		m.EnsureCapacity(len(x))
		for k, e := range x {
			if !fromMsgpack(m.PutEmpty(k), e, depth+1) {
				return false
			}
		}
	case map[any]any:
		m := v.SetEmptyMap()
		m.EnsureCapacity(len(x))
		for k, e := range x {
			if !fromMsgpack(m.PutEmpty(fmt.Sprint(k)), e, depth+1) {
				return false
			}
		}
	default:
		return false
	}
	return true
}
