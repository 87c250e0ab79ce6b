# mk/selftests.mk: the kernel's KMES kselftests, built statically against
# the UAPI headers of the kernel they run on (mk/kernel.sh installs them
# beside bzImage) for the initramfs, which holds them in
# /kmes/selftests/kmes/. mk/selftests.sh holds the logic.

# KSELFTEST_SRC=DIR builds another collection in their place (work on the
# harness before the kernel tree has them).
KSELFTEST_SRC ?= $(BUILD)/linux/tools/testing/selftests/kmes
SELFTESTS = $(BUILD)/selftests/kmes
KERNEL_HEADERS = $(BUILD)/kernel-$(FLAVOR)/headers

.PHONY: selftests
selftests: kernel
	@mk/selftests.sh $(KSELFTEST_SRC) $(SELFTESTS) $(KERNEL_HEADERS) $(LOGS)/selftests.log
