#!/usr/bin/env python3
"""Cluster publish throughput: one publisher against sixteen, through a slow path to Redis.

A cluster node sends every publish to Redis and answers it once Redis has
appended it, so its publish rate is bounded by round trips to Redis unless
it keeps many in flight (pipelined on one connection). What is compared, in
the same run, interleaved:

- `relay`: one node (2 workers) whose Redis is reached through a relay that
  delays every chunk by --delay-ms each way (5 ms: a 10 ms round trip), with
  1 and with 16 concurrent publisher connections (target: 16 publishers get
  at least 10x the publishes/s of one);
- `cluster` against `standalone` on plain loopback, 16 publishers (target:
  cluster >= 0.8x standalone).

Each publisher connection sends one publish at a time and waits for its
answer (`ssehub-bench --pub-conns N --topics N`). Publishes/s is the
bench's `publish.rate_achieved` (events answered 2xx over the publishing
time).

Usage: benches/cluster_publish.py [--reps 3] [--delay-ms 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cluster  # noqa: E402  (redis-server, readiness, stop: one definition)
import compare  # noqa: E402

SSEHUB, BENCH = compare.SSEHUB, compare.BENCH
# The node listens on cluster.py's first port, the relay one above its Redis.
PORT = cluster.PORTS[0]
RELAY_PORT = cluster.REDIS_PORT + 1


class Relay:
    """A TCP relay that delivers each chunk `delay` seconds after it arrived, in order."""

    def __init__(self, listen: int, target: int, delay: float) -> None:
        self.listen, self.target, self.delay = listen, target, delay
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Relay:
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", self.listen))
        self.ready.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - self.loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((self.loop.time() + self.delay, data))
        finally:
            queue.put_nowait((0.0, b""))
            await sender


@contextmanager
def node(kind: str, redis_port: int):
    """One ssehub node with 2 workers: standalone, or following Redis at `redis_port`."""
    argv = [str(SSEHUB), "--listen", f"127.0.0.1:{PORT}", "--workers", "2", "--log", "warn"]
    if kind != "standalone":
        subprocess.run(["redis-cli", "-p", str(cluster.REDIS_PORT), "del", "ssehub"], capture_output=True, check=False)
        argv += ["--redis", f"redis://127.0.0.1:{redis_port}"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        cluster.wait_ready(PORT)
        yield proc
    finally:
        cluster.stop([proc])


def bench(publishers: int, events: int, commands: list[str]) -> dict:
    argv = [str(BENCH), "run", "--scenario", "burst", "--preset", "ssehub", "--port", str(PORT),
            "-n", str(publishers), "--topics", str(publishers), "--pub-conns", str(publishers),
            "--events", str(events), "--json", "-q"]  # fmt: skip
    return cluster.run_report(argv, commands)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--delay-ms", type=float, default=5.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = compare.results_dir("cluster-publish", args.out)
    # (name, node kind, publishers, events): enough events for a few seconds each.
    runs = [
        ("relay, 1 publisher", "relay", 1, 200),
        ("relay, 16 publishers", "relay", 16, 4000),
        ("loopback cluster, 16 publishers", "cluster", 16, 40000),
        ("loopback standalone, 16 publishers", "standalone", 16, 40000),
    ]
    commands: list[str] = []
    rates: dict[str, list[float]] = {name: [] for name, *_ in runs}
    failed: dict[str, int] = {name: 0 for name, *_ in runs}
    with cluster.redis_server(), Relay(RELAY_PORT, cluster.REDIS_PORT, args.delay_ms / 1000):
        for rep in range(args.reps):
            for name, kind, publishers, events in runs if rep % 2 == 0 else reversed(runs):
                port = RELAY_PORT if kind == "relay" else cluster.REDIS_PORT
                with node(kind, port):
                    started = time.monotonic()
                    report = bench(publishers, events, commands)
                slug = name.replace(",", "").replace(" ", "-")
                (out / f"{slug}-rep{rep}.json").write_text(json.dumps(report, indent=1))
                rate = cluster.pick(report, "publish", "rate_achieved")
                ok = cluster.pick(report, "publish", "ok")
                if rate is None or ok != events:
                    failed[name] += 1
                else:
                    rates[name].append(rate)
                print(f"rep {rep} {name:36} {rate or 0:10,.0f}/s ({time.monotonic() - started:.1f} s)", file=sys.stderr)
    med = {name: cluster.median(values) for name, values in rates.items()}

    def ratio(a: str, b: str) -> float | None:
        return med[a] / med[b] if med[a] and med[b] else None

    summary = {
        "publishes_per_s": med,
        "all": rates,
        "failed_runs": failed,
        "relay_16_over_1": ratio("relay, 16 publishers", "relay, 1 publisher"),
        "cluster_over_standalone": ratio("loopback cluster, 16 publishers", "loopback standalone, 16 publishers"),
    }
    meta = {"date": compare.now_iso(), "command": " ".join(["benches/cluster_publish.py", *sys.argv[1:]]),
            "reps": args.reps, "delay_ms": args.delay_ms, "machine": compare.machine(), "git": compare.git_state(),
            "versions": compare.versions(), "commands": commands}  # fmt: skip
    compare.write_json(out / "meta.json", meta)
    compare.write_json(out / "summary.json", summary)
    lines = [
        f"Cluster publishes/s (one node, 2 workers), medians of {args.reps} interleaved reps. `{meta['command']}`, "
        f"{meta['date']}, {meta['machine']['cpu_model']} x{meta['machine']['nproc']}.",
        "",
        "| run | publishes/s | runs failed |",
        "|---|---:|---:|",
    ]
    for name, *_ in runs:
        value = "—" if med[name] is None else f"{med[name]:,.0f}"
        lines.append(f"| {name} | {value} | {failed[name]} |")
    r16, rc = summary["relay_16_over_1"], summary["cluster_over_standalone"]
    lines += ["", f"Through the {args.delay_ms:g} ms relay, 16 publishers / 1 publisher = "
              f"{'—' if r16 is None else f'{r16:.1f}x'}; on loopback, cluster / standalone = "
              f"{'—' if rc is None else f'{rc:.2f}x'}."]  # fmt: skip
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
