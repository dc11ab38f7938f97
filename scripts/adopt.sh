#!/usr/bin/env bash
# Runs README's "Your own program, v1 to v2" steps (the sh block between the adopt:begin
# and adopt:end markers) word for word in a fresh directory outside the workspace, as a
# newcomer would, and copies the resulting hello-v1 and hello-v2 to OUTDIR (the VM test
# userspace::adopt_readme runs them). Usage: scripts/adopt.sh OUTDIR
# Offline: the dependencies come from cargo's cache (the workspace already fetched them).
# The project's build directory is kept in target/adopt so that a second run is quick.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="${1:?usage: scripts/adopt.sh OUTDIR}"
mkdir -p "$out"

adopt() {
    local steps work
    steps="$(sed -n '/^<!-- adopt:begin -->$/,/^<!-- adopt:end -->$/p' "$DSU_ROOT/README.md" |
        sed -e '/^<!--/d' -e '/^```/d')"
    [ -n "$steps" ] || die "README.md has no adopt:begin/adopt:end block"
    work="$(mktemp -d /tmp/dsu-adopt-XXXXXX)"
    # shellcheck disable=SC2064 # expand now
    trap "rm -rf '$work'" RETURN
    (
        cd "$work"
        export DSU="$DSU_ROOT" CARGO_NET_OFFLINE=true CARGO_TARGET_DIR="$DSU_ROOT/target/adopt"
        # The README's steps name target/...: link that to the kept build directory.
        mkdir -p "$CARGO_TARGET_DIR"
        bash -euo pipefail -c "$(printf '%s\n' "$steps" |
            sed 's|^cargo new hello-dsu && cd hello-dsu$|&\nln -s "$CARGO_TARGET_DIR" target|')" >&2
    )
    cp "$work/hello-dsu/hello-v1" "$work/hello-dsu/hello-v2" "$out/"
    echo "built $out/hello-v1 and $out/hello-v2 from README.md's steps" >&2
}
step "README's own-program steps (scripts/adopt.sh)" adopt
