#!/usr/bin/env bash
# mk/deps.sh: what the build needs on the machine, from mk/deps.list.
#
#   deps.sh           install the Debian packages of the list that are not
#                     installed (apt-get, needs root), then check
#   deps.sh check     check that every command of the list is on PATH and
#                     every file exists; name each missing one and its
#                     package; fail if one is missing
#   deps.sh packages  print the Debian packages of the list
#
# DEPS_LIST=FILE reads another list (for the host tests). The check uses
# bash builtins only, so that it works whatever PATH lacks.
set -euo pipefail

here=${0%/*}
[ "$here" != "$0" ] || here=.
list=${DEPS_LIST:-$here/deps.list}
needs=() pkgs=()
while read -r need pkg _ || [ -n "${need:-}" ]; do
	case "$need" in "" | "#"*) continue ;; esac
	[[ -n ${pkg:-} && $pkg != "#"* ]] || { echo "deps: $list: '$need' names no package" >&2; exit 1; }
	needs+=("$need") pkgs+=("$pkg")
done <"$list"

# packages prints the Debian packages of the list, once each, in order.
packages() {
	local -A seen=()
	local p
	for p in "${pkgs[@]}"; do
		[ "$p" != go.dev ] && [ -z "${seen[$p]:-}" ] || continue
		seen[$p]=1
		echo "$p"
	done
}

check() {
	local i need pkg missing=0
	for i in "${!needs[@]}"; do
		need=${needs[$i]} pkg=${pkgs[$i]}
		if [[ $need == /* ]]; then
			# The kernel source is not needed when LINUX_TARBALL names another.
			[[ $pkg == linux-source-* && -n ${LINUX_TARBALL:-} ]] && continue
			[ -e "$need" ] && continue
		else
			command -v "$need" >/dev/null && continue
		fi
		missing=1
		if [ "$pkg" = go.dev ]; then
			echo "deps: $need not found: install $(go_version) from https://go.dev/doc/install and put it on PATH (/usr/local/go/bin)" >&2
		else
			echo "deps: $need not found (Debian package $pkg)" >&2
		fi
	done
	return $missing
}

# go_version is the Go that go.mod asks for.
go_version() {
	local line
	while read -r line; do
		[[ $line == "go "* ]] && { echo "Go ${line#go } or newer"; return; }
	done 2>/dev/null <"$here/../go.mod"
	echo "Go"
}

install() {
	local p missing=()
	if command -v dpkg-query >/dev/null; then
		for p in $(packages); do
			[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
		done
	fi
	if [ ${#missing[@]} -gt 0 ]; then
		echo "deps: installing ${missing[*]}"
		if [ "$(id -u)" != 0 ]; then
			echo "deps: apt-get needs root: run 'sudo make deps'" >&2
			exit 1
		fi
		export DEBIAN_FRONTEND=noninteractive
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
			{ echo "deps: apt-get install ${missing[*]} failed" >&2; exit 1; }
	fi
	check || { echo "deps: install what is missing (or put it on PATH), then run 'make deps' again" >&2; exit 1; }
}

case "${1:-install}" in
install) install ;;
check) check ;;
packages) packages ;;
*) echo "usage: deps.sh [install | check | packages]" >&2; exit 2 ;;
esac
