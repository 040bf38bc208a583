#!/usr/bin/env python3
"""Leak check: cycles of connect-N / broadcast / disconnect-all against one
ssehub process, watching whether its memory and descriptors come back.

Each cycle is one `ssehub-bench run --scenario burst -n N -e 1` (it connects N
subscribers, publishes one event every subscriber must get, and closes them
all when it exits). After each cycle the script waits for the server to see
every close (its descriptor count back to the baseline, or 15 s), then records
RSS and descriptors. A leak shows as descriptors above baseline or RSS that
keeps climbing cycle after cycle; the first cycle grows RSS once (the
connection table and buffers keep their capacity for the next crowd).

Usage: benches/leak.py [--cycles 20] [--subscribers 10000] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402

PORT = 8080


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = compare.results_dir("leak", args.out)
    server = subprocess.Popen([str(compare.SSEHUB), "--listen", f"127.0.0.1:{PORT}", "--log", "warn"],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        server.stdout.readline()  # "listening on ..."
        # The signal thread opens its descriptors just after the address line:
        # take the baseline once the server answers and its count holds still.
        urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz", timeout=5).read()
        counts = [fds(server.pid)]
        while len(counts) < 5 or len(set(counts[-5:])) > 1:
            time.sleep(0.02)
            counts.append(fds(server.pid))
        base_rss, base_fds = rss_kib(server.pid), counts[-1]
        rows = [{"cycle": 0, "rss_kib": base_rss, "fds": base_fds, "ok": True, "settle_s": 0.0}]
        print(f"baseline: RSS {base_rss} KiB, {base_fds} descriptors", file=sys.stderr)
        for cycle in range(1, args.cycles + 1):
            argv = [str(compare.BENCH), "run", "--scenario", "burst", "--preset", "ssehub", "--port", str(PORT),
                    "-n", str(args.subscribers), "-e", "1", "--server-pid", str(server.pid), "--json", "-q"]  # fmt: skip
            report = json.loads(subprocess.run(argv, capture_output=True, text=True, check=False).stdout or "{}")
            t0 = time.monotonic()
            while fds(server.pid) > base_fds and time.monotonic() - t0 < 15:
                time.sleep(0.05)
            row = {"cycle": cycle, "rss_kib": rss_kib(server.pid), "fds": fds(server.pid), "ok": bool(report.get("ok")),
                   "settle_s": round(time.monotonic() - t0, 2),
                   "peak_fds": compare.dig(report, ("server", "fds_after_connect"))}  # fmt: skip
            rows.append(row)
            print(f"cycle {cycle:2}: RSS {row['rss_kib']} KiB, {row['fds']} fds (peak {row['peak_fds']}), "
                  f"ok={row['ok']}, settled in {row['settle_s']} s", file=sys.stderr)  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=10)
    first, last = rows[1], rows[-1]
    summary = {
        "command": " ".join(["benches/leak.py", *sys.argv[1:]]), "date": compare.now_iso(),
        "machine": compare.machine(), "git": compare.git_state(), "subscribers": args.subscribers,
        "baseline": rows[0], "after_first": first, "after_last": last,
        "rss_growth_after_first_kib_per_cycle": round((last["rss_kib"] - first["rss_kib"]) / max(1, len(rows) - 2), 1),
        "fds_back_to_baseline": all(r["fds"] == rows[0]["fds"] for r in rows[1:]),
        "all_cycles_ok": all(r["ok"] for r in rows[1:]), "rows": rows,
    }  # fmt: skip
    compare.write_json(out / "summary.json", summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
