# KMES for Linux. 'make help' lists the targets; the work is in mk/*.mk.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

TOP := $(CURDIR)
BUILD := $(TOP)/build
LOGS := $(BUILD)/logs

include mk/deps.mk
include mk/kernel.mk
include mk/selftests.mk
include mk/vm.mk
include mk/docs.mk
include mk/test.mk
include mk/install.mk
include mk/deb.mk

.PHONY: help clean
help:
	@echo "make deps            install what is missing (apt-get, Go modules)"
	@echo "make kernel          build/linux from the tarball + patches/, then bzImage (FLAVOR=debug|plain)"
	@echo "make export-patches  write build/linux's commits back to patches/"
	@echo "make distro-check    the series with Debian's amd64 config + kernel-config/kmes.config: options stick, its objects build warning-free"
	@echo "make selftests       build the kmes kselftests and the man pages' examples against the kernel's headers (build/selftests/)"
	@echo "make initramfs       build the u-root initramfs with the guest tests and kselftests (build/initramfs.cpio)"
	@echo "make run             boot TOPOLOGY (default $(TOPOLOGY)) with the plain kernel, console on stdio"
	@echo "make vmtest          boot the topologies under the debug kernel and run the guest tests"
	@echo "make test            host unit tests, then make vmtest (what CI runs)"
	@echo "make htmldocs-check  build the KMES documentation pages with Sphinx (build/docs), fail on a warning about them"
	@echo "make fuzz-validator  FUZZTIME (default 10m) of the C validator against the Go one (a minute of it in make test)"
	@echo "make bench          benchmarks of KMES and its peers in the guest under -icount (bench kernel)"
	@echo "make swap-stress     SWAP_LOOPS (default 20000) ring capacity swaps under load in the guest (plain kernel)"
	@echo "make install         kmesctl and kmesd, the man pages (also the system calls'), the bash completion and kmesd.service under PREFIX (/usr/local), DESTDIR honoured; install-man: the pages"
	@echo "make deb             build/kmes-tools_VERSION_amd64.deb: kmesctl, kmesd, their pages, completion and unit; deb-check: lintian and its contents (in make test)"
	@echo "make kernel-deb      the kernel's Debian packages in build/ with its bindeb-pkg (FLAVOR, default plain, or KERNEL_DEB_CONFIG=/path/.config)"
	@echo "make clean           remove build/ except build/linux's unpacked base"

clean:
	rm -rf $(BUILD)/obj-* $(BUILD)/kernel-* $(BUILD)/deb $(BUILD)/*.deb $(BUILD)/*.buildinfo $(BUILD)/*.changes $(BUILD)/initramfs* $(BUILD)/selftests $(BUILD)/logs $(BUILD)/stamps
