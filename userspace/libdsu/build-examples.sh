#!/usr/bin/env bash
# Builds libdsu (make), installs it into a staging DESTDIR, checks the installed libraries
# and builds the C examples against them through pkg-config, as a C project would:
#   build-examples.sh OUTDIR [LIBOUT]
# OUTDIR gets every example linked statically (libdsu.a), and ccounter_v1_so and
# ccounter_v2_so linked against libdsu.so.0 with the run path /dsu/lib (the guest's);
# LIBOUT (default OUTDIR/../lib) gets libdsu.so.0 for that directory.
# Checks (each fails the script): libdsu.so.0.x has the SONAME libdsu.so.0 (readelf -d),
# exports only dsu_* functions (nm -D), and the .pc file, the header and the links exist.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: build-examples.sh OUTDIR [LIBOUT]}"
libout="${2:-$out/../lib}"
mkdir -p "$out" "$libout"
fail() { echo "build-examples.sh: $*" >&2; exit 1; }

make --no-print-directory -C "$here" >&2
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
make --no-print-directory -C "$here" install DESTDIR="$stage" PREFIX=/usr >/dev/null
lib="$stage/usr/lib"
for f in include/libdsu.h lib/libdsu.a lib/libdsu.so lib/libdsu.so.0 lib/pkgconfig/dsu.pc; do
    [[ -e "$stage/usr/$f" ]] || fail "make install did not install $f"
done
so="$(readlink -f "$lib/libdsu.so.0")"
soname="$(readelf -d "$so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')"
[[ "$soname" == libdsu.so.0 ]] || fail "$so: SONAME '$soname', want libdsu.so.0"
exports="$(nm -D --defined-only "$so" | awk '{print $3}')"
[[ -n "$exports" ]] || fail "$so exports nothing"
if grep -v '^dsu_' <<<"$exports"; then fail "$so exports the symbols above, not only dsu_*"; fi
grep -qx dsu_attach_descs <<<"$exports" || fail "$so does not export dsu_attach_descs"
echo "libdsu.so.0: SONAME $soname, $(wc -l <<<"$exports") dsu_* exports; libdsu.a $(stat -c %s "$lib/libdsu.a") bytes" >&2

export PKG_CONFIG_PATH="$lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$stage"
pkg-config --exists dsu || fail "pkg-config does not find dsu.pc"
# glibc warns that getpwnam & co. need its shared libraries at run time: libdsu never
# calls them (they come with Rust's std and nix), so that warning is filtered out.
quiet_static() { grep -v -e "statically linked applications requires" -e "in function" >&2; }
for src in "$here"/examples/*.c; do
    name="$(basename "$src" .c)"
    # shellcheck disable=SC2046 # pkg-config's output is a list of words
    gcc -static -O2 -Wall -Werror -o "$out/$name" "$src" $(pkg-config --cflags --libs --static dsu) \
        2> >(quiet_static)
    echo "built $out/$name (libdsu.a)"
done
for name in ccounter_v1 ccounter_v2; do
    # shellcheck disable=SC2046
    gcc -O2 -Wall -Werror -o "$out/${name}_so" "$here/examples/$name.c" \
        $(pkg-config --cflags --libs dsu) -Wl,-rpath,/dsu/lib
    readelf -d "$out/${name}_so" | grep -q 'NEEDED.*\[libdsu.so.0\]' ||
        fail "${name}_so does not need libdsu.so.0"
    echo "built $out/${name}_so (libdsu.so.0)"
done
cp "$so" "$libout/libdsu.so.0"
