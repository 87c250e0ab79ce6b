#!/usr/bin/env bash
# mk/selftests.sh: build a kselftest collection for the initramfs, called by
# mk/selftests.mk:
#
#   selftests.sh SRC OUT HEADERS LOG
#
# SRC is the collection (a Makefile that includes ../lib.mk), or the man
# pages' directory (userspace/man): its TestWriteExamples writes out the
# pages' EXAMPLES programs, and testdata/examples.c runs them and prints
# KTAP, the collection's one program. OUT is the output directory, HEADERS
# a 'make headers_install' directory of the kernel the tests run on, LOG
# the build log. The programs are linked statically (the initramfs has no
# libc). OUT also gets kselftest-list.txt, the programs the guest runs
# (lib.mk's emit_tests). lib.mk's rules do not see the headers, so a key
# of every input decides: the same key is a no-op, another one rebuilds OUT
# from scratch.
set -euo pipefail

die() {
	echo "selftests: $*" >&2
	exit 1
}
[ $# = 4 ] || die "usage: selftests.sh SRC OUT HEADERS LOG"
src=$1 out=$2 hdr=$3 log=$4
man=false
[ -f "$src/testdata/examples.c" ] && man=true
$man || [ -f "$src/Makefile" ] || die "$src has no Makefile: the kmes kselftests are not in build/linux yet (KSELFTEST_SRC=DIR builds another collection)"
[ -d "$hdr/include/linux" ] || die "$hdr holds no installed kernel headers: run 'make kernel'"
src=$(cd "$src" && pwd)

# files prints the content hash of every file under a directory.
files() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum); }
key=$( {
	echo "$src"
	files "$src"
	files "$hdr/include"
	if $man; then
		go version
	else
		sha256sum "$src"/../lib.mk "$src"/../kselftest*.h
	fi
	sha256sum "$0"
	gcc --version
} | sha256sum | cut -c1-16)
if [ -f "$out/kselftest-list.txt" ] && [ "$(cat "$out/.key" 2>/dev/null)" = "$key" ]; then
	echo "selftests: $out is up to date"
	exit 0
fi

echo "selftests: building $src (log: $log)"
rm -rf "$out"
mkdir -p "$out" "$(dirname "$log")"
# build_man writes out the pages' examples and builds them and their
# driver as the page's reader would, against the kernel's headers. (Under
# 'if', set -e does not stop it: each step checks.)
build_man() {
	(cd "$src" && KMES_MAN_EXAMPLES=$out go test -count=1 -run '^TestWriteExamples$' .) || return
	[ -f "$out/kmes_emit.c" ] || { echo "TestWriteExamples wrote no example"; return 1; }
	cp "$src/testdata/examples.c" "$out" || return
	for c in "$out"/*.c; do
		gcc -static -Wall -Wextra -Werror -isystem "$hdr/include" -o "${c%.c}" "$c" || return
	done
	# The initramfs takes every file of OUT.
	rm "$out"/*.c && echo examples >"$out/kselftest-list.txt"
}

if $man; then
	if ! build_man >"$log" 2>&1; then
		tail -n 30 "$log" >&2
		die "building the examples of $src failed (log: $log)"
	fi
else
	# A clean environment: the calling make's variables stay out of lib.mk.
	mk=(env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C "$src" OUTPUT="$out"
		KHDR_INCLUDES="-isystem $hdr/include" USERLDFLAGS=-static)
	if ! "${mk[@]}" -j"$(nproc)" >"$log" 2>&1; then
		tail -n 30 "$log" >&2
		die "building $src failed (log: $log)"
	fi
	"${mk[@]}" -s emit_tests | sed 's/^[^:]*://' >"$out/kselftest-list.txt"
fi
[ -s "$out/kselftest-list.txt" ] || die "$src/Makefile lists no tests (TEST_GEN_PROGS)"
while IFS= read -r name; do
	f=$out/$name
	[ -f "$f" ] && [ -x "$f" ] ||
		die "$name is listed by $src/Makefile but not built into $out: the initramfs has no shell, only built programs (TEST_GEN_PROGS, TEST_CUSTOM_PROGS) can run"
	if readelf -lW "$f" | grep -q 'program interpreter'; then
		die "$f is dynamically linked, but the initramfs has no libc: does $src/Makefile set LDFLAGS instead of adding to it?"
	fi
done <"$out/kselftest-list.txt"
echo "$key" >"$out/.key"
echo "selftests: built $(wc -l <"$out/kselftest-list.txt") programs into $out"
