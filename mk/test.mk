# mk/test.mk: 'make test' is what CI runs: host unit tests, the VM tests
# under the debug kernel, a build of the series with CONFIG_KMES=n, make
# distro-check (Debian's config with kernel-config/kmes.config), then the
# KMES documentation pages (htmldocs-check, mk/docs.mk: about 70 s). Full
# output goes to build/logs/*.log; the terminal gets one line per test, go
# test's summary lines and a count.

# Everything but the VM tests, which need a kernel.
HOST_PKGS = $$(go list ./... | grep -v '/tests')
# vmtest boots the debug kernel: KASAN, lockdep, DEBUG_ATOMIC_SLEEP.
vmtest: FLAVOR = debug
VMTEST_TIMEOUT ?= 60m
KMES_TOPOLOGIES ?=
# Lines worth seeing on the terminal.
SUMMARY := { grep --line-buffered -E '^(=== RUN|\s*--- (PASS|FAIL|SKIP)|ok |FAIL|PASS$$|panic:)|kernel log:' || true; }

.PHONY: test unit vmtest check-vmtest-topologies kernel-nokmes
# kernel-nokmes comes after vmtest: the debug build leaves ccache warm for
# every object KMES does not change, and the first VM boots one kernel
# build after the start. deb-check (mk/deb.mk) builds and checks the
# kmes-tools package; distro-check (mk/kernel.mk) shares no object with
# the others (about half a minute); htmldocs-check (mk/docs.mk) builds
# the series' pages; kernel-deb (mk/deb.mk) packages the plain kernel with
# its bindeb-pkg and checks what the packages hold (a plain kernel build,
# about 5 minutes from a cold ccache).
test: unit deb-check vmtest kernel-nokmes distro-check htmldocs-check kernel-deb
	@echo "test: $$(grep -ch -- '--- PASS' $(LOGS)/unit.log $(LOGS)/vmtest.log | paste -sd+ | bc) passed, 0 failed"

unit: deps
	@mkdir -p $(LOGS)
	@echo "unit: go vet, staticcheck and go test -race on the host (log: build/logs/unit.log)"
	@go vet ./...
	@go tool staticcheck ./...
	@go test -race -count=1 -v $(HOST_PKGS) 2>&1 | tee $(LOGS)/unit.log | grep -E '^(ok|FAIL|--- FAIL)' \
		|| { grep -B2 -A20 -- '--- FAIL' $(LOGS)/unit.log | head -n 80; exit 1; }
	@$(MAKE) --no-print-directory fuzz-validator FUZZTIME=$(UNIT_FUZZTIME)

# The kernel's C validator (under ASan and UBSan) against the Go one, on
# what Go's fuzzer derives from the seeds (userspace/kmes/cvalidate_test.go):
# a minute in make test, FUZZTIME (default 10m) here. A disagreement or a
# sanitizer report fails it, and go test saves the input under
# userspace/kmes/testdata/fuzz/FuzzCValidator/, where it stays a seed.
UNIT_FUZZTIME = 60s
FUZZTIME ?= 10m
.PHONY: fuzz-validator
fuzz-validator: deps
	@mkdir -p $(LOGS)
	@echo "fuzz-validator: C against Go validator for $(FUZZTIME) (log: build/logs/fuzz-validator.log)"
	@go test -run '^$$' -fuzz '^FuzzCValidator$$' -fuzztime $(FUZZTIME) ./userspace/kmes/ \
		> $(LOGS)/fuzz-validator.log 2>&1 \
		|| { tail -n 40 $(LOGS)/fuzz-validator.log; exit 1; }
	@grep -E '^fuzz: elapsed' $(LOGS)/fuzz-validator.log | tail -n 1

# The series must also build with CONFIG_KMES=n (build only, never booted):
# the debug config with KMES off (kernel-config/nokmes.config), so that a
# stub missing from a header fails at compile or link time.
kernel-nokmes: kernel-tree
	@mk/kernel.sh build nokmes

check-vmtest-topologies:
	$(if $(KMES_TOPOLOGIES),$(call check-topologies,$(KMES_TOPOLOGIES)))

vmtest: check-vmtest-topologies kernel initramfs
	@mkdir -p $(LOGS)/vm
	@echo "vmtest: booting $(KERNEL) (log: build/logs/vmtest.log, serial logs: build/logs/vm/)"
	@KMES_KERNEL=$(KERNEL) KMES_INITRAMFS=$(INITRAMFS) KMES_LOG_DIR=$(LOGS)/vm KMES_TOPOLOGIES=$(KMES_TOPOLOGIES) \
		go test -v -count=1 -timeout $(VMTEST_TIMEOUT) ./tests/ 2>&1 \
		| tee $(LOGS)/vmtest.log | $(SUMMARY) \
		|| { echo "vmtest: FAILED; the failing test's serial console and QEMU command are in build/logs/vmtest.log"; exit 1; }

# make bench boots the bench kernel (plain, with the peers: tracing,
# user_events, BPF) under -icount shift=0, so guest time counts
# instructions and the numbers repeat exactly, once per CPU model
# (tests/bench_test.go). It prints the table of every measurement with the
# ratios taken within each boot. Results: build/logs/bench.log and
# build/logs/bench-table-<topology>.md. KMES_BENCH_RUN=<regexp> runs only
# the guest tests it matches.
.PHONY: bench
bench: FLAVOR = bench
bench: kernel initramfs
	@mkdir -p $(LOGS)/vm
	@rm -f $(LOGS)/bench-table-*.md
	@KMES_ICOUNT=1 KMES_KERNEL=$(KERNEL) KMES_INITRAMFS=$(INITRAMFS) KMES_LOG_DIR=$(LOGS)/vm KMES_TOPOLOGIES=$(KMES_TOPOLOGIES) \
		KMES_BENCH_RUN='$(KMES_BENCH_RUN)' go test -run '^$$' -bench . -benchtime 1x -timeout 60m ./tests/ 2>&1 | tee $(LOGS)/bench.log \
		| grep -E '^(Benchmark|ok|FAIL|PASS)|kernel log:'
	@for f in $(LOGS)/bench-table-*.md; do echo; echo "$$f:"; cat "$$f"; done

# make swap-stress boots the plain kernel (smp4-numa2, or KMES_TOPOLOGIES)
# and runs only the kmes guest suite's TestSwapLoop with SWAP_LOOPS swaps
# of the ring capacity (make vmtest runs 200 under the debug kernel).
# Results: build/logs/swap-stress.log.
.PHONY: swap-stress
swap-stress: FLAVOR = plain
SWAP_LOOPS ?= 20000
swap-stress: check-vmtest-topologies kernel initramfs
	@mkdir -p $(LOGS)/vm
	@echo "swap-stress: $(SWAP_LOOPS) swaps under $(KERNEL) (log: build/logs/swap-stress.log, serial logs: build/logs/vm/)"
	@KMES_SWAP_LOOPS=$(SWAP_LOOPS) KMES_KERNEL=$(KERNEL) KMES_INITRAMFS=$(INITRAMFS) KMES_LOG_DIR=$(LOGS)/vm KMES_TOPOLOGIES=$(KMES_TOPOLOGIES) \
		go test -v -count=1 -run '^TestSwapStress$$' -timeout 90m ./tests/ 2>&1 \
		| tee $(LOGS)/swap-stress.log | { grep --line-buffered -E '^(=== RUN|\s*--- (PASS|FAIL|SKIP)|ok |FAIL|PASS$$|panic:)|kernel log:|swaps in' || true; } \
		|| { echo "swap-stress: FAILED; the guest's output and serial console are in build/logs/swap-stress.log"; exit 1; }
