#!/bin/bash
# Where the CPU of a loopback cluster publish goes, against standalone: the
# node's threads, redis-server and the load generator, in µs per publish,
# measured from /proc over one burst of 16 publishers (one publish in flight
# each, as benches/cluster_publish.py runs them). On a machine where all
# three share the same cores this is the budget that bounds cluster ÷
# standalone publishes/s.
# usage: benches/cluster_cpu.sh [REPS] [EVENTS]   (default 3, 40000)
# Ports: CLUSTER_CPU_PORT (node, default 9180), CLUSTER_CPU_REDIS_PORT (16490).
set -u
reps=${1:-3}; events=${2:-40000}
root=$(cd "$(dirname "$0")/.." && pwd)
port=${CLUSTER_CPU_PORT:-9180}; redis_port=${CLUSTER_CPU_REDIS_PORT:-16490}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ticks() { awk '{print $14 + $15}' "$1"; }
node_ticks() { cat /proc/"$1"/task/*/stat | awk '{sum += $14 + $15} END {print sum}'; }

run() { # kind -> one line of figures
  local kind=$1 args="--listen 127.0.0.1:$port --workers 2 --log warn"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
  local rpid=$!
  for _ in $(seq 100); do redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
  [ "$kind" = cluster ] && args="$args --redis redis://127.0.0.1:$redis_port"
  "$root/target/release/ssehub" $args >"$work/hub.log" 2>&1 &
  local hpid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.05; done
  local node0 redis0 node1 redis1
  node0=$(node_ticks "$hpid"); redis0=$(ticks /proc/$rpid/stat)
  # The generator's own CPU, from its rusage (no /usr/bin/time needed).
  python3 -c 'import resource, subprocess, sys
with open(sys.argv[1], "w") as out:
    subprocess.run(sys.argv[2:], stdout=out, stderr=subprocess.DEVNULL)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(r.ru_utime, r.ru_stime)' "$work/report.json" "$root/target/release/ssehub-bench" run --scenario burst \
    --preset ssehub --port "$port" -n 16 --topics 16 --pub-conns 16 --events "$events" --json -q >"$work/bench.time"
  node1=$(node_ticks "$hpid"); redis1=$(ticks /proc/$rpid/stat)
  kill "$hpid" "$rpid"; wait "$hpid" "$rpid" 2>/dev/null
  python3 - "$kind" "$events" "$(getconf CLK_TCK)" "$((node1 - node0))" "$((redis1 - redis0))" "$work" <<'EOF'
import json, sys
kind, events, tck, node, redis, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
publish = json.load(open(f"{work}/report.json"))["publish"]
user, system = map(float, open(f"{work}/bench.time").read().split()[-2:])
us = lambda seconds: seconds * 1e6 / events
n, r, b = us(node / tck), us(redis / tck), us(user + system)
ok = "" if publish["ok"] == events else f"  ({publish['ok']} of {events} answered 2xx)"
print(f"{kind:10} {publish['rate_achieved']:9,.0f} publishes/s   node {n:5.1f}   redis {r:5.1f}   load generator {b:5.1f}   total {n + r + b:5.1f} µs/publish{ok}")
EOF
}

for _ in $(seq "$reps"); do run cluster; run standalone; done
