#!/usr/bin/env bash
# The long robustness campaign (SECURITY.md): boots the test kernel (KASAN, lockdep,
# kmemleak) and runs scripts/guest/run/robust-long.sh — at least 200 000 dsu-fuzz calls
# (root with 4 processes x 2 threads, plus an unprivileged user at the same time), then the
# 16-process stress with 1 000 rounds each and 400 crash trials. The run fails on any fuzzer
# finding, test failure, or kernel report (KASAN, lockdep, kmemleak, WARNING, BUG, Oops).
#   scripts/robustness-long.sh [calls] [seed]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

calls="${1:-200000}"
seed="${2:-0xd5d5}"
[ "$calls" -ge 200000 ] || echo "note: fewer than the 200 000 calls the campaign promises" >&2

KDIR=$(bash "$DSU_ROOT/scripts/kernel.sh")
build_lock
MODULE=$(KDIR="$KDIR" bash "$DSU_ROOT/scripts/module.sh")
bash "$DSU_ROOT/scripts/guest-bins.sh"
step "build the runner" cargo build --quiet --manifest-path "$DSU_ROOT/Cargo.toml" -p dsu-vmrun
bash "$DSU_ROOT/scripts/initramfs.sh" "$MODULE" >/dev/null
INITRD=$(private_initrd); trap 'rm -f "$INITRD"' EXIT
build_unlock
printf '\033[1m==> robustness campaign (QEMU, %s calls, seed %s)\033[0m\n' "$calls" "$seed" >&2
"$DSU_ROOT/target/debug/dsu-vmrun" --kernel "$KDIR/arch/x86/boot/bzImage" \
    --initrd "$INITRD" --run robust-long --args "$calls,$seed" \
    --timeout "${DSU_VM_TIMEOUT:-14400}" --log "$DSU_OUT/console-robust-long.log" --console
