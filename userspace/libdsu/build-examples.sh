#!/usr/bin/env bash
# Builds the C examples of libdsu as static binaries: build-examples.sh OUTDIR [LIBDIR]
#
# Links LIBDIR/libdsuc.a (LIBDIR: a cargo release directory that already holds it), else
# $LIBDSU_A, else builds libdsu in release mode for $CARGO_BUILD_TARGET (default
# x86_64-unknown-linux-gnu).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:?usage: build-examples.sh OUTDIR}"
mkdir -p "$out"
target="${CARGO_BUILD_TARGET:-x86_64-unknown-linux-gnu}"
lib="${LIBDSU_A:-}"
if [[ -n "${2:-}" ]]; then
    lib="$2/libdsuc.a"
fi
if [[ -z "$lib" ]]; then
    (cd "$root" && cargo build --quiet --release --target "$target" -p libdsu)
    lib="${CARGO_TARGET_DIR:-$root/target}/$target/release/libdsuc.a"
fi
[[ -f "$lib" ]] || { echo "build-examples.sh: $lib not found" >&2; exit 1; }
for src in "$here"/examples/*.c; do
    name="$(basename "$src" .c)"
    # glibc warns that getpwnam & co. need its shared libraries at run time: libdsu never
    # calls them (they come with Rust's std and nix), so that warning is filtered out.
    gcc -static -O2 -Wall -Werror -I "$here/include" -o "$out/$name" "$src" "$lib" \
        -lpthread -ldl -lm -lrt -lutil 2> >(grep -v -e "statically linked applications requires" -e "in function" >&2)
    echo "built $out/$name"
done
