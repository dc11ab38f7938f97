#!/usr/bin/env bash
# Checks that scripts/kernel-bench.config is scripts/kernel.config minus exactly the
# debugging that distorts timings (its header's rule), so that scripts/bench's kernel can
# build and load dsu.ko whenever the test kernel can.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
debug='^CONFIG_(KASAN|KASAN_GENERIC|PROVE_LOCKING|DEBUG_VM|DEBUG_KMEMLEAK|DEBUG_KMEMLEAK_AUTO_SCAN)='
want=$(grep -E '^CONFIG_' "$DSU_ROOT/scripts/kernel.config" | grep -Ev "$debug" | sort)
have=$(grep -E '^CONFIG_' "$DSU_ROOT/scripts/kernel-bench.config" | sort)
if [ "$want" != "$have" ]; then
    diff -u <(echo "$want") <(echo "$have") | sed 's/^/    /' >&2
    die "scripts/kernel-bench.config is not scripts/kernel.config minus KASAN, lockdep, DEBUG_VM and kmemleak (- missing, + extra)"
fi
echo "kernel-bench.config follows kernel.config"
