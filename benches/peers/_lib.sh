# shellcheck shell=bash
# Helpers shared by the benchmark peer scripts (sourced, not executed).
#
# Contract of every peer script:
#   <peer>.sh start [PORT]  install if missing, start on 127.0.0.1:PORT, wait until it
#                           accepts connections, write run/<peer>.pids (one pid a line:
#                           every process that serves) and print exactly one line:
#                           pids=P1,P2 sub=URL pub=URL body=TEMPLATE content_type=CT
#   <peer>.sh stop          SIGTERM the pids (and helper processes), SIGKILL after a
#                           bounded wait, remove the run/ state files.
# Anything that is not that one line goes to stderr.

PEERS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Used by the scripts that source this file.
# shellcheck disable=SC2034
RUN_DIR="$PEERS_DIR/run"
# shellcheck disable=SC2034
FD_LIMIT=20000

log() { printf '%s: %s\n' "${PEER:-peer}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ensure_apt PKG... : install the Debian packages that are missing, quietly.
# `apt-get update` runs only when something has to be installed.
ensure_apt() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing ${missing[*]} (log: run/apt.log)"
    mkdir -p "$RUN_DIR"
    # Packaged services (system nginx, redis) are never used; under policy-rc.d they
    # are not even started.
    if ! { apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}"; } >"$RUN_DIR/apt.log" 2>&1; then
        tail -n 20 "$RUN_DIR/apt.log" >&2
        die "apt-get install ${missing[*]} failed"
    fi
}

# port_open PORT : true if something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_port PORT PID [TENTHS] : wait (default 15 s) until PORT accepts, failing early if
# PID dies.
wait_port() {
    local port=$1 pid=$2 tries=${3:-150}
    while ((tries-- > 0)); do
        port_open "$port" && return 0
        is_alive "$pid" || return 1
        sleep 0.1
    done
    return 1
}

# wait_http URL CODE PID : wait (20 s max) until URL answers with HTTP status CODE,
# failing early if PID dies.
wait_http() {
    local url=$1 want=$2 pid=$3 tries=200 code
    while ((tries-- > 0)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
        [[ $code == "$want" ]] && return 0
        is_alive "$pid" || return 1
        sleep 0.1
    done
    return 1
}

# free_port START : print the first port >= START that nothing listens on.
free_port() {
    local port=$1
    while port_open "$port"; do
        port=$((port + 1))
        ((port < 65535)) || die "no free port above $1"
    done
    printf '%s\n' "$port"
}

# children PID : pids of the direct children of PID.
children() {
    pgrep -P "$1" || true
}

# wait_children PID COUNT : wait (10 s max) until PID has at least COUNT children and
# print them.
wait_children() {
    local pid=$1 want=$2 tries=100 kids
    while ((tries-- > 0)); do
        kids=$(children "$pid")
        if [[ -n $kids ]] && (($(wc -l <<<"$kids") >= want)); then
            printf '%s\n' "$kids"
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# is_alive PID : true if PID exists and is not a zombie (the servers outlive the
# start script, so they are reaped by init, which may take its time).
is_alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# kill_pids PID... : SIGTERM, wait up to 10 s, then SIGKILL whatever is left.
kill_pids() {
    local pid alive tries=100
    [[ $# -eq 0 ]] && return 0
    kill -TERM "$@" 2>/dev/null || true
    while ((tries-- > 0)); do
        alive=()
        for pid in "$@"; do
            is_alive "$pid" && alive+=("$pid")
        done
        [[ ${#alive[@]} -eq 0 ]] && break
        sleep 0.1
    done
    if [[ ${#alive[@]} -gt 0 ]]; then
        log "SIGKILL ${alive[*]}"
        kill -KILL "${alive[@]}" 2>/dev/null || true
    fi
    # Cosmetic: give init (here a slow reaper) up to 3 s to reap the zombies, so
    # that `ps` right after stop shows nothing.
    tries=30
    for pid in "$@"; do
        while [[ -e /proc/$pid ]] && ((tries-- > 0)); do
            sleep 0.1
        done
    done
}

# kill_pidfile FILE : kill_pids the pids listed in FILE (if any), then remove it.
kill_pidfile() {
    local file=$1 pids=()
    if [[ -f $file ]]; then
        mapfile -t pids < <(grep -E '^[0-9]+$' "$file" || true)
        kill_pids "${pids[@]}"
        rm -f "$file"
    fi
}

# already_running PIDFILE : true if the pid file exists and its first pid is alive.
already_running() {
    local pid
    [[ -f $1 ]] || return 1
    pid=$(head -n1 "$1")
    [[ -n $pid ]] && is_alive "$pid"
}

# announce PIDFILE sub pub body ctype : print the one stdout line of the contract.
announce() {
    local pids
    pids=$(paste -sd, "$1")
    printf 'pids=%s sub=%s pub=%s body=%s content_type=%s\n' "$pids" "$2" "$3" "$4" "$5"
}

usage() {
    echo "usage: $0 start [PORT] | stop" >&2
    exit 2
}
