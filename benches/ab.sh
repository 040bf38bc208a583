#!/bin/bash
# A/B burst runs of two (or more) ssehub binaries, alternating, for a
# before/after of a change to the hot path on a noisy machine.
# usage: benches/ab.sh REPS EVENTS SUBSCRIBERS BIN_A BIN_B...
# prints per run: deliveries/s, server user and system CPU ns per delivery
# (whole run, from /proc/PID/stat; user time is the hub's own code).
# Optional environment: AB_HUB_FLAGS (extra hub flags, e.g. "--workers 1"),
# AB_HUB_CPUS and AB_BENCH_CPUS (taskset CPU lists: the hub and the load
# generator on separate CPUs, which takes the scheduler's placement out of
# the spread), AB_SCENARIO (default burst).
set -u
hub_pin=${AB_HUB_CPUS:+taskset -c $AB_HUB_CPUS}
bench_pin=${AB_BENCH_CPUS:+taskset -c $AB_BENCH_CPUS}
reps=$1; ev=$2; n=$3; shift 3
tck=$(getconf CLK_TCK)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for r in $(seq $reps); do
  for bin in "$@"; do
    $hub_pin $bin --listen 127.0.0.1:8080 --log warn ${AB_HUB_FLAGS:-} > "$log" 2>&1 & pid=$!
    for i in $(seq 100); do grep -q 'listening on' "$log" && break; sleep 0.05; done
    out=$($bench_pin "$(dirname "$0")/../target/release/ssehub-bench" run --scenario ${AB_SCENARIO:-burst} --preset ssehub -n $n -e $ev --server-pid $pid --json -q 2>/dev/null)
    read ut st < <(awk '{print $14, $15}' /proc/$pid/stat)
    kill $pid; wait $pid 2>/dev/null
    echo "$r $(basename $bin) $(echo "$out" | python3 -c "import json,sys;r=json.load(sys.stdin);d=r['delivery']['deliveries'];print(int(r['delivery']['deliveries_per_s']), round($ut*1e9/$tck/d), round($st*1e9/$tck/d))")"
  done
done
