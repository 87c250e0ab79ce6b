//go:build linux && amd64

package kmes_test

import (
	"fmt"
	"testing"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/userspace/kmes/abi"
	"github.com/kmes-project/kmes/userspace/kmestest"
)

// BenchmarkDrain reads a full 64 MiB ring (larger than the caches) with a
// handler that does some work per event (validating the payload), beside
// a plain copy of the same bytes, with the ring's data on 4 KiB pages and
// on 2 MiB pages (kmestest.NewHuge: 32 huge pages, reserved through
// /proc/sys/vm/nr_hugepages for the run; skipped if they cannot be), as
// the kernel maps a ring's data on either (KMES.md section 9.1.2). A 2 MiB
// page takes one TLB entry where 4 KiB pages take 512.
func BenchmarkDrain(b *testing.B) {
	const capacity = 64 << 20
	for _, pages := range []string{"4KiB", "2MiB"} {
		b.Run(pages+"-pages", func(b *testing.B) {
			newRing := kmestest.New
			if pages == "2MiB" {
				restore, err := kmestest.ReserveHugePages(capacity / kmestest.HugePageSize)
				if err != nil {
					b.Skipf("no 2 MiB pages for the ring: %v", err)
				}
				b.Cleanup(func() { restore() })
				newRing = kmestest.NewHuge
			}
			for _, size := range []int{64, 1024} {
				benchDrain(b, newRing, capacity, size)
			}
		})
	}
}

// benchDrain fills a ring that newRing makes with size-byte events and
// runs the read and memcpy benchmarks over it.
func benchDrain(b *testing.B, newRing func(int, uint64, uint64) (*kmestest.Ring, error), capacity uint64, size int) {
	p, err := newRing(3, capacity, 1)
	if err != nil {
		b.Fatal(err)
	}
	// Closed before the next size's ring: the huge pages are for one.
	defer p.Close()
	r, err := p.Reader()
	if err != nil {
		b.Fatal(err)
	}
	payload := payloadFor(0, size-abi.HdrBaseSize-len("bench")-3)
	payload = append([]byte{0xc5, byte(len(payload) >> 8), byte(len(payload))}, payload...)[:size-abi.HdrBaseSize-len("bench")]
	payload[0], payload[1], payload[2] = 0xc5, byte((len(payload)-3)>>8), byte(len(payload)-3)
	for p.WritePos() < capacity-uint64(size) {
		p.Emit(0, "bench", payload)
	}
	n := p.WritePos()
	b.Run(fmt.Sprintf("%dB/read", size), func(b *testing.B) {
		b.SetBytes(int64(n))
		var rec kmes.Record
		for b.Loop() {
			r.SeekTail()
			for {
				ok, err := r.Read(&rec)
				if err != nil {
					b.Fatal(err)
				}
				if !ok {
					break
				}
				if err := kmes.ValidatePayload(rec.Payload, 32); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run(fmt.Sprintf("%dB/memcpy", size), func(b *testing.B) {
		m, err := p.Mapping()
		if err != nil {
			b.Fatal(err)
		}
		src := m[abi.MapDataOff:][:n]
		dst := make([]byte, size)
		b.SetBytes(int64(n))
		for b.Loop() {
			for off := 0; off+size <= len(src); off += size {
				copy(dst, src[off:off+size])
			}
		}
	})
}
