#!/usr/bin/env bash
# Builds kmod/dsu.ko against the cached test kernel (scripts/kernel.sh) or against $KDIR.
# Prints the module path on stdout.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

KDIR="${KDIR:-$(bash "$DSU_ROOT/scripts/kernel.sh")}"
build_module() {
    make -C "$KDIR" M="$DSU_ROOT" LLVM=1 RUSTC="$KERNEL_RUSTC" BINDGEN="$BINDGEN" \
        -j"$(nproc)" modules >&2
}
step "build dsu.ko" build_module
echo "$DSU_ROOT/kmod/dsu.ko"
