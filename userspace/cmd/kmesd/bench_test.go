//go:build linux

package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kmes-project/kmes/userspace/internal/eventdb"
	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/userspace/kmes/abi"
	"github.com/kmes-project/kmes/userspace/kmestest"
)

// BenchmarkStore measures kmesd's path from the rings into SQLite, with
// payloads of 64 bytes and 1 KiB: drain-events/s is the reading and
// copying into batches alone, db-events/s the transactions alone,
// events/s both (kmesd does them one after the other, on one goroutine).
// Emitting into the simulated rings is not timed.
//
//	go test -run '^$' -bench Store -benchtime 1000000x ./userspace/cmd/kmesd/
func BenchmarkStore(b *testing.B) {
	for _, size := range []int{64, 1024} {
		b.Run(fmt.Sprintf("payload=%d", size), func(b *testing.B) { benchStore(b, size) })
	}
}

func benchStore(b *testing.B, size int) {
	const cpus = 4
	const capacity = 64 << 20
	src, err := kmestest.NewSource(cpus, capacity)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	st, err := eventdb.Open(filepath.Join(b.TempDir(), "events.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	rd, err := kmes.NewReader(&kmes.Options{Source: src})
	if err != nil {
		b.Fatal(err)
	}
	defer rd.Close()
	rd.SetDeadline(time.Unix(1, 0)) // reads that never wait
	cfg, _, err := parseConfig(nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	d := newDrainer(rd, st, cfg, testBoot, map[int]uint64{}, io.Discard)

	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i)
	}
	typ := "bench.event"
	// A round fills each ring to half its capacity.
	perRound := cpus * (capacity / 2 / (abi.HdrBaseSize + len(typ) + size))
	events := make([]kmestest.Event, 256)
	for i := range events {
		events[i] = kmestest.Event{Type: typ, Payload: payload}
	}
	var drainT, dbT time.Duration
	b.ResetTimer()
	for done := 0; done < b.N; {
		round := min(b.N-done, perRound)
		b.StopTimer()
		for i := 0; i < round; {
			n := min(len(events), round-i)
			src.EmitBatch((i/len(events))%cpus, kmes.OriginUser, events[:n])
			i += n
		}
		b.StartTimer()
		for stored := 0; stored < round; {
			t0 := time.Now()
			n, err := rd.ReadEvents(d.views[:cfg.batch-len(d.b.Events)])
			d.take(d.views[:n])
			t1 := time.Now()
			drainT += t1.Sub(t0)
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				b.Fatal(err)
			}
			if len(d.b.Events) == cfg.batch || (err != nil && len(d.b.Events) > 0) {
				stored += len(d.b.Events)
				if err := st.Insert(d.b); err != nil {
					b.Fatal(err)
				}
				d.b.Reset()
				dbT += time.Since(t1)
			}
		}
		done += round
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/drainT.Seconds(), "drain-events/s")
	b.ReportMetric(float64(b.N)/dbT.Seconds(), "db-events/s")
	b.ReportMetric(float64(b.N)/(drainT+dbT).Seconds(), "events/s")
	if n := count(st.Path()); n != b.N {
		b.Fatalf("%d events stored, want %d", n, b.N)
	}
}
