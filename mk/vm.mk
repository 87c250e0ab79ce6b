# mk/vm.mk: the guest image and 'make run'.

INITRAMFS := $(BUILD)/initramfs.cpio
# Guest test packages built into the initramfs.
GUEST_TESTS := ./tests/guest/...
TOPOLOGY ?= smp4-numa2
KMES_VM := go run ./vm/cmd/kmes-vm

# check-topologies stops at once on a topology name that is not a preset,
# before anything is built.
define check-topologies
	@for t in $(subst $(comma), ,$(1)); do \
		$(KMES_VM) topologies | awk 'NR > 1 { print $$1 }' | grep -qx "$$t" || \
		{ echo "unknown topology '$$t': use one of $$($(KMES_VM) topologies | awk 'NR > 1 { print $$1 }' | paste -sd' ')" >&2; exit 1; }; \
	done
endef
comma := ,

.PHONY: initramfs run check-run-topology
# Rebuilt only when a Go source, go.mod, go.sum, a kselftest or a man page example changed
# (kmes-vm keeps a key of its inputs beside the image).
initramfs: deps selftests
	@$(KMES_VM) initramfs -o $(INITRAMFS) -selftests $(SELFTESTS) -selftests $(MAN_EXAMPLES) $(GUEST_TESTS)

check-run-topology:
	$(call check-topologies,$(TOPOLOGY))

# make run boots the plain kernel (FLAVOR=debug for the test kernel). The
# guest starts kmes-demo in the background and 'kmesctl tail' in the
# foreground (vm/guest.DemoPlan): JSON event lines flow at once; Ctrl-C
# ends the tail and gives a shell, Ctrl-A X quits QEMU.
run: FLAVOR = plain
run: check-run-topology kernel initramfs
	@$(KMES_VM) run -topology $(TOPOLOGY) -kernel $(KERNEL) -initramfs $(INITRAMFS)
