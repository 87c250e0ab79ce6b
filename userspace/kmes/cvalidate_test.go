package kmes

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"unicode/utf8"

	"github.com/kmes-project/kmes/userspace/internal/series"
)

// The kernel's validator, kernel/kmes/validate.{c,h}, also builds as
// userspace C. TestCValidatorAgrees compiles it under ASan and UBSan on the
// host and requires it to give the same verdict as ValidatePayload and
// ValidateType on the table cases, their prefixes and a few hundred
// thousand deterministic pseudo-random inputs.

const validatorFiles = "kernel/kmes/validate.*"

// validatorSources returns a directory holding validate.c and validate.h
// as the patch series adds them.
func validatorSources(t testing.TB) string {
	t.Helper()
	dir := series.Files(t, validatorFiles, "kernel/kmes/validate.c", "kernel/kmes/validate.h")
	return filepath.Join(dir, "kernel", "kmes")
}

// The driver reads records from stdin (u8 kind: 0 msgpack with the scalar
// walk, 2 with the SSSE3 walk, 3 with the AVX2 walk, plus 0x80 for the
// walk resumed in pieces, 1 UTF-8; u32
// max_depth; u32 len; len bytes; integers little-endian) and writes one
// byte per record, 1 if valid; with -i it flushes it at once, for a caller
// that waits for each verdict (FuzzCValidator). Each input is copied to the
// end of a mapping followed by a page with no access, so that any read past
// it faults, also the vector loads, which ASan does not see; an empty one
// is passed as NULL.
const cDriver = `#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "validate.h"

static u32 le32(const unsigned char *b)
{
	return b[0] | b[1] << 8 | b[2] << 16 | (u32)b[3] << 24;
}

/* Room for len bytes that end where an inaccessible page starts. */
static unsigned char *guarded(size_t len)
{
	static unsigned char *map;
	static size_t room;
	size_t page = sysconf(_SC_PAGESIZE);

	if (len > room) {
		if (map)
			munmap(map, room + page);
		room = (len + page - 1) / page * page;
		map = mmap(NULL, room + page, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (map == MAP_FAILED || mprotect(map + room, page, PROT_NONE))
			return NULL;
	}
	return map + room - len;
}

int main(int argc, char **argv)
{
	static struct kmes_msgpack_stack stack;
	int each = argc > 1 && !strcmp(argv[1], "-i");
	unsigned char hdr[9];
	size_t n;

	while ((n = fread(hdr, 1, sizeof(hdr), stdin)) == sizeof(hdr)) {
		u32 depth = le32(hdr + 1), len = le32(hdr + 5);
		unsigned char *buf = NULL, kind;
		enum kmes_mp_verdict v;
		enum kmes_mp_impl impl;
		int ok;

		if (len) {
			buf = guarded(len);
			if (!buf)
				return 2;
			if (fread(buf, 1, len, stdin) != len)
				return 3;
		}
		memset(&stack, 0xa5, sizeof(stack));
		kind = hdr[0] & 0x7f;
		impl = kind == 3 ? KMES_MP_AVX2 :
		       kind == 2 ? KMES_MP_SSSE3 : KMES_MP_SCALAR;
		if ((kind == 3 && !__builtin_cpu_supports("avx2")) ||
		    (kind == 2 && !__builtin_cpu_supports("ssse3")))
			return 6;
		if (kind == 1) {
			ok = kmes_utf8_valid(buf, len);
		} else if (hdr[0] & 0x80) {
			/* In pieces of 1 to 61 bytes, as the kernel resumes. */
			v = kmes_msgpack_start(&stack, buf, len, depth);
			while (v == KMES_MP_MORE)
				v = kmes_msgpack_resume(&stack, 1 + len % 61,
							impl);
			ok = v == KMES_MP_VALID;
		} else if (kind == 0) {
			ok = kmes_msgpack_valid(buf, len, depth, &stack);
		} else {
			ok = kmes_msgpack_valid_with(buf, len, depth, &stack,
						     impl);
		}
		putchar(ok ? 1 : 0);
		if (each && fflush(stdout))
			return 5;
	}
	if (n != 0)
		return 4;
	return fflush(stdout) ? 5 : 0;
}
`

// cInput is one record for the driver.
type cInput struct {
	utf8     bool
	maxDepth uint32
	b        []byte
	impl     mpImpl // the msgpack walk
	pieces   bool   // resumed in pieces (kmes_msgpack_resume())
}

// mpImpl is enum kmes_mp_impl: how the C walk takes leaves in containers.
type mpImpl int

const (
	mpScalar mpImpl = iota
	mpSSSE3
	mpAVX2
)

var mpImplNames = []string{"scalar", "SSSE3", "AVX2"}

// everyImpl is ins with each msgpack input once per walk, whole and in
// pieces.
func everyImpl(ins []cInput) []cInput {
	out := make([]cInput, 0, 6*len(ins))
	for _, in := range ins {
		if in.utf8 {
			out = append(out, in)
			continue
		}
		for impl := range mpImplNames {
			in.impl = mpImpl(impl)
			for _, pieces := range []bool{false, true} {
				in.pieces = pieces
				out = append(out, in)
			}
		}
	}
	return out
}

// goVerdict is what the Go validators say about in.
func (in cInput) goVerdict() bool {
	if in.utf8 {
		// The C function takes an empty string as UTF-8; the empty
		// type is refused by the system call before it is called.
		return len(in.b) == 0 || ValidateType(string(in.b)) == nil
	}
	return ValidatePayload(in.b, int(in.maxDepth)) == nil
}

func (in cInput) String() string {
	b, more := in.b, ""
	if len(b) > 64 {
		b, more = b[:64], " ..."
	}
	if in.utf8 {
		return fmt.Sprintf("utf8, %d bytes: % x%s", len(in.b), b, more)
	}
	walk := mpImplNames[in.impl] + " walk"
	if in.pieces {
		walk += ", in pieces"
	}
	return fmt.Sprintf("msgpack (%s), max_depth %d, %d bytes: % x%s", walk, in.maxDepth, len(in.b), b, more)
}

func buildCDriver(t testing.TB) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Fatalf("gcc is needed to test the kernel's validator on the host (apt-get install gcc): %v", err)
	}
	src := validatorSources(t)
	dir := t.TempDir()
	for _, f := range []string{"validate.c", "validate.h"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "driver.c"), []byte(cDriver), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "driver")
	cmd := exec.Command(gcc, "-std=gnu11", "-O1", "-g", "-fsanitize=address,undefined",
		"-fno-sanitize-recover=all", "-Wall", "-Wextra", "-Werror",
		"-o", bin, "driver.c", "validate.c")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("compiling the C validator: %v\n%s", err, out)
	}
	return bin
}

// record appends in as the driver reads it.
func (in cInput) record(b []byte) []byte {
	kind := map[mpImpl]byte{mpScalar: 0, mpSSSE3: 2, mpAVX2: 3}[in.impl]
	if in.pieces {
		kind |= 0x80
	}
	if in.utf8 {
		kind = 1
	}
	b = append(b, kind)
	b = binary.LittleEndian.AppendUint32(b, in.maxDepth)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(in.b)))
	return append(b, in.b...)
}

// runC returns the C validator's verdicts on ins.
func runC(t *testing.T, bin string, ins []cInput) []bool {
	t.Helper()
	var stdin bytes.Buffer
	for _, in := range ins {
		stdin.Write(in.record(nil))
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = &stdin, &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("C validator: %v\n%s", err, stderr.Bytes())
	}
	if stdout.Len() != len(ins) {
		t.Fatalf("C validator: %d verdicts for %d inputs\n%s", stdout.Len(), len(ins), stderr.Bytes())
	}
	v := make([]bool, len(ins))
	for i, b := range stdout.Bytes() {
		v[i] = b == 1
	}
	return v
}

// depthLimitsC are the limits random msgpack inputs are checked against.
var depthLimitsC = []uint32{0, 1, 2, 3, 4, 5, 32, 255, 256, 257, 1000, math.MaxUint32}

// tableInputs: every table case, every prefix of a valid one, each valid
// one with a byte after it, and every UTF-8 case.
func tableInputs() (ins []cInput) {
	for _, c := range payloadCases() {
		d := uint32(max(0, min(c.maxDepth, math.MaxUint32)))
		ins = append(ins, cInput{utf8: false, maxDepth: d, b: c.in})
		if !c.valid {
			continue
		}
		if len(c.in) <= 300 {
			for k := range len(c.in) {
				ins = append(ins, cInput{utf8: false, maxDepth: d, b: c.in[:k]})
			}
		}
		ins = append(ins, cInput{utf8: false, maxDepth: d, b: append(bytes.Clone(c.in), 0xc0)})
	}
	for _, c := range allUTF8Cases() {
		b := hx(c.hex)
		ins = append(ins, cInput{utf8: true, maxDepth: 0, b: b})
		for k := range len(b) {
			ins = append(ins, cInput{utf8: true, maxDepth: 0, b: b[:k]})
		}
	}
	return ins
}

// genValue appends a random valid msgpack value of at most depth levels.
func genValue(r *rand.Rand, out []byte, depth int) []byte {
	n := func(limit int) int { return r.IntN(limit) }
	bytesOf := func(k int) []byte {
		b := make([]byte, k)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	be := func(v, width int) []byte {
		b := make([]byte, width)
		for i := range width {
			b[width-1-i] = byte(v >> (8 * i))
		}
		return b
	}
	kind := n(12)
	if depth <= 0 && kind >= 9 {
		kind = n(9)
	}
	switch kind {
	case 0: // fixints, nil, bools
		return append(out, []byte{byte(n(0x80)), 0xe0 | byte(n(32)), 0xc0, 0xc2, 0xc3}[n(5)])
	case 1: // fixed-width numbers
		c := []byte{0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd1, 0xd2, 0xd3, 0xca, 0xcb}[n(10)]
		w := map[byte]int{0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8, 0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8, 0xca: 4, 0xcb: 8}[c]
		return append(append(out, c), bytesOf(w)...)
	case 2: // fixstr
		k := n(32)
		return append(append(out, 0xa0|byte(k)), bytesOf(k)...)
	case 3, 4: // str, bin 8/16/32
		k := n(40)
		switch w := []int{1, 2, 4}[n(3)]; {
		case kind == 3:
			out = append(out, map[int]byte{1: 0xd9, 2: 0xda, 4: 0xdb}[w])
			out = append(out, be(k, w)...)
		default:
			out = append(out, map[int]byte{1: 0xc4, 2: 0xc5, 4: 0xc6}[w])
			out = append(out, be(k, w)...)
		}
		return append(out, bytesOf(k)...)
	case 5: // fixext
		i := n(5)
		return append(append(out, 0xd4+byte(i), byte(r.Uint32())), bytesOf(1<<i)...)
	case 6: // ext 8/16/32
		k := n(20)
		w := []int{1, 2, 4}[n(3)]
		out = append(out, map[int]byte{1: 0xc7, 2: 0xc8, 4: 0xc9}[w])
		out = append(out, be(k, w)...)
		out = append(out, byte(r.Uint32()))
		return append(out, bytesOf(k)...)
	case 7, 8: // more scalars, to keep trees small
		return append(out, byte(n(0x80)))
	case 9, 10: // arrays
		k := n(5)
		switch w := []int{0, 2, 4}[n(3)]; {
		case w == 0:
			out = append(out, 0x90|byte(k))
		case w == 2:
			out = append(append(out, 0xdc), be(k, 2)...)
		default:
			out = append(append(out, 0xdd), be(k, 4)...)
		}
		for range k {
			out = genValue(r, out, depth-1-n(2))
		}
		return out
	default: // maps
		k := n(4)
		switch w := []int{0, 2, 4}[n(3)]; {
		case w == 0:
			out = append(out, 0x80|byte(k))
		case w == 2:
			out = append(append(out, 0xde), be(k, 2)...)
		default:
			out = append(append(out, 0xdf), be(k, 4)...)
		}
		for range 2 * k {
			out = genValue(r, out, depth-1-n(2))
		}
		return out
	}
}

// leafy is a map16 of n entries or an array16 of 2n values, mostly leaves
// (values whose type byte gives their length: fixints, nil, bools, fixstr
// of up to 31 bytes, fixed-width numbers, fixext), one in 16 something
// else (str 8, bin 8, a small array or map).
func leafy(r *rand.Rand, n int) []byte {
	out := []byte{0xdc, byte(2 * n >> 8), byte(2 * n)}
	if r.IntN(2) == 0 {
		out = []byte{0xde, byte(n >> 8), byte(n)}
	}
	for range 2 * n {
		if r.IntN(16) == 0 {
			out = genValue(r, out, 2)
			continue
		}
		switch r.IntN(4) {
		case 0:
			out = append(out, []byte{0x05, 0x7f, 0xe0, 0xff, 0xc0, 0xc2, 0xc3}[r.IntN(7)])
		case 1:
			k := r.IntN(32)
			out = append(out, 0xa0|byte(k))
			for range k {
				out = append(out, 'a'+byte(r.IntN(26)))
			}
		case 2:
			c := []byte{0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd1, 0xd2, 0xd3, 0xca, 0xcb}[r.IntN(10)]
			w := map[byte]int{0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8, 0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8, 0xca: 4, 0xcb: 8}[c]
			out = append(append(out, c), make([]byte, w)...)
		default:
			i := r.IntN(5)
			out = append(append(out, 0xd4+byte(i), 0x01), make([]byte, 1<<i)...)
		}
	}
	return out
}

// mutate changes b in one to four random ways.
func mutate(r *rand.Rand, b []byte) []byte {
	b = bytes.Clone(b)
	interesting := []byte{0x00, 0x01, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1,
		0xc7, 0xc9, 0xd4, 0xd8, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff}
	for range 1 + r.IntN(4) {
		rb := func() byte {
			if r.IntN(2) == 0 {
				return interesting[r.IntN(len(interesting))]
			}
			return byte(r.Uint32())
		}
		switch op := r.IntN(6); {
		case op == 0 && len(b) > 0: // replace
			b[r.IntN(len(b))] = rb()
		case op == 1 && len(b) > 0: // flip a bit
			b[r.IntN(len(b))] ^= 1 << r.IntN(8)
		case op == 2: // insert
			i := r.IntN(len(b) + 1)
			b = append(b[:i], append([]byte{rb()}, b[i:]...)...)
		case op == 3 && len(b) > 0: // delete
			i := r.IntN(len(b))
			b = append(b[:i], b[i+1:]...)
		case op == 4 && len(b) > 0: // cut
			b = b[:r.IntN(len(b))]
		case op == 5 && len(b) > 0: // a random length after a random byte
			i := r.IntN(len(b))
			for j := i + 1; j < len(b) && j <= i+4; j++ {
				b[j] = byte(r.Uint32())
			}
		}
	}
	return b
}

// randomUTF8 is random bytes biased towards the edges of the UTF-8 classes,
// or a valid string mutated.
func randomUTF8(r *rand.Rand) []byte {
	edges := []byte{0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2,
		0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xfe, 0xff}
	var b []byte
	if r.IntN(2) == 0 {
		k := r.IntN(40)
		for range k {
			switch r.IntN(4) {
			case 0:
				b = append(b, byte(r.Uint32()))
			case 1:
				b = append(b, edges[r.IntN(len(edges))])
			default:
				b = append(b, 'a'+byte(r.IntN(26)))
			}
		}
		return b
	}
	for k := r.IntN(30); k > 0; k-- {
		switch r.IntN(3) {
		case 0:
			b = utf8.AppendRune(b, rune(r.IntN(0x80)))
		case 1:
			b = append(b, bytes.Repeat([]byte{'x'}, r.IntN(20))...)
		default:
			b = utf8.AppendRune(b, rune(r.IntN(0x110000)))
		}
	}
	if len(b) > 0 && r.IntN(3) > 0 {
		b = mutate(r, b)
	}
	return b
}

// randomInputs is count deterministic pseudo-random inputs, three in four
// of them msgpack.
func randomInputs(count int) []cInput {
	r := rand.New(rand.NewPCG(0x6b6d6573, 0x76616c69)) // fixed seed
	var valid [][]byte
	for _, c := range payloadCases() {
		if c.valid && len(c.in) <= 64 {
			valid = append(valid, c.in)
		}
	}
	ins := make([]cInput, 0, count)
	for len(ins) < count {
		d := depthLimitsC[r.IntN(len(depthLimitsC))]
		switch r.IntN(8) {
		case 0, 1: // a random valid tree, maybe mutated
			b := genValue(r, nil, r.IntN(8))
			if r.IntN(4) > 0 {
				b = mutate(r, b)
			}
			ins = append(ins, cInput{utf8: false, maxDepth: d, b: b})
		case 2, 3, 4: // a table value mutated
			ins = append(ins, cInput{utf8: false, maxDepth: d, b: mutate(r, valid[r.IntN(len(valid))])})
		case 5: // random bytes
			b := make([]byte, r.IntN(24))
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			ins = append(ins, cInput{utf8: false, maxDepth: d, b: b})
		default:
			ins = append(ins, cInput{utf8: true, maxDepth: 0, b: randomUTF8(r)})
		}
	}
	return ins
}

// edgeInputs is what random inputs rarely reach: payloads up to 4 MiB
// (runs of small values, maps of short keys, one large bin), containers
// claiming more values than bytes follow, nesting at and past the depth
// limit, and a generated value cut at every offset.
func edgeInputs() (ins []cInput) {
	r := rand.New(rand.NewPCG(0x65646765, 0x73697a65)) // fixed seed
	small := []byte{0x00, 0x01, 0x7f, 0xe0, 0xff, 0xc0, 0xc2, 0xc3}
	arr32 := func(n int, elem func(i int) []byte) []byte {
		b := binary.BigEndian.AppendUint32([]byte{0xdd}, uint32(n))
		for i := range n {
			b = append(b, elem(i)...)
		}
		return b
	}
	smallInt := func(i int) []byte { return []byte{small[i%len(small)]} }
	shortMap := func(i int) []byte {
		k := 5 + i%16
		b := []byte{0x80 | byte(k)} // fixmap up to 15, map 16 above
		if k > 15 {
			b = []byte{0xde, 0, byte(k)}
		}
		for j := range k {
			b = append(b, 0xa3, 'k', byte('a'+j), byte('0'+i%10), byte(j), 0xcc, byte(i))
		}
		return b
	}
	// Payloads from 0 B to 4 MiB; each also cut by one byte and followed
	// by one.
	add := func(d uint32, b []byte) {
		ins = append(ins, cInput{utf8: false, maxDepth: d, b: b}, cInput{utf8: false, maxDepth: d, b: b[:max(0, len(b)-1)]},
			cInput{utf8: false, maxDepth: d, b: append(bytes.Clone(b), 0x00)})
	}
	for _, n := range []int{0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000, 1 << 16, 1 << 20, 4<<20 - 5} {
		add(32, arr32(n, smallInt))
	}
	for _, n := range []int{1, 20, 1000, 20000} {
		add(32, arr32(n, shortMap))
	}
	add(32, binary.BigEndian.AppendUint32([]byte{0xc6}, 4<<20-5))
	ins[len(ins)-3].b = append(ins[len(ins)-3].b, make([]byte, 4<<20-5)...)
	ins[len(ins)-2].b = bytes.Clone(ins[len(ins)-3].b[:4<<20-1])
	ins[len(ins)-1].b = append(bytes.Clone(ins[len(ins)-3].b), 0)
	// Counts far beyond the bytes that follow.
	for _, b := range [][]byte{
		{0xdd, 0xff, 0xff, 0xff, 0xff, 0x01}, {0xdf, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02},
		{0xdc, 0xff, 0xff}, {0xde, 0x80, 0x00, 0x01}, {0x9f}, {0x8f, 0x01},
		{0xdb, 0xff, 0xff, 0xff, 0xff, 'a'}, {0xc9, 0xff, 0xff, 0xff, 0xff, 0x01},
	} {
		ins = append(ins, cInput{utf8: false, maxDepth: 32, b: b})
	}
	// Nesting at and past the limit, in arrays and maps.
	for _, levels := range []int{255, 256, 257, 1000} {
		arr := append(bytes.Repeat([]byte{0x91}, levels), 0x01)
		mp := append(bytes.Repeat([]byte{0x81, 0xc0}, levels), 0x01)
		for _, d := range []uint32{255, 256, 257, math.MaxUint32} {
			ins = append(ins, cInput{utf8: false, maxDepth: d, b: arr}, cInput{utf8: false, maxDepth: d, b: mp})
		}
	}
	// Stretches of leaves of every kind, which the vector walks take a
	// lane at a time, now and then broken by something else: whole, cut
	// at every offset, and with each byte replaced by one that starts
	// something else.
	for _, n := range []int{4, 5, 6, 9, 17, 40, 300, 5000} {
		add(32, leafy(r, n))
	}
	for range 4 {
		v := leafy(r, 60)
		for k := range len(v) + 1 {
			ins = append(ins, cInput{utf8: false, maxDepth: 32, b: v[:k]})
		}
		for k := range v {
			for _, c := range []byte{0x00, 0x80, 0x85, 0x90, 0xa0, 0xbf, 0xc1, 0xc4, 0xca, 0xcf, 0xd3, 0xd8, 0xd9, 0xdc, 0xe0} {
				w := bytes.Clone(v)
				w[k] = c
				ins = append(ins, cInput{utf8: false, maxDepth: 32, b: w})
			}
		}
	}
	// A generated value of a few KiB, cut at every offset.
	v := []byte{0xdc, 0, 200}
	for range 200 {
		v = genValue(r, v, 7)
	}
	for k := range len(v) + 1 {
		ins = append(ins, cInput{utf8: false, maxDepth: 8, b: v[:k]})
	}
	return ins
}

func TestCValidatorAgrees(t *testing.T) {
	bin := buildCDriver(t)
	ins := everyImpl(append(append(tableInputs(), edgeInputs()...), randomInputs(200000)...))
	c := runC(t, bin, ins)
	var valid, fails int
	for i, in := range ins {
		g := in.goVerdict()
		if g {
			valid++
		}
		if c[i] != g {
			fails++
			if fails <= 5 {
				t.Errorf("input %d, %s: C says valid=%v, Go says valid=%v", i, in, c[i], g)
			}
		}
	}
	if fails > 0 {
		t.Fatalf("%d of %d inputs disagree", fails, len(ins))
	}
	t.Logf("C and Go agree on %d inputs (%d valid)", len(ins), valid)
}

// cDriver is the C validator running with -i: one verdict per record, for
// the fuzzer, which checks one input at a time.
type cDriverProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout io.Reader
	stderr bytes.Buffer
}

func startCDriver(t testing.TB) *cDriverProc {
	t.Helper()
	d := &cDriverProc{cmd: exec.Command(buildCDriver(t), "-i")}
	var err error
	if d.stdin, err = d.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if d.stdout, err = d.cmd.StdoutPipe(); err != nil {
		t.Fatal(err)
	}
	d.cmd.Stderr = &d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start the C validator: %v", err)
	}
	t.Cleanup(func() {
		d.stdin.Close()
		d.cmd.Wait()
	})
	return d
}

// verdict is the C validator's verdict on in; a driver that dies (an ASan
// or UBSan report) fails t with what it printed.
func (d *cDriverProc) verdict(t *testing.T, in cInput) bool {
	t.Helper()
	var v [1]byte
	if _, err := d.stdin.Write(in.record(nil)); err == nil {
		_, err = io.ReadFull(d.stdout, v[:])
		if err == nil {
			return v[0] == 1
		}
	}
	d.cmd.Wait()
	t.Fatalf("C validator on %s: %v\n%s", in, d.cmd.ProcessState, d.stderr.Bytes())
	return false
}

// FuzzCValidator: the kernel's C validator (under ASan and UBSan) and the Go
// one agree on what Go's fuzzer makes of the table cases and generated
// values. go test runs the seeds; make test fuzzes for a minute ('make
// fuzz-validator' for longer, FUZZTIME=10m by default).
func FuzzCValidator(f *testing.F) {
	for _, c := range payloadCases() {
		f.Add(false, uint32(max(0, min(c.maxDepth, math.MaxUint32))), c.in)
	}
	for _, c := range allUTF8Cases() {
		f.Add(true, uint32(0), hx(c.hex))
	}
	// Runs of small values, which the vector walks take a block at a time.
	for _, n := range []int{17, 33, 40, 65, 100} {
		p := binary.BigEndian.AppendUint32([]byte{0xdd}, uint32(n))
		for i := range n {
			p = append(p, []byte{0x00, 0x7f, 0xe0, 0xc0, 0xc2, 0xc3}[i%6])
		}
		f.Add(false, uint32(32), p)
		f.Add(false, uint32(32), append([]byte{0x92}, append(p, 0x01)...))
	}
	r := rand.New(rand.NewPCG(0x66757a7a, 0x73656564)) // fixed seed
	for range 32 {
		f.Add(false, depthLimitsC[r.IntN(len(depthLimitsC))], genValue(r, nil, 6))
	}
	d := startCDriver(f)
	f.Fuzz(func(t *testing.T, isUTF8 bool, maxDepth uint32, b []byte) {
		// The fuzzer grows inputs towards 100 MB, at a few executions a
		// minute; sizes are TestCValidatorAgrees' part, shapes this one's.
		b = b[:min(len(b), 64<<10)]
		g := cInput{utf8: isUTF8, maxDepth: maxDepth, b: b}.goVerdict()
		for _, in := range everyImpl([]cInput{{utf8: isUTF8, maxDepth: maxDepth, b: b}}) {
			if c := d.verdict(t, in); c != g {
				t.Fatalf("%s: C says valid=%v, Go says valid=%v", in, c, g)
			}
		}
	})
}
