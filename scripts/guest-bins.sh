#!/usr/bin/env bash
# Builds every workspace binary and example as a static executable for the guest
# (glibc with crt-static) and copies them, stripped, to $DSU_OUT/bin; builds libdsu and the
# C examples against its DESTDIR install (userspace/libdsu/build-examples.sh: the static ones
# and the two linked against libdsu.so.0, which goes to $DSU_OUT/lib, the guest's /dsu/lib),
# and README's hello-v1/hello-v2 (scripts/adopt.sh).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TARGET=x86_64-unknown-linux-gnu
build() {
    # With an explicit --target, RUSTFLAGS apply to the guest code only, not to proc-macros.
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release \
        --manifest-path "$DSU_ROOT/Cargo.toml" --target "$TARGET" --workspace --bins --examples
    local rel="$DSU_ROOT/target/$TARGET/release"
    rm -rf "$DSU_OUT/bin" "$DSU_OUT/lib"; mkdir -p "$DSU_OUT/bin" "$DSU_OUT/lib"
    # Skip cargo's hashed copies of examples (name-<16 hex digits>) and shared libraries.
    find "$rel" "$rel/examples" -maxdepth 1 -type f -perm -u+x -regextype posix-extended \
        ! -regex '.*-[0-9a-f]{16}' ! -name '*.so' -exec cp {} "$DSU_OUT/bin/" \;
    "$DSU_ROOT/userspace/libdsu/build-examples.sh" "$DSU_OUT/bin" "$DSU_OUT/lib"
    # A 32-bit program for the compat ioctl path (gcc-multilib; scripts/toolchain.sh).
    gcc -m32 -static -O2 -Wall -Wextra -Werror -o "$DSU_OUT/bin/dsu-compat32" \
        "$DSU_ROOT/tests/compat32/dsu-compat32.c"
    # README's own-program walkthrough, run word for word outside the workspace.
    bash "$DSU_ROOT/scripts/adopt.sh" "$DSU_OUT/bin"
    strip "$DSU_OUT/bin/"* 2>/dev/null || true
}
step "static guest binaries" build
