package kmes

import (
	"fmt"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The kernel may walk a payload with vector instructions only between
// kernel_fpu_begin() and kernel_fpu_end(). The first kernel_fpu_begin() of
// a system call saves the task's user FPU state (XSAVES, with the init and
// modified optimisations) and sets TIF_NEED_FPU_LOAD, and the return to
// user space restores it (XRSTORS); on x86-64 kernel_fpu_begin() also loads
// the default MXCSR. A vector walk pays only above the payload size at
// which the time it saves exceeds that cost. Under QEMU's icount an XSAVE
// counts as one instruction, so only a native run can measure it:
//
//	go test -run '^$' -bench 'FPUSave|CUTF8' -count 5 ./userspace/kmes/
//
// Each sub-benchmark is one C process (-O2) that times b.N operations,
// split into cFPURounds rounds, with clock_gettime and rdtsc, and reports
// the median round, so that an interrupt or a migration in one round does
// not move the result: ns/op and tsc/op (TSC ticks, the host's cycles at
// its nominal frequency). The FPU numbers are net of the same loop without
// the instructions measured, which base-ns/op gives.

// cFPURounds is odd so that the median is one round's figure.
const cFPURounds = 9

// BenchmarkFPUSave measures what a system call pays for using the FPU:
//
//   - xsavec/STATE and xsaveopt/STATE: one save and one restore (XRSTOR)
//     of the user xfeatures the OS enabled (XCR0, less AMX tile data,
//     which Linux enables per task), with an SSE or AVX instruction in
//     between standing for the kernel's walk. XSAVES, which the kernel
//     uses, is privileged; it writes the compacted format like XSAVEC and
//     skips unmodified components like XSAVEOPT, so the two bound it.
//     STATE is the user's state at the save: clean (after vzeroupper, as
//     Go's memmove leaves it), dirty-avx (a ymm register written),
//     dirty-evex (ymm16 written, as glibc's EVEX string functions leave
//     it on an AVX-512 CPU: no vzeroupper clears zmm16-31) and dirty-zmm
//     (zmm0, zmm16 and k1 written: everything in use).
//   - ldmxcsr and fninit: the extra steps of kernel_fpu_begin_mask();
//     x86-64's kernel_fpu_begin() does only the ldmxcsr (KFPU_MXCSR).
//
// The CPU's XSAVE layout is logged first (go test -v shows it).
func BenchmarkFPUSave(b *testing.B) {
	if runtime.GOARCH != "amd64" {
		b.Skipf("the kernel's FPU save is measured on x86-64 only, not %s", runtime.GOARCH)
	}
	bin := buildCFPUBench(b)
	out, err := exec.Command(bin, "info").CombinedOutput()
	if err != nil {
		b.Fatalf("run %s info: %v\n%s", bin, err, out)
	}
	b.Logf("XSAVE layout:\n%s", out)
	for _, insn := range []string{"xsavec", "xsaveopt"} {
		for _, state := range []string{"clean", "dirty-avx", "dirty-evex", "dirty-zmm"} {
			b.Run(insn+"/"+state, func(b *testing.B) {
				runCFPUBench(b, bin, "save", insn, state)
			})
		}
	}
	for _, op := range []string{"ldmxcsr", "fninit"} {
		b.Run(op, func(b *testing.B) {
			runCFPUBench(b, bin, op)
		})
	}
}

// BenchmarkCUTF8 measures one kmes_utf8_valid() call, the event type check,
// on types of 8 B to 1 KiB: all ASCII, as types are in practice ("app.login",
// "net.tcp.retransmit": 8 to 40 bytes), and ending in one 'é', which takes
// the byte-wise path. Compare ns/op with BenchmarkFPUSave's to see whether
// a SIMD check could pay for the FPU save at a given length.
func BenchmarkCUTF8(b *testing.B) {
	bin := buildCFPUBench(b)
	for _, kind := range []string{"ascii", "e-acute"} {
		for _, n := range []int{8, 16, 32, 64, 128, 256, 1024} {
			b.Run(fmt.Sprintf("%s/%dB", kind, n), func(b *testing.B) {
				ns := runCFPUBench(b, bin, "utf8", strconv.Itoa(n), kind)
				// By the C timing: the framework's would count
				// the start of the process.
				b.ReportMetric(float64(n)/ns*1e3, "MB/s")
			})
		}
	}
}

// runCFPUBench runs the benchmark args of bin for b.N operations, reports
// the median round's figures and returns its ns/op. The C program skips a
// case the CPU cannot run by printing "skip: " and the reason.
func runCFPUBench(b *testing.B, bin string, args ...string) float64 {
	b.Helper()
	perRound := max(1, b.N/cFPURounds)
	args = append(args, strconv.Itoa(perRound), strconv.Itoa(cFPURounds))
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		b.Fatalf("run %s %s: %v\n%s", bin, strings.Join(args, " "), err, out)
	}
	if reason, ok := strings.CutPrefix(string(out), "skip: "); ok {
		b.Skip(strings.TrimSpace(reason))
	}
	// Each line is one round: net ns/op, net TSC ticks/op, base ns/op.
	var cols [3][]float64
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) != len(cols) {
			b.Fatalf("parse output of %s %s: line %q", bin, strings.Join(args, " "), line)
		}
		for i, s := range f {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				b.Fatalf("parse output of %s %s: %v", bin, strings.Join(args, " "), err)
			}
			cols[i] = append(cols[i], v)
		}
	}
	if len(cols[0]) != cFPURounds {
		b.Fatalf("%s %s: %d rounds, want %d:\n%s", bin, strings.Join(args, " "), len(cols[0]), cFPURounds, out)
	}
	ns := median(cols[0])
	// The framework's own ns/op would include the start of the process
	// and the base loop; this replaces it.
	b.ReportMetric(ns, "ns/op")
	if ticks := median(cols[1]); ticks != 0 {
		b.ReportMetric(ticks, "tsc/op")
	}
	if base := median(cols[2]); base != 0 {
		b.ReportMetric(base, "base-ns/op")
	}
	return ns
}

// median is the middle of an odd number of values.
func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// cFPUBench is the C side of BenchmarkFPUSave and BenchmarkCUTF8:
//
//	fpubench info
//	fpubench save xsavec|xsaveopt clean|dirty-avx|dirty-evex|dirty-zmm N ROUNDS
//	fpubench ldmxcsr|fninit N ROUNDS
//	fpubench utf8 LEN ascii|e-acute N ROUNDS
//
// Each round prints "net-ns net-ticks base-ns" per operation.
const cFPUBench = `#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "validate.h"

#ifdef __x86_64__
#include <cpuid.h>
#endif

static unsigned long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

#ifdef __x86_64__
static inline u64 rdtsc(void)
{
	u32 lo, hi;

	asm volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return lo | (u64)hi << 32;
}
#else
static inline u64 rdtsc(void)
{
	return 0;
}
#endif

/*
 * One measurement: run(arg, n, 0) is the base loop, run(arg, n, 1) the
 * loop with the operation measured. Each round times both, base first,
 * and prints the difference per operation; an untimed round warms the
 * caches and the branch predictors first.
 */
static void measure(void (*run)(const void *arg, long n, int op),
		    const void *arg, long n, int rounds, int with_base)
{
	unsigned long long t0, t1, t2;
	u64 c0, c1, c2;
	int r;

	run(arg, n, 1);
	for (r = 0; r < rounds; r++) {
		t0 = now_ns();
		c0 = rdtsc();
		if (with_base) {
			run(arg, n, 0);
			t1 = now_ns();
			c1 = rdtsc();
		} else {
			t1 = t0;
			c1 = c0;
		}
		run(arg, n, 1);
		t2 = now_ns();
		c2 = rdtsc();
		printf("%.4f %.4f %.4f\n",
		       ((double)(t2 - t1) - (double)(t1 - t0)) / n,
		       ((double)(c2 - c1) - (double)(c1 - c0)) / n,
		       (double)(t1 - t0) / n);
	}
}

/* The type checked: ASCII like "net.tcp.retransmit", or ending in 'é'. */
struct utf8_arg {
	unsigned char *s;
	size_t len;
};

static void utf8_run(const void *arg, long n, int op)
{
	const struct utf8_arg *a = arg;
	long i, ok = 0;

	(void)op;
	for (i = 0; i < n; i++) {
		/* The compiler may not assume the buffer unchanged. */
		asm volatile("" : : "r"(a->s) : "memory");
		ok += kmes_utf8_valid(a->s, a->len);
	}
	if (ok != n) {
		fprintf(stderr, "kmes_utf8_valid() refused the type\n");
		exit(1);
	}
}

static int utf8_main(int argc, char **argv)
{
	static const char words[] = "net.tcp.retransmit.";
	struct utf8_arg a;
	size_t i;

	if (argc != 6)
		return 2;
	a.len = atol(argv[2]);
	if (a.len < 2)
		return 2;
	a.s = malloc(a.len);
	if (!a.s)
		return 3;
	for (i = 0; i < a.len; i++)
		a.s[i] = words[i % (sizeof(words) - 1)];
	if (!strcmp(argv[3], "e-acute")) {
		a.s[a.len - 2] = 0xc3;
		a.s[a.len - 1] = 0xa9;
	} else if (strcmp(argv[3], "ascii")) {
		return 2;
	}
	measure(utf8_run, &a, atol(argv[4]), atoi(argv[5]), 0);
	free(a.s);
	return 0;
}

#ifdef __x86_64__

#define XFEATURE_MASK_FP		(1ULL << 0)
#define XFEATURE_MASK_SSE		(1ULL << 1)
#define XFEATURE_MASK_YMM		(1ULL << 2)
#define XFEATURE_MASK_AVX512		(7ULL << 5)
#define XFEATURE_MASK_XTILE_DATA	(1ULL << 18)

#define XSAVE_MXCSR_OFFSET	24
#define XSAVE_HDR_OFFSET	512

static const u32 mxcsr_default = 0x1f80;

enum save_insn { INSN_XSAVEC, INSN_XSAVEOPT };
enum user_state { USER_CLEAN, USER_AVX, USER_EVEX, USER_ZMM };

struct cpu {
	u64 xcr0;
	u32 std_size;		/* CPUID 0xD.0 EBX: standard format, XCR0 */
	bool xsaveopt, xsavec, xsaves, avx, avx512;
};

static u64 xgetbv(u32 index)
{
	u32 lo, hi;

	asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(index));
	return lo | (u64)hi << 32;
}

/* Returns false if the OS has not enabled XSAVE (CR4.OSXSAVE). */
static bool cpu_probe(struct cpu *c)
{
	u32 a, b, cx, d;

	memset(c, 0, sizeof(*c));
	if (!__get_cpuid(1, &a, &b, &cx, &d) || !(cx & bit_OSXSAVE))
		return false;
	c->xcr0 = xgetbv(0);
	c->avx = (cx & bit_AVX) &&
		 (c->xcr0 & (XFEATURE_MASK_SSE | XFEATURE_MASK_YMM)) ==
			 (XFEATURE_MASK_SSE | XFEATURE_MASK_YMM);
	if (__get_cpuid_count(7, 0, &a, &b, &cx, &d))
		c->avx512 = c->avx && (b & bit_AVX512F) &&
			    (c->xcr0 & XFEATURE_MASK_AVX512) ==
				    XFEATURE_MASK_AVX512;
	__cpuid_count(0xd, 0, a, b, cx, d);
	c->std_size = b;
	__cpuid_count(0xd, 1, a, b, cx, d);
	c->xsaveopt = a & (1 << 0);
	c->xsavec = a & (1 << 1);
	c->xsaves = a & (1 << 3);
	return true;
}

/*
 * The user xfeatures a task's default fpstate holds: AMX tile data is
 * enabled in XCR0 but kept from a task until it asks (arch_prctl), with
 * XFD armed, and XRSTOR of it would then fault.
 */
static u64 user_mask(const struct cpu *c)
{
	return c->xcr0 & ~XFEATURE_MASK_XTILE_DATA;
}

/* The size of the compacted (XSAVEC, XSAVES) area for @mask. */
static u32 compacted_size(u64 mask)
{
	u32 a, b, c, d, size = 576;
	int i;

	for (i = 2; i < 63; i++) {
		if (!(mask & (1ULL << i)))
			continue;
		__cpuid_count(0xd, i, a, b, c, d);
		if (c & (1 << 1))
			size = (size + 63) & ~63U;
		size += a;
	}
	return size;
}

static inline void xsave(void *area, u64 mask)
{
	asm volatile("xsave64 (%0)"
		     : : "r"(area), "a"((u32)mask), "d"((u32)(mask >> 32))
		     : "memory");
}

static inline void xsavec(void *area, u64 mask)
{
	asm volatile("xsavec64 (%0)"
		     : : "r"(area), "a"((u32)mask), "d"((u32)(mask >> 32))
		     : "memory");
}

static inline void xsaveopt(void *area, u64 mask)
{
	asm volatile("xsaveopt64 (%0)"
		     : : "r"(area), "a"((u32)mask), "d"((u32)(mask >> 32))
		     : "memory");
}

static inline void xrstor(const void *area, u64 mask)
{
	asm volatile("xrstor64 (%0)"
		     : : "r"(area), "a"((u32)mask), "d"((u32)(mask >> 32))
		     : "memory");
}

static void *xsave_area(const struct cpu *c)
{
	size_t size = (c->std_size + 63) & ~(size_t)63;
	void *area = aligned_alloc(64, size);

	/* XRSTOR wants the header's reserved bytes zero. */
	if (area)
		memset(area, 0, size);
	return area;
}

/* A standard-format area with XSTATE_BV 0 and the default MXCSR. */
static void *init_area;

static void init_area_alloc(const struct cpu *c)
{
	init_area = xsave_area(c);
	if (!init_area)
		exit(3);
	memcpy((unsigned char *)init_area + XSAVE_MXCSR_OFFSET, &mxcsr_default,
	       sizeof(mxcsr_default));
}

/*
 * Put every component above SSE into its init state: XRSTOR of a header
 * with XSTATE_BV 0 initialises what RFBM names (and with the AVX bit also
 * loads MXCSR, which 0 would leave with every exception unmasked). glibc's
 * EVEX string functions, printf()'s or memset()'s, leave zmm16-31 and
 * k0-7 in use on an AVX-512 CPU, and no vzeroupper clears them.
 */
static inline void xstate_init(const struct cpu *c)
{
	xrstor(init_area, user_mask(c) & ~(XFEATURE_MASK_FP | XFEATURE_MASK_SSE));
}

/* Which components are in use (XINUSE): XSAVE writes it as XSTATE_BV. */
static inline u64 xinuse(const struct cpu *c, unsigned char *area)
{
	u64 bv;

	xsave(area, user_mask(c));
	memcpy(&bv, area + XSAVE_HDR_OFFSET, sizeof(bv));
	return bv;
}

static unsigned char pattern[64] __aligned(64) = {
	1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
	17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
	33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48,
	49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64,
};

/* What user space leaves in the registers before the system call. */
static inline void user_step(enum user_state s, bool avx)
{
	switch (s) {
	case USER_CLEAN:
		if (avx)
			asm volatile("vzeroupper");
		break;
	case USER_AVX:
		asm volatile("vmovdqu %0, %%ymm0" : : "m"(pattern) : "xmm0");
		break;
	case USER_EVEX:
		asm volatile("vzeroupper\n\t"
			     "vmovdqu64 %0, %%ymm16" : : "m"(pattern));
		break;
	case USER_ZMM:
		asm volatile("vmovdqu64 %0, %%zmm0\n\t"
			     "vmovdqu64 %0, %%zmm16\n\t"
			     "kmovw %1, %%k1"
			     : : "m"(pattern), "r"(0x5555U) : "xmm0");
		break;
	}
}

/* The kernel's walk between kernel_fpu_begin() and kernel_fpu_end(). */
static inline void kernel_step(bool avx)
{
	if (avx)
		asm volatile("vpcmpeqb %%ymm1, %%ymm1, %%ymm1\n\t"
			     "vzeroupper" : : : "xmm1");
	else
		asm volatile("pcmpeqb %%xmm1, %%xmm1" : : : "xmm1");
}

struct save_arg {
	const struct cpu *cpu;
	enum save_insn insn;
	enum user_state user;
	void *area;
};

static void save_run(const void *arg, long n, int op)
{
	const struct save_arg *a = arg;
	u64 mask = user_mask(a->cpu);
	long i;

	/* The round's printf() may have put zmm16-31 in use. */
	xstate_init(a->cpu);
	for (i = 0; i < n; i++) {
		user_step(a->user, a->cpu->avx);
		if (op) {
			if (a->insn == INSN_XSAVEC)
				xsavec(a->area, mask);
			else
				xsaveopt(a->area, mask);
		}
		kernel_step(a->cpu->avx);
		if (op)
			xrstor(a->area, mask);
	}
}

static int save_main(int argc, char **argv)
{
	static const char *const users[] = {
		[USER_CLEAN] = "clean", [USER_AVX] = "dirty-avx",
		[USER_EVEX] = "dirty-evex", [USER_ZMM] = "dirty-zmm",
	};
	struct save_arg a = { 0 };
	struct cpu c;
	int u;

	if (argc != 6)
		return 2;
	if (!cpu_probe(&c)) {
		puts("skip: the OS has not enabled XSAVE (CPUID.1:ECX.OSXSAVE)");
		return 0;
	}
	a.cpu = &c;
	if (!strcmp(argv[2], "xsavec")) {
		a.insn = INSN_XSAVEC;
		if (!c.xsavec) {
			puts("skip: no XSAVEC (CPUID 0xD.1:EAX bit 1); see xsaveopt");
			return 0;
		}
	} else if (!strcmp(argv[2], "xsaveopt")) {
		a.insn = INSN_XSAVEOPT;
		if (!c.xsaveopt) {
			puts("skip: no XSAVEOPT (CPUID 0xD.1:EAX bit 0)");
			return 0;
		}
	} else {
		return 2;
	}
	for (u = 0; u < 4; u++)
		if (!strcmp(argv[3], users[u]))
			break;
	if (u == 4)
		return 2;
	a.user = u;
	if (a.user != USER_CLEAN && !c.avx) {
		printf("skip: no AVX enabled (CPUID.1:ECX.AVX, XCR0 0x%llx), so no %s state to save\n",
		       (unsigned long long)c.xcr0, users[u]);
		return 0;
	}
	if ((a.user == USER_EVEX || a.user == USER_ZMM) && !c.avx512) {
		printf("skip: no AVX-512 enabled (XCR0 0x%llx), so no %s state to save\n",
		       (unsigned long long)c.xcr0, users[u]);
		return 0;
	}
	a.area = xsave_area(&c);
	if (!a.area)
		return 3;
	init_area_alloc(&c);
	measure(save_run, &a, atol(argv[4]), atoi(argv[5]), 1);
	free(a.area);
	return 0;
}

static void ldmxcsr_run(const void *arg, long n, int op)
{
	long i;

	(void)arg;
	for (i = 0; i < n; i++) {
		if (op)
			asm volatile("ldmxcsr %0" : : "m"(mxcsr_default));
		else
			asm volatile("" : : "m"(mxcsr_default));
	}
}

static void fninit_run(const void *arg, long n, int op)
{
	long i;

	(void)arg;
	for (i = 0; i < n; i++) {
		if (op)
			asm volatile("fninit");
		else
			asm volatile("");
	}
}

static unsigned char copy_src[4096], copy_dst[4096];

static int info_main(void)
{
	void *(*volatile copy)(void *, const void *, size_t) = memcpy;
	unsigned long long t0, t1;
	u64 inuse[3], c0, c1;
	unsigned char *area;
	char brand[49] = "";
	u32 regs[12];
	struct cpu c;
	int i;

	for (i = 0; i < 3; i++)
		__cpuid(0x80000002 + i, regs[4 * i], regs[4 * i + 1],
			regs[4 * i + 2], regs[4 * i + 3]);
	memcpy(brand, regs, sizeof(regs));
	printf("cpuid brand:  %s\n", brand);
	if (!cpu_probe(&c)) {
		puts("no XSAVE enabled by the OS");
		return 0;
	}
	printf("XCR0:         0x%llx (user mask 0x%llx)\n",
	       (unsigned long long)c.xcr0,
	       (unsigned long long)user_mask(&c));
	printf("area size:    %u B standard (CPUID 0xD.0 EBX), %u B compacted\n",
	       c.std_size, compacted_size(user_mask(&c)));
	printf("instructions: xsaveopt %d, xsavec %d, xsaves %d, avx %d, avx512 %d\n",
	       c.xsaveopt, c.xsavec, c.xsaves, c.avx, c.avx512);
	area = xsave_area(&c);
	if (!area)
		return 3;
	init_area_alloc(&c);
	/* No library call between a state and its XSAVE. */
	xstate_init(&c);
	inuse[0] = xinuse(&c, area);
	copy(copy_dst, copy_src, sizeof(copy_dst));
	inuse[1] = xinuse(&c, area);
	if (c.avx)
		asm volatile("vzeroupper");
	inuse[2] = xinuse(&c, area);
	printf("XINUSE:       0x%llx after init, 0x%llx after glibc memcpy(4 KiB), 0x%llx after vzeroupper\n",
	       (unsigned long long)inuse[0], (unsigned long long)inuse[1],
	       (unsigned long long)inuse[2]);
	free(area);
	t0 = now_ns();
	c0 = rdtsc();
	while (now_ns() - t0 < 50000000)
		;
	t1 = now_ns();
	c1 = rdtsc();
	printf("TSC:          %.1f MHz\n", (double)(c1 - c0) * 1e3 / (t1 - t0));
	return 0;
}

static int x86_main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "info"))
		return info_main();
	if (!strcmp(argv[1], "save"))
		return save_main(argc, argv);
	if (argc != 4)
		return 2;
	if (!strcmp(argv[1], "ldmxcsr"))
		measure(ldmxcsr_run, NULL, atol(argv[2]), atoi(argv[3]), 1);
	else if (!strcmp(argv[1], "fninit"))
		measure(fninit_run, NULL, atol(argv[2]), atoi(argv[3]), 1);
	else
		return 2;
	return 0;
}

#else

static int x86_main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	puts("skip: the FPU save is measured on x86-64 only");
	return 0;
}

#endif /* __x86_64__ */

int main(int argc, char **argv)
{
	int ret;

	if (argc < 2)
		return 2;
	if (!strcmp(argv[1], "utf8"))
		ret = utf8_main(argc, argv);
	else
		ret = x86_main(argc, argv);
	if (fflush(stdout))
		return 5;
	return ret;
}
`

func buildCFPUBench(b *testing.B) string { return buildCBenchProgram(b, "fpubench", cFPUBench) }
