#!/usr/bin/env bash
# The release check (run by .ci/run): build what a user installs and prove it works without Rust.
#
#  1. Build the manylinux2014 abi3 wheel (maturin + zig from PyPI, so the glibc it links against is
#     2.17 whatever this machine has) and the sdist; print the wheel's size, tags and shared-library
#     dependencies (auditwheel show).
#  2. Install the wheel into a fresh venv whose PATH has no cargo or rustc; from outside the source
#     tree run `upweight --version`, the CLI's help, `upweight demo`, and a smoke subset of the tests
#     against the installed package (never python/ of this checkout).
#  3. Install the sdist into another fresh venv (this one compiles the core, so it needs cargo) and
#     run the same checks.
#
# Usage: scripts/check_wheel.sh [OUT_DIR]   (default: a temporary directory, deleted at the end)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-}"
if [[ -z "$out" ]]; then
    out="$(mktemp -d)"
    trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"
py="${PYTHON:-python3}"
# Smoke tests: no optional extra beyond scipy (test_cli's sparse files); a few minutes on 2 cores.
smoke_tests=(test_release.py test_seed_example.py test_definition.py test_idx.py test_bad_input.py test_cli.py)
smoke_deps=(pytest "hypothesis>=6.80" scipy pyyaml)

step() { printf '\n== %s\n' "$*"; }

step "build tools (maturin, zig, auditwheel) in $out/tools"
"$py" -m venv "$out/tools"
"$out/tools/bin/pip" install -q "maturin>=1.7,<2" "ziglang>=0.13" "auditwheel>=6"

step "wheel (manylinux2014, abi3) and sdist"
rm -rf "$out/dist"
(cd "$repo" && PATH="$out/tools/bin:$PATH" maturin build --release --zig --compatibility manylinux2014 --out "$out/dist" \
    && PATH="$out/tools/bin:$PATH" maturin sdist --out "$out/dist")
wheel="$(ls "$out"/dist/upweight-*.whl)"
sdist="$(ls "$out"/dist/upweight-*.tar.gz)"
case "$(basename "$wheel")" in
    *-cp310-abi3-*manylinux_2_17_x86_64*.whl) ;;  # abi3 for CPython >= 3.10; glibc 2.17 (manylinux2014)
    *) echo "unexpected wheel tags: $(basename "$wheel")" >&2; exit 1 ;;
esac
ls -l "$wheel" "$sdist"
"$out/tools/bin/auditwheel" show "$wheel"

# A fresh venv with the package from $1 installed; runs everything from a directory outside the
# source tree. $2: "no-rust" hides cargo and rustc from PATH and from rustup.
check_install() {
    local what="$1" rust="$2" venv="$out/venv-$3"
    rm -rf "$venv"
    "$py" -m venv "$venv"
    local path="$venv/bin:/usr/local/bin:/usr/bin:/bin"
    if [[ "$rust" == "with-rust" ]]; then
        path="$venv/bin:$(dirname "$(command -v cargo)"):/usr/local/bin:/usr/bin:/bin"
    fi
    (
        cd "$out"
        export PATH="$path"
        if [[ "$rust" == "no-rust" ]]; then
            export CARGO_HOME="$out/no-cargo" RUSTUP_HOME="$out/no-rustup"
            if command -v cargo || command -v rustc; then echo "cargo/rustc still on PATH" >&2; exit 1; fi
        fi
        step "install $(basename "$what") into a fresh venv ($rust)"
        pip install -q "$what" "${smoke_deps[@]}"
        python - "$repo" <<'EOF'
import pathlib, sys
import upweight
where = pathlib.Path(upweight.__file__).resolve()
assert pathlib.Path(sys.prefix).resolve() in where.parents, f"upweight imported from {where}, not the venv"
assert pathlib.Path(sys.argv[1]).resolve() not in where.parents, f"upweight imported from the source tree: {where}"
print("upweight", upweight.__version__, "from", where.parent)
EOF
        step "CLI"
        upweight --version
        upweight --help > /dev/null
        for command in demo seed fit score; do upweight "$command" --help > /dev/null; done
        upweight demo --plots ''
        step "smoke tests against the installed package"
        python -m pytest -q -p no:cacheprovider --rootdir "$repo" "${smoke_tests[@]/#/$repo/tests/}"
    )
}

check_install "$wheel" no-rust wheel
check_install "$sdist" with-rust sdist
step "wheel and sdist: all checks passed"
