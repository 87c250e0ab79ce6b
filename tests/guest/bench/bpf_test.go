package bench

// The BPF ring buffer (BPF_MAP_TYPE_RINGBUF) beside KMES, in the same
// boot and under the same icount, so that the numbers are instructions of
// the one kernel:
//
//   - TestBPFRingbufOutput is the peer of TestKernelEmit64: an in-kernel
//     writer of 64-byte records, with no system call per record. KMES's
//     kmes_emit() validates the event (sizes, type, msgpack payload),
//     stamps a timestamp and a sequence number into its header and copies
//     it into the CPU's ring, overwriting the oldest events when full. The
//     BPF ring buffer validates nothing and stamps nothing: one ring for
//     all CPUs, bpf_ringbuf_output() takes its spin lock (interrupts off)
//     to reserve room for the record behind an 8-byte header (length with
//     a busy bit, page offset), copies the record there and commits it
//     (clears the busy bit; wakes a reader if the record is the first
//     unread one). bpf_ringbuf_reserve() + bpf_ringbuf_submit() is the
//     same with the copy done by the program. It never overwrites: a full
//     ring fails the write.
//   - TestBPFDrain is the peer of TestDrain: cilium/ebpf's ringbuf.Reader
//     reading records from the mapped ring, per record under a mutex an
//     atomic load of the header, a copy of the record into the caller's
//     buffer and a store of the consumer position (the producer waits for
//     it, so nothing is overwritten under the reader). KMES's Reader
//     copies the ring out a chunk at a time, as the producer may overwrite
//     it, checks each event's header sizes, parses the header (timestamp,
//     sequence, CPU, type) and counts lost events from the sequence.
//
// The programs are BPF_PROG_TYPE_SYSCALL, run once per measurement with
// BPF_PROG_RUN from the test's thread on CPU 0: bpf_loop(n, write, NULL,
// 0) with write() putting one record into the ring. The verifier inlines the
// bpf_loop (its flags are a known 0), so an iteration is a few
// instructions and a call of write(); bpf_loop_empty is that loop with a
// write() that returns at once, and the record costs are net of it.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/kmes-project/kmes/userspace/kmes/abi"
	"github.com/kmes-project/kmes/vm/guest"
)

// bpfHdrSize is BPF_RINGBUF_HDR_SZ, the header before each record.
const bpfHdrSize = 8

// bpfWrite is what the loop's callback does per iteration.
type bpfWrite int

const (
	bpfEmpty   bpfWrite = iota // nothing: the cost of the loop
	bpfOutput                  // bpf_ringbuf_output(ring, src, size, 0)
	bpfReserve                 // bpf_ringbuf_reserve, a copy of src, bpf_ringbuf_submit
	// bpfReserveStamped is bpfReserve with the record's timestamp (at
	// the offset of KMES's) from bpf_ktime_get_ns(): a timestamped
	// record, as kmes_emit() writes one.
	bpfReserveStamped
)

// String is the program's name (at most 15 characters).
func (w bpfWrite) String() string {
	return [...]string{"loop_empty", "ringbuf_output", "ringbuf_reserve", "ringbuf_stamped"}[w]
}

// TestBPFRingbufOutput times 100,000 writes of a 64-byte record into a
// BPF ring buffer, with bpf_ringbuf_output and with bpf_ringbuf_reserve +
// submit, and the empty loop they are net of. Each is the least of three
// runs (after a warm-up run): what else runs on the CPU meanwhile, a
// timer tick, a softirq freeing what a program load left to RCU, only
// adds to a run. No reader empties the ring: at 72 bytes a record with
// its header, the 301,000 records of a program's runs take 21.7 MB of
// its 32 MiB, so no write may fail (and none does: run checks).
func TestBPFRingbufOutput(t *testing.T) {
	const (
		size       = 64
		iterations = 100000
		runs       = 3
		warmUp     = 1000
		ringSize   = 32 << 20
	)
	if (warmUp+runs*iterations)*(size+bpfHdrSize) > ringSize {
		t.Fatalf("%d records of %d bytes do not fit a %d-byte ring", warmUp+runs*iterations, size, ringSize)
	}
	pinCPU0(t)
	b := newBPFBench(t)
	src := b.source(t, size)

	perIteration := func(w bpfWrite) float64 {
		var ring *ebpf.Map
		if w != bpfEmpty {
			ring = newRingbuf(t, ringSize)
		}
		return b.perIteration(t, b.loop(t, w, ring, src, size), warmUp, iterations, runs)
	}
	empty := perIteration(bpfEmpty)
	guest.Record(t, "bpf_ringbuf_output_64B", perIteration(bpfOutput)-empty, "ns/event")
	guest.Record(t, "bpf_ringbuf_reserve_64B", perIteration(bpfReserve)-empty, "ns/event")
	guest.Record(t, "bpf_ringbuf_reserve_ts_64B", perIteration(bpfReserveStamped)-empty, "ns/event")
	guest.Record(t, "bpf_loop_empty", empty, "ns/event")
}

// TestBPFDrain measures ringbuf.Reader draining a BPF ring buffer that
// already holds its records (written first by a bpf_ringbuf_output loop,
// then only the reads are timed), as TestDrain does for KMES: a ring of
// 4 MiB, KMES's default capacity, nine tenths full, a first untimed round
// of 64-byte records to fault the mapping in, then 64-byte and 1 KiB
// records. MB/s counts the records' bytes, not the BPF headers.
func TestBPFDrain(t *testing.T) {
	const ringSize = 4 << 20
	pinCPU0(t)
	b := newBPFBench(t)
	ring := newRingbuf(t, ringSize)
	rd, err := ringbuf.NewReader(ring)
	if err != nil {
		t.Fatalf("ringbuf.NewReader: %v", err)
	}
	defer rd.Close()

	fill := map[int]*ebpf.Program{}
	for _, size := range []int{64, 1024} {
		fill[size] = b.loop(t, bpfOutput, ring, b.source(t, size), size)
	}
	b.drain(t, rd, fill[64], ringSize, 64)
	for _, size := range []int{64, 1024} {
		d := b.drain(t, rd, fill[size], ringSize, size)
		name := "ebpf_drain_" + sizeName(size)
		guest.Record(t, name, d.nsPerEvent, "ns/event")
		guest.Record(t, name+"_rate", d.mbps, "MB/s")
		guest.Record(t, name+"_events", 1e9/d.nsPerEvent, "events/s")
	}
}

// bpfBench holds the array map, of one u64, that the programs count their
// failed writes in.
type bpfBench struct {
	failures *ebpf.Map
	sources  map[int][]byte // the record bytes of each source map
}

func newBPFBench(t *testing.T) *bpfBench {
	t.Helper()
	failures, err := ebpf.NewMap(&ebpf.MapSpec{Name: "failures", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatalf("create array map: %v", err)
	}
	t.Cleanup(func() { failures.Close() })
	return &bpfBench{failures: failures, sources: map[int][]byte{}}
}

// newRingbuf returns a BPF ring buffer of size bytes of data.
func newRingbuf(t *testing.T, size uint32) *ebpf.Map {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "ring", Type: ebpf.RingBuf, MaxEntries: size})
	if err != nil {
		t.Fatalf("create ringbuf map of %d bytes: %v", size, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// source returns an array map of one value: the bytes of a size-byte KMES
// event, as kmes_emit would store it (sizes and type in the header, the
// timestamp and sequence left zero).
func (b *bpfBench) source(t *testing.T, size int) *ebpf.Map {
	t.Helper()
	ev := newEvent(t, size)
	rec := make([]byte, abi.HdrBaseSize, size)
	binary.LittleEndian.PutUint32(rec[abi.HdrEventSizeOff:], uint32(size))
	binary.LittleEndian.PutUint32(rec[abi.HdrHeaderSizeOff:], uint32(abi.HdrBaseSize+len(ev.typ)))
	binary.LittleEndian.PutUint16(rec[abi.HdrTypeLenOff:], uint16(len(ev.typ)))
	rec = append(append(rec, ev.typ...), ev.payload...)
	if len(rec) != size {
		t.Fatalf("a %d-byte event came out as %d bytes", size, len(rec))
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "src", Type: ebpf.Array, KeySize: 4, ValueSize: uint32(size), MaxEntries: 1})
	if err != nil {
		t.Fatalf("create array map of a %d-byte value: %v", size, err)
	}
	t.Cleanup(func() { m.Close() })
	if err := m.Put(uint32(0), rec); err != nil {
		t.Fatalf("update array map: %v", err)
	}
	b.sources[size] = rec
	return m
}

// The programs' functions, as BTF func_info: the verifier refuses the
// address of a callback (a BPF_PSEUDO_FUNC load) without it. The kernel
// needs no BTF of its own for this (the bench kernel has none): the
// program's BTF is loaded with it.
var (
	bpfVoidPtr  = &btf.Pointer{Target: &btf.Void{}}
	bpfLoopFunc = &btf.Func{Name: "loop", Linkage: btf.GlobalFunc, Type: &btf.FuncProto{
		Return: &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed},
		Params: []btf.FuncParam{{Name: "ctx", Type: bpfVoidPtr}},
	}}
	bpfWriteFunc = &btf.Func{Name: "write", Linkage: btf.StaticFunc, Type: &btf.FuncProto{
		Return: &btf.Int{Name: "long", Size: 8, Encoding: btf.Signed},
		Params: []btf.FuncParam{
			{Name: "index", Type: &btf.Int{Name: "unsigned long long", Size: 8}},
			{Name: "ctx", Type: bpfVoidPtr},
		},
	}}
)

// loop returns a sleepable BPF_PROG_TYPE_SYSCALL program that runs
// bpf_loop(n, write, NULL, 0), n the u32 at the start of its context, and
// returns what bpf_loop does: the iterations run. write() writes the
// size bytes of src's value, which it addresses directly: a 64-bit
// immediate (BPF_PSEUDO_MAP_VALUE) that the verifier turns into the
// value's address, one instruction and no lookup. The other source the
// verifier takes, the caller's stack passed as bpf_loop's context, would
// save that instruction for bpf_ringbuf_output (the inlined loop hands
// write() the context in r2 anyway) but measured no cheaper under icount
// (184.7 against 184.2 instructions per record), and a 512-byte stack
// holds no 1 KiB record. write() adds 1 to b.failures for each write
// that failed.
func (b *bpfBench) loop(t *testing.T, w bpfWrite, ring, src *ebpf.Map, size int) *ebpf.Program {
	t.Helper()
	withMap := func(ins asm.Instruction, m *ebpf.Map) asm.Instruction {
		if err := ins.AssociateMap(m); err != nil {
			t.Fatalf("%v: %v", ins, err)
		}
		return ins
	}
	insns := asm.Instructions{
		asm.LoadMem(asm.R1, asm.R1, 0, asm.Word).WithSymbol("loop"), // r1 = n
		asm.Instruction{OpCode: asm.LoadImmOp(asm.DWord), Dst: asm.R2, Src: asm.PseudoFunc, Constant: -1}.WithReference("write"),
		asm.Mov.Imm(asm.R3, 0),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnLoop.Call(),
		asm.Return(),
	}
	// The callback: r1 = the index, r2 = the context (NULL); r0 = 0 to
	// go on.
	var write asm.Instructions
	switch w {
	case bpfEmpty:
		write = asm.Instructions{
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}
	case bpfOutput:
		write = asm.Instructions{
			withMap(asm.LoadMapPtr(asm.R1, 0), ring),
			withMap(asm.LoadMapValue(asm.R2, 0, 0), src),
			asm.Mov.Imm(asm.R3, int32(size)),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnRingbufOutput.Call(),
			asm.JNE.Imm(asm.R0, 0, "failed"), // 0 or a -errno
			asm.Return(),
		}
	case bpfReserve, bpfReserveStamped:
		// The record stays in R0, or for the stamped one in R6, which the
		// call of bpf_ktime_get_ns() keeps.
		const tsOff = int16(abi.HdrTimestampOff)
		rec := asm.R0
		write = asm.Instructions{
			withMap(asm.LoadMapPtr(asm.R1, 0), ring),
			asm.Mov.Imm(asm.R2, int32(size)),
			asm.Mov.Imm(asm.R3, 0),
			asm.FnRingbufReserve.Call(),
			asm.JEq.Imm(asm.R0, 0, "failed"), // NULL
		}
		if w == bpfReserveStamped {
			rec = asm.R6
			write = append(write,
				asm.Mov.Reg(rec, asm.R0),
				asm.FnKtimeGetNs.Call(),
				asm.StoreMem(rec, tsOff, asm.R0, asm.DWord))
		}
		write = append(write, withMap(asm.LoadMapValue(asm.R1, 0, 0), src))
		for off := int16(0); off < int16(size); off += 8 {
			if w == bpfReserveStamped && off == tsOff {
				continue
			}
			write = append(write,
				asm.LoadMem(asm.R2, asm.R1, off, asm.DWord),
				asm.StoreMem(rec, off, asm.R2, asm.DWord))
		}
		write = append(write,
			asm.Mov.Reg(asm.R1, rec),
			asm.Mov.Imm(asm.R2, 0),
			asm.FnRingbufSubmit.Call(),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		)
	}
	if w != bpfEmpty {
		write = append(write,
			withMap(asm.LoadMapValue(asm.R1, 0, 0), b.failures).WithSymbol("failed"),
			asm.Mov.Imm(asm.R2, 1),
			asm.StoreXAdd(asm.R1, asm.R2, asm.DWord),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		)
	}
	write[0] = btf.WithFuncMetadata(write[0].WithSymbol("write"), bpfWriteFunc)
	insns[0] = btf.WithFuncMetadata(insns[0], bpfLoopFunc)
	spec := &ebpf.ProgramSpec{
		Name:         w.String(),
		Type:         ebpf.Syscall,
		Flags:        unix.BPF_F_SLEEPABLE,
		License:      "GPL",
		Instructions: append(insns, write...),
	}
	// No log unless the load fails: NewProgram then loads again with one,
	// and the VerifierError holds it.
	prog, err := ebpf.NewProgram(spec)
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			t.Fatalf("load syscall program: %v\nverifier log:\n%+v", err, ve)
		}
		t.Fatalf("load syscall program: %v", err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog
}

// run runs prog once with bpf_loop's count n and returns how long the
// BPF_PROG_RUN took. It fails unless the loop ran n times with no failed
// write.
func (b *bpfBench) run(t *testing.T, prog *ebpf.Program, n int) time.Duration {
	t.Helper()
	if err := b.failures.Put(uint32(0), uint64(0)); err != nil {
		t.Fatalf("update array map: %v", err)
	}
	start := time.Now()
	ret, err := prog.Run(&ebpf.RunOptions{Context: uint64(n)})
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("BPF_PROG_RUN: %v", err)
	}
	var failed uint64
	if err := b.failures.Lookup(uint32(0), &failed); err != nil {
		t.Fatalf("lookup array map: %v", err)
	}
	if ret != uint32(n) || failed != 0 {
		t.Fatalf("BPF_PROG_RUN: bpf_loop ran %d of %d iterations, %d writes failed", ret, n, failed)
	}
	return elapsed
}

// perIteration runs prog once with warmUp iterations, then runs times
// with n, and returns the least time per iteration.
func (b *bpfBench) perIteration(t *testing.T, prog *ebpf.Program, warmUp, n, runs int) float64 {
	t.Helper()
	b.run(t, prog, warmUp)
	best := time.Duration(math.MaxInt64)
	each := make([]string, runs)
	for i := range runs {
		d := b.run(t, prog, n)
		best = min(best, d)
		each[i] = fmt.Sprintf("%.2f", float64(d.Nanoseconds())/float64(n))
	}
	t.Logf("%v: %s ns per iteration", prog, strings.Join(each, ", "))
	return float64(best.Nanoseconds()) / float64(n)
}

// drain writes nine tenths of the ring, ringSize bytes, with size-byte
// records and times rd reading all of them; it fails unless it read
// exactly those records and no more were there.
func (b *bpfBench) drain(t *testing.T, rd *ringbuf.Reader, fill *ebpf.Program, ringSize, size int) drainResult {
	t.Helper()
	n := ringSize * 9 / 10 / (size + bpfHdrSize)
	b.run(t, fill, n)
	rec := ringbuf.Record{RawSample: make([]byte, size)}
	// As in drain: no collection may run beside the reads.
	runtime.GC()
	start := time.Now()
	// Every byte of every record is read, as TestDrain's drain_ does.
	differ := 0
	for i := 0; i < n; i++ {
		if err := rd.ReadInto(&rec); err != nil {
			t.Fatalf("ringbuf.Reader.ReadInto, record %d of %d: %v", i, n, err)
		}
		if !bytes.Equal(rec.RawSample, b.sources[size]) {
			differ++
		}
	}
	elapsed := time.Since(start)
	if left := rd.AvailableBytes(); left != 0 || rec.Remaining != 0 || differ != 0 {
		t.Fatalf("drained %d records, %d not as written, %d bytes left: want %d records of the %d-byte source and nothing left",
			n, differ, left, n, size)
	}
	total := n * size
	return drainResult{
		nsPerEvent: float64(elapsed.Nanoseconds()) / float64(n),
		mbps:       float64(total) / 1e6 / elapsed.Seconds(),
		bytes:      total,
	}
}
