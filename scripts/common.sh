# shellcheck shell=bash
# Shared helpers for dsu's scripts: paths, the kernel cache location and timed steps.
# Source it; do not run it.

set -euo pipefail

# cargo and bindgen live in ~/.cargo/bin; CI may start with a bare PATH.
export PATH="$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

DSU_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Kernel builds are cached outside the repo; override with DSU_CACHE.
DSU_CACHE="${DSU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dsu}"
# Everything built for the VM (module, binaries, initramfs) goes here.
DSU_OUT="${DSU_OUT:-$DSU_ROOT/target/vm}"
KERNEL_RUSTC=/usr/bin/rustc
BINDGEN_VERSION=0.69.5
BINDGEN="$HOME/.cargo/bin/bindgen"
KERNEL_TARBALL=/usr/src/linux-source-6.12.tar.xz

export DSU_ROOT DSU_CACHE DSU_OUT

# step NAME CMD...: runs CMD with a header and its wall time, so a long setup shows progress.
step() {
    local name="$1"; shift
    local t0=$SECONDS
    printf '\033[1m==> %s\033[0m\n' "$name" >&2
    "$@"
    printf '    %s: done in %ds\n' "$name" $((SECONDS - t0)) >&2
}

die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The in-tree module objects and $DSU_OUT are shared by every run on this checkout: hold
# this lock while building and packing, then boot from a private copy of the initramfs
# (private_initrd), so that concurrent runs never see each other's half-written files.
build_lock() { mkdir -p "$DSU_CACHE"; exec 9>"$DSU_CACHE/build.lock"; flock 9; }
build_unlock() { flock -u 9; }
private_initrd() {
    local f
    f=$(mktemp "$DSU_OUT/initramfs-XXXXXX.cpio")
    cp "$DSU_OUT/initramfs.cpio" "$f"
    echo "$f"
}
