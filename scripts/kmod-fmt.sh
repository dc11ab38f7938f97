#!/usr/bin/env bash
# Checks that the kernel-side Rust (kmod/, tests/warnmod/) is rustfmt-clean under the
# kernel's own .rustfmt.toml, as `make rustfmtcheck` would check it in-tree. The modules
# are not cargo packages, so `cargo fmt` does not see them.
#   scripts/kmod-fmt.sh          check (exit 1 and show the diff if not formatted)
#   scripts/kmod-fmt.sh --fix    format in place
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

KDIR="${KDIR:-$(bash "$DSU_ROOT/scripts/kernel.sh")}"
check=(--check)
[ "${1:-}" = --fix ] && check=()
# rustfmt follows `mod` declarations, so the crate roots cover every file.
rustfmt "${check[@]}" --edition 2021 --config-path "$KDIR/.rustfmt.toml" \
    "$DSU_ROOT/kmod/dsu_main.rs" "$DSU_ROOT"/tests/warnmod/*.rs
