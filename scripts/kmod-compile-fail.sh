#!/usr/bin/env bash
# Compile-fail tests of the module's safe wrappers (kmod/kernel_ext), like trybuild for the
# kernel crate: each tests/kmod-compile-fail/*.rs is added to a private copy of the module
# as `mod compile_fail_case;` and built against the test kernel. A case whose `// expect:`
# line names a rustc error code must fail with exactly that code; `ok` must build (the
# control, so that a broken harness cannot pass the other cases).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

KDIR="${KDIR:-$(bash "$DSU_ROOT/scripts/kernel.sh")}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$DSU_ROOT"
bad=0 n=0
for case in tests/kmod-compile-fail/*.rs; do
    n=$((n + 1))
    name=$(basename "$case" .rs)
    expect=$(sed -n 's,^// expect: *,,p' "$case")
    [ -n "$expect" ] || die "$case has no '// expect:' line"
    src="$work/$name"
    mkdir -p "$src"
    # The tracked sources only (no objects of an in-tree build), as they are in the tree now.
    git ls-files -z Kbuild kmod uapi | tar -C "$DSU_ROOT" --null -T - -cf - | tar -C "$src" -xf -
    cp "$case" "$src/kmod/compile_fail_case.rs"
    echo 'mod compile_fail_case;' >>"$src/kmod/dsu_main.rs"
    if make -C "$KDIR" M="$src" LLVM=1 RUSTC="$KERNEL_RUSTC" BINDGEN="$BINDGEN" \
        -j"$(nproc)" modules >"$work/$name.log" 2>&1; then
        built=yes
    else
        built=no
    fi
    if [ "$expect" = ok ]; then
        if [ $built = yes ]; then echo "    ok   $name (builds)" >&2
        else echo "    FAIL $name: the control case does not build:" >&2; tail -30 "$work/$name.log" >&2; bad=$((bad + 1)); fi
    elif [ $built = yes ]; then
        echo "    FAIL $name: built, but must fail with error[$expect]" >&2; bad=$((bad + 1))
    elif grep -q "error\[$expect\]" "$work/$name.log"; then
        echo "    ok   $name (error[$expect])" >&2
    else
        echo "    FAIL $name: failed, but not with error[$expect]:" >&2
        grep -m5 '^error' "$work/$name.log" >&2 || tail -20 "$work/$name.log" >&2
        bad=$((bad + 1))
    fi
done
echo "kmod compile-fail: $((n - bad)) of $n cases as expected" >&2
[ $bad = 0 ]
