#!/usr/bin/env bash
# Checks the module's installation paths against the cached test kernel (scripts/kernel.sh)
# or $KDIR, in a temporary directory:
#   1. `make install-dkms DESTDIR=...` lays out the sources as /usr/src/dsu-VERSION, and
#      they are copied into a DKMS tree the way dkms copies them (dsu/VERSION/build).
#   2. dkms.conf is sourced with the variables dkms sets (kernelver, kernel_source_dir,
#      dkms_tree): its name and version match the workspace, the kernel passes its
#      BUILD_EXCLUSIVE rules, and its exact MAKE[0] line, run in the build tree, yields
#      BUILT_MODULE_LOCATION/BUILT_MODULE_NAME.ko with the kernel's vermagic.
#   3. The same line with a rustc other than the kernel's stops before building, naming
#      both versions.
#   4. `make modules_install INSTALL_MOD_PATH=<tmp>` installs dsu.ko under
#      lib/modules/KVER/extra and depmod lists it.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$DSU_ROOT"

KDIR="${KDIR:-$(bash "$DSU_ROOT/scripts/kernel.sh")}"
KVER=$(cat "$KDIR/include/config/kernel.release")
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# Runs dkms.conf's MAKE[0] in $1 (a DKMS build tree) as dkms would, with rustc $2.
dkms_make() {
    local build="$1" rustc="$2"
    (
        kernelver="$KVER" kernel_source_dir="$KDIR" dkms_tree="$TMP/dkms"
        export DSU_RUSTC="$rustc" DSU_BINDGEN="$BINDGEN"
        # shellcheck disable=SC1091
        source "$build/dkms.conf"
        cd "$build"
        echo "    MAKE[0]: ${MAKE[0]}" >&2
        eval "${MAKE[0]}"
    )
}

dkms_build() {
    make -s install-dkms DESTDIR="$TMP/root"
    local src="$TMP/root/usr/src/dsu-$VERSION"
    [ -f "$src/dkms.conf" ] || die "install-dkms did not install $src/dkms.conf"
    local build="$TMP/dkms/dsu/$VERSION/build"
    mkdir -p "$(dirname "$build")"
    cp -a "$src" "$build"

    # What dkms reads before building.
    (
        kernelver="$KVER" kernel_source_dir="$KDIR" dkms_tree="$TMP/dkms"
        # shellcheck disable=SC1091
        source "$build/dkms.conf"
        [ "$PACKAGE_NAME" = dsu ] || die "dkms.conf: PACKAGE_NAME $PACKAGE_NAME"
        [ "$PACKAGE_VERSION" = "$VERSION" ] \
            || die "dkms.conf: PACKAGE_VERSION $PACKAGE_VERSION, Cargo.toml says $VERSION"
        [ "$AUTOINSTALL" = yes ] || die "dkms.conf: AUTOINSTALL is not yes"
        [[ "$KVER" =~ $BUILD_EXCLUSIVE_KERNEL ]] \
            || die "dkms.conf: kernel $KVER fails BUILD_EXCLUSIVE_KERNEL $BUILD_EXCLUSIVE_KERNEL"
        grep -qx "$BUILD_EXCLUSIVE_CONFIG=y" "$KDIR/.config" \
            || die "dkms.conf: $BUILD_EXCLUSIVE_CONFIG is not set in the test kernel"
        [[ "${MAKE[0]}" == *"LLVM=1"* ]] || die "dkms.conf: MAKE[0] lacks LLVM=1"
        echo "$BUILT_MODULE_LOCATION/$BUILT_MODULE_NAME.ko" >"$TMP/built"
    )

    # A rustc other than the kernel's is refused up front (rustup's, if there is one).
    local other
    other=$(command -v rustc || true)
    if [ -n "$other" ] && [ "$("$other" --version)" != "$("$KERNEL_RUSTC" --version)" ]; then
        if dkms_make "$build" "$other" >"$TMP/wrong.log" 2>&1; then
            die "MAKE[0] built with $other, whose version is not the kernel's"
        fi
        grep -q "the kernel was built with 'rustc" "$TMP/wrong.log" \
            || { cat "$TMP/wrong.log" >&2; die "MAKE[0] with the wrong rustc failed without saying why"; }
    fi

    dkms_make "$build" "$KERNEL_RUSTC" >"$TMP/make.log" 2>&1 \
        || { tail -30 "$TMP/make.log" >&2; die "dkms.conf's MAKE[0] failed"; }
    local ko="$build/$(cat "$TMP/built")"
    [ -f "$ko" ] || die "dkms build did not produce $ko"
    local vermagic
    vermagic=$(modinfo -F vermagic "$ko")
    [[ "$vermagic" == "$KVER "* ]] || die "$ko: vermagic '$vermagic' is not for $KVER"
    [ "$(modinfo -F name "$ko")" = dsu ] || die "$ko: module name is not dsu"
    echo "    $ko: vermagic $vermagic" >&2
}

modules_install() {
    local build="$TMP/dkms/dsu/$VERSION/build"
    make -s -C "$build" KDIR="$KDIR" RUSTC="$KERNEL_RUSTC" BINDGEN="$BINDGEN" \
        INSTALL_MOD_PATH="$TMP/mods" modules_install >"$TMP/install.log" 2>&1 \
        || { cat "$TMP/install.log" >&2; die "make modules_install failed"; }
    local installed
    installed=$(find "$TMP/mods/lib/modules/$KVER/extra" -name dsu.ko)
    [ -n "$installed" ] || { find "$TMP/mods" >&2; die "modules_install did not install dsu.ko"; }
    cmp -s "$installed" "$build/kmod/dsu.ko" || die "$installed differs from the built dsu.ko"
    grep -q "^extra/.*dsu.ko:" "$TMP/mods/lib/modules/$KVER/modules.dep" \
        || die "depmod's modules.dep does not list dsu.ko"
    echo "    installed ${installed#"$TMP/mods"}" >&2
}

step "DKMS build (dkms.conf's MAKE line) against $KVER" dkms_build
step "make modules_install INSTALL_MOD_PATH=<tmp>" modules_install
