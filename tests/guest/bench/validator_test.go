package bench

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/kmes-project/kmes/userspace/kmes/abi"
	"github.com/kmes-project/kmes/vm/guest"
	"github.com/kmes-project/kmes/vm/guest/payload"
)

// simdFile turns the msgpack validator's vector walk off (0: scalar) and
// back on (1: the CPU's best); it reads the walk in use.
const simdFile = debugfs + "/kmes/simd"

func readWalk(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(simdFile)
	if err != nil {
		t.Fatalf("read %s: %v", simdFile, err)
	}
	return strings.TrimSpace(string(b))
}

func setWalk(t *testing.T, vector bool) {
	t.Helper()
	v := "0"
	if vector {
		v = "1"
	}
	if err := os.WriteFile(simdFile, []byte(v), 0); err != nil {
		t.Fatalf("write %s to %s: %v", v, simdFile, err)
	}
}

// validatorEvents is how many events each TestValidatorWalk measurement
// emits, by event size (a sixteenth as many batches of 16): under icount
// the numbers repeat exactly, so fewer than TestSyscalls emits do.
var validatorEvents = map[int]int{64: 10000, 1024: 4000, 16384: 400}

// TestValidatorWalk measures what the msgpack validator's vector walk
// saves: kmes_emit (emit_<shape>_<size>_<walk>) and kmes_emit_batch of 16
// per event (batch16_<shape>_<size>_<walk>) of events of 64 B, 1 KiB and
// 16 KiB (header and 5-byte type included, as emit_64B's) whose payload
// is an array of small one-byte values (ints: fixints, nil, bool) or an
// array of maps of 5 to 20 short keys with fixint, uint8, uint16 and
// float32 values (maps), with the walk the kernel picked at boot (simd:
// AVX2 on -cpu max) and with the scalar walk (debugfs kmes/simd 0; put
// back after). The two walks of each are measured one after the other,
// so that their rows are next to each other in the table.
func TestValidatorWalk(t *testing.T) {
	pinCPU0(t)
	mountDebugfs(t)
	if _, err := os.Stat(simdFile); err != nil {
		t.Fatalf("%v: this kernel has no choice of msgpack validator walk", err)
	}
	boot := readWalk(t)
	topo := guest.Current(t).Topology
	switch want := topo.ValidatorWalk; {
	case boot == guest.WalkScalar:
		t.Errorf("the kernel's validator walk is scalar (-cpu %s): the _simd numbers measure it too", topo.CPUModel)
	case want != "" && boot != want:
		t.Errorf("the kernel's validator walk is %s, -cpu %s gives %s", boot, topo.CPUModel, want)
	default:
		t.Logf("-cpu %s: the %s walk (_simd) against the scalar one (_scalar)", topo.CPUModel, boot)
	}
	t.Cleanup(func() { setWalk(t, boot != guest.WalkScalar) })

	walks := []struct {
		name   string
		vector bool
	}{{"simd", true}, {"scalar", false}}
	for _, shape := range []struct {
		name  string
		build func(int, uint64) payload.Payload
	}{{"ints", payload.Ints}, {"maps", payload.Maps}} {
		for _, size := range []int{64, 1024, 16384} {
			ev := event{typ: benchType, payload: shape.build(size-abi.HdrBaseSize-len(benchType), uint64(size)).Bytes}
			b := newBatch(ev, 16)
			n := validatorEvents[size]
			what := shape.name + "_" + sizeName(size)
			for _, call := range []struct {
				name string
				run  func() float64
			}{
				{"emit_" + what, func() float64 { return perOp(n, 1, func() { must(t, "kmes_emit of "+what, ev.emit()) }) }},
				{"batch16_" + what, func() float64 { return perOp(n/16, 16, func() { must(t, "kmes_emit_batch of 16 "+what, b.emit()) }) }},
			} {
				for _, w := range walks {
					setWalk(t, w.vector)
					if got := readWalk(t); (got == guest.WalkScalar) == w.vector && boot != guest.WalkScalar {
						t.Fatalf("%s_%s: debugfs kmes/simd reads %q", call.name, w.name, got)
					}
					guest.Record(t, fmt.Sprintf("%s_%s", call.name, w.name), call.run(), "ns/event")
				}
			}
		}
	}
}
