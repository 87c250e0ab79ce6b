# mk/install.mk: 'make install' puts kmesctl, its man page and its bash
# completion under $(DESTDIR)$(PREFIX), where a package or a host would
# have them; 'make install-man' only the page. DESTDIR stages the files
# for a package (make install DESTDIR=/tmp/pkg).
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
KMESCTL_SRC := userspace/cmd/kmesctl

# kmesctl is static, as the guest's is (vm/initramfs.go): it runs on any
# Linux. go build is always run: it knows what changed.
.PHONY: install install-man
install: install-man
	@mkdir -p $(BUILD)
	CGO_ENABLED=0 go build -trimpath -o $(BUILD)/kmesctl ./$(KMESCTL_SRC)
	install -D -m 0755 $(BUILD)/kmesctl $(DESTDIR)$(BINDIR)/kmesctl
	install -D -m 0644 $(KMESCTL_SRC)/kmesctl.bash $(DESTDIR)$(BASHCOMPDIR)/kmesctl

# gzip -n: no name or time in the header, so the same page gives the same
# file.
install-man:
	install -d $(DESTDIR)$(MANDIR)/man1
	gzip -9n < $(KMESCTL_SRC)/kmesctl.1 > $(DESTDIR)$(MANDIR)/man1/kmesctl.1.gz
	chmod 0644 $(DESTDIR)$(MANDIR)/man1/kmesctl.1.gz
