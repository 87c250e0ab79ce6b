# mk/docs.mk: the series' documentation, built with the kernel's own Sphinx
# setup. 'make htmldocs-check' builds the two books that hold the KMES pages
# (Documentation/userspace-api/kmes.rst, Documentation/core-api/kmes.rst)
# into build/docs/ and fails on any warning that names a KMES page or
# source; the base tree's own warnings are left in the log.
DOCS_OUT = $(BUILD)/docs
DOCS_PAGES = Documentation/userspace-api/kmes.rst Documentation/core-api/kmes.rst
# A warning is ours when it names one of these.
DOCS_OURS = (userspace-api|core-api)/kmes\.rst|include/(uapi/)?linux/kmes\.h|kernel/kmes/

.PHONY: htmldocs-check
htmldocs-check: kernel-tree
	@mkdir -p $(LOGS) $(DOCS_OUT)
	@echo "htmldocs-check: the KMES pages with Sphinx (log: build/logs/htmldocs.log, HTML: build/docs/Documentation/output/)"
	@# Sphinx rereads only what changed: touching our pages makes every
	@# warning about them (the kernel-doc of their sources included) show
	@# up again in an incremental build.
	@cd $(BUILD)/linux && touch $(DOCS_PAGES)
	@# Debian's python3 first: the kernel's scripts (ynl-gen-rst.py) need
	@# python3-yaml, which mk/deps.list installs for it.
	@PATH=/usr/bin:$$PATH $(MAKE) --no-print-directory -C $(BUILD)/linux O=$(DOCS_OUT) -j$$(($$(nproc) + 1)) \
		SPHINXDIRS="userspace-api core-api" htmldocs > $(LOGS)/htmldocs.log 2>&1 \
		|| { tail -n 30 $(LOGS)/htmldocs.log; echo "htmldocs-check: Sphinx failed (log: build/logs/htmldocs.log)"; exit 1; }
	@for p in userspace-api/kmes core-api/kmes; do \
		[ -s $(DOCS_OUT)/Documentation/output/$$p.html ] \
			|| { echo "htmldocs-check: $$p.html was not built (log: build/logs/htmldocs.log)"; exit 1; }; \
	done
	@if grep -iE 'warning|error' $(LOGS)/htmldocs.log | grep -E '$(DOCS_OURS)'; then \
		echo "htmldocs-check: the warnings above are about KMES pages or sources: fix them in build/linux and make export-patches"; exit 1; \
	fi
	@echo "htmldocs-check: no warning about KMES ($$(grep -ciE 'warning|error' $(LOGS)/htmldocs.log || true) about the base tree's pages, in the log)"
