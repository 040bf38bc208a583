#!/bin/bash
# The cost of private topics, interleaved runs of one binary (issue 11):
#   idle:  connect rate and server CPU per connect with no auth, with an
#          HS256 token per subscriber, with an ES256 token per subscriber;
#   burst: deliveries/s with N subscribers on `room/1`, on the pattern
#          `room/*`, and on `room/1` with 1,000 unrelated pattern
#          subscriptions (`other/<i>/*`) held by a second generator.
# usage: benches/auth.sh REPS SUBSCRIBERS EVENTS [BIN]
# prints one line per run: rep, case, connects/s or deliveries/s, server CPU µs per connect or ns per delivery.
set -u
reps=$1; n=$2; ev=$3; bin=${4:-$(dirname "$0")/../target/release/ssehub}
here=$(cd "$(dirname "$0")/.." && pwd)
bench=$here/target/release/ssehub-bench
keys=$here/tests/keys
secret=bench-secret-0123456789
log=$(mktemp)
trap 'rm -f "$log"' EXIT
tck=$(getconf CLK_TCK)

start() { # ARGS...: starts the hub on 8080, sets $pid
  "$bin" --listen 127.0.0.1:8080 --log warn --publish-token P "$@" > "$log" 2>&1 & pid=$!
  for _ in $(seq 100); do grep -q 'listening on' "$log" && break; sleep 0.05; done
}
cpu() { awk '{print $14 + $15}' /proc/$pid/stat; }
stop() { kill $pid; wait $pid 2>/dev/null; }

idle() { # CASE HUB_ARGS -- BENCH_ARGS
  local case=$1; shift; local hub=(); while [ "$1" != -- ]; do hub+=("$1"); shift; done; shift
  start "${hub[@]}"
  out=$("$bench" run --scenario idle --preset ssehub -n "$n" -d 1 --server-pid $pid --json -q "$@" 2>/dev/null)
  stop
  echo "$r $case $(echo "$out" | python3 -c "import json,sys;r=json.load(sys.stdin);c=r['connect'];s=r['server'];assert c['established']==c['attempted'],c;print(int(c['rate_per_s']), round(s['cpu_us_per_connection'],1))")"
}

burst() { # CASE SUB_URL [extra hub args]
  local case=$1 url=$2; shift 2
  start "$@"
  local other=
  if [ "$case" = room1+1000patterns ]; then
    "$bench" run --scenario idle --preset ssehub -n 1000 --topics 1000 -d 600 -q --sub-url 'http://127.0.0.1:8080/events?topic=other/{topic}/*' \
      > /dev/null 2>&1 & other=$!
    for _ in $(seq 200); do
      [ "$(curl -s localhost:8080/metrics | awk '/^ssehub_subscribers /{print $2}')" = 1000 ] && break; sleep 0.05
    done
  fi
  local before; before=$(cpu)
  out=$("$bench" run --scenario burst --preset ssehub -n "$n" -e "$ev" --server-pid $pid --json -q \
    --sub-url "$url" --pub-header 'Authorization: Bearer P' \
    --pub-header 'Content-Type: application/x-www-form-urlencoded' --pub-body 'topic=room/1&data={data}' 2>/dev/null)
  local after; after=$(cpu)
  [ -n "$other" ] && kill $other && wait $other 2>/dev/null
  stop
  echo "$r $case $(echo "$out" | python3 -c "import json,sys;r=json.load(sys.stdin);d=r['delivery'];assert d['complete'],d;print(int(d['deliveries_per_s']), round(($after-$before)*1e9/$tck/d['deliveries']))")"
}

for r in $(seq "$reps"); do
  idle no-auth --
  idle hs256 --jwt-secret "$secret" -- --sub-jwt "hs256:$secret"
  idle es256 --jwt-public-key "$keys/es256.pub.pem" -- --sub-jwt "es256:$keys/es256.key.pem"
  burst room1 'http://127.0.0.1:8080/events?topic=room/1'
  burst 'room/*' 'http://127.0.0.1:8080/events?topic=room/*'
  burst room1+1000patterns 'http://127.0.0.1:8080/events?topic=room/1'
done
