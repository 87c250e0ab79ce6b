# mk/vm.mk: the guest image and 'make run'.

INITRAMFS := $(BUILD)/initramfs.cpio
# Guest test packages built into the initramfs.
GUEST_TESTS := ./tests/guest/...
TOPOLOGY ?= smp4-numa2
KMES_VM := go run ./vm/cmd/kmes-vm

.PHONY: initramfs run
# Always rebuilt: Go's build cache makes it a few seconds, and a stale guest
# test binary is worse.
initramfs: deps
	@$(KMES_VM) initramfs -o $(INITRAMFS) $(GUEST_TESTS)

# make run boots the plain kernel (FLAVOR=debug for the test kernel).
run: FLAVOR = plain
run: kernel initramfs
	@$(KMES_VM) run -topology $(TOPOLOGY) -kernel $(KERNEL) -initramfs $(INITRAMFS)
