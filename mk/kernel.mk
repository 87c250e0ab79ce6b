# mk/kernel.mk: the patched kernel. mk/kernel.sh holds the logic; its stamps
# make a second 'make kernel' with nothing changed a no-op.

# debug adds kernel-config/debug.config (KASAN, lockdep): the test kernel.
FLAVOR ?= debug
KERNEL = $(BUILD)/kernel-$(FLAVOR)/bzImage

.PHONY: kernel kernel-tree export-patches
kernel-tree: deps
	@mk/kernel.sh tree

kernel: kernel-tree
	@mk/kernel.sh build $(FLAVOR)

export-patches:
	@mk/kernel.sh export
