# mk/kernel.mk: the patched kernel. mk/kernel.sh holds the logic; its stamps
# make a second 'make kernel' with nothing changed a no-op.

# debug adds kernel-config/debug.config (KASAN, lockdep): the test kernel.
FLAVOR ?= debug
KERNEL = $(BUILD)/kernel-$(FLAVOR)/bzImage

.PHONY: kernel kernel-tree export-patches distro-check
kernel-tree: deps
	@mk/kernel.sh tree

kernel: kernel-tree
	@mk/kernel.sh build $(FLAVOR)

export-patches:
	@mk/kernel.sh export

# What a distribution packager does: the series on Debian's linux-source
# (build/linux) with Debian's own amd64 config and kernel-config/kmes.config
# only. Every option of kmes.config must stick, and the objects and UAPI
# headers the series changes must build without a warning, in
# build/obj-distro. DISTRO_CONFIG names another config (.xz or plain).
distro-check: kernel-tree
	@mk/kernel.sh distro-check
