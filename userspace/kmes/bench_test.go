//go:build linux && amd64

package kmes_test

import (
	"fmt"
	"testing"

	"github.com/kmes-project/kmes/userspace/kmes"
)

// BenchmarkDrain reads a full 64 MiB ring (larger than the caches) with a
// handler that does some work per event (validating the payload), beside
// a plain copy of the same bytes.
func BenchmarkDrain(b *testing.B) {
	const capacity = 64 << 20
	for _, size := range []int{64, 1024} {
		p, r := newSimRing(b, capacity)
		payload := payloadFor(0, size-kmes.HdrBaseSize-len("bench")-3)
		payload = append([]byte{0xc5, byte(len(payload) >> 8), byte(len(payload))}, payload...)[:size-kmes.HdrBaseSize-len("bench")]
		payload[0], payload[1], payload[2] = 0xc5, byte((len(payload)-3)>>8), byte(len(payload)-3)
		for p.WritePos() < capacity-uint64(size) {
			p.Emit(0, "bench", payload)
		}
		n := p.WritePos()
		{
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
		}
		b.Run(fmt.Sprintf("%dB/memcpy", size), func(b *testing.B) {
			m, err := p.Mapping()
			if err != nil {
				b.Fatal(err)
			}
			src := m[kmes.MapDataOff:][:n]
			dst := make([]byte, size)
			b.SetBytes(int64(n))
			for b.Loop() {
				for off := 0; off+size <= len(src); off += size {
					copy(dst, src[off:off+size])
				}
			}
		})
	}
}
