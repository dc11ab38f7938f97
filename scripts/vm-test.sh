#!/usr/bin/env bash
# Runs the VM suite: builds the kernel (cached), the module, the static guest binaries and
# the initramfs, boots QEMU and prints one line per test, closing with "N passed, N failed".
#   scripts/vm-test.sh [filter...]   only tests whose names contain a filter
#   scripts/vm-test.sh --self-test   prove the runner fails a run with a KASAN report
# The console log of the last run is kept in $DSU_OUT/console-<run>.log.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

KDIR=$(bash "$DSU_ROOT/scripts/kernel.sh")
make_warn_module() {
    make -C "$KDIR" M="$DSU_ROOT/tests/warnmod" LLVM=1 RUSTC="$KERNEL_RUSTC" BINDGEN="$BINDGEN" modules >/dev/null
}
build_runner() { cargo build --quiet --manifest-path "$DSU_ROOT/Cargo.toml" -p dsu-vmrun; }

build_lock
if [ "${1:-}" = --self-test ]; then
    step "build the warning test module" make_warn_module
    step "build the runner" build_runner
    bash "$DSU_ROOT/scripts/initramfs.sh" "$DSU_ROOT/tests/warnmod/dsu_warn_test.ko" >/dev/null
    INITRD=$(private_initrd); trap 'rm -f "$INITRD"' EXIT
    build_unlock
    "$DSU_ROOT/target/debug/dsu-vmrun" --kernel "$KDIR/arch/x86/boot/bzImage" \
        --initrd "$INITRD" --run warn --timeout 300 \
        --log "$DSU_OUT/console-warn.log" --expect-kernel-report
    exit
fi

MODULE=$(KDIR="$KDIR" bash "$DSU_ROOT/scripts/module.sh")
bash "$DSU_ROOT/scripts/guest-bins.sh"
step "build the runner" build_runner
bash "$DSU_ROOT/scripts/initramfs.sh" "$MODULE" >/dev/null
INITRD=$(private_initrd); trap 'rm -f "$INITRD"' EXIT
build_unlock
filters=$(IFS=,; echo "$*")
ACCEL=$(bash "$DSU_ROOT/scripts/accel.sh" "$KDIR/arch/x86/boot/bzImage" "$INITRD")
printf '\033[1m==> VM suite (QEMU, %s)\033[0m\n' "$ACCEL" >&2
"$DSU_ROOT/target/debug/dsu-vmrun" --kernel "$KDIR/arch/x86/boot/bzImage" --accel "$ACCEL" \
    --initrd "$INITRD" --run test ${filters:+--args "$filters"} \
    --timeout "${DSU_VM_TIMEOUT:-1800}" --log "$DSU_OUT/console-test.log"
