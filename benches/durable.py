#!/usr/bin/env python3
"""Durable history (issue 13): what --data-dir costs, and how fast a full log starts.

1. Same run, alternating, --reps times each: ssehub in memory and with
   --data-dir (--fsync everysec by default, --fsync to change it), each
   fresh, driven by ssehub-bench:
   - `per-user` back to back (--subscribers each on their own topic,
     --events spread over them from --pub-conns keep-alive connections):
     publishes/s and the publish-ack p50/p99 (request written to answer read);
   - `burst` (--burst-subscribers on one topic, --burst-events back to back):
     deliveries/s.
   With --burst-reps N, then N more `burst` runs per configuration, each on
   a fresh hub of its own (alternating), so that no load phase's logged
   data is still being written back while the burst runs ("burst alone").
2. Start time with a full log: fill a data dir with --fill-mib of events
   through the server (JSON batches of 400 events of --fill-payload bytes
   over one connection, to 10,000 topics), SIGKILL it, then time a fresh
   start from exec to the first `200` of /readyz (and read how many events
   were restored); --reps times. Both run with --history-memory
   --fill-memory (default 512MiB): with the default 128 MiB budget history
   evicts, segments are deleted, and the log never reaches 128 MiB (it
   levels off near 85 MiB at 256-byte events).

With --data-dir-binary B, step 1 also runs a third configuration in the
same rotation, `data-dir-b`: --data-dir with binary B (an A/B of two
builds of the log, e.g. one that batches appends, against this one).

Prints one line per run and a JSON summary (medians, ratios) at the end.

  cargo build --release -p ssehub -p ssehub-bench
  python3 benches/durable.py --reps 3
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Set from --pin / --workers: CPU lists (taskset) for the hub and the load
# generator, and extra hub flags.
PIN = {"hub": [], "bench": []}
HUB_FLAGS: list[str] = []


def start(binary: str, port: int, flags: list[str]) -> subprocess.Popen:
    flags = [*HUB_FLAGS, *flags]
    proc = subprocess.Popen(
        [*PIN["hub"], binary, "--listen", f"127.0.0.1:{port}", "--log", "warn", "--max-body", str(8 << 20), *flags],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on"):
        proc.kill()
        raise RuntimeError(f"ssehub did not start: {line!r}")
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    proc.wait(timeout=30)


def metric(port: int, name: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    body = conn.getresponse().read().decode()
    conn.close()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise RuntimeError(f"no metric {name}")


def bench(bench_bin: str, port: int, pid: int, args: list[str]) -> dict:
    out = subprocess.run(
        [*PIN["bench"], bench_bin, "run", "--preset", "ssehub", "--port", str(port), "--server-pid", str(pid), "--json", "-q", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


@contextlib.contextmanager
def fresh_hub(binary: str, name: str, fsync: str):
    """A hub of its own for one run, as (port, pid): configuration `name`
    ("memory", or --data-dir in a new temporary directory), stopped and its
    directory removed afterwards."""
    data_dir = tempfile.mkdtemp(prefix="ssehub-durable-bench-")
    flags = ["--data-dir", data_dir, "--fsync", fsync] if name != "memory" else []
    port = free_port()
    proc = start(binary, port, flags)
    try:
        yield port, proc.pid
    finally:
        stop(proc)
        shutil.rmtree(data_dir, ignore_errors=True)


def burst_flags(args) -> list[str]:
    return ["--scenario", "burst", "-n", str(args.burst_subscribers), "-e", str(args.burst_events)]


def show(label: str, rep: int, name: str, row: dict) -> None:
    print(f"{label} {rep} {name:8} " + " ".join(f"{k}={v:.0f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)


def load_runs(args, binary: str, bench_bin: str) -> dict:
    configs = {"memory": [], "data-dir": []}
    binaries = {"memory": binary, "data-dir": binary}
    if args.data_dir_binary:
        configs["data-dir-b"] = []
        binaries["data-dir-b"] = args.data_dir_binary
    for rep in range(args.reps):
        for name in configs:
            with fresh_hub(binaries[name], name, args.fsync) as (port, pid):
                pub = bench(
                    bench_bin,
                    port,
                    pid,
                    ["--scenario", "per-user", "-n", str(args.subscribers), "-e", str(args.events),
                     "--pub-conns", str(args.pub_conns)],
                )
                burst = bench(bench_bin, port, pid, burst_flags(args))
            row = {
                "publishes_per_s": pub["publish"]["rate_achieved"],
                "ack_p50_us": pub["publish"]["ack"]["p50_us"],
                "ack_p99_us": pub["publish"]["ack"]["p99_us"],
                "publish_errors": pub["publish"]["error_count"],
                "deliveries_per_s": burst["delivery"]["deliveries_per_s"],
                "complete": pub["delivery"]["complete"] and burst["delivery"]["complete"],
            }
            configs[name].append(row)
            show("rep", rep, name, row)
    return configs


def burst_alone(args, binary: str, bench_bin: str) -> dict:
    configs = {"memory": [], "data-dir": []}
    for rep in range(args.burst_reps):
        for name in configs:
            with fresh_hub(binary, name, args.fsync) as (port, pid):
                burst = bench(bench_bin, port, pid, burst_flags(args))
            row = {
                "deliveries_per_s": burst["delivery"]["deliveries_per_s"],
                "cpu_ns_per_delivery": (burst.get("server") or {}).get("cpu_ns_per_delivery"),
                "complete": burst["delivery"]["complete"],
            }
            configs[name].append(row)
            show("burst", rep, name, row)
    return configs


def fill(port: int, mib: int, payload: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = "x" * payload
    n = 0
    best, stalled = 0, 0
    while (size := metric(port, "ssehub_journal_bytes")) < mib << 20:
        best, stalled = (size, 0) if size > best else (best, stalled + 1)
        if stalled > 50:
            raise RuntimeError(f"the log stopped growing at {size >> 20} MiB: raise --fill-memory")
        items = [{"topic": f"user/{(n + i) % 10000}/notifications", "data": data} for i in range(400)]
        conn.request("POST", "/publish", body=json.dumps(items), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status
        n += 400
    conn.close()
    return n


def start_times(args, binary: str) -> list[dict]:
    runs = []
    data_dir = tempfile.mkdtemp(prefix="ssehub-durable-start-")
    try:
        port = free_port()
        budget = ["--history-memory", args.fill_memory]
        proc = start(binary, port, ["--data-dir", data_dir, "--fsync", args.fsync, *budget])
        published = fill(port, args.fill_mib, args.fill_payload)
        log_bytes = metric(port, "ssehub_journal_bytes")
        stop(proc, signal.SIGKILL)
        for rep in range(args.reps):
            port = free_port()
            t0 = time.monotonic()
            proc = subprocess.Popen(
                [binary, "--listen", f"127.0.0.1:{port}", "--log", "warn", "--data-dir", data_dir, "--fsync", args.fsync, *budget],
                stdout=subprocess.DEVNULL,
            )
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("GET", "/readyz")
                    if conn.getresponse().status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() - t0 > 60:
                    raise RuntimeError("never ready")
                time.sleep(0.002)
            elapsed = time.monotonic() - t0
            restored = metric(port, "ssehub_history_events")
            rss_kib = int(next(l for l in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if l.startswith("VmHWM:")).split()[1])
            stop(proc, signal.SIGKILL)
            run = {"seconds": elapsed, "log_bytes": log_bytes, "published": published, "restored": restored, "peak_rss_mib": rss_kib / 1024}
            runs.append(run)
            print(f"start {rep}: {elapsed * 1000:.0f} ms to /readyz, log {log_bytes >> 20} MiB ({published} events), "
                  f"{restored} restored into history, peak RSS {rss_kib >> 10} MiB", flush=True)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=str(ROOT / "target/release/ssehub"))
    parser.add_argument("--bench", default=str(ROOT / "target/release/ssehub-bench"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--fsync", default="everysec", choices=["always", "everysec", "no"])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--events", type=int, default=100000)
    parser.add_argument("--pub-conns", type=int, default=4)
    parser.add_argument("--burst-subscribers", type=int, default=10000)
    parser.add_argument("--burst-events", type=int, default=20)
    parser.add_argument("--burst-reps", type=int, default=0, help="burst-alone runs per configuration, each on a fresh hub")
    parser.add_argument("--workers", type=int, help="the hub's --workers")
    parser.add_argument("--pin", help="HUB_CPUS:BENCH_CPUS (taskset lists): the hub and the load generator on separate CPUs, "
                        "which takes the scheduler's placement out of the spread")
    parser.add_argument("--fill-mib", type=int, default=128)
    parser.add_argument("--fill-payload", type=int, default=256)
    parser.add_argument("--fill-memory", default="512MiB")
    parser.add_argument("--data-dir-binary", help="also run --data-dir with this build (config data-dir-b)")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--skip-start", action="store_true")
    args = parser.parse_args()
    if args.workers:
        HUB_FLAGS.extend(["--workers", str(args.workers)])
    if args.pin:
        hub, bench_cpus = args.pin.split(":")
        PIN["hub"], PIN["bench"] = ["taskset", "-c", hub], ["taskset", "-c", bench_cpus]
    summary: dict = {"date": time.strftime("%Y-%m-%d"), "args": vars(args)}
    if not args.skip_load:
        configs = load_runs(args, args.binary, args.bench)
        med = {name: {k: statistics.median(r[k] for r in runs) for k in ("publishes_per_s", "ack_p50_us", "ack_p99_us", "deliveries_per_s")}
               for name, runs in configs.items()}
        summary["medians"] = med
        summary["ratios"] = {
            "publishes_per_s": med["data-dir"]["publishes_per_s"] / med["memory"]["publishes_per_s"],
            "deliveries_per_s": med["data-dir"]["deliveries_per_s"] / med["memory"]["deliveries_per_s"],
            "ack_p99_added_us": med["data-dir"]["ack_p99_us"] - med["memory"]["ack_p99_us"],
        }
        if "data-dir-b" in med:
            summary["ratios_b"] = {
                "publishes_per_s_vs_data_dir": med["data-dir-b"]["publishes_per_s"] / med["data-dir"]["publishes_per_s"],
                "deliveries_per_s_vs_data_dir": med["data-dir-b"]["deliveries_per_s"] / med["data-dir"]["deliveries_per_s"],
                "ack_p99_added_us_vs_data_dir": med["data-dir-b"]["ack_p99_us"] - med["data-dir"]["ack_p99_us"],
            }
        summary["all_complete"] = all(r["complete"] and r["publish_errors"] == 0 for runs in configs.values() for r in runs)
    if args.burst_reps:
        alone = burst_alone(args, args.binary, args.bench)
        med = {name: statistics.median(r["deliveries_per_s"] for r in runs) for name, runs in alone.items()}
        cpu = {}
        for name, runs in alone.items():
            known = [r["cpu_ns_per_delivery"] for r in runs if r["cpu_ns_per_delivery"] is not None]
            cpu[name] = statistics.median(known) if known else None
        summary["burst_alone"] = {
            "medians": med,
            "ratio": med["data-dir"] / med["memory"],
            "cpu_ns_per_delivery_medians": cpu,
            "runs": alone,
            "all_complete": all(r["complete"] for runs in alone.values() for r in runs),
        }
    if not args.skip_start:
        runs = start_times(args, args.binary)
        summary["start"] = {"median_s": statistics.median(r["seconds"] for r in runs), "runs": runs}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
