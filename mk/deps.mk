# mk/deps.mk: what the build needs on the machine. 'make deps' installs what
# is missing with apt-get and is quick when nothing is; the other targets run
# it first.

APT_PACKAGES := qemu-system-x86 build-essential bc bison flex libelf-dev \
	libssl-dev cpio ccache linux-source-6.12 xz-utils git python3 kmod rsync

.PHONY: deps
deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "deps: installing" $$missing; \
		if [ "$$(id -u)" != 0 ]; then echo "deps: apt-get needs root: run 'sudo make deps'" >&2; exit 1; fi; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
			|| { echo "deps: apt-get install $$missing failed" >&2; exit 1; }; \
	fi
	@command -v go >/dev/null || { echo "deps: go not found: install Go 1.24 or newer (https://go.dev/doc/install)" >&2; exit 1; }
	@go mod download
