# mk/deb.mk: Debian packages. 'make deb' builds kmes-tools (kmesctl,
# kmesd, their man pages, bash completion and kmesd.service) from what
# 'make install' stages; 'make deb-check' builds it and checks it (lintian,
# the file list).

.PHONY: deb deb-check
deb: deps
	@mk/deb.sh build

deb-check: deps
	@mk/deb.sh check
