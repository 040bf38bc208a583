#!/usr/bin/env bash
# Benchmark peer: Django (WSGI) under gunicorn with 2 sync workers + Redis pub/sub.
#
# The setup users are leaving: benches/peers/django, a stock Django project whose
# publish view PUBLISHes to Redis and whose SSE view (StreamingHttpResponse) blocks on
# a redis-py pub/sub subscription. gunicorn runs the default sync worker class with 2
# workers (ssehub's worker count on this 2-core box), so each open stream pins one
# worker: the 3rd subscriber, and any publish behind it, waits in the listen backlog.
# That limit is the point of this peer, not a misconfiguration. Settings that are not
# gunicorn's defaults:
#   * --timeout 0: the default 30 s would have the arbiter kill every worker that
#     streams for 30 s; anyone running SSE on sync workers raises or disables it;
#   * --graceful-timeout 1: stop does not wait 30 s for streams that never end;
#   * fd limit raised to the 20000 hard limit, like every peer.
# Redis is a private redis-server (no persistence) on PORT+10000 or the next free
# port; its pid is in run/django-gunicorn.redis.pid, not in the pids line.
#
# Usage: django-gunicorn.sh start [PORT]   (default 8083)
#        django-gunicorn.sh stop
set -euo pipefail

PEER=django-gunicorn
# shellcheck source=_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
# shellcheck source=_django.sh
source "$PEERS_DIR/_django.sh"

WORKERS=2

start() {
    local port=${1:-8083} redis_port master workers
    already_running "$PIDS_FILE" && die "already running (pids in $PIDS_FILE); stop it first"
    port_open "$port" && die "127.0.0.1:$port is already in use"
    ensure_venv
    redis_port=$(start_redis $((port + 10000))) || { stop; die "redis-server did not start"; }

    (
        ulimit -n "$FD_LIMIT"
        export SSEPEER_REDIS_URL="redis://127.0.0.1:$redis_port/0"
        export DJANGO_SETTINGS_MODULE=ssepeer.settings
        exec "$VENV/bin/gunicorn" --chdir "$DJANGO_DIR" \
            --bind "127.0.0.1:$port" --workers "$WORKERS" --worker-class sync \
            --timeout 0 --graceful-timeout 1 --log-level warning \
            ssepeer.wsgi:application
    ) </dev/null >"$LOG" 2>&1 &
    master=$!
    echo "$master" >"$PIDS_FILE"

    if ! wait_django "$port" "$master"; then
        tail -n 20 "$LOG" >&2 || true
        stop
        die "gunicorn did not come up on port $port"
    fi
    workers=$(wait_children "$master" "$WORKERS") || { stop; die "gunicorn workers did not start"; }
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
