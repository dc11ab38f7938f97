#!/usr/bin/env bash
# Installs everything the kernel build, the module and the VM need. Idempotent: each
# part is skipped when already present.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PACKAGES=(linux-source-6.12 rustc-web rust-web-src clang lld llvm libclang-dev
    qemu-system-x86 busybox-static flex bison bc libelf-dev libssl-dev cpio
    redis-tools redis-server python3 gcc-multilib kmod)

missing_packages() {
    local p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
    done
}

install_packages() {
    local missing
    missing=$(missing_packages)
    if [ -z "$missing" ]; then echo "    all Debian packages present"; return; fi
    echo "    installing:" $missing
    local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

install_bindgen() {
    if [ -x "$BINDGEN" ] && "$BINDGEN" --version | grep -q "$BINDGEN_VERSION"; then
        echo "    bindgen $BINDGEN_VERSION present"; return
    fi
    cargo install --locked --quiet bindgen-cli --version "=$BINDGEN_VERSION"
}

step "Debian packages" install_packages
step "bindgen-cli $BINDGEN_VERSION" install_bindgen
[ -f "$KERNEL_TARBALL" ] || die "$KERNEL_TARBALL missing after install"
