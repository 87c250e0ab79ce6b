package kmes

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// BenchmarkCValidator measures the kernel's msgpack validator, built as
// native userspace C (-O2, no sanitizers), on the payload shapes events
// have, from 16 B to 64 KiB, once per walk (scalar, SSSE3, AVX2):
//
//	go test -run '^$' -bench CValidator ./userspace/kmes/
//
// Each sub-benchmark runs the
// validator b.N times in one process (a start of about a millisecond,
// amortised); MB/s is payload bytes per second.
func BenchmarkCValidator(b *testing.B) {
	bin := buildCBench(b)
	dir := b.TempDir()
	for _, shape := range benchShapes {
		for _, size := range []int{16, 64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10} {
			p := shape.gen(size)
			if ValidatePayload(p, 32) != nil {
				b.Fatalf("%s of %d bytes is not a valid payload", shape.name, size)
			}
			file := filepath.Join(dir, fmt.Sprintf("%s-%d", shape.name, size))
			if err := os.WriteFile(file, p, 0o644); err != nil {
				b.Fatal(err)
			}
			for impl, name := range mpImplNames {
				b.Run(fmt.Sprintf("%s/%dB/%s", shape.name, size, name), func(b *testing.B) {
					b.SetBytes(int64(len(p)))
					out, err := exec.Command(bin, file, strconv.Itoa(b.N), strconv.Itoa(impl)).CombinedOutput()
					if err != nil || string(out) != "valid\n" {
						b.Fatalf("C validator (%s) on %s: %v %q", name, file, err, out)
					}
				})
			}
		}
	}
}

// cBench validates the payload in the file argv[1] argv[2] times with the
// walk argv[3] (enum kmes_mp_impl) and says whether it is valid (a depth
// limit of 32, the default).
const cBench = `#include <stdio.h>
#include <stdlib.h>
#include "validate.h"

int main(int argc, char **argv)
{
	static struct kmes_msgpack_stack stack;
	static unsigned char buf[1 << 20];
	long n, i, ok = 0;
	size_t len;
	FILE *f;

	if (argc != 4 || !(f = fopen(argv[1], "rb")))
		return 2;
	len = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	n = atol(argv[2]);
	for (i = 0; i < n; i++) {
		/* The compiler may not assume the buffer unchanged. */
		__asm__ volatile("" : : "r"(buf) : "memory");
		ok += kmes_msgpack_valid_with(buf, len, 32, &stack,
					      atoi(argv[3]));
	}
	puts(ok == n ? "valid" : "invalid");
	return 0;
}
`

func buildCBench(b *testing.B) string { return buildCBenchProgram(b, "bench", cBench) }

// buildCBenchProgram compiles the C program text as name with the kernel's
// validator, natively (-O2, no sanitizers), and returns the binary.
func buildCBenchProgram(b *testing.B, name, text string) string {
	b.Helper()
	src := validatorSources(b)
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name+".c"), []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
	bin := filepath.Join(dir, name)
	cmd := exec.Command("gcc", "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-I", src,
		"-o", bin, name+".c", filepath.Join(src, "validate.c"))
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("compile %s.c with the C validator: %v\n%s", name, err, out)
	}
	return bin
}

// benchShapes are payloads of about size bytes, each one valid value.
var benchShapes = []struct {
	name string
	gen  func(size int) []byte
}{
	// An array of small ints (positive and negative fixints).
	{"ints", func(size int) []byte {
		n := max(0, size-5)
		p := binary.BigEndian.AppendUint32([]byte{0xdd}, uint32(n))
		for i := range n {
			p = append(p, []byte{0x01, 0x7f, 0xe0, 0x2a}[i%4])
		}
		return p
	}},
	// An array of maps of 5 to 20 short keys with small values.
	{"maps", func(size int) []byte {
		return arrayUpTo(size, func(i int) []byte {
			k := 5 + i%16
			m := []byte{0x80 | byte(k)}
			if k > 15 {
				m = []byte{0xde, 0, byte(k)}
			}
			for j := range k {
				m = append(m, 0xa4, 'k', 'e', 'y', byte('a'+j))
				if j%2 == 0 {
					m = append(m, byte(j))
				} else {
					m = append(m, 0xcd, byte(i), byte(j))
				}
			}
			return m
		})
	}},
	// An array of maps nested four deep: {"a": {"b": {"c": [1, 2, 3]}}}.
	{"nested", func(size int) []byte {
		return arrayUpTo(size, func(i int) []byte {
			return []byte{0x81, 0xa1, 'a', 0x81, 0xa1, 'b', 0x81, 0xa1, 'c', 0x93, 1, 2, byte(i % 100)}
		})
	}},
	// One bin of size bytes in all.
	{"bin", func(size int) []byte {
		n := max(0, size-5)
		return append(binary.BigEndian.AppendUint32([]byte{0xc6}, uint32(n)), make([]byte, n)...)
	}},
}

// arrayUpTo is an array32 of elem(0), elem(1), ... of at most size bytes,
// with at least one element.
func arrayUpTo(size int, elem func(i int) []byte) []byte {
	var body []byte
	n := 0
	for {
		e := elem(n)
		if n > 0 && 5+len(body)+len(e) > size {
			break
		}
		body = append(body, e...)
		n++
	}
	return append(binary.BigEndian.AppendUint32([]byte{0xdd}, uint32(n)), body...)
}
