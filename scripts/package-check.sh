#!/usr/bin/env bash
# Checks that the publishable crates (dsu-uapi, dsu-macros, dsu, dsuctl) are ready for
# crates.io and that every licence in the tree is an SPDX expression with its text in
# LICENSES/:
#   1. `cargo publish --dry-run` of the four crates together. Cargo packages each one,
#      puts the packages in a temporary local registry so that `dsu` resolves the
#      unpublished `dsu-uapi` and `dsu-macros` from their packages (not from the path),
#      then builds every package from its .crate contents alone (the "verify" step) and
#      stops before uploading. This fails on a path dependency without a version, a file
#      outside the package that the code needs, or metadata crates.io refuses.
#   2. The manifests cargo wrote into the packages: description, documentation, readme,
#      keywords (at most 5), categories, an inherited rust-version and edition, the
#      expected SPDX licence, and the README and licence texts inside the .crate.
#   3. Every other workspace member says `publish = false`.
#   4. SPDX-License-Identifier lines: the kernel module GPL-2.0-only, the uapi header
#      GPL-2.0 WITH Linux-syscall-note, userspace MIT OR Apache-2.0; every identifier
#      used has LICENSES/<id>.txt.
# Needs the crates.io index (cargo's configured registry) for step 1.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$DSU_ROOT"

CRATES=(dsu-uapi dsu-macros dsu dsuctl)
pkg_args=()
for c in "${CRATES[@]}"; do pkg_args+=(-p "$c"); done

# Cargo unpacks the temporary registry's packages into its registry/src cache and, the
# version being the same, would verify against a stale copy from an earlier run: drop our
# own crates' unpacked copies first (they are not on crates.io, so nothing else is lost).
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
for c in "${CRATES[@]}"; do
    rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"$c-$VERSION"
done
# Likewise the verify builds' artifacts, which cargo fingerprints by version, not contents:
# they go to their own target directory, where our crates' outputs are dropped first.
export CARGO_TARGET_DIR="$DSU_ROOT/target/package-check"
rm -rf "$CARGO_TARGET_DIR/package"
for c in "${CRATES[@]}"; do
    rm -rf "$CARGO_TARGET_DIR"/debug/.fingerprint/"$c"-* \
        "$CARGO_TARGET_DIR"/debug/deps/lib"${c//-/_}"-* "$CARGO_TARGET_DIR"/debug/deps/"${c//-/_}"-* \
        "$CARGO_TARGET_DIR"/debug/build/"$c"-*
done

step "cargo publish --dry-run (${CRATES[*]})" \
    cargo publish --quiet --dry-run --allow-dirty "${pkg_args[@]}"
# The .crate files to inspect (already verified above; packaging again is cheap).
step "cargo package (${CRATES[*]})" \
    cargo package --quiet --no-verify --allow-dirty "${pkg_args[@]}"

check_metadata() {
    cargo metadata --format-version 1 --no-deps >"$DSU_OUT/metadata.json"
    python3 - "$DSU_OUT/metadata.json" "${CRATES[@]}" <<'EOF'
import json, os, pathlib, re, sys, tarfile, tomllib

meta = json.load(open(sys.argv[1]))
publishable = sys.argv[2:]
root = pathlib.Path(meta["workspace_root"])
want_license = {"dsu-uapi": "GPL-2.0-only WITH Linux-syscall-note"}
want_texts = {"dsu-uapi": ["LICENSE-GPL-2.0-only", "LICENSE-Linux-syscall-note"]}
ws = tomllib.load(open(root / "Cargo.toml", "rb"))["workspace"]["package"]
errors = []
for p in meta["packages"]:
    name = p["name"]
    if name not in publishable:
        if p["publish"] != []:
            errors.append(f"{name}: not published, so it must say publish = false")
        continue
    version = p["version"]
    crate = pathlib.Path(os.environ["CARGO_TARGET_DIR"]) / "package" / f"{name}-{version}.crate"
    with tarfile.open(crate) as t:
        files = {m.name.split("/", 1)[1] for m in t.getmembers()}
        manifest = tomllib.load(t.extractfile(f"{name}-{version}/Cargo.toml"))["package"]
    lic = want_license.get(name, "MIT OR Apache-2.0")
    if manifest.get("license") != lic:
        errors.append(f"{name}: license {manifest.get('license')!r}, want {lic!r}")
    for field in ["rust-version", "edition"]:
        if manifest.get(field) != ws[field]:
            errors.append(f"{name}: {field} {manifest.get(field)!r} is not the workspace's {ws[field]!r}")
    for field in ["description", "documentation", "readme", "keywords", "categories"]:
        if not manifest.get(field):
            errors.append(f"{name}: no {field}")
    doc = manifest.get("documentation", "")
    if not re.fullmatch(rf"https://docs\.rs/(crate/)?{re.escape(name)}", doc):
        errors.append(f"{name}: documentation {doc!r} is not its docs.rs page")
    kw = manifest.get("keywords", [])
    if len(kw) > 5 or any(not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,19}", k) for k in kw):
        errors.append(f"{name}: keywords {kw} break crates.io's rules (5, short, lower case)")
    for f in ["README.md"] + want_texts.get(name, ["LICENSE-MIT", "LICENSE-APACHE"]):
        if f not in files:
            errors.append(f"{name}: {f} missing from the package")
    for f in want_texts.get(name, ["LICENSE-MIT", "LICENSE-APACHE"]):
        if f in files and not (root / p["manifest_path"]).parent.joinpath(f).read_text().strip():
            errors.append(f"{name}: {f} is empty")
    # A path dependency needs a version too: the packaged manifest keeps only that.
    for d in p["dependencies"]:
        if d.get("path") and d["req"] == "*":
            errors.append(f"{name}: path dependency {d['name']} has no version")

# SPDX identifiers in source files.
rules = [
    ("kmod/", "GPL-2.0-only"),
    ("tests/warnmod/", "GPL-2.0-only"),
    ("tests/kmod-compile-fail/", "GPL-2.0-only"),
    ("uapi/dsu.h", "GPL-2.0 WITH Linux-syscall-note"),
    ("userspace/", "MIT OR Apache-2.0"),
    ("examples/", "MIT OR Apache-2.0"),
    ("tests/", "MIT OR Apache-2.0"),
]
spdx = re.compile(r"SPDX-License-Identifier:\s*(.*?)\s*(\*/)?\s*$")
seen = set()
for path in sorted(root.rglob("*")):
    rel = path.relative_to(root).as_posix()
    if rel.startswith(("target/", ".git/", "LICENSES/", "scripts/package-check.sh")) or not path.is_file():
        continue
    if path.suffix not in {".rs", ".h", ".c", ".cc", ".cpp", ".sh", ".py"}:
        continue
    for line in path.read_text(errors="replace").splitlines()[:3]:
        m = spdx.search(line)
        if not m:
            continue
        expr = m.group(1)
        seen.update(t for t in re.split(r"\s+|[()]", expr) if t and t not in {"OR", "AND", "WITH"})
        want = next((w for prefix, w in rules if rel.startswith(prefix)), None)
        if want and expr != want:
            errors.append(f"{rel}: SPDX {expr!r}, want {want!r}")
for p in meta["packages"]:
    if p["license"]:
        seen.update(t for t in re.split(r"\s+|[()]", p["license"]) if t and t not in {"OR", "AND", "WITH"})
# The kernel's uapi convention "GPL-2.0 WITH Linux-syscall-note" means GPL-2.0-only.
seen = {"GPL-2.0-only" if i == "GPL-2.0" else i for i in seen}
for ident in sorted(seen):
    if not (root / "LICENSES" / f"{ident}.txt").is_file():
        errors.append(f"licence {ident} is used but LICENSES/{ident}.txt is missing")

for e in errors:
    print("package-check:", e, file=sys.stderr)
if errors:
    sys.exit(1)
print(f"package-check: {', '.join(publishable)} packaged with complete metadata; "
      f"licences {', '.join(sorted(seen))} all have texts")
EOF
}
mkdir -p "$DSU_OUT"
step "crate metadata and SPDX licences" check_metadata
