#!/usr/bin/env bash
# Runs every test: installs what the suites need when it is missing
# (redis-server and nginx for the cluster suite; python3-venv, node, npm and
# curl for the client matrix, which installs its pinned libraries into
# target/clients-env itself), then `cargo test --workspace`.
# Needs root (or sudo) only when something is missing.
set -euo pipefail
cd "$(dirname "$0")"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || missing+=(nginx-light)
# tests/clients.rs makes a venv and runs npm ci into target/clients-env itself.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# tests/io.rs makes io_uring setup fail under strace (error injection) to check the fallback.
command -v strace >/dev/null 2>&1 || missing+=(strace)
# --- browser suite (tests/browser.rs): Debian's Chromium, driven headless by
# playwright-core, which tests/browser.rs installs with npm ci into target/.
test -x /usr/bin/chromium || missing+=(chromium)
# --- end of the browser suite's block
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
redis-server --version
/usr/sbin/nginx -v 2>&1 || nginx -v
echo "python3 $(python3 -c 'import platform; print(platform.python_version())'), node $(node --version), npm $(npm --version)"
curl --version | head -n 1

cargo test --workspace "$@"

# --- The integration suites of tests/ again on the other driver (issue 16):
# the first pass ran the default (`--io auto`, which is epoll), this one
# gives every server they start `--io uring` (tests/common reads
# SSEHUB_TEST_IO). Not the browser and client-library suites, nor Python:
# they test clients, not the driver, and CI time is bounded.
suites=()
for suite in tests/*.rs; do
    name=$(basename "$suite" .rs)
    case "$name" in browser | clients) ;; *) suites+=(--test "$name") ;; esac
done
# --workspace: the same features as the first pass, so nothing is rebuilt.
SSEHUB_TEST_IO=uring cargo test --workspace "${suites[@]}"
# --- end of the second driver pass

# --- Python package and Django example: pytest against the binary and
# redis-server, the wheels, the example's browser test (clients/python/test.sh).
clients/python/test.sh
# --- end Python
