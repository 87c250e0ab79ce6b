package eventdb

import (
	"testing"
	"time"
)

// Forwarding reads each CPU in seq order, in batches of at most max,
// resumes after what Advance recorded (also in a new Forwarding), and
// retention by age keeps what is not forwarded, while retention by size
// deletes it and counts it.
func TestForwarding(t *testing.T) {
	st, path := openTestStore(t)
	st.KeepUnforwarded()
	now := time.Now()
	b := NewBatch(testBoot, 0)
	for i := range 10 {
		for cpu := range 2 {
			b.Add(Event{CPU: cpu, Seq: uint64(i + 1), Timestamp: now.Add(-time.Duration(10-i) * time.Hour).UnixNano(), Type: "t",
				Lost: uint64(i % 5 / 4)}, []byte{byte(i)})
		}
	}
	if err := st.Insert(b); err != nil {
		t.Fatal(err)
	}
	fw, err := OpenForwarding(path)
	if err != nil {
		t.Fatal(err)
	}
	next := map[int]uint64{0: 1, 1: 1}
	take := func(fw *Forwarding, max, want int) {
		t.Helper()
		fb, err := fw.Next(max)
		if err != nil {
			t.Fatal(err)
		}
		if len(fb.Events) != want {
			t.Fatalf("Next(%d): %d events, want %d", max, len(fb.Events), want)
		}
		for _, e := range fb.Events {
			if e.Seq != next[e.CPU] || e.Boot != testBoot || e.Payload[0] != byte(e.Seq-1) || (e.Lost == 1) != (e.Seq%5 == 0) {
				t.Fatalf("event %+v, want CPU %d seq %d", e, e.CPU, next[e.CPU])
			}
			next[e.CPU]++
		}
		if err := fw.Advance(fb); err != nil {
			t.Fatal(err)
		}
	}
	take(fw, 3, 3)
	take(fw, 3, 3)
	fw.Close()
	fw, err = OpenForwarding(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	take(fw, 4, 4)
	// Forwarded: 10 of 20. By age (older than 5h30m: seq 1 to 5 of each
	// CPU), only the forwarded ones go.
	var forwarded int
	for _, s := range next {
		forwarded += int(s - 1)
	}
	n, err := st.Retain(now, testBoot, 5*time.Hour+30*time.Minute, 0)
	if err != nil {
		t.Fatal(err)
	}
	old := 0
	for _, s := range next {
		old += int(min(s-1, 5))
	}
	if n != int64(old) || st.TakeUnforwardedDeleted() != 0 {
		t.Fatalf("retention by age deleted %d, want %d (the forwarded among the old)", n, old)
	}
	// By size: everything goes, the unforwarded counted.
	left := len(readRows(t, path))
	n, err = st.Retain(now, testBoot, 0, 1)
	if err != nil || n != int64(left) {
		t.Fatalf("retention by size deleted %d, %v; want %d", n, err, left)
	}
	if got := st.TakeUnforwardedDeleted(); got != int64(20-forwarded) {
		t.Errorf("%d unforwarded deleted, want %d", got, 20-forwarded)
	}
	// Nothing left to send, but the CPUs advance past what was deleted.
	fb, err := fw.Next(100)
	if err != nil || len(fb.Events) != 0 || fb.Empty() {
		t.Fatalf("after retention: %d events, empty %v, %v; want none, advancing", len(fb.Events), fb.Empty(), err)
	}
	if err := fw.Advance(fb); err != nil {
		t.Fatal(err)
	}
	if fb, err := fw.Next(100); err != nil || !fb.Empty() {
		t.Fatalf("after advancing: %+v, %v; want nothing", fb, err)
	}
}
