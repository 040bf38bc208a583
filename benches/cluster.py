#!/usr/bin/env python3
"""Cluster mode against standalone ssehub, in the same run.

What is compared: two ssehub nodes (one worker each) following one private
redis-server, subscribers spread over both, publishing to one of them; against
one standalone node with two workers. Same machine, same subscribers, same
rate, interleaved repetitions. What it reports: the publish-to-receive latency
Redis adds (p50/p99 at 10 events/s, `steady`), and the deliveries/s ratio
(`burst`). The cluster's server CPU includes redis-server's.

Usage: benches/cluster.py [--subscribers 10000] [--reps 3] [--out DIR]
Ports: SSEHUB_CLUSTER_PORTS (the two nodes, default "8080,8081") and
SSEHUB_CLUSTER_REDIS_PORT (default 16390); cluster_publish.py uses them too.
Outputs in OUT (default benches/results/cluster-<UTC date-time>): the raw
ssehub-bench reports, meta.json and summary.md / summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (machine, versions, git state: one definition)

ROOT = compare.ROOT
SSEHUB, BENCH = compare.SSEHUB, compare.BENCH
# Overridable so that runs of this bench and of compare.py (8080/8081) can share a machine.
REDIS_PORT = int(os.environ.get("SSEHUB_CLUSTER_REDIS_PORT", "16390"))
PORTS = tuple(int(p) for p in os.environ.get("SSEHUB_CLUSTER_PORTS", "8080,8081").split(","))


def wait_ready(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"node on {port} never became ready")


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextmanager
def redis_server():
    data = tempfile.mkdtemp(prefix="ssehub-bench-redis-")
    argv = ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", data]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if subprocess.run(["redis-cli", "-p", str(REDIS_PORT), "ping"], capture_output=True, text=True,
                              check=False).stdout.strip() == "PONG":  # fmt: skip
                break
            time.sleep(0.05)
        yield proc
    finally:
        stop([proc])
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def setup(kind: str, redis: subprocess.Popen | None):
    """Starts `standalone` (one node, 2 workers) or `cluster` (2 nodes x 1 worker)."""
    procs = []
    try:
        if kind == "standalone":
            procs.append(subprocess.Popen([str(SSEHUB), "--listen", f"127.0.0.1:{PORTS[0]}", "--workers", "2",
                                           "--log", "warn"], stdout=subprocess.DEVNULL))  # fmt: skip
        else:
            subprocess.run(["redis-cli", "-p", str(REDIS_PORT), "del", "ssehub"], capture_output=True, check=False)
            for port in PORTS:
                procs.append(subprocess.Popen([str(SSEHUB), "--listen", f"127.0.0.1:{port}", "--workers", "1",
                                               "--redis", f"redis://127.0.0.1:{REDIS_PORT}", "--log", "warn"],
                                              stdout=subprocess.DEVNULL))  # fmt: skip
        for port in PORTS[: len(procs)]:
            wait_ready(port)
        pids = [p.pid for p in procs] + ([redis.pid] if redis and kind == "cluster" else [])
        yield pids
    finally:
        stop(procs)


def bench(kind: str, scenario: str, pids: list[int], subscribers: int, commands: list[str]) -> dict:
    argv = [str(BENCH), "run", "--scenario", scenario, "--preset", "ssehub", "--port", str(PORTS[0]),
            "-n", str(subscribers), "--server-pid", ",".join(map(str, pids)), "--json", "-q"]  # fmt: skip
    if kind == "cluster":
        argv += ["--sub-spread", f"127.0.0.1:{PORTS[1]}"]
    argv += ["--rate", "10", "--duration", "10"] if scenario == "steady" else ["--events", "20"]
    return run_report(argv, commands)


def run_report(argv: list[str], commands: list[str]) -> dict:
    """Runs one `ssehub-bench ... --json` (noted in `commands`); its report, or the error."""
    commands.append(" ".join(argv))
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    try:
        return json.loads(p.stdout)
    except ValueError:
        return {"error": p.stderr[-500:]}


def pick(report: dict, *path: str) -> float | None:
    for key in path:
        if not isinstance(report, dict) or key not in report:
            return None
        report = report[key]
    return report if isinstance(report, (int, float)) else None


def median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = compare.results_dir("cluster", args.out)
    commands: list[str] = []
    results: dict[tuple[str, str], list[dict]] = {}
    with redis_server() as redis:
        for rep in range(args.reps):
            kinds = ["standalone", "cluster"] if rep % 2 == 0 else ["cluster", "standalone"]
            for scenario in ("steady", "burst"):
                for kind in kinds:
                    with setup(kind, redis) as pids:
                        report = bench(kind, scenario, pids, args.subscribers, commands)
                    (out / f"{scenario}-{kind}-rep{rep}.json").write_text(json.dumps(report, indent=1))
                    results.setdefault((scenario, kind), []).append(report)
                    print(f"rep {rep} {scenario:6} {kind:10} ok={report.get('ok')}", file=sys.stderr)
    summary = {}
    for kind in ("standalone", "cluster"):
        steady, burst = results.get(("steady", kind), []), results.get(("burst", kind), [])
        summary[kind] = {
            "p50_us": median([pick(r, "latency", "p50_us") for r in steady]),
            "p99_us": median([pick(r, "latency", "p99_us") for r in steady]),
            "steady_cpu_ns_per_delivery": median([pick(r, "server", "cpu_ns_per_delivery") for r in steady]),
            "burst_deliveries_per_s": median([pick(r, "delivery", "deliveries_per_s") for r in burst]),
            "missing": sum(pick(r, "delivery", "stayers", "missing") or 0 for r in steady + burst),
            "duplicates": sum(pick(r, "delivery", "stayers", "duplicates") or 0 for r in steady + burst),
            "runs_ok": sum(bool(r.get("ok")) for r in steady + burst),
            "runs": len(steady + burst),
        }
    s, c = summary["standalone"], summary["cluster"]
    added = {k: (c[k] - s[k]) / 1000 if c[k] is not None and s[k] is not None else None for k in ("p50_us", "p99_us")}
    ratio = c["burst_deliveries_per_s"] / s["burst_deliveries_per_s"] if s["burst_deliveries_per_s"] and c["burst_deliveries_per_s"] else None
    meta = {"date": compare.now_iso(), "command": " ".join(["benches/cluster.py", *sys.argv[1:]]), "reps": args.reps,
            "subscribers": args.subscribers, "machine": compare.machine(), "git": compare.git_state(),
            "versions": compare.versions(), "commands": commands}  # fmt: skip
    compare.write_json(out / "meta.json", meta)
    compare.write_json(out / "summary.json", {"summary": summary, "added_latency_ms": added, "burst_ratio": ratio})

    def fmt(v, unit="", scale=1.0, digits=1):
        return "—" if v is None else f"{v / scale:,.{digits}f}{unit}"

    lines = [
        f"Cluster (2 nodes x 1 worker, one redis-server) vs standalone (1 node x 2 workers): "
        f"{args.subscribers:,} subscribers, {args.reps} reps, medians. `{meta['command']}`, {meta['date']}, "
        f"{meta['machine']['cpu_model']} x{meta['machine']['nproc']}, kernel {meta['machine']['kernel']}.",
        "",
        "| setup | steady p50 | steady p99 | steady CPU/delivery | burst deliveries/s | missing | duplicates | runs ok |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in ("standalone", "cluster"):
        r = summary[kind]
        lines.append(
            f"| {kind} | {fmt(r['p50_us'], ' ms', 1000, 2)} | {fmt(r['p99_us'], ' ms', 1000, 2)} | "
            f"{fmt(r['steady_cpu_ns_per_delivery'], ' ns', 1, 0)} | {fmt(r['burst_deliveries_per_s'], '', 1, 0)} | "
            f"{r['missing']} | {r['duplicates']} | {r['runs_ok']}/{r['runs']} |"
        )
    lines += ["", f"Latency Redis adds: p50 {fmt(added['p50_us'], ' ms', 1, 2)}, p99 {fmt(added['p99_us'], ' ms', 1, 2)}. "
              f"Cluster burst deliveries/s = {fmt(ratio, '', 0.01, 0)}% of standalone."]  # fmt: skip
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
