//go:build linux

package kmestest

import (
	"bufio"
	"fmt"
	"os"
	"testing"
	"unsafe"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/userspace/kmes/abi"
)

// A NewHuge ring has its data on 2 MiB pages, in the producer's mapping
// and in a reader's, at 2 MiB-aligned addresses (the kernel's smaps says
// so, not the ring), and events written across the end of the data read
// back whole. Skipped where no huge pages can be reserved (not root).
func TestNewHuge(t *testing.T) {
	const capacity = 2 * HugePageSize
	restore, err := ReserveHugePages(capacity / HugePageSize)
	if err != nil {
		t.Skipf("no 2 MiB pages for the ring: %v", err)
	}
	t.Cleanup(func() {
		if err := restore(); err != nil {
			t.Errorf("restore nr_hugepages: %v", err)
		}
	})
	r, err := NewHuge(0, capacity, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rd, err := r.Reader()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()

	if ps := rd.PageSize(); ps != HugePageSize {
		t.Errorf("data_page_size %d, want %d", ps, HugePageSize)
	}
	m, err := r.Mapping()
	if err != nil {
		t.Fatal(err)
	}
	for _, data := range [][]byte{r.data, m[abi.MapDataOff:]} {
		addr := uintptr(unsafe.Pointer(&data[0]))
		if addr%HugePageSize != 0 {
			t.Errorf("data at %#x, not 2 MiB-aligned", addr)
		}
		for _, at := range []uintptr{addr, addr + capacity} {
			if kb := kernelPageKB(t, at); kb != HugePageSize>>10 {
				t.Errorf("the data at %#x is on %d kB pages, want %d kB", at, kb, HugePageSize>>10)
			}
		}
	}

	// 1 KiB events until the ring wrapped twice, then read what is left.
	payload := append([]byte{0xc5, 0x03, 0xe8}, make([]byte, 1000)...)
	size := abi.HdrBaseSize + len("huge") + len(payload)
	for i := 0; i < 2*capacity/size+1; i++ {
		r.Emit(0, "huge", payload)
	}
	rd.SeekTail()
	var rec kmes.Record
	n := 0
	for {
		ok, err := rd.Read(&rec)
		if err != nil {
			t.Fatalf("read event %d: %v", n, err)
		}
		if !ok {
			break
		}
		if rec.Type != "huge" || len(rec.Payload) != len(payload) {
			t.Fatalf("event %d: type %q, %d bytes of payload", n, rec.Type, len(rec.Payload))
		}
		n++
	}
	if want := capacity / size; n < want-1 || n > want {
		t.Errorf("read %d events from a full ring of %d bytes, want about %d", n, capacity, want)
	}
}

// kernelPageKB returns the KernelPageSize of the mapping holding addr,
// from /proc/self/smaps.
func kernelPageKB(t *testing.T, addr uintptr) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		// A mapping's first line starts with its range, "lo-hi ...".
		var lo, hi uintptr
		if _, err := fmt.Sscanf(line, "%x-%x", &lo, &hi); err == nil {
			in = lo <= addr && addr < hi
			continue
		}
		var kb int
		if in {
			if _, err := fmt.Sscanf(line, "KernelPageSize: %d kB", &kb); err == nil {
				return kb
			}
		}
	}
	t.Fatalf("no mapping of %#x in /proc/self/smaps", addr)
	return 0
}

// A New ring's producer page says its data is on 4 KiB pages, and so does
// the ring a swap puts in its place; SetPageSize stores another value.
func TestPageSize(t *testing.T) {
	r, err := New(0, abi.CapacityMin, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	n, err := r.Swap(2 * abi.CapacityMin)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for _, c := range []struct {
		name string
		r    *Ring
		set  bool
		want uint64
	}{
		{"new", r, false, 4096},
		{"swapped in", n, false, 4096},
		{"set to 0", n, true, 0},
		{"set to 2 MiB", n, true, HugePageSize},
	} {
		if c.set {
			c.r.SetPageSize(uint32(c.want))
		}
		rd, err := c.r.Reader()
		if err != nil {
			t.Fatal(err)
		}
		if ps := rd.PageSize(); ps != c.want {
			t.Errorf("%s: data_page_size %d, want %d", c.name, ps, c.want)
		}
		rd.Close()
	}
}
