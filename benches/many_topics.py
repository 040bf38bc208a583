#!/usr/bin/env python3
"""A publisher of a million distinct topics (issue 13): peak RSS against
--history-memory, and publishes/s, with the bounds and without them.

Each run starts a fresh ssehub, notes its RSS once idle, publishes one event of
--payload bytes to each of --topics distinct topics (`user/<n>/notifications`)
in JSON batches over one keep-alive connection, then reads the peak RSS
(VmHWM) and /metrics. Runs alternate between the configurations, --reps
times each. The publisher is this script: publishes/s are comparable between
configurations of one run, not with other tools.

  python3 benches/many_topics.py --topics 1000000 --reps 3
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def metric(conn: http.client.HTTPConnection, name: str) -> int:
    conn.request("GET", "/metrics")
    body = conn.getresponse().read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise RuntimeError(f"no metric {name}")


def run(binary: str, flags: list[str], topics: int, payload: int, batch: int) -> dict:
    proc = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--log", "warn", "--max-body", str(8 << 20), *flags],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        host, port = line.removeprefix("listening on ").rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        metric(conn, "ssehub_history_events")
        idle_kib = status_kib(proc.pid, "VmRSS")
        data = "x" * payload
        start = time.monotonic()
        for first in range(0, topics, batch):
            items = [{"topic": f"user/{n}/notifications", "data": data} for n in range(first, min(first + batch, topics))]
            conn.request("POST", "/publish", body=json.dumps(items), headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"publish: {response.status}")
        seconds = time.monotonic() - start
        return {
            "publishes_per_s": topics / seconds,
            "idle_rss_mib": idle_kib / 1024,
            "peak_rss_mib": status_kib(proc.pid, "VmHWM") / 1024,
            "history_mib": metric(conn, "ssehub_history_bytes") / (1 << 20),
            "retained": metric(conn, "ssehub_history_events"),
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default=str(ROOT / "target" / "release" / "ssehub"))
    p.add_argument("--topics", type=int, default=1_000_000)
    p.add_argument("--payload", type=int, default=200)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--budget", default="128MiB", help="--history-memory of the bounded runs")
    args = p.parse_args()
    configs = {
        "bounded": ["--history-memory", args.budget],
        "unbounded": ["--history-memory", "1000GiB", "--history-ttl", "0"],
    }
    results: dict[str, list[dict]] = {name: [] for name in configs}
    for rep in range(args.reps):
        for name, flags in configs.items():
            r = run(args.binary, flags, args.topics, args.payload, args.batch)
            results[name].append(r)
            print(
                f"rep {rep + 1} {name}: {r['publishes_per_s']:,.0f} publishes/s, idle {r['idle_rss_mib']:.1f} MiB, "
                f"peak {r['peak_rss_mib']:.1f} MiB, history {r['history_mib']:.1f} MiB, {r['retained']:,} retained",
                flush=True,
            )
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in results.items()}
    b, u = med["bounded"], med["unbounded"]
    print(
        f"median: bounded peak RSS - idle = {b['peak_rss_mib'] - b['idle_rss_mib']:.1f} MiB (budget {args.budget}); "
        f"unbounded {u['peak_rss_mib'] - u['idle_rss_mib']:.1f} MiB; publishes/s bounded/unbounded = "
        f"{b['publishes_per_s'] / u['publishes_per_s']:.2f}"
    )


if __name__ == "__main__":
    main()
