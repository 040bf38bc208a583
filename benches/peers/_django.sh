# shellcheck shell=bash
# Shared by django-gunicorn.sh and django-uvicorn.sh (sourced after _lib.sh; the
# including script sets PEER): the Python venv and the private Redis.

DJANGO_DIR="$PEERS_DIR/django"
VENV="$RUN_DIR/venv"
REDIS_PID_FILE="$RUN_DIR/$PEER.redis.pid"
PIDS_FILE="$RUN_DIR/$PEER.pids"
# shellcheck disable=SC2034 # used by the including script
LOG="$RUN_DIR/$PEER.log"

# ensure_venv : run/venv with requirements.txt installed (redone when it changes).
ensure_venv() {
    local stamp="$VENV/.requirements" python=/usr/bin/python3
    ensure_apt python3 python3-venv redis-server curl
    if [[ -x $VENV/bin/python ]] && cmp -s "$stamp" "$DJANGO_DIR/requirements.txt"; then
        return 0
    fi
    log "installing Python packages into run/venv (log: run/pip.log)"
    mkdir -p "$RUN_DIR"
    if ! {
        "$python" -m venv "$VENV" &&
            "$VENV/bin/pip" install --quiet --disable-pip-version-check \
                -r "$DJANGO_DIR/requirements.txt"
    } >"$RUN_DIR/pip.log" 2>&1; then
        tail -n 20 "$RUN_DIR/pip.log" >&2
        die "pip install failed"
    fi
    cp "$DJANGO_DIR/requirements.txt" "$stamp"
}

# start_redis PORT : private redis-server (no persistence, foreground, loopback) on
# PORT, or the next free port above it; prints the port used.
start_redis() {
    local port pid
    port=$(free_port "$1")
    (
        ulimit -n "$FD_LIMIT"
        exec redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
            --daemonize no --maxclients 19000 --dir "$RUN_DIR" \
            --logfile "$RUN_DIR/$PEER.redis.log"
    ) </dev/null >/dev/null 2>&1 &
    pid=$!
    echo "$pid" >"$REDIS_PID_FILE"
    wait_port "$port" "$pid" || {
        tail -n 20 "$RUN_DIR/$PEER.redis.log" >&2 || true
        return 1
    }
    printf '%s\n' "$port"
}

# wait_django PORT PID : wait until Django itself answers (GET /events without a
# topic is a cheap 400 that touches neither Redis nor a stream).
wait_django() {
    wait_http "http://127.0.0.1:$1/events" 400 "$2"
}

django_announce() {
    local port=$1
    announce "$PIDS_FILE" \
        "http://127.0.0.1:$port/events?topic={topic}" \
        "http://127.0.0.1:$port/publish" \
        "topic={topic}&data={data}" \
        "application/x-www-form-urlencoded"
}

django_stop() {
    kill_pidfile "$PIDS_FILE"
    kill_pidfile "$REDIS_PID_FILE"
}
