#!/usr/bin/env bash
# Prints the QEMU accelerator to use: "kvm" only if /dev/kvm is usable and a probe boot of
# the test kernel finishes within 60 s, else "tcg" (nested KVM hangs on the machines we
# use). The verdict is cached per host kernel in $DSU_CACHE; DSU_ACCEL=tcg|kvm overrides.
#   scripts/accel.sh KERNEL INITRD
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [ -n "${DSU_ACCEL:-}" ]; then echo "$DSU_ACCEL"; exit 0; fi
if [ ! -w /dev/kvm ]; then echo tcg; exit 0; fi
cache="$DSU_CACHE/accel-$(uname -r)-$(qemu-system-x86_64 --version | head -1 | tr -cd '0-9.')"
if [ -f "$cache" ]; then cat "$cache"; exit 0; fi
mkdir -p "$DSU_CACHE"
verdict=tcg
if timeout 90 "$DSU_ROOT/target/debug/dsu-vmrun" --kernel "$1" --initrd "$2" --run probe \
    --accel kvm --timeout 60 >/dev/null 2>&1; then
    verdict=kvm
fi
echo "    accelerator probe: kvm $( [ $verdict = kvm ] && echo boots || echo hangs or fails), using $verdict" >&2
echo "$verdict" > "$cache"
echo "$verdict"
