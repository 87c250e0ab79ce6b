# mk/selftests.mk: the kernel's KMES kselftests, built statically against
# the UAPI headers of the kernel they run on (mk/kernel.sh installs them
# beside bzImage) for the initramfs, which holds them in
# /kmes/selftests/kmes/; and the man pages' EXAMPLES programs, with a
# driver that runs them (/kmes/selftests/man/). mk/selftests.sh holds the
# logic.

# KSELFTEST_SRC=DIR builds another collection in their place (work on the
# harness before the kernel tree has them).
KSELFTEST_SRC ?= $(BUILD)/linux/tools/testing/selftests/kmes
SELFTESTS = $(BUILD)/selftests/kmes
MAN_EXAMPLES = $(BUILD)/selftests/man
KERNEL_HEADERS = $(BUILD)/kernel-$(FLAVOR)/headers

.PHONY: selftests
selftests: kernel
	@mk/selftests.sh $(KSELFTEST_SRC) $(SELFTESTS) $(KERNEL_HEADERS) $(LOGS)/selftests.log
	@mk/selftests.sh userspace/man $(MAN_EXAMPLES) $(KERNEL_HEADERS) $(LOGS)/selftests-man.log
