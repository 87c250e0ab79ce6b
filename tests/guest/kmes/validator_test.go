package kmesguest

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kmes-project/kmes/userspace/kmes"
	"github.com/kmes-project/kmes/userspace/kmes/abi"
	"github.com/kmes-project/kmes/vm/guest"
	"github.com/kmes-project/kmes/vm/guest/payload"
)

// The kernel validates the msgpack payloads of kmes_emit and
// kmes_emit_batch with a walk it picks at boot: AVX2 if the CPU has it,
// else SSSE3, else scalar (kmes.simd=0 keeps it scalar). It logs its
// choice once, debugfs kmes/simd shows the walk in use and turns the
// vector walk off (0) or back on (1). The vector walk only takes the
// payloads whose shape profits (runs of small values, maps of short keys
// with small values, above a few hundred bytes), and its verdict must be
// the scalar walk's. The topology says which walk its CPU model gives
// (nohuge boots -cpu max,-avx2: SSSE3; the others AVX2).

const (
	debugfs  = "/sys/kernel/debug"
	simdFile = debugfs + "/kmes/simd"
	// validatorType is the type of every event these tests emit.
	validatorType       = "kmes.test.validator"
	maxEventSizeCtl     = "/proc/sys/kernel/kmes/max_event_size"
	simdOffCmdline      = "kmes.simd=0"
	validatorLinePrefix = "kmes: msgpack validator: "
)

// validatorLine is the kernel's boot line naming the walk.
var validatorLine = regexp.MustCompile(regexp.QuoteMeta(validatorLinePrefix) + `\S+ walk.*`)

// mountDebugfs mounts debugfs where it is not yet (the guest's init does
// not).
func mountDebugfs(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(debugfs + "/kmes"); err == nil {
		return
	}
	if err := unix.Mount("debugfs", debugfs, "debugfs", 0, ""); err != nil && err != unix.EBUSY {
		t.Fatalf("mount debugfs: %v", err)
	}
}

// readSIMD returns what debugfs kmes/simd reads, as it reads.
func readSIMD(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(simdFile)
	if err != nil {
		t.Fatalf("read %s: %v", simdFile, err)
	}
	return string(b)
}

// setSIMD writes 1 (the CPU's best walk) or 0 (scalar) to debugfs
// kmes/simd.
func setSIMD(t testing.TB, on bool) {
	t.Helper()
	v := "0"
	if on {
		v = "1"
	}
	if err := os.WriteFile(simdFile, []byte(v), 0); err != nil {
		t.Fatalf("write %s to %s: %v", v, simdFile, err)
	}
}

// keepSIMD mounts debugfs, checks that kmes/simd is there and puts back,
// when the test ends, the walk it reads now.
func keepSIMD(t testing.TB) {
	t.Helper()
	mountDebugfs(t)
	if _, err := os.Stat(simdFile); err != nil {
		t.Fatalf("%v: this kernel has no choice of msgpack validator walk", err)
	}
	was := strings.TrimSpace(readSIMD(t))
	t.Cleanup(func() {
		setSIMD(t, was != guest.WalkScalar)
		if now := strings.TrimSpace(readSIMD(t)); now != was {
			t.Errorf("%s reads %q after the test, %q before", simdFile, now, was)
		}
	})
}

// simdOffAtBoot reports whether the kernel command line forces the
// scalar walk.
func simdOffAtBoot(t testing.TB) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(strings.Fields(string(b)), simdOffCmdline)
}

// cpuFlags returns the flags of the first CPU in /proc/cpuinfo.
func cpuFlags(t testing.TB) map[string]bool {
	t.Helper()
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(name) == "flags" {
			flags := map[string]bool{}
			for _, fl := range strings.Fields(value) {
				flags[fl] = true
			}
			return flags
		}
	}
	t.Fatalf("/proc/cpuinfo has no flags line (%v)", sc.Err())
	return nil
}

// wantWalk returns the walk the kernel must have picked at boot: the
// topology's, which it derives from the CPU model, checked against the
// CPU's features; the features' where the host could not tell (KVM).
func wantWalk(t testing.TB) string {
	t.Helper()
	topo := guest.Current(t).Topology
	flags := cpuFlags(t)
	best := guest.WalkScalar
	switch {
	case flags["avx2"]:
		best = guest.WalkAVX2
	case flags["ssse3"]:
		best = guest.WalkSSSE3
	}
	if simdOffAtBoot(t) {
		if topo.ValidatorWalk != guest.WalkScalar {
			t.Errorf("the command line has %s, but topology %s expects the %q walk", simdOffCmdline, topo.Name, topo.ValidatorWalk)
		}
		return guest.WalkScalar
	}
	switch topo.ValidatorWalk {
	case "":
		t.Logf("topology %s on -cpu %s: the host cannot tell the walk; the CPU's flags (avx2 %v, ssse3 %v) give %s",
			topo.Name, topo.CPUModel, flags["avx2"], flags["ssse3"], best)
		return best
	case best:
	default:
		t.Errorf("topology %s boots -cpu %s, whose walk is %s, but the guest CPU's flags (avx2 %v, ssse3 %v) give %s: QEMU did not apply the CPU model",
			topo.Name, topo.CPUModel, topo.ValidatorWalk, flags["avx2"], flags["ssse3"], best)
	}
	return topo.ValidatorWalk
}

// TestValidatorWalk: the kernel logged, once, the walk the topology's CPU
// model gives (nohuge: SSSE3, having no AVX2; the others: AVX2), debugfs
// kmes/simd reads the same, and writing 0 and then 1 to it turns the
// vector walk off and back on.
func TestValidatorWalk(t *testing.T) {
	want := wantWalk(t)
	topo := guest.Current(t).Topology
	forced := simdOffAtBoot(t)
	wantLine := validatorLinePrefix + want + " walk"
	if forced {
		wantLine += " (" + simdOffCmdline + ")"
	}
	lines := validatorLine.FindAllString(guest.KernelLog(t), -1)
	switch {
	case len(lines) == 0:
		t.Errorf("the kernel log has no %q line (topology %s, -cpu %s)", wantLine, topo.Name, topo.CPUModel)
	case len(lines) > 1:
		t.Errorf("the kernel log has %d validator lines, want one (at boot): %q", len(lines), lines)
	}
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != wantLine {
			t.Errorf("kernel log: %q, want %q (topology %s, -cpu %s)", l, wantLine, topo.Name, topo.CPUModel)
		}
	}

	keepSIMD(t)
	if got := readSIMD(t); got != want+"\n" {
		t.Errorf("%s reads %q, want %q (topology %s, -cpu %s)", simdFile, got, want+"\n", topo.Name, topo.CPUModel)
	}
	setSIMD(t, false)
	if got := readSIMD(t); got != guest.WalkScalar+"\n" {
		t.Errorf("after writing 0, %s reads %q, want %q", simdFile, got, guest.WalkScalar+"\n")
	}
	if forced {
		return // what 1 does after kmes.simd=0 is not this test's business
	}
	setSIMD(t, true)
	if got := readSIMD(t); got != want+"\n" {
		t.Errorf("after writing 1, %s reads %q, want %q", simdFile, got, want+"\n")
	}
}

// emitEntry is struct kmes_emit_entry, with Go pointers: the events stay
// alive and in place while the entries are.
type emitEntry struct {
	typ        *byte
	typeLen    uint16
	_          [6]byte
	payload    *byte
	payloadLen uint32
	_          uint32
}

// checkEntryLayout fails the test unless emitEntry is laid out as the
// UAPI's struct kmes_emit_entry.
func checkEntryLayout(t testing.TB) {
	t.Helper()
	var e emitEntry
	if unsafe.Sizeof(e) != abi.EmitEntrySize || unsafe.Offsetof(e.typ) != abi.EmitEntryTypeOff ||
		unsafe.Offsetof(e.typeLen) != abi.EmitEntryTypeLenOff || unsafe.Offsetof(e.payload) != abi.EmitEntryPayloadOff ||
		unsafe.Offsetof(e.payloadLen) != abi.EmitEntryPayloadLenOff {
		t.Fatalf("emitEntry is not struct kmes_emit_entry's layout")
	}
}

// rawEmit is kmes_emit without the library's check of the payload: the
// kernel judges every payload.
func rawEmit(typ string, p []byte) unix.Errno {
	_, _, errno := unix.Syscall6(abi.SysEmit,
		uintptr(unsafe.Pointer(unsafe.StringData(typ))), uintptr(len(typ)),
		uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)), 0, 0)
	return errno
}

// rawEmitBatch is kmes_emit_batch of payloads of type typ, unchecked; it
// returns the errno and *emitted_out.
func rawEmitBatch(typ string, payloads [][]byte) (unix.Errno, uint32) {
	entries := make([]emitEntry, len(payloads))
	for i, p := range payloads {
		entries[i] = emitEntry{typ: unsafe.StringData(typ), typeLen: uint16(len(typ)), payload: unsafe.SliceData(p), payloadLen: uint32(len(p))}
	}
	emitted := new(uint32)
	*emitted = ^uint32(0)
	_, _, errno := unix.Syscall(abi.SysEmitBatch,
		uintptr(unsafe.Pointer(unsafe.SliceData(entries))), uintptr(len(entries)), uintptr(unsafe.Pointer(emitted)))
	return errno, *emitted
}

// validatorCase is a payload and whether it is valid msgpack.
type validatorCase struct {
	name    string // shape, size and variant
	payload []byte
	valid   bool
	// companion is a valid payload of the same shape, the other entries
	// of the case's batch.
	companion []byte
}

// verdict is what the kernel said to a case: kmes_emit's errno, and
// kmes_emit_batch's errno and emitted count for the batch of companion,
// companion, the case, companion; and for the same batch with its last
// entry's payload unreadable (faulted), where an invalid case must still
// be the errno: the kernel copies a write phase's entries before it walks
// their payloads, and the first failing entry decides.
type verdict struct {
	emit, batch    unix.Errno
	emitted        uint32
	faulted        unix.Errno
	faultedEmitted uint32
}

// batchIndex is the case's index in its batch of batchLen entries.
const batchIndex, batchLen = 2, 4

func judge(c validatorCase, unreadable []byte) verdict {
	var v verdict
	v.emit = rawEmit(validatorType, c.payload)
	batch := [][]byte{c.companion, c.companion, c.companion, c.companion}
	batch[batchIndex] = c.payload
	v.batch, v.emitted = rawEmitBatch(validatorType, batch)
	batch[batchLen-1] = unreadable[:min(len(c.companion), len(unreadable))]
	v.faulted, v.faultedEmitted = rawEmitBatch(validatorType, batch)
	return v
}

// want is the verdict the scalar validator gives.
func (c validatorCase) want() verdict {
	if c.valid {
		return verdict{0, 0, batchLen, unix.EFAULT, batchLen - 1}
	}
	return verdict{unix.EINVAL, unix.EINVAL, batchIndex, unix.EINVAL, batchIndex}
}

// unreadablePage is a page of the address space that no access may touch.
func unreadablePage(t testing.TB) []byte {
	t.Helper()
	b, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatalf("mmap of a PROT_NONE page: %v", err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	return b
}

func errnoText(e unix.Errno) string {
	if e == 0 {
		return "accepted"
	}
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return e.Error()
}

func (v verdict) emitText() string { return errnoText(v.emit) }

func (v verdict) batchText() string {
	return fmt.Sprintf("%s with %d emitted", errnoText(v.batch), v.emitted)
}

// intsSizes and mapsSizes are the payload sizes of the two shapes: around
// the vector walk's threshold (a few hundred bytes), its blocks and its
// own bounds, up to 60 KiB (max_event_size is 64 KiB, header and type
// included).
var (
	intsSizes = []int{300, 301, 384, 511, 512, 1024, 4095, 4096, 4097, 16384, 16385, 32769, 61440}
	mapsSizes = []int{1024, 1500, 4096, 4097, 16385, 32769, 61440}
	// boundarySizes also get a 0xc1 at offsets around the vector blocks,
	// from the start and from the end.
	boundarySizes = []int{300, 1024, 4097, 16385, 61440}
)

// put returns a copy of b with b[at] = v.
func put(b []byte, at int, v ...byte) []byte {
	c := slices.Clone(b)
	copy(c[at:], v)
	return c
}

// withCount returns a copy of b whose top-level array counts n elements.
func withCount(b []byte, n int) []byte {
	c := slices.Clone(b)
	payload.SetCount(c, n)
	return c
}

// intsCases are arrays of small one-byte values, valid and made invalid.
func intsCases() []validatorCase {
	var cs []validatorCase
	for _, size := range intsSizes {
		p := payload.Ints(size, uint64(size))
		b, e := p.Bytes, p.Elems
		n := len(e)
		comp := payload.Ints(min(size, 1024), 1).Bytes
		add := func(variant string, b []byte, valid bool) {
			cs = append(cs, validatorCase{fmt.Sprintf("ints_%dB_%s", size, variant), b, valid, comp})
		}
		add("valid", b, true)
		add("truncated_by_1", b[:size-1], false)
		add("c1_first", put(b, e[0], 0xc1), false)
		add("c1_middle", put(b, e[n/2], 0xc1), false)
		add("c1_last", put(b, e[n-1], 0xc1), false)
		add("count_plus_1", withCount(b, n+1), false)
		add("count_minus_1", withCount(b, n-1), false) // trailing bytes
		// The last element needs more bytes than are left: the count
		// still fits the size, so only a walk to the end finds it.
		add("fixstr_past_end", put(b, e[n-1], 0xa2), false)
		add("uint8_past_end", put(b, e[n-1], 0xcc), false)
		add("uint16_past_end", put(b, e[n-2], 0xcd), false)
		// Bytes that look like 0xc1 but are data: the payload of uint8
		// values and of a fixstr, in the middle of the run. Valid.
		data := slices.Clone(b)
		merged := 0
		for k := 0; k < 8; k++ { // eight uint8 193, each two elements' bytes
			copy(data[e[n/2+2*k]:], []byte{0xcc, 0xc1})
			merged++
		}
		copy(data[e[n/4]:], []byte{0xa2, 0xc1, 0xc1}) // three bytes, one str
		merged += 2
		payload.SetCount(data, n-merged)
		add("c1_as_data", data, true)
		if slices.Contains(boundarySizes, size) {
			for _, off := range []int{15, 16, 31, 32, 63, 64, size - 33, size - 32, size - 17, size - 16, size - 2} {
				if off >= e[0] && off < size {
					add(fmt.Sprintf("c1_at_%d", off), put(b, off, 0xc1), false)
				}
			}
		}
	}
	return cs
}

// mapsCases are arrays of maps of short keys with small values, valid and
// made invalid.
func mapsCases(t testing.TB) []validatorCase {
	t.Helper()
	var cs []validatorCase
	for _, size := range mapsSizes {
		p := payload.Maps(size, uint64(size))
		b := p.Bytes
		comp := payload.Maps(min(size, 1024), 1).Bytes
		add := func(variant string, b []byte, valid bool) {
			cs = append(cs, validatorCase{fmt.Sprintf("maps_%dB_%s", size, variant), b, valid, comp})
		}
		last := func(s []int) int { return s[len(s)-1] }
		mid := func(s []int) int { return s[len(s)/2] }
		add("valid", b, true)
		add("truncated_by_1", b[:size-1], false)
		lastKey := last(p.Keys)
		keyLen := int(b[lastKey] & 0x1f)
		add("truncated_in_last_key", b[:lastKey+1+keyLen/2], false)
		add("c1_value_middle", put(b, mid(p.Values), 0xc1), false)
		add("c1_key_middle", put(b, mid(p.Keys), 0xc1), false)
		add("c1_map_header_middle", put(b, mid(p.Maps), 0xc1), false)
		add("c1_last_value", put(b, last(p.Values), 0xc1), false)
		add("map_count_plus_1_middle", mapCountPlus1(t, b, p.Maps, len(p.Maps)/2, 1), false)
		add("map_count_plus_1_last", mapCountPlus1(t, b, p.Maps, len(p.Maps)-1, -1), false)
		add("array_count_plus_1", withCount(b, len(p.Elems)+1), false)
		add("array_count_minus_1", withCount(b, len(p.Elems)-1), false)
		// The last key claims one byte more than the payload has left.
		over := size - (lastKey + 1) + 1
		if over > 31 {
			t.Fatalf("test bug: maps_%dB: %d bytes after the last key, too many for a fixstr", size, over-1)
		}
		add("key_past_end", put(b, lastKey, 0xa0|byte(over)), false)
		// Bytes that look like 0xc1 but are data: the first character of
		// every key, and every byte of every uint8, uint16 and float32.
		// Valid: str contents are not checked.
		data := slices.Clone(b)
		for _, k := range p.Keys {
			data[k+1] = 0xc1
		}
		for _, v := range p.Values {
			n := map[byte]int{0xcc: 1, 0xcd: 2, 0xca: 4}[data[v]]
			for i := range n {
				data[v+1+i] = 0xc1
			}
		}
		add("c1_as_data", data, true)
	}
	return cs
}

// mapCountPlus1 returns a copy of b in which the first map from the i-th
// on (going by step) whose count can grow by one in its header claims
// one entry more than it has.
func mapCountPlus1(t testing.TB, b []byte, maps []int, i, step int) []byte {
	t.Helper()
	for ; i >= 0 && i < len(maps); i += step {
		at := maps[i]
		switch h := b[at]; {
		case h >= 0x80 && h < 0x8f:
			return put(b, at, h+1)
		case h == 0xde:
			n := int(b[at+1])<<8 | int(b[at+2])
			return put(b, at+1, byte((n+1)>>8), byte(n+1))
		}
	}
	t.Fatalf("test bug: no map whose count can grow")
	return nil
}

// TestValidatorVerdicts emits, with kmes_emit and as entry 2 of 4 of a
// kmes_emit_batch, payloads of the shapes the vector walk takes (arrays of
// small ints of 300 B to 60 KiB; arrays of maps of 5 to 20 short keys with
// fixint, uint8, uint16 and float32 values of 1 KiB to 60 KiB), valid and
// made invalid in the ways a walk that skips ahead could miss. With the
// walk the kernel picked at boot and then with the scalar walk (debugfs
// kmes/simd 0; put back after), every verdict must be the same and the
// right one: accepted (all 4 of the batch emitted) or EINVAL (the batch
// stopping at its entry 2). The Go validator, which the kernel's scalar one
// is checked against on the host, confirms which cases are valid.
func TestValidatorVerdicts(t *testing.T) {
	checkEntryLayout(t)
	pin(t, targetCPU())
	want := wantWalk(t)
	keepSIMD(t)

	cases := append(intsCases(), mapsCases(t)...)
	maxEvent := readSysctl(t, maxEventSizeCtl)
	for _, c := range cases {
		if size := eventSize(validatorType, c.payload); uint64(size) > maxEvent {
			t.Fatalf("%s: an event of %d bytes, above kernel.kmes.max_event_size %d", c.name, size, maxEvent)
		}
		if err := kmes.ValidatePayload(c.payload, kmes.DefaultMaxNestingDepth); (err == nil) != c.valid {
			t.Fatalf("test bug: %s (%d bytes) is meant to be valid: %v; the Go validator says %v", c.name, len(c.payload), c.valid, err)
		}
	}

	walks := []struct {
		name string
		on   bool
	}{{want, true}, {guest.WalkScalar, false}}
	if want == guest.WalkScalar {
		// kmes.simd=0: what writing 1 does then is not this test's
		// business.
		walks[0].on = false
		t.Logf("the kernel's walk is scalar: both runs take the scalar walk")
	}
	unreadable := unreadablePage(t)
	got := make([][]verdict, len(walks))
	for i, w := range walks {
		setSIMD(t, w.on)
		if now := strings.TrimSpace(readSIMD(t)); now != w.name {
			t.Fatalf("after writing %d to %s it reads %q, want %q", boolInt(w.on), simdFile, now, w.name)
		}
		for _, c := range cases {
			got[i] = append(got[i], judge(c, unreadable))
		}
	}
	bad := 0
	for j, c := range cases {
		vec, scalar, right := got[0][j], got[1][j], c.want()
		if vec.emit != scalar.emit || vec.emit != right.emit {
			bad++
			t.Errorf("%s (%d-byte payload): kmes_emit: %s with the %s walk, %s with the scalar walk; want %s",
				c.name, len(c.payload), vec.emitText(), want, scalar.emitText(), right.emitText())
		}
		if vec.batch != scalar.batch || vec.emitted != scalar.emitted || vec.batch != right.batch || vec.emitted != right.emitted {
			bad++
			t.Errorf("%s (%d-byte payload) as entry %d of a batch of %d: kmes_emit_batch: %s with the %s walk, %s with the scalar walk; want %s",
				c.name, len(c.payload), batchIndex, batchLen, vec.batchText(), want, scalar.batchText(), right.batchText())
		}
		if vec.faulted != scalar.faulted || vec.faultedEmitted != scalar.faultedEmitted || vec.faulted != right.faulted || vec.faultedEmitted != right.faultedEmitted {
			bad++
			t.Errorf("%s (%d-byte payload) as entry %d of a batch of %d whose last payload is unreadable: kmes_emit_batch: %s with %d emitted with the %s walk, %s with %d with the scalar walk; want %s with %d",
				c.name, len(c.payload), batchIndex, batchLen, errnoText(vec.faulted), vec.faultedEmitted, want,
				errnoText(scalar.faulted), scalar.faultedEmitted, errnoText(right.faulted), right.faultedEmitted)
		}
	}
	t.Logf("%d payloads (%d valid), each with kmes_emit and in a batch, with the %s and the scalar walk: %d wrong verdicts",
		len(cases), countValid(cases), want, bad)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func countValid(cs []validatorCase) int {
	n := 0
	for _, c := range cs {
		if c.valid {
			n++
		}
	}
	return n
}
