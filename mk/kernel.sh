#!/usr/bin/env bash
# mk/kernel.sh: the kernel half of the build, called by mk/kernel.mk.
#
#   kernel.sh tree           lay out build/linux: base commit + git am of patches/series
#   kernel.sh build FLAVOR   merge kernel-config/ fragments, build bzImage and
#                            install the UAPI headers beside it (headers/)
#                            (FLAVOR: plain, debug, nokmes or bench; see fragments())
#   kernel.sh deb FLAVOR [CONFIG]
#                            Debian packages of the kernel (bindeb-pkg) in
#                            build/, from FLAVOR's config or the file CONFIG
#   kernel.sh distro-check   Debian's config + kernel-config/kmes.config: the
#                            options stick, the series' objects build
#                            without a warning (see cmd_distro)
#   kernel.sh export         write build/linux's commits back to patches/
#                            (and refresh the cover letter, if there is one)
#   kernel.sh series-key     print the content key of patches/ (kernel.json "series")
#
# build/linux is a git tree whose first commit (tag kmes-base) is the
# unpacked tarball. Stamps in build/linux/.git record what was applied, so a
# second run with nothing changed does nothing, and a tree whose series did
# not apply is never reused.
set -euo pipefail
shopt -s inherit_errexit

top=$(cd "$(dirname "$0")/.." && pwd)
build=$top/build
tree=$build/linux
logs=$build/logs
tarball=${LINUX_TARBALL:-/usr/src/linux-source-6.12.tar.xz}

die() {
	echo "kernel: $*" >&2
	exit 1
}
say() { echo "kernel: $*"; }
hash() { sha256sum | cut -c1-16; }

# The fixed build identity: ccache hits across machines and rebuilds, and a
# reproducible uname -v.
export KBUILD_BUILD_TIMESTAMP='Thu Jan  1 00:00:00 UTC 2026'
export KBUILD_BUILD_USER=kmes
export KBUILD_BUILD_HOST=kmes
export CCACHE_BASEDIR=$top
export CCACHE_NOHASHDIR=1

# The cover letter of the series: never in patches/series (git am must not
# apply it); see cover_letter.
cover=0000-cover-letter.patch

# series_files prints the patch files named by patches/series, in order, and
# fails on a name that is missing or a patch that the series leaves out.
series_files() {
	local series=$top/patches/series name
	[ -f "$series" ] || die "patches/series is missing (an empty file means no patches)"
	while IFS= read -r name || [ -n "$name" ]; do
		name=${name%%#*}
		name=$(echo "$name" | xargs)
		[ -n "$name" ] || continue
		[ -f "$top/patches/$name" ] || die "patches/series names $name, but patches/$name does not exist"
		echo "$top/patches/$name"
	done <"$series"
	grep -qxF "$cover" "$series" && die "patches/series names $cover: the cover letter must not be in the series (git am would apply it)"
	for name in "$top"/patches/*.patch; do
		[ -e "$name" ] || continue
		[ "$(basename "$name")" != "$cover" ] || continue
		grep -qxF "$(basename "$name")" "$series" ||
			die "patches/$(basename "$name") is not listed in patches/series: add it or delete it"
	done
}

# series_key identifies the patch series by content.
series_key() {
	local files
	files=$(series_files)
	{
		cat "$top/patches/series"
		[ -z "$files" ] || cat $files
	} | hash
}

# diff_bodies reduces format-patch output to its diffs, so that two exports
# of the same commits compare equal whatever their hashes and dates.
diff_bodies() { grep -E '^(\+|-|@@)' | grep -vE '^((\+\+\+|---) |-- $)' || true; }

git_tree() { git -C "$tree" "$@"; }

tree_is_clean() { [ -z "$(git_tree status --porcelain --untracked-files=normal)" ]; }

extract_base() {
	local base_key=$1
	[ -f "$tarball" ] || die "kernel source $tarball not found: run 'make deps' (installs linux-source-6.12) or set LINUX_TARBALL=/path/to/linux-6.12.y.tar.xz"
	say "unpacking $tarball into build/linux"
	rm -rf "$tree"
	mkdir -p "$tree"
	tar -xf "$tarball" -C "$tree" --strip-components=1 ||
		{ rm -rf "$tree"; die "could not unpack $tarball"; }
	local v p s
	v=$(sed -n 's/^VERSION = //p' "$tree/Makefile")
	p=$(sed -n 's/^PATCHLEVEL = //p' "$tree/Makefile")
	s=$(sed -n 's/^SUBLEVEL = //p' "$tree/Makefile")
	[ "$v.$p" = "6.12" ] || { rm -rf "$tree"; die "$tarball is Linux $v.$p, not 6.12: set LINUX_TARBALL to a 6.12.y tarball"; }
	git -C "$tree" init -q -b main
	git_tree config user.name "KMES build"
	git_tree config user.email "kmes-build@localhost"
	git_tree config gc.auto 0
	git_tree add -A -f .
	# A fixed author and date give the base commit the same hash on every
	# machine for the same tarball.
	GIT_AUTHOR_DATE='2026-01-01T00:00:00Z' GIT_COMMITTER_DATE='2026-01-01T00:00:00Z' \
		git_tree commit -q -m "Linux $v.$p.$s from $(basename "$tarball")"
	git_tree tag -f kmes-base >/dev/null
	echo "$base_key" >"$tree/.git/kmes-base-key"
}

cmd_tree() {
	mkdir -p "$logs"
	[ -f "$tarball" ] || die "kernel source $tarball not found: run 'make deps' (installs linux-source-6.12) or set LINUX_TARBALL=/path/to/linux-6.12.y.tar.xz"
	local base_key want files
	base_key=$(stat -Lc '%n %s %Y' "$tarball" | hash)
	want=$(series_key)
	files=$(series_files)

	if [ ! -f "$tree/.git/kmes-base-key" ] || [ "$(cat "$tree/.git/kmes-base-key")" != "$base_key" ]; then
		extract_base "$base_key"
	fi
	local applied=$tree/.git/kmes-applied
	if [ -f "$applied" ] && [ "$(cat "$applied")" = "$want" ]; then
		return 0
	fi

	# The series changed. Work in build/linux that patches/ does not hold
	# would be lost by re-applying: keep it unless FORCE=1.
	if [ -f "$applied" ] && [ "${FORCE:-0}" != 1 ]; then
		tree_is_clean || die "build/linux has uncommitted changes and patches/ changed: commit them in build/linux and run 'make export-patches', or run 'make kernel FORCE=1' to discard them"
		local have_body want_body
		have_body=$( ([ -z "$files" ] || cat $files) | diff_bodies | sha256sum)
		want_body=$(git_tree format-patch --stdout kmes-base..HEAD | diff_bodies | sha256sum)
		if [ "$have_body" = "$want_body" ]; then
			# patches/ is an export of this very tree: nothing to apply.
			echo "$want" >"$applied"
			return 0
		fi
		if [ "$(git_tree rev-parse HEAD)" != "$(cat "$tree/.git/kmes-applied-head" 2>/dev/null)" ]; then
			die "build/linux has commits that patches/ does not hold, and patches/ changed: run 'make export-patches' first, or 'make kernel FORCE=1' to discard them"
		fi
	fi

	rm -f "$applied"
	git_tree am --abort >/dev/null 2>&1 || true
	git_tree reset -q --hard kmes-base
	git_tree clean -q -fdx
	local n
	n=$(echo -n "$files" | grep -c . || true)
	if [ "$n" -gt 0 ]; then
		say "applying $n patches from patches/series"
		# shellcheck disable=SC2086
		if ! git_tree am -q --3way --committer-date-is-author-date $files >"$logs/git-am.log" 2>&1; then
			local failed
			failed=$(sed -n 's/^Patch failed at [0-9]* //p' "$logs/git-am.log" | head -n1)
			git_tree am --abort >/dev/null 2>&1 || true
			git_tree reset -q --hard kmes-base
			cat "$logs/git-am.log" >&2
			die "patch '${failed:-?}' does not apply to $(basename "$tarball") (log: build/logs/git-am.log); fix it in patches/ (the tree is reset to its base)"
		fi
	fi
	git_tree rev-parse HEAD >"$tree/.git/kmes-applied-head"
	echo "$want" >"$applied"
}

# The fragments of each flavor, in merge order (a later one wins):
#   plain   base.config (the guest), kmes.config (KMES's feature options,
#           all a distribution needs), kmes-test.config (KUnit suites,
#           debugfs benchmarks) and kselftest.config
#   debug   plain + debug.config (the test kernel)
#   bench   plain + bench.config: make bench's kernel, with the peers KMES is
#           measured against (tracing, user_events, BPF)
#   nokmes  debug + nokmes.config, which turns KMES off: the series must
#           build with CONFIG_KMES=n. Its .config differs from debug's in
#           KMES's options alone (cmd_build checks), so that ccache, warm
#           from the debug build, serves every object KMES does not change
#           and the build costs a fraction of a kernel's.
# Names, not a glob: the order does not hang on the locale, and a new
# fragment is given to the flavors it is for (check_fragments).
plain_frags=(base.config kmes.config kmes-test.config kselftest.config)
flavor_frags() {
	case "$1" in
	plain) echo "${plain_frags[@]}" ;;
	debug) echo "${plain_frags[@]}" debug.config ;;
	bench) echo "${plain_frags[@]}" bench.config ;;
	nokmes) echo "${plain_frags[@]}" debug.config nokmes.config ;;
	esac
}

# fragments prints the paths of a flavor's fragments.
fragments() {
	local f
	for f in $(flavor_frags "$1"); do echo "$top/kernel-config/$f"; done
}

# check_fragments fails on a fragment of a flavor that does not exist, and on
# one in kernel-config/ that no flavor uses.
check_fragments() {
	local f used
	used=" $(flavor_frags debug) $(flavor_frags bench) $(flavor_frags nokmes) "
	for f in $used; do
		[ -f "$top/kernel-config/$f" ] || die "kernel-config/$f is missing"
	done
	for f in "$top"/kernel-config/*.config; do
		[[ $used == *" $(basename "$f") "* ]] ||
			die "kernel-config/$(basename "$f") is used by no flavor: name it in flavor_frags() in mk/kernel.sh"
	done
}

# kmes_opt matches the options that nokmes.config turns off with KMES.
kmes_opt='CONFIG_KMES(_[A-Z0-9_]+)?'

# config_lines prints a .config's settings, sorted.
config_lines() { grep -E '^(CONFIG_[A-Z0-9_]+=|# CONFIG_[A-Z0-9_]+ is not set)' "$1" | sort; }

# merge_config merges fragments into OBJ/.config, from allnoconfig.
merge_config() {
	local obj=$1 log=$2
	shift 2
	(cd "$tree" && scripts/kconfig/merge_config.sh -n -O "$obj" "$@") >>"$log" 2>&1 ||
		{ tail -n 20 "$log" >&2; die "merging kernel-config/ failed (log: build/logs/$(basename "$log"))"; }
}

# kconfig_why prints, for an option that did not stick, what its Kconfig
# entry asks for (depends on, range) and the values CONFIG gives the symbols
# named there, e.g. "; kernel/kmes/Kconfig: depends on KMES && KUNIT=y, with
# KMES=y KUNIT=n". Menus and if blocks around the entry are not followed.
kconfig_why() {
	local name=${1#CONFIG_} config=$2 kc entry sym val vals=""
	kc=$(cd "$tree" && grep -rlE --exclude-dir=.git --include='Kconfig*' "^(menu)?config $name[[:space:]]*$" . 2>/dev/null | head -n1 || true)
	[ -n "$kc" ] || return 0
	entry=$(awk -v n="$name" '
		$0 ~ "^(menu)?config " n "[[:space:]]*$" { on = 1; next }
		on && /^[^[:space:]]/ { exit }
		on && /^[[:space:]]+(depends on|range) / { sub(/^[[:space:]]+/, ""); print }
	' "$tree/$kc")
	[ -n "$entry" ] || return 0
	for sym in $(sed -n 's/^depends on //p' <<<"$entry" | grep -oE '\<[A-Z][A-Z0-9_]*\>' | sort -u); do
		val=$(sed -n "s/^CONFIG_$sym=//p" "$config" | head -n1)
		vals+=" $sym=${val:-n}"
	done
	echo -n "; ${kc#./}: $(paste -sd';' <<<"$entry" | sed 's/;/; /g')${vals:+, with$vals}"
}

# check_config fails when an option a fragment asks for is not what the final
# .config holds (merge_config.sh only warns).
#   check_config CONFIG SKIP FRAGMENT...
# SKIP is an extended regex of options not to check ('' checks all).
check_config() {
	local config=$1 skip=$2 frag line opt want got bad=0
	shift 2
	for frag in "$@"; do
		while IFS= read -r line; do
			case "$line" in
			CONFIG_*=*)
				opt=${line%%=*}
				want=$line
				;;
			"# CONFIG_"*" is not set")
				opt=${line#\# }
				opt=${opt%% *}
				want=$line
				;;
			*) continue ;;
			esac
			[ -z "$skip" ] || ! [[ $opt =~ ^($skip)$ ]] || continue
			got=$(grep -E "^($opt=|# $opt is not set)" "$config" || true)
			if [ "$want" != "$got" ] && ! { [ -z "$got" ] && [ "$want" = "# $opt is not set" ]; }; then
				echo "kernel: kernel-config/$(basename "$frag"): $want did not stick (final .config: ${got:-not present})$(kconfig_why "$opt" "$config"); check its dependencies with 'make -C build/linux O=../$(basename "$(dirname "$config")") menuconfig'" >&2
				bad=1
			fi
		done <"$frag"
	done
	return $bad
}

# ccache_summary prints how many of a build's compiles ccache served, from
# its stats log (CCACHE_STATSLOG), or nothing without one.
ccache_summary() {
	[ -s "$1" ] || return 0
	local hits misses
	hits=$(grep -cE '^(direct|preprocessed)_cache_hit$' "$1" || true)
	misses=$(grep -cx 'cache_miss' "$1" || true)
	echo "; ccache: $hits of $((hits + misses)) compiles hit, build/logs/$(basename "$1") says which"
}

# configure merges FLAVOR's fragments into OBJ/.config from allnoconfig
# and checks that each setting stuck; a second call with the same
# fragments does nothing.
configure() {
	local flavor=$1 obj=$2 frags cfg_key
	mapfile -t frags < <(fragments "$flavor")
	cfg_key=$( (echo "$flavor"; cat "${frags[@]}") | hash)
	[ "$(cat "$obj/.kmes-config-key" 2>/dev/null)" != "$cfg_key" ] || [ ! -f "$obj/.config" ] || return 0
	mkdir -p "$obj" "$logs"
	say "configuring $flavor from ${frags[*]##*/}"
	rm -f "$obj/.kmes-config-key"
	local log=$logs/config-$flavor.log
	: >"$log"
	if [ "$flavor" = nokmes ]; then
		# The debug config first, to compare: nokmes.config must
		# change KMES's options and nothing else.
		local ref
		mapfile -t ref < <(fragments debug)
		merge_config "$obj" "$log" "${ref[@]}"
		mv "$obj/.config" "$obj/.config.debug"
	fi
	merge_config "$obj" "$log" "${frags[@]}"
	if [ "$flavor" = nokmes ]; then
		grep -qx '# CONFIG_KMES is not set' "$obj/.config" ||
			die "the nokmes config still has $(grep '^CONFIG_KMES=' "$obj/.config"): some other fragment selects it"
		local other
		other=$(diff <(config_lines "$obj/.config.debug") <(config_lines "$obj/.config") |
			grep -E '^[<>] ' | grep -vE "^[<>] (# )?$kmes_opt[= ]" || true)
		if [ -n "$other" ]; then
			echo "$other" | sed 's/^</  debug: /; s/^>/  nokmes:/' >&2
			die "the nokmes config differs from the debug one in more than KMES's options (above): ccache could not share the debug build's objects; make kernel-config/nokmes.config turn off only KMES"
		fi
		# KMES's own options cannot stick with KMES off.
		check_config "$obj/.config" "$kmes_opt" "${frags[@]}" || die "the nokmes config does not hold what kernel-config/ asks for"
	else
		check_config "$obj/.config" "" "${frags[@]}" || die "the $flavor config does not hold what kernel-config/ asks for"
	fi
	echo "$cfg_key" >"$obj/.kmes-config-key"
}

cmd_build() {
	local flavor=${1:-debug}
	case "$flavor" in
	plain | debug | nokmes | bench) ;;
	*) die "unknown FLAVOR '$flavor': use plain, debug, nokmes or bench" ;;
	esac
	[ -d "$tree/.git" ] || die "build/linux does not exist: run 'make kernel'"
	[ -f "$tree/.git/kmes-applied" ] || die "build/linux holds no applied series: run 'make kernel'"
	local obj=$build/obj-$flavor out=$build/kernel-$flavor frags cfg_key tree_state build_key
	check_fragments
	mapfile -t frags < <(fragments "$flavor")
	cfg_key=$( (echo "$flavor"; cat "${frags[@]}") | hash)
	local treehash dirty=""
	treehash=$(git_tree rev-parse --short=12 'HEAD^{tree}')
	if ! tree_is_clean; then
		dirty=-dirty-$( (git_tree diff HEAD; git_tree status --porcelain) | hash)
	fi
	tree_state=$treehash$dirty
	# This script is an input too: it holds the make arguments.
	# kernel.json records the series, so a new series with the same tree
	# (a reworded commit message) still rewrites it.
	build_key=$( (echo "$cfg_key $tree_state"; cat "$0" "$tree/.git/kmes-applied") | hash)
	if [ -f "$out/bzImage" ] && [ -d "$out/headers/include" ] && [ "$(cat "$out/build-key" 2>/dev/null)" = "$build_key" ]; then
		say "build/kernel-$flavor/bzImage is up to date"
		return 0
	fi
	rm -f "$out/build-key"
	mkdir -p "$obj" "$out" "$logs"

	local jobs=$(($(nproc) + 1))
	# LOCALVERSION= (set, empty) keeps setlocalversion from adding "+" for
	# a git tree; CONFIG_LOCALVERSION supplies -kmes.
	local mk=(make -C "$tree" O="$obj" -j"$jobs" LOCALVERSION= KBUILD_BUILD_VERSION="$tree_state")
	command -v ccache >/dev/null && mk+=(CC="ccache gcc")
	# What ccache did for this build alone, for the last line: the
	# nokmes build should be served almost whole by the debug one's.
	local stats=$logs/ccache-$flavor.log
	rm -f "$stats"
	export CCACHE_STATSLOG=$stats

	configure "$flavor" "$obj"

	say "building $flavor bzImage ($tree_state, log: build/logs/kernel-$flavor.log)"
	local t0=$SECONDS
	if ! "${mk[@]}" bzImage >"$logs/kernel-$flavor.log" 2>&1; then
		grep -E 'error|Error' "$logs/kernel-$flavor.log" | head -n 20 >&2 || true
		tail -n 20 "$logs/kernel-$flavor.log" >&2
		die "the $flavor kernel did not build (log: build/logs/kernel-$flavor.log)"
	fi
	cp "$obj/arch/x86/boot/bzImage" "$out/bzImage"
	# The UAPI headers of this very tree: the kselftests build against them
	# (mk/selftests.mk).
	rm -rf "$out/headers"
	if ! "${mk[@]}" headers_install INSTALL_HDR_PATH="$out/headers" >>"$logs/kernel-$flavor.log" 2>&1; then
		tail -n 20 "$logs/kernel-$flavor.log" >&2
		die "installing the $flavor UAPI headers failed (log: build/logs/kernel-$flavor.log)"
	fi
	local release version kunit=""
	release=$(cat "$obj/include/config/kernel.release")
	# The KUnit suites this kernel must report at boot: every suite the
	# KMES test sources define, when the config builds them.
	if grep -q '^CONFIG_KMES_KUNIT_TEST=y' "$obj/.config"; then
		kunit=$(grep -ho '\.name *= *"kmes_[a-z0-9_]*"' "$tree"/kernel/kmes/tests/*_kunit.c 2>/dev/null |
			sed 's/.*"\(.*\)"/"\1"/' | sort -u | paste -sd, -)
	fi
	version=$(sed -n 's/^#define UTS_VERSION "\(.*\)"$/\1/p' "$obj/include/generated/utsversion.h")
	cat >"$out/kernel.json" <<EOF
{
  "flavor": "$flavor",
  "release": "$release",
  "version": "$version",
  "series": "$(cat "$tree/.git/kmes-applied")",
  "tree": "$tree_state",
  "config": "$cfg_key",
  "kunit_suites": [$kunit]
}
EOF
	cp "$obj/.config" "$out/config"
	echo "$build_key" >"$out/build-key"
	say "built build/kernel-$flavor/bzImage: $release $version ($((SECONDS - t0)) s$(ccache_summary "$stats"))"
}

# cmd_deb builds Debian packages of the patched kernel with the kernel's
# own bindeb-pkg (scripts/package/): linux-image-RELEASE (/boot/vmlinuz-*),
# linux-libc-dev (the UAPI headers, KMES's among them) and, with modules or
# debug info, linux-headers and linux-image-dbg. The config is FLAVOR's,
# merged as for 'kernel.sh build' in the same build/obj-FLAVOR (so the
# objects are shared), or the file CONFIG, copied to build/obj-deb, where
# olddefconfig fills in what it lacks. dpkg-buildpackage writes the
# packages beside the object directory: build/.
cmd_deb() {
	local flavor=${1:-plain} config=${2:-} obj name
	[ -f "$tree/.git/kmes-applied" ] || die "build/linux holds no applied series: run 'make kernel-tree'"
	if [ -n "$config" ]; then
		[ -f "$config" ] || die "KERNEL_DEB_CONFIG=$config: no such file"
		obj=$build/obj-deb name=custom
		mkdir -p "$obj" "$logs"
		# The file as given is kept beside (.config.in): kbuild rewrites
		# .config. olddefconfig gives what it lacks (KMES's options, in a
		# config from before the series) their defaults: without it,
		# kbuild would ask for them on a terminal the log hides.
		if ! cmp -s "$config" "$obj/.config.in" || [ ! -f "$obj/.config" ]; then
			cp "$config" "$obj/.config.in"
			cp "$config" "$obj/.config"
			make -C "$tree" O="$obj" olddefconfig >"$logs/config-deb.log" 2>&1 ||
				{ tail -n 20 "$logs/config-deb.log" >&2; die "olddefconfig of $config failed (log: build/logs/config-deb.log)"; }
		fi
	else
		case "$flavor" in
		plain | debug | bench) ;;
		*) die "unknown FLAVOR '$flavor' for kernel-deb: use plain, debug or bench, or KERNEL_DEB_CONFIG=/path/to/.config" ;;
		esac
		obj=$build/obj-$flavor name=$flavor
		configure "$flavor" "$obj"
	fi
	mkdir -p "$logs"
	local treehash dirty="" jobs=$(($(nproc) + 1))
	treehash=$(git_tree rev-parse --short=12 'HEAD^{tree}')
	tree_is_clean || dirty=.dirty
	local mk=(make -C "$tree" O="$obj" LOCALVERSION=)
	command -v ccache >/dev/null && mk+=(CC="ccache gcc")
	# The version names the source tree, as uname -v of 'make kernel' does:
	# the kernel's own default counts builds (.version), which differs
	# from machine to machine. Its revision becomes uname -v's "#...".
	local kver
	kver=$("${mk[@]}" -s kernelversion)
	export KDEB_PKGVERSION=$kver-1+kmes.$treehash$dirty
	export KDEB_SOURCENAME=linux-kmes KDEB_CHANGELOG_DIST=bookworm
	export DEBFULLNAME="KMES Developers" DEBEMAIL=kmes-dev@example.org
	# File dates in the packages: KBUILD_BUILD_TIMESTAMP's, not the
	# changelog's (the time of the build).
	SOURCE_DATE_EPOCH=$(date -d "$KBUILD_BUILD_TIMESTAMP" +%s)
	export SOURCE_DATE_EPOCH
	local log=$logs/kernel-deb-$name.log t0=$SECONDS old
	# The packages of this directory's last run, with another version.
	if [ -f "$obj/debian/files" ]; then
		for old in $(awk '{print $1}' "$obj/debian/files"); do rm -f "$build/$old"; done
	fi
	say "building Debian packages of the ${config:-$name} kernel, $KDEB_PKGVERSION (log: build/logs/$(basename "$log"))"
	local stats=$logs/ccache-deb-$name.log
	rm -f "$stats"
	export CCACHE_STATSLOG=$stats
	# bindeb-pkg passes dpkg-buildpackage -j1, a serial build;
	# DPKG_FLAGS=-jN, after it, wins. The outer make runs no jobs itself
	# (a -j there too makes debian/rules' make reset the jobserver).
	# -d: the build dependencies are mk/deps.list's, checked by make deps;
	# dpkg-buildpackage's own check would also want build-essential (g++).
	if ! "${mk[@]}" DPKG_FLAGS="-j$jobs -d" bindeb-pkg >"$log" 2>&1; then
		grep -E 'error|Error' "$log" | head -n 20 >&2 || true
		tail -n 20 "$log" >&2
		die "bindeb-pkg failed (log: build/logs/$(basename "$log"))"
	fi
	grep -q '^CONFIG_KMES=y' "$obj/.config" ||
		echo "kernel: warning: ${config:-$name}'s config does not enable CONFIG_KMES: these packages hold no KMES (merge kernel-config/kmes.config into it)" >&2
	local files image libc
	files=$(awk '/\.deb /{print "build/" $1}' "$obj/debian/files")
	# What a user of the packages gets: the kernel that was built, and
	# KMES's UAPI header and system call numbers for userspace builds.
	image=$(awk '/^linux-image-[^ ]*[.]deb /{print $1}' "$obj/debian/files" | grep -v -- -dbg_ | head -n1)
	libc=$(awk '/^linux-libc-dev_[^ ]*[.]deb /{print $1}' "$obj/debian/files" | head -n1)
	[ -n "$image" ] && [ -n "$libc" ] || die "bindeb-pkg made no linux-image or linux-libc-dev package (build/$(basename "$obj")/debian/files)"
	# grep without -q reads it all: pipefail and a closed pipe.
	dpkg-deb -c "$build/$image" | grep ' \./boot/vmlinuz-' >/dev/null || die "$image holds no /boot/vmlinuz-*"
	if grep -q '^CONFIG_KMES=y' "$obj/.config"; then
		local inc
		inc=$(mktemp -d)
		dpkg-deb -x "$build/$libc" "$inc"
		[ -f "$inc/usr/include/linux/kmes.h" ] &&
			grep -q '__NR_kmes_emit_batch 1092' "$inc/usr/include/x86_64-linux-gnu/asm/unistd_64.h" ||
			{ rm -rf "$inc"; die "$libc lacks linux/kmes.h or the KMES system call numbers"; }
		rm -rf "$inc"
	fi
	say "built in $((SECONDS - t0)) s$(ccache_summary "$stats"): $(echo $files)"
}

# cover_letter OLD NEW writes to stdout the cover letter OLD (hand-written:
# its mail header, subject and blurb) with the shortlog and diffstat of NEW
# (git format-patch --cover-letter's, of the series being exported) and
# NEW's patch count in the subject. The blurb ends where the shortlog
# starts, at the first body line like "Author Name (16):".
cover_letter() {
	local old=$1 new=$2 prefix
	prefix=$(sed -n 's/^Subject: \(\[PATCH [0-9]*\/[0-9]*\]\).*/\1/p' "$new" | head -n1)
	[ -n "$prefix" ] || die "git format-patch --cover-letter wrote no [PATCH 0/N] subject"
	grep -q '^Subject: \[PATCH [0-9]*/[0-9]*\] ' "$old" ||
		die "patches/$cover has no 'Subject: [PATCH 00/NN] ...' line: fix it by hand, or delete it and start again from git format-patch --cover-letter"
	# The old header and blurb, the subject renumbered.
	awk -v prefix="$prefix" '
		!body && /^$/ { body = 1; print; next }
		!body { if (/^Subject: \[PATCH [0-9]*\/[0-9]*\] /) sub(/\[PATCH [0-9]*\/[0-9]*\]/, prefix); print; next }
		/^[^ ].* \([0-9]+\):$/ { exit }
		{ print }' "$old"
	# The new shortlog and diffstat.
	awk '!body && /^$/ { body = 1; next } body && /^[^ ].* \([0-9]+\):$/ { on = 1 } on' "$new"
}

# distro_targets prints what make distro-check builds: the objects of the
# files the series (and any edit in build/linux) changes, as the
# distribution config CONFIG builds them.
#   kernel/kmes/ and kernel/futex/  the directories (KMES, and the futex
#                   helper of patch 0002 with its users)
#   a syscall table the objects generated from it (the x32 one also reads
#                   the 64-bit table)
#   any other .c    its object (kernel/fork.o, kernel/sys_ni.o)
# tools/ and Documentation/ are not the kernel's build; headers are checked
# through the objects that include them, UAPI ones also by distro_headers.
distro_targets() {
	local f
	git_tree diff --name-only kmes-base | while IFS= read -r f; do
		case "$f" in
		tools/* | Documentation/*) ;;
		kernel/kmes/*) echo kernel/kmes/ ;;
		kernel/futex/*) echo kernel/futex/ ;;
		arch/x86/entry/syscalls/syscall_64.tbl)
			echo arch/x86/entry/syscall_64.o
			! grep -qx 'CONFIG_X86_X32_ABI=y' "$1" || echo arch/x86/entry/syscall_x32.o
			;;
		arch/x86/entry/syscalls/syscall_32.tbl)
			! grep -qx 'CONFIG_IA32_EMULATION=y' "$1" || echo arch/x86/entry/syscall_32.o
			;;
		*.c) echo "${f%.c}.o" ;;
		esac
	done | sort -u
}

# distro_headers prints the UAPI headers the series changes, as installed
# under usr/include.
distro_headers() {
	git_tree diff --name-only kmes-base -- include/uapi arch/x86/include/uapi |
		sed -n 's|^include/uapi/\(.*\.h\)$|\1|p; s|^arch/x86/include/uapi/\(.*\.h\)$|\1|p'
}

# cmd_distro is make distro-check: what a distribution packager does with
# the series. Debian's own config (DISTRO_CONFIG, from linux-config-6.12)
# plus kernel-config/kmes.config and nothing else, olddefconfig, every
# option of kmes.config must stick; then the objects the series changes and
# its UAPI headers must build without a warning. Not the whole kernel:
# Debian's config builds thousands of modules.
cmd_distro() {
	local config=${DISTRO_CONFIG:-/usr/src/linux-config-6.12/config.amd64_none_amd64.xz}
	local frag=$top/kernel-config/kmes.config obj=$build/obj-distro
	local log=$logs/distro-check.log clog=$logs/config-distro.log
	[ -f "$tree/.git/kmes-applied" ] || die "build/linux holds no applied series: run 'make kernel-tree'"
	[ -f "$config" ] || die "$config not found: run 'make deps' (installs linux-config-6.12) or set DISTRO_CONFIG=/path/to/config"
	mkdir -p "$obj" "$logs"
	local key treehash dirty=""
	treehash=$(git_tree rev-parse --short=12 'HEAD^{tree}')
	tree_is_clean || dirty=-dirty-$( (git_tree diff HEAD; git_tree status --porcelain) | hash)
	key=$( (echo "$treehash$dirty"; cat "$config" "$frag" "$0") | hash)
	if [ "$(cat "$obj/.kmes-distro-key" 2>/dev/null)" = "$key" ]; then
		say "distro-check: passed already for this tree, config and kernel-config/kmes.config"
		return 0
	fi
	rm -f "$obj/.kmes-distro-key"

	say "distro-check: $(basename "$config") + kernel-config/kmes.config, olddefconfig (log: build/logs/config-distro.log)"
	case "$config" in
	*.xz) xz -dc "$config" >"$obj/distro.config" ;;
	*) cp "$config" "$obj/distro.config" ;;
	esac
	# Debian's config leaves out the settings its build sets (module
	# signing key, trusted keys) and was made with pahole present:
	# olddefconfig gives the first their defaults and turns BTF off
	# without pahole. Neither changes an object built here, so nothing is
	# overridden.
	if ! { (cd "$tree" && scripts/kconfig/merge_config.sh -m -O "$obj" "$obj/distro.config" "$frag") &&
		make -C "$tree" O="$obj" olddefconfig; } >"$clog" 2>&1; then
		tail -n 20 "$clog" >&2
		die "configuring the distribution kernel failed (log: build/logs/config-distro.log)"
	fi
	check_config "$obj/.config" "" "$frag" ||
		die "kernel-config/kmes.config does not stick on $(basename "$config"): a distribution merging it would not get KMES as configured"

	local targets headers jobs=$(($(nproc) + 1))
	mapfile -t targets < <(distro_targets "$obj/.config")
	mapfile -t headers < <(distro_headers)
	local mk=(make -C "$tree" O="$obj" -j"$jobs" LOCALVERSION= KBUILD_BUILD_VERSION="$treehash$dirty")
	command -v ccache >/dev/null && mk+=(CC="ccache gcc")
	local stats=$logs/ccache-distro.log
	rm -f "$stats"
	export CCACHE_STATSLOG=$stats
	say "distro-check: building ${targets[*]} and the UAPI headers (log: build/logs/distro-check.log)"
	local t0=$SECONDS
	if ! "${mk[@]}" "${targets[@]}" headers >"$log" 2>&1; then
		grep -E 'error|Error' "$log" | head -n 20 >&2 || true
		tail -n 20 "$log" >&2
		die "the series does not build with $(basename "$config") (log: build/logs/distro-check.log)"
	fi
	# The compile test the kernel gives every UAPI header with
	# CONFIG_UAPI_HEADER_TEST (usr/include/Makefile), which Debian's
	# config leaves off: standard C, no kernel-only construct.
	local h
	for h in "${headers[@]}"; do
		echo "UAPI compile test: $h" >>"$log"
		gcc -std=c90 -Wall -Werror=implicit-function-declaration -m64 -fsyntax-only -x c /dev/null \
			-include "$h" -I "$obj/usr/include" -I "$tree/usr/dummy-include" >>"$log" 2>&1 ||
			{ tail -n 20 "$log" >&2; die "the UAPI header $h does not compile on its own in standard C (log: build/logs/distro-check.log)"; }
	done
	if grep -q 'warning:' "$log"; then
		grep 'warning:' "$log" >&2
		die "the series builds with warnings with $(basename "$config") (above; log: build/logs/distro-check.log)"
	fi
	echo "$key" >"$obj/.kmes-distro-key"
	say "distro-check: passed: ${#targets[@]} targets, ${#headers[@]} UAPI headers, no warning ($((SECONDS - t0)) s$(ccache_summary "$stats"))"
}

cmd_export() {
	[ -d "$tree/.git" ] || die "build/linux does not exist: run 'make kernel' first"
	tree_is_clean || die "build/linux has uncommitted changes: commit them there first"
	git_tree rev-parse -q --verify kmes-base >/dev/null || die "build/linux has no kmes-base tag: run 'make kernel'"
	local tmp keep=""
	tmp=$(mktemp -d)
	# --zero-commit and --no-signature keep re-exports of the same commits
	# byte-identical.
	git_tree format-patch -q --zero-commit --no-signature -o "$tmp" kmes-base..HEAD
	# A cover letter, if patches/ has one, keeps its hand-written part and
	# gets the shortlog and diffstat of the series exported.
	if [ -f "$top/patches/$cover" ] && [ -n "$(ls "$tmp")" ]; then
		mkdir "$tmp/cover"
		git_tree format-patch -q --zero-commit --no-signature --cover-letter -o "$tmp/cover" kmes-base..HEAD
		cover_letter "$top/patches/$cover" "$tmp/cover/$cover" >"$tmp/$cover.new"
		rm -rf "$tmp/cover"
		keep=$tmp/$cover.new
	fi
	rm -f "$top"/patches/*.patch
	: >"$top/patches/series"
	local f
	for f in "$tmp"/*.patch; do
		[ -e "$f" ] || continue
		mv "$f" "$top/patches/"
		basename "$f" >>"$top/patches/series"
	done
	[ -z "$keep" ] || mv "$keep" "$top/patches/$cover"
	rmdir "$tmp"
	git_tree rev-parse HEAD >"$tree/.git/kmes-applied-head"
	series_key >"$tree/.git/kmes-applied"
	say "exported $(grep -c . "$top/patches/series" || true) patches to patches/ (review with 'git diff patches/')"
}

case "${1:-}" in
tree) cmd_tree ;;
build) cmd_build "${2:-debug}" ;;
deb) cmd_deb "${2:-plain}" "${3:-}" ;;
distro-check) cmd_distro ;;
export) cmd_export ;;
series-key) series_key ;;
*) die "usage: kernel.sh tree | build plain|debug|nokmes|bench | deb FLAVOR [CONFIG] | distro-check | export | series-key" ;;
esac
