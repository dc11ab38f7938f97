#!/usr/bin/env bash
# Packs the guest: busybox, /init, the run scripts, the static binaries in $DSU_OUT/bin,
# the modules given as arguments, and redis-cli/redis-benchmark/redis-server with their
# libraries.
# Writes $DSU_OUT/initramfs.cpio (uncompressed: packing is faster than gzip under TCG).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

pack() {
    local root="$DSU_OUT/rootfs"
    rm -rf "$root"
    mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,root,dsu/bin,dsu/run,lib64,usr/bin}
    cp /bin/busybox "$root/bin/busybox"
    install -m 0755 "$DSU_ROOT/scripts/guest/init" "$root/init"
    cp "$DSU_ROOT"/scripts/guest/run/*.sh "$root/dsu/run/"
    cp "$DSU_OUT"/bin/* "$root/dsu/bin/" 2>/dev/null || true
    # libdsu.so.0 for the C examples linked against it (run path /dsu/lib), and the C
    # library and loader that dynamically linked binaries need.
    mkdir -p "$root/dsu/lib"
    cp "$DSU_OUT"/lib/* "$root/dsu/lib/" 2>/dev/null || true
    local bin dep
    for bin in "$root"/dsu/bin/*; do
        readelf -d "$bin" 2>/dev/null | grep -q NEEDED || continue
        for dep in $(LD_LIBRARY_PATH="$DSU_OUT/lib" ldd "$bin" | grep -o '/[^ ]*'); do
            case "$dep" in "$DSU_OUT"/*) continue ;; esac
            mkdir -p "$root$(dirname "$dep")"
            cp -L "$dep" "$root$dep"
        done
    done
    local m; for m in "$@"; do cp "$m" "$root/dsu/"; done
    printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/tmp:/bin/sh\nother:x:1001:1001:other:/tmp:/bin/sh\n' > "$root/etc/passwd"
    printf 'root:x:0:\nuser:x:1000:\nother:x:1001:\nshared:x:2000:user\n' > "$root/etc/group"
    # redis-benchmark and redis-cli (Debian's redis-tools), and redis-server (the reference
    # of the kv differential test and benchmarks), with their shared libraries.
    local tool lib
    for tool in /usr/bin/redis-benchmark /usr/bin/redis-cli /usr/bin/redis-server; do
        [ -x "$tool" ] || continue
        cp "$tool" "$root/usr/bin/"
        for lib in $(ldd "$tool" | grep -o '/[^ ]*'); do
            mkdir -p "$root$(dirname "$lib")"
            cp -L "$lib" "$root$lib"
        done
    done
    (cd "$root" && find . | cpio -o -H newc --quiet > "$DSU_OUT/initramfs.cpio")
}
step "initramfs" pack "$@"
echo "$DSU_OUT/initramfs.cpio"
