#!/usr/bin/env bash
# Builds the dsu test kernel (Debian's linux-source-6.12 + scripts/kernel.config) with
# LLVM=1 and Debian's rustc, cached outside the repo under $DSU_CACHE/kernel-<key>.
# The key hashes the kernel tarball, the config fragment and the toolchain versions, so a
# second run with the same inputs builds nothing. Prints the kernel directory on stdout.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

FRAGMENT="${DSU_KERNEL_CONFIG:-$DSU_ROOT/scripts/kernel.config}"
key_inputs() {
    stat -c '%s %Y' "$KERNEL_TARBALL"
    dpkg-query -W -f='${Version}\n' linux-source-6.12
    cat "$FRAGMENT"
    "$KERNEL_RUSTC" --version
    "$BINDGEN" --version
    clang --version | head -1
}
KEY=$(key_inputs | sha256sum | cut -c1-16)
KDIR="$DSU_CACHE/kernel-6.12-$(basename "$FRAGMENT" .config)-$KEY"
MAKE=(make -C "$KDIR" LLVM=1 RUSTC="$KERNEL_RUSTC" BINDGEN="$BINDGEN" -j"$(nproc)")

unpack() {
    local tmp="$KDIR.unpack"
    rm -rf "$tmp"; mkdir -p "$tmp"
    tar -xf "$KERNEL_TARBALL" -C "$tmp" --strip-components=1
    mv "$tmp" "$KDIR"
}

configure() {
    "${MAKE[@]}" -s tinyconfig >/dev/null
    "$KDIR/scripts/kconfig/merge_config.sh" -m -O "$KDIR" "$KDIR/.config" "$FRAGMENT" >/dev/null
    "${MAKE[@]}" -s olddefconfig >/dev/null
    # olddefconfig drops options with unmet dependencies silently: check each one.
    local line bad=0
    while IFS= read -r line; do
        case "$line" in CONFIG_*=y) ;; *) continue ;; esac
        grep -qx "$line" "$KDIR/.config" || { echo "    config option not set: $line" >&2; bad=1; }
    done < "$FRAGMENT"
    [ $bad = 0 ] || die "kernel config incomplete (see above)"
    "${MAKE[@]}" -s rustavailable >/dev/null || die "Rust is not available for this kernel"
}

build() {
    "${MAKE[@]}" -s bzImage modules_prepare modules >"$KDIR/build.log" 2>&1 \
        || { tail -40 "$KDIR/build.log" >&2; die "kernel build failed (log: $KDIR/build.log)"; }
    touch "$KDIR/.dsu-built"
}

mkdir -p "$DSU_CACHE"
# One build per tree: a second run waits for the first instead of building beside it.
exec 8>"$KDIR.lock"
flock 8
if [ -f "$KDIR/.dsu-built" ]; then
    echo "    kernel cached: $KDIR" >&2
else
    [ -d "$KDIR" ] || step "unpack linux-source-6.12" unpack
    step "configure kernel" configure
    step "build kernel (about 6 min on 2 cores)" build
fi
echo "$KDIR"
