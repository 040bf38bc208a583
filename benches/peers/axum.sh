#!/usr/bin/env bash
# Benchmark peer: tokio + axum (benches/peers/axum, a standalone crate).
#
# The SSE fan-out a typical Rust developer writes: axum's Sse response, one
# tokio::sync::broadcast channel (capacity 1024) per topic in a Mutex<HashMap>, the
# default multi-threaded runtime (one worker thread per core = 2 here, ssehub's worker
# count). It is deliberately not tuned: a plain `cargo build --release` with the
# default release profile, and the only concession is the fd limit raised to the
# 20000 hard limit like every peer. It is its own Cargo workspace with its own target
# dir (benches/peers/axum/target), so it never joins the ssehub build. The build runs
# under `nice` since this machine is shared.
#
# Usage: axum.sh start [PORT]   (default 8082)
#        axum.sh stop
set -euo pipefail

PEER=axum
# shellcheck source=_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

CRATE="$PEERS_DIR/axum"
BIN="$CRATE/target/release/axum-sse-peer"
PIDS_FILE="$RUN_DIR/axum.pids"
LOG="$RUN_DIR/axum.log"

# Build when the binary is missing or older than the crate's sources.
build() {
    if [[ -x $BIN ]] && [[ -z $(find "$CRATE/src" "$CRATE/Cargo.toml" -newer "$BIN" -print -quit) ]]; then
        return 0
    fi
    command -v cargo >/dev/null || die "cargo not found (install a Rust toolchain)"
    log "building $BIN (log: run/axum-build.log)"
    mkdir -p "$RUN_DIR"
    if ! nice -n 10 cargo build --release --quiet \
        --manifest-path "$CRATE/Cargo.toml" --target-dir "$CRATE/target" \
        >"$RUN_DIR/axum-build.log" 2>&1; then
        tail -n 30 "$RUN_DIR/axum-build.log" >&2
        die "cargo build failed"
    fi
}

start() {
    local port=${1:-8082} pid
    already_running "$PIDS_FILE" && die "already running (pids in $PIDS_FILE); stop it first"
    port_open "$port" && die "127.0.0.1:$port is already in use"
    build
    mkdir -p "$RUN_DIR"
    (
        ulimit -n "$FD_LIMIT"
        exec "$BIN" "127.0.0.1:$port"
    ) </dev/null >"$LOG" 2>&1 &
    pid=$!
    echo "$pid" >"$PIDS_FILE"
    if ! wait_port "$port" "$pid"; then
        tail -n 20 "$LOG" >&2 || true
        stop
        die "axum peer did not come up on port $port"
    fi
    announce "$PIDS_FILE" \
        "http://127.0.0.1:$port/events?topic={topic}" \
        "http://127.0.0.1:$port/publish" \
        "topic={topic}&data={data}" \
        "application/x-www-form-urlencoded"
}

stop() {
    kill_pidfile "$PIDS_FILE"
}

case "${1:-}" in
    start) start "${2:-}" ;;
    stop) stop ;;
    *) usage ;;
esac
