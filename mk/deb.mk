# mk/deb.mk: Debian packages. 'make deb' builds kmes-tools (kmesctl,
# kmesd, their man pages, bash completion and kmesd.service) from what
# 'make install' stages; 'make deb-check' builds it and checks it (lintian,
# the file list); 'make kernel-deb' packages the patched kernel with its own
# bindeb-pkg (mk/kernel.sh deb).

# kernel-deb: FLAVOR's config (plain unless given), or KERNEL_DEB_CONFIG,
# any .config file.
KERNEL_DEB_CONFIG ?=
.PHONY: kernel-deb
kernel-deb: FLAVOR = plain
kernel-deb: kernel-tree
	@mk/kernel.sh deb $(FLAVOR) $(KERNEL_DEB_CONFIG)

.PHONY: deb deb-check
deb: deps
	@mk/deb.sh build

deb-check: deps
	@mk/deb.sh check
