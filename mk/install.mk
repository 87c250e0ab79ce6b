# mk/install.mk: 'make install' puts kmesctl (its man page and bash
# completion) and kmesd (its man page and systemd unit) under
# $(DESTDIR)$(PREFIX), where a package or a host would have them, with the
# man pages of the system calls; 'make install-man' only the pages.
# DESTDIR stages the files for a package (make install DESTDIR=/tmp/pkg).
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
KMESCTL_SRC := userspace/cmd/kmesctl
KMESD_SRC := userspace/cmd/kmesd
# The system calls' pages (man2).
SYSCALL_PAGES := kmes_attach kmes_emit kmes_emit_batch
MAN2_SRC := userspace/man

# kmesctl and kmesd are static, as the guest's kmesctl is
# (vm/initramfs.go): they run on any Linux (kmesd's SQLite is
# modernc.org/sqlite, in Go). go build is always run: it knows what
# changed. The unit runs $(BINDIR)/kmesd, wherever that is.
.PHONY: install install-man
install: install-man
	@mkdir -p $(BUILD)
	CGO_ENABLED=0 go build -trimpath -o $(BUILD)/kmesctl ./$(KMESCTL_SRC)
	CGO_ENABLED=0 go build -trimpath -o $(BUILD)/kmesd ./$(KMESD_SRC)
	install -D -m 0755 $(BUILD)/kmesctl $(DESTDIR)$(BINDIR)/kmesctl
	install -D -m 0755 $(BUILD)/kmesd $(DESTDIR)$(BINDIR)/kmesd
	install -D -m 0644 $(KMESCTL_SRC)/kmesctl.bash $(DESTDIR)$(BASHCOMPDIR)/kmesctl
	install -d $(DESTDIR)$(SYSTEMDUNITDIR)
	sed 's|^ExecStart=/usr/local/bin/kmesd|ExecStart=$(BINDIR)/kmesd|' $(KMESD_SRC)/kmesd.service > $(DESTDIR)$(SYSTEMDUNITDIR)/kmesd.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/kmesd.service

# gzip -n: no name or time in the header, so the same page gives the same
# file.
install-man:
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man2 $(DESTDIR)$(MANDIR)/man8
	gzip -9n < $(KMESCTL_SRC)/kmesctl.1 > $(DESTDIR)$(MANDIR)/man1/kmesctl.1.gz
	gzip -9n < $(KMESD_SRC)/kmesd.8 > $(DESTDIR)$(MANDIR)/man8/kmesd.8.gz
	chmod 0644 $(DESTDIR)$(MANDIR)/man1/kmesctl.1.gz $(DESTDIR)$(MANDIR)/man8/kmesd.8.gz
	for p in $(SYSCALL_PAGES); do \
		gzip -9n < $(MAN2_SRC)/$$p.2 > $(DESTDIR)$(MANDIR)/man2/$$p.2.gz; \
		chmod 0644 $(DESTDIR)$(MANDIR)/man2/$$p.2.gz; \
	done
