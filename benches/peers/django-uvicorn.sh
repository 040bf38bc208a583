#!/usr/bin/env bash
# Benchmark peer: Django (ASGI) under uvicorn, 2 worker processes + Redis pub/sub.
#
# The "modern" way out of gunicorn's one-stream-per-worker limit without leaving
# Django: the same project (benches/peers/django) with async views
# (ssepeer/aviews.py): the SSE view is an async generator over a redis.asyncio pub/sub
# subscription, fed to StreamingHttpResponse; publish is an async view doing PUBLISH.
# uvicorn runs with uvicorn[standard] (uvloop + httptools, what deployments install)
# and --workers 2, ssehub's worker count on this 2-core box, so the pids line has the
# supervisor plus its 2 workers (not multiprocessing's resource tracker, which serves
# nothing). Non-default settings: no access log, --timeout-graceful-shutdown 1 so
# stop does not wait for never-ending streams, fd limit at the 20000 hard limit.
# Every subscriber holds its own Redis connection, as this pattern does in practice.
# Redis is a private redis-server (no persistence) on PORT+10000 or the next free
# port; its pid is in run/django-uvicorn.redis.pid, not in the pids line.
#
# Usage: django-uvicorn.sh start [PORT]   (default 8084)
#        django-uvicorn.sh stop
set -euo pipefail

PEER=django-uvicorn
# shellcheck source=_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
# shellcheck source=_django.sh
source "$PEERS_DIR/_django.sh"

WORKERS=2

# uvicorn_workers PID : the worker children of uvicorn's supervisor (spawned with
# multiprocessing's spawn_main), one per line, once all WORKERS exist.
uvicorn_workers() {
    local master=$1 tries=100 kid found
    while ((tries-- > 0)); do
        found=()
        for kid in $(children "$master"); do
            if tr '\0' ' ' <"/proc/$kid/cmdline" 2>/dev/null | grep -q 'spawn_main'; then
                found+=("$kid")
            fi
        done
        if ((${#found[@]} >= WORKERS)); then
            printf '%s\n' "${found[@]}"
            return 0
        fi
        sleep 0.1
    done
    return 1
}

start() {
    local port=${1:-8084} redis_port master workers
    already_running "$PIDS_FILE" && die "already running (pids in $PIDS_FILE); stop it first"
    port_open "$port" && die "127.0.0.1:$port is already in use"
    ensure_venv
    redis_port=$(start_redis $((port + 10000))) || { stop; die "redis-server did not start"; }

    (
        ulimit -n "$FD_LIMIT"
        export SSEPEER_REDIS_URL="redis://127.0.0.1:$redis_port/0"
        export DJANGO_SETTINGS_MODULE=ssepeer.settings_asgi
        exec "$VENV/bin/uvicorn" --app-dir "$DJANGO_DIR" \
            --host 127.0.0.1 --port "$port" --workers "$WORKERS" \
            --no-access-log --log-level warning --timeout-graceful-shutdown 1 \
            ssepeer.asgi:application
    ) </dev/null >"$LOG" 2>&1 &
    master=$!
    echo "$master" >"$PIDS_FILE"

    if ! wait_django "$port" "$master"; then
        tail -n 20 "$LOG" >&2 || true
        stop
        die "uvicorn did not come up on port $port"
    fi
    workers=$(uvicorn_workers "$master") || { stop; die "uvicorn workers did not start"; }
    printf '%s\n' "$workers" >>"$PIDS_FILE"
    django_announce "$port"
}

stop() {
    django_stop
}

case "${1:-}" in
    start) start "${2:-}" ;;
    stop) stop ;;
    *) usage ;;
esac
