#!/usr/bin/env bash
# The Python suites, run by ./test.sh after `cargo test --workspace`:
#
# 1. the package's pytest suite (clients/python/tests) in target/python/dev
#    (requirements-test.txt, installed once per change of that file), against
#    cargo's debug build of ssehub and a private redis-server;
# 2. the wheels: the ssehub package and ssehub-server (maturin, `bin`
#    bindings: the hub binary) into target/python/wheels;
# 3. a fresh venv, target/python/example, with those two wheels and
#    examples/django/requirements.txt, and the example's browser test in
#    Debian's Chromium against the binary the wheel installed.
#
# Needs python3 with venv, redis-server, chromium and the PyPI registry the
# first time; ./test.sh installs the Debian packages. SSEHUB_WHEEL_PROFILE
# picks the cargo profile of the wheel (default dev: CI checks the packaging,
# not the optimiser; a release is built with --release, see README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
out=$root/target/python
mkdir -p "$out"

pip_install() { "$1/bin/python" -m pip install --disable-pip-version-check --no-input --quiet "${@:2}"; }

# 1. The package against the real binary.
cargo build --quiet --bin ssehub
dev=$out/dev
stamp=$dev/installed-from
if ! cmp -s clients/python/requirements-test.txt "$stamp" 2>/dev/null || [ ! -x "$dev/bin/python" ]; then
    rm -rf "$dev"
    python3 -m venv "$dev"
    pip_install "$dev" -r clients/python/requirements-test.txt
    cp clients/python/requirements-test.txt "$stamp"
fi
pip_install "$dev" --no-deps --no-build-isolation --force-reinstall ./clients/python
(cd clients/python && SSEHUB_BINARY="$root/target/debug/ssehub" "$dev/bin/python" -m pytest -q)

# 2. The wheels.
wheels=$out/wheels
rm -rf "$wheels"
"$dev/bin/python" -m pip wheel --disable-pip-version-check --quiet --no-deps --no-build-isolation -w "$wheels" ./clients/python
(cd clients/python/server && nice "$dev/bin/maturin" build --quiet --profile "${SSEHUB_WHEEL_PROFILE:-dev}" -o "$wheels")
ls "$wheels"

# 3. A fresh venv: the wheels as a Django team would install them, then the example's test.
example=$out/example
rm -rf "$example"
python3 -m venv "$example"
pip_install "$example" -r examples/django/requirements.txt "$wheels"/ssehub-*.whl "$wheels"/ssehub_server-*.whl
test -x "$example/bin/ssehub" || { echo "the ssehub-server wheel did not install bin/ssehub"; exit 1; }
"$example/bin/ssehub" --version
(cd examples/django && EXAMPLE_REQUIRE_WHEEL=1 "$example/bin/python" -m pytest -q)
