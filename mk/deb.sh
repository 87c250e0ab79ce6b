#!/usr/bin/env bash
# mk/deb.sh: the kmes-tools Debian package, called by mk/deb.mk.
#
#   deb.sh build   build/kmes-tools_VERSION_amd64.deb: what 'make install
#                  PREFIX=/usr' stages (the unit in /lib/systemd/system),
#                  the Debian files of mk/debian/ and the control file
#   deb.sh check   build it twice (the two must be the same bytes), then
#                  lintian and its contents: the files, their modes and owners
#
# The version, 0.1.0~gitDATE.COMMIT-1, comes from the last commit (its
# date and time, UTC, and the first 12 digits of its hash): there is no release yet,
# and ~ sorts it before 0.1.0; the date orders snapshots, the hash names
# the commit; -1 is the Debian revision (the packaging is not upstream's).
# Every file's date is that commit's (SOURCE_DATE_EPOCH): the same commit
# gives the same package.
set -euo pipefail
shopt -s inherit_errexit

top=$(cd "$(dirname "$0")/.." && pwd)
build=$top/build
logs=$build/logs
root=$build/deb/kmes-tools
pkg=kmes-tools
maint='KMES Developers <kmes-dev@example.org>'

die() {
	echo "deb: $*" >&2
	exit 1
}

git -C "$top" rev-parse -q --verify HEAD >/dev/null || die "$top is not a git checkout with a commit: the version comes from the last commit"
SOURCE_DATE_EPOCH=$(git -C "$top" log -1 --format=%ct)
export SOURCE_DATE_EPOCH
commit=$(git -C "$top" log -1 --format=%H)
version=0.1.0~git$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d%H%M%S).${commit:0:12}-1
deb=$build/${pkg}_${version}_amd64.deb

# installed_size is what dpkg-gencontrol would write: KiB, each file
# rounded up, 1 for anything else.
installed_size() {
	find "$root" -path "$root/DEBIAN" -prune -o -mindepth 1 -printf '%y %s\n' |
		awk '{ n += ($1 == "f") ? int(($2 + 1023) / 1024) : 1 } END { print n }'
}

cmd_build() {
	mkdir -p "$logs"
	rm -rf "$build/deb"
	rm -f "$build/${pkg}"_*.deb
	make -C "$top" --no-print-directory install DESTDIR="$root" PREFIX=/usr \
		SYSTEMDUNITDIR=/lib/systemd/system >"$logs/deb.log" 2>&1 ||
		{ tail -n 20 "$logs/deb.log" >&2; die "make install into build/deb failed (log: build/logs/deb.log)"; }

	# Policy 10.1: binaries are stripped (Go's stack traces do not need
	# the symbols; go version -m still reads the build info).
	strip "$root"/usr/bin/*

	local doc=$root/usr/share/doc/$pkg
	install -d "$doc" "$root/usr/share/lintian/overrides" "$root/DEBIAN"
	install -m 0644 "$top/mk/debian/copyright" "$doc/copyright"
	install -m 0644 "$top/mk/debian/lintian-overrides" "$root/usr/share/lintian/overrides/$pkg"
	gzip -9n >"$doc/changelog.Debian.gz" <<EOF
$pkg ($version) bookworm; urgency=medium

  * Snapshot of commit ${commit:0:12} of KMES for Linux.

 -- $maint  $(date -u -R -d "@$SOURCE_DATE_EPOCH")
EOF
	local s
	for s in postinst prerm postrm; do
		install -m 0755 "$top/mk/debian/$s" "$root/DEBIAN/$s"
	done
	# The syscalls are x86-64's: amd64 only. Static binaries: no Depends.
	cat >"$root/DEBIAN/control" <<EOF
Package: $pkg
Version: $version
Architecture: amd64
Maintainer: $maint
Installed-Size: $(installed_size)
Suggests: sqlite3
Section: admin
Priority: optional
Description: KMES event rings: kmesctl and the kmesd daemon
 KMES (a patch series for Linux 6.12) gives the kernel and processes one
 path for structured events: msgpack payloads in per-CPU rings that
 consumers map read-only and drain without system calls.
 .
 kmesctl emits events, follows the rings, reports their counters and
 queries kmesd's database. kmesd stores every CPU ring's events in SQLite
 (/var/lib/kmes/events.db); its systemd unit is enabled and started on
 install and runs only on a kernel with KMES.
EOF
	(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
		xargs -0 md5sum) >"$root/DEBIAN/md5sums"

	# Modes and dates whatever the umask and the clock.
	find "$root" -type d -exec chmod 0755 {} +
	find "$root" -type f -exec chmod 0644 {} +
	chmod 0755 "$root"/usr/bin/* "$root"/DEBIAN/{postinst,prerm,postrm}
	find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	# dpkg-deb sorts the entries and takes SOURCE_DATE_EPOCH for the
	# archive's dates.
	dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >>"$logs/deb.log" ||
		die "dpkg-deb failed (log: build/logs/deb.log)"
	echo "deb: built build/$(basename "$deb")"
}

# The files the package must hold, with their modes. The man pages are
# whatever 'make install-man' installs, checked apart.
expected='-rwxr-xr-x ./usr/bin/kmesctl
-rwxr-xr-x ./usr/bin/kmesd
-rw-r--r-- ./lib/systemd/system/kmesd.service
-rw-r--r-- ./usr/share/bash-completion/completions/kmesctl
-rw-r--r-- ./usr/share/doc/kmes-tools/changelog.Debian.gz
-rw-r--r-- ./usr/share/doc/kmes-tools/copyright
-rw-r--r-- ./usr/share/lintian/overrides/kmes-tools
-rw-r--r-- ./usr/share/man/man1/kmesctl.1.gz
-rw-r--r-- ./usr/share/man/man8/kmesd.8.gz'

cmd_check() {
	local bad=0 first
	cmd_build
	first=$(sha256sum <"$deb")
	cmd_build >/dev/null
	[ "$(sha256sum <"$deb")" = "$first" ] || { echo "deb: two builds of the same tree differ: the package is not reproducible" >&2; bad=1; }

	if ! lintian --fail-on error,warning --info "$deb" >"$logs/deb-lintian.log" 2>&1; then
		cat "$logs/deb-lintian.log" >&2
		echo "deb: lintian found errors or warnings (above; log: build/logs/deb-lintian.log)" >&2
		bad=1
	fi

	# Every entry: root:root; directories 0755, files 0644 but for
	# expected's; nothing outside the directories the package owns.
	local list
	list=$(dpkg-deb -c "$deb" | awk '{ print $1, $2, $NF }')
	local line mode owner path want
	while read -r mode owner path; do
		[ "$owner" = root/root ] || { echo "deb: $path is owned by $owner, not root/root" >&2; bad=1; }
		case "$path" in
		./ | ./usr/ | ./usr/share/ | ./lib/ | ./lib/systemd/ | ./lib/systemd/system/ | ./usr/bin/* | ./lib/systemd/system/kmesd.service) ;;
		./usr/share/doc/ | ./usr/share/doc/$pkg/* | ./usr/share/man/* | ./usr/share/bash-completion/* | ./usr/share/lintian/*) ;;
		*) echo "deb: $path is outside the package's directories" >&2; bad=1 ;;
		esac
		want=$(echo "$expected" | awk -v p="$path" '$2 == p { print $1 }')
		if [ -z "$want" ]; then
			case "$mode" in d*) want=drwxr-xr-x ;; *) want=-rw-r--r-- ;; esac
		fi
		[ "$mode" = "$want" ] || { echo "deb: $path has mode $mode, want $want" >&2; bad=1; }
	done <<<"$list"
	while read -r want path; do
		echo "$list" | grep -q " $path\$" || { echo "deb: $path is missing" >&2; bad=1; }
	done <<<"$expected"
	local pages
	pages=$(mktemp -d)
	make -C "$top" --no-print-directory install-man DESTDIR="$pages" PREFIX=/usr >/dev/null
	for path in $(cd "$pages" && find . -type f | sort); do
		echo "$list" | grep -q " $path\$" || { echo "deb: $path, which make install-man installs, is missing" >&2; bad=1; }
	done
	rm -rf "$pages"

	# The unit runs the packaged kmesd; the binaries are static (no
	# Depends), their Go modules all named in the copyright file.
	grep -qx 'ExecStart=/usr/bin/kmesd' "$root/lib/systemd/system/kmesd.service" ||
		{ echo "deb: kmesd.service does not run /usr/bin/kmesd" >&2; bad=1; }
	local bin mod
	for bin in "$root"/usr/bin/*; do
		if readelf -l "$bin" | grep -q INTERP; then
			echo "deb: usr/bin/${bin##*/} is dynamically linked: the package declares no Depends" >&2
			bad=1
		fi
		for mod in $(go version -m "$bin" | awk '$1 == "dep" { print $2 }'); do
			grep -qE "^(Files:)? +${mod%/v[0-9]*}/\\*\$" "$root/usr/share/doc/$pkg/copyright" ||
				{ echo "deb: usr/bin/${bin##*/} holds Go module $mod, which mk/debian/copyright does not name: add its Files paragraph" >&2; bad=1; }
		done
	done
	local f
	for f in Package Version Architecture Maintainer Installed-Size Section Priority Description; do
		[ -n "$(dpkg-deb -f "$deb" "$f")" ] || { echo "deb: the control file has no $f" >&2; bad=1; }
	done
	[ "$bad" = 0 ] || die "build/$(basename "$deb") failed its checks"
	echo "deb: build/$(basename "$deb"): reproducible, lintian clean, $(echo "$list" | wc -l) entries as expected"
}

case "${1:-}" in
build) cmd_build ;;
check) cmd_check ;;
*) die "usage: deb.sh build | check" ;;
esac
