#!/usr/bin/env python3
"""One-command comparison of ssehub with the other SSE servers, on this machine.

What is compared: ssehub against the peers in benches/peers (nginx + nchan, a
hand-written axum server, Django under uvicorn and under gunicorn, Pushpin) and
against `ssehub-bench floor`, the minimal fan-out server that marks what a
delivery costs on this machine. Every run is one `ssehub-bench run --json` of a
scenario:

  burst   N subscribers, events back to back (budget / N of them, 20 to 1000):
          deliveries/s, server CPU per delivery
  idle    N connections opened unpaced, then held: connect rate, RSS per connection
  steady  N subscribers, 10 events/s: p50/p99 publish-to-receive latency and CPU
          per delivery; with the floor, whose CPU per delivery against ssehub's
          is the cost of everything ssehub does beyond one write per event

and, only when named in --scenarios (`--scenarios per-user,per-user-paced`),
the per-user notification workload: N subscribers, each on its own topic, the
events spread over the topics from 8 publish connections (`ssehub-bench run
--scenario per-user`); run by ssehub, nchan, axum and every --variant:

  per-user         events back to back, 10 per subscriber (at least 50,000;
                   quick: 10,000): delivered publishes/s (= deliveries/s, one
                   subscriber per event), server CPU per delivery
  per-user-paced   10,000 events/s for the steady run's time (10 s; quick: 2 s):
                   server CPU per delivery, p50/p99 publish-to-receive latency

Why it runs the way it does: numbers from different days or machines do not
compare, and a shared box drifts within minutes. So all servers run in the same
invocation, interleaved: for each scenario x subscriber count x repetition the
servers take turns, in an order rotated every repetition so that none always
goes first, each started fresh (its RSS per connection is then its own) and
stopped after its run. The summary gives medians over the repetitions and
ratios against ssehub. The load generator shares the machine with the server;
its CPU use is in each raw report (`generator`).

Sizes: ssehub, nchan, axum, the variants and the floor run at --subscribers.
The Django peers and Pushpin run at their own small counts (capped by the
largest --subscribers), and ssehub also runs there so that every peer has a ratio:
uvicorn at 10/100/1000; gunicorn at 10 only, with short timeouts, to record that
its 2 sync workers serve 2 subscribers and then stall; Pushpin at 100/1000 with
connects ramped at 300/s (it fails fast subscribe bursts). The Django peers'
measured pids include their private redis-server, which does the fan-out.

Outputs, in OUT (default benches/results/<UTC date-time>):
  <scenario>-<n>-<server>-rep<k>.json   the raw ssehub-bench report, or {"error": ...}
  meta.json      date, machine, versions, git commit, every command run
  summary.json, summary.md, chart.svg   medians, ratios, tables, chart
benches/results/latest/ gets copies of the last three (except after --quick or
a run without all of burst, idle and steady, unless --update-doc), and
--update-doc rewrites the part of PERFORMANCE.md between the
`<!-- compare:begin -->` and `<!-- compare:end -->` markers with this run's
tables (so a per-user-only run with --update-doc replaces the others there).

Standard library only. Run from anywhere: `python3 benches/compare.py --quick`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Callable, Iterator
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "benches" / "peers"
RESULTS = ROOT / "benches" / "results"
RELEASE = ROOT / "target" / "release"
SSEHUB = RELEASE / "ssehub"
BENCH = RELEASE / "ssehub-bench"
DOC = ROOT / "PERFORMANCE.md"
DOC_BEGIN, DOC_END = "<!-- compare:begin -->", "<!-- compare:end -->"

SCENARIOS = ("burst", "idle", "steady")  # the default --scenarios
PER_USER = ("per-user", "per-user-paced")  # selected explicitly
ALL_SCENARIOS = SCENARIOS + PER_USER
BENCH_SCENARIO = {"per-user-paced": "per-user"}  # compare's name -> ssehub-bench's, where they differ
STEADY_RATE = 10
BURST_TIMEOUT_S = 60
PER_USER_EVENTS_PER_SUBSCRIBER = 10
PER_USER_RATE = 10_000  # per-user-paced: publishes/s, spread over the subscribers' topics
PER_USER_PUB_CONNS = 8
PER_USER_SLOWEST_RATE = 1_000  # unpaced per-user: deliveries/s below which a run times out
PEER_START_TIMEOUT_S = 900  # the first start may apt-get, pip install or build axum
STOP_TIMEOUT_S = 60


@dataclass(frozen=True)
class Sizes:
    counts: tuple[int, ...]
    reps: int
    burst_share: float  # fraction of each server's burst delivery budget
    idle_hold_s: int
    steady_s: int  # also per-user-paced's publishing time
    per_user_min_events: int  # unpaced per-user: at least this many events, for a long enough window


FULL = Sizes(
    counts=(1000, 5000, 10000), reps=3, burst_share=1.0, idle_hold_s=3, steady_s=10, per_user_min_events=50_000
)
QUICK = Sizes(counts=(100, 1000), reps=1, burst_share=0.2, idle_hold_s=1, steady_s=2, per_user_min_events=10_000)


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    scenarios: tuple[str, ...] = ALL_SCENARIOS
    counts: tuple[int, ...] | None = None  # None: --subscribers
    quick_counts: tuple[int, ...] | None = None
    # Deliveries per burst run: events = budget / subscribers, within 20..1000.
    burst_budget: int = 1_000_000
    bench_flags: dict[str, str] = field(default_factory=dict)
    note: str = ""
    # A variant of ssehub (--variant): its binary and extra flags.
    argv: tuple[str, ...] = ()


SERVERS = {
    s.name: s
    for s in (
        Server("ssehub", 8080),
        Server(
            "ssehub-epoll",
            8087,
            argv=(str(SSEHUB), "--io", "epoll"),
            note="`ssehub --io epoll`: what `--io auto` (`ssehub`) runs today; "
            "run only when named in --servers (issue 16).",
        ),
        Server(
            "ssehub-uring",
            8086,
            argv=(str(SSEHUB), "--io", "uring"),
            note="`ssehub --io uring`: the same binary with io_uring for the fan-out's writes, "
            "one submission per slice of 512 subscribers (issue 16).",
        ),
        Server("nchan", 8081),
        Server(
            "axum",
            8082,
            note="idiomatic code, so tokio's listen backlog of 128: unpaced connects beyond it wait for "
            "SYN retransmits (1 s), which is what caps its idle connect rate at 1,000 subscribers and up.",
        ),
        Server(
            "floor",
            8090,
            scenarios=("steady",),  # no topics: per-user would send every event to everyone
            note="`ssehub-bench floor`: one write per subscriber per event, no topics, "
            "no bookkeeping: the cost of a delivery on this machine. Steady only: back to "
            "back it writes each event separately, while ssehub coalesces a burst.",
        ),
        Server(
            "django-uvicorn",
            8084,
            scenarios=SCENARIOS,  # per-user runs only ssehub, nchan, axum and variants
            counts=(10, 100, 1000),
            quick_counts=(10, 100),
            burst_budget=20_000,
            note="measured pids include its private redis-server (one Redis "
            "subscription per stream; Redis does the fan-out).",
        ),
        Server(
            "django-gunicorn",
            8083,
            scenarios=SCENARIOS,  # per-user runs only ssehub, nchan, axum and variants
            counts=(10,),
            quick_counts=(10,),
            burst_budget=200,  # 20 events: one publish stalls anyway
            bench_flags={"--timeout": "5", "--connect-timeout": "3"},
            note="2 sync workers, each pinned by one open stream: run with 10 subscribers "
            "and short timeouts to record the stall; pids include its redis-server.",
        ),
        Server(
            "pushpin",
            8085,
            scenarios=SCENARIOS,  # per-user runs only ssehub, nchan, axum and variants
            counts=(100, 1000),
            quick_counts=(100,),
            burst_budget=200_000,
            bench_flags={"--connect-rate": "300"},
            note="connects ramped at 300/s (Pushpin 1.36 fails fast subscribe bursts), "
            "so its idle connect rate is the ramp, not a capability.",
        ),
    )
}

# Servers run only when --servers names them (`ssehub` itself is --io auto = epoll).
OPT_IN = {"ssehub-epoll"}

COLORS = {
    "ssehub": "#d62728",
    "ssehub-uring": "#e377c2",
    "ssehub-epoll": "#bcbd22",
    "floor": "#7f7f7f",
    "nchan": "#1f77b4",
    "axum": "#ff7f0e",
    "django-uvicorn": "#2ca02c",
    "django-gunicorn": "#9467bd",
    "pushpin": "#8c564b",
}


class StartError(Exception):
    """A server that did not come up; it is skipped for the rest of the run."""


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Job:
    scenario: str
    subscribers: int
    rep: int
    server: Server

    @property
    def filename(self) -> str:
        return f"{self.scenario}-{self.subscribers}-{self.server.name}-rep{self.rep}.json"


def counts_for(server: Server, scenario: str, selected: list[Server], sizes: Sizes, quick: bool) -> list[int]:
    """Subscriber counts `server` runs `scenario` at."""
    if scenario not in server.scenarios:
        return []
    own = server.quick_counts if quick else server.counts
    if own is not None:
        return [n for n in own if n <= max(sizes.counts)]
    if server.name != "ssehub":
        return list(sizes.counts)
    # ssehub also runs wherever a peer with its own counts does, for the ratios.
    others = {n for s in selected if s is not server for n in counts_for(s, scenario, selected, sizes, quick)}
    return sorted(set(sizes.counts) | others)


def make_plan(selected: list[Server], scenarios: list[str], sizes: Sizes, quick: bool) -> list[Job]:
    """Jobs in run order: per scenario and count, every repetition runs every
    server once, starting one server further along the list each time."""
    jobs: list[Job] = []
    shift = 0
    for scenario in scenarios:
        by_count: dict[int, list[Server]] = {}
        for server in selected:
            for n in counts_for(server, scenario, selected, sizes, quick):
                by_count.setdefault(n, []).append(server)
        for n, servers in sorted(by_count.items()):
            for rep in range(1, sizes.reps + 1):
                k = (shift + rep - 1) % len(servers)
                jobs += [Job(scenario, n, rep, s) for s in servers[k:] + servers[:k]]
            shift += 1
    return jobs


def bench_flags(job: Job, sizes: Sizes) -> dict[str, str]:
    if job.scenario == "burst":
        budget = job.server.burst_budget * sizes.burst_share
        flags = {"--events": min(1000, max(20, int(budget // job.subscribers))), "--timeout": BURST_TIMEOUT_S}
    elif job.scenario == "idle":
        flags = {"--connect-rate": 0, "--duration": sizes.idle_hold_s}
    elif job.scenario == "per-user":
        events = max(PER_USER_EVENTS_PER_SUBSCRIBER * job.subscribers, sizes.per_user_min_events)
        timeout = max(BURST_TIMEOUT_S, math.ceil(events / PER_USER_SLOWEST_RATE))
        flags = {"--events": events, "--timeout": timeout, "--pub-conns": PER_USER_PUB_CONNS}
    elif job.scenario == "per-user-paced":
        flags = {"--rate": PER_USER_RATE, "--duration": sizes.steady_s, "--pub-conns": PER_USER_PUB_CONNS}
    else:
        flags = {"--rate": STEADY_RATE, "--duration": sizes.steady_s}
    return {k: str(v) for k, v in flags.items()} | job.server.bench_flags


def bench_time_limit(flags: dict[str, str], subscribers: int) -> float:
    """Seconds after which a bench run is killed: its own worst case plus a minute."""
    rate = float(flags.get("--connect-rate", 10_000))
    ramp = subscribers / rate if rate > 0 else 0.0
    timeout = float(flags.get("--timeout", 30))
    connect = 2 * ramp + float(flags.get("--connect-timeout", 10)) + timeout
    return connect + float(flags.get("--duration", 0)) + timeout + 60


# ---------------------------------------------------------------- run context


class Context:
    """Where results go, and the log of every command run (kept in meta.json)."""

    def __init__(self, out: Path, meta: dict):
        self.out = out
        self.meta = meta
        self.broken: dict[str, str] = {}

    def command(self, argv: list[str]) -> None:
        self.meta["commands"].append({"at": now_iso(), "cmd": shlex.join(str(a) for a in argv)})

    def save_meta(self) -> None:
        write_json(self.out / "meta.json", self.meta)


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def results_dir(name: str, given: Path | None) -> Path:
    """OUT for a benchmark script: `given`, or benches/results/<name>-<UTC date-time>; created."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d-%H%M%S")
    out = given or RESULTS / f"{name}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Lets a cleanup finish before a Ctrl-C (or SIGTERM) that arrives during it."""
    caught: list[int] = []
    old = {s: signal.signal(s, lambda signum, _frame: caught.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if caught:
            raise KeyboardInterrupt


def interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


# ---------------------------------------------------------------- servers


@dataclass
class Handle:
    pids: list[int]
    stop: Callable[[], None]
    sub_url: str | None = None
    pub_url: str | None = None


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session `sid`. Every server is started in
    a session of its own, so whatever its stop misses can still be found."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def kill_leftovers(name: str, sid: int) -> None:
    leftovers = session_members(sid)
    if leftovers:
        log(f"  {name}: still running after stop: {leftovers}; SIGKILL")
        for pid in leftovers:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def own_argv(server: Server) -> list[str]:
    listen = f"127.0.0.1:{server.port}"
    if server.argv:
        return [server.argv[0], "--listen", listen, "--log", "warn", *server.argv[1:]]
    if server.name == "ssehub":
        return [str(SSEHUB), "--listen", listen, "--log", "warn"]
    return [str(BENCH), "floor", "--listen", listen, "--threads", str(os.cpu_count() or 1), "-q"]


def start_own(server: Server, ctx: Context) -> Handle:
    """ssehub or the floor: our child, ready once it prints `listening on`."""
    argv = own_argv(server)
    logfile = ctx.out / "logs" / f"{server.name}.log"
    ctx.command(argv)
    with logfile.open("wb") as f:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        kill_leftovers(server.name, proc.pid)

    try:
        deadline = time.monotonic() + 15
        while "listening on" not in logfile.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise StartError(f"{server.name} did not start: {tail(logfile.read_text(errors='replace'))}")
            time.sleep(0.02)
    except BaseException:
        with signals_deferred():
            stop()
        raise
    return Handle([proc.pid], stop)


def peer_script(server: Server) -> Path:
    return PEERS / f"{server.name}.sh"


def stop_peer(server: Server, ctx: Context, sid: int) -> None:
    argv = [str(peer_script(server)), "stop"]
    ctx.command(argv)
    try:
        subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=STOP_TIMEOUT_S,
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        log(f"  {server.name}: stop timed out")
    kill_leftovers(server.name, sid)


def start_peer(server: Server, ctx: Context) -> Handle:
    """A peer script: installs what is missing, starts, prints one `pids=...` line."""
    argv = [str(peer_script(server)), "start", str(server.port)]
    ctx.command(argv)
    logfile = ctx.out / "logs" / f"{server.name}-start.log"
    with logfile.open("w") as err:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True
        )
    try:
        stdout, _ = proc.communicate(timeout=PEER_START_TIMEOUT_S)
        line = next((ln for ln in reversed(stdout.splitlines()) if ln.startswith("pids=")), None)
        if proc.returncode != 0 or line is None:
            raise StartError(f"{server.name}: start failed (exit {proc.returncode}): {tail(logfile.read_text())}")
    except BaseException as e:
        proc.kill()
        proc.wait()
        with signals_deferred():
            stop_peer(server, ctx, proc.pid)
        if isinstance(e, subprocess.TimeoutExpired):
            raise StartError(f"{server.name}: start timed out after {PEER_START_TIMEOUT_S} s") from e
        raise
    fields = dict(kv.split("=", 1) for kv in line.split())
    pids = [int(x) for x in fields["pids"].split(",")] + redis_pid(server)
    return Handle(pids, lambda: stop_peer(server, ctx, proc.pid), fields["sub"], fields["pub"])


def redis_pid(server: Server) -> list[int]:
    """The Django peers' private redis-server: part of what serves the streams."""
    pidfile = PEERS / "run" / f"{server.name}.redis.pid"
    text = pidfile.read_text().strip() if pidfile.exists() else ""
    return [int(text)] if text.isdigit() else []


@contextmanager
def serving(server: Server, ctx: Context) -> Iterator[Handle]:
    if port_in_use(server.port):
        raise StartError(f"127.0.0.1:{server.port} is already in use")
    handle = start_own(server, ctx) if server.name in ("ssehub", "floor") or server.argv else start_peer(server, ctx)
    try:
        yield handle
    finally:
        with signals_deferred():
            handle.stop()


def tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


# ---------------------------------------------------------------- running


def run_bench(job: Job, handle: Handle, ctx: Context, sizes: Sizes) -> dict:
    flags = bench_flags(job, sizes)
    argv = [
        str(BENCH), "run", "--scenario", BENCH_SCENARIO.get(job.scenario, job.scenario),
        "--preset", "ssehub" if job.server.argv else job.server.name,
        "--port", str(job.server.port), "-n", str(job.subscribers),
        "--server-pid", ",".join(map(str, handle.pids)), "--json", "-q",
    ]  # fmt: skip
    if handle.sub_url:
        argv += ["--sub-url", handle.sub_url, "--pub-url", handle.pub_url]
    for flag, value in flags.items():
        argv += [flag, value]
    ctx.command(argv)
    limit = bench_time_limit(flags, job.subscribers)
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"ssehub-bench killed after {limit:.0f} s"}
    try:
        return json.loads(p.stdout)
    except ValueError:
        return {"error": f"ssehub-bench exited {p.returncode}: {tail(p.stderr)}"}


def run_job(job: Job, ctx: Context, sizes: Sizes) -> dict:
    load_before = Path("/proc/loadavg").read_text().split()[0]
    t0 = time.monotonic()
    try:
        with serving(job.server, ctx) as handle:
            report = run_bench(job, handle, ctx, sizes)
            write_json(ctx.out / job.filename, report)  # before the stop, which a Ctrl-C may end
    except StartError as e:
        ctx.broken[job.server.name] = str(e)
        report = {"error": f"server did not start: {e}"}
        write_json(ctx.out / job.filename, report)
    ctx.meta["runs"].append(
        {"file": job.filename, "seconds": round(time.monotonic() - t0, 1), "loadavg_1m_before": float(load_before)}
    )
    ctx.save_meta()
    return report


def run_all(jobs: list[Job], ctx: Context, sizes: Sizes) -> None:
    t0 = time.monotonic()
    for i, job in enumerate(jobs, 1):
        at = fmt_duration(time.monotonic() - t0)
        label = f"[{i}/{len(jobs)} {at}] {job.scenario} n={job.subscribers} rep {job.rep} {job.server.name}"
        if job.server.name in ctx.broken:
            log(f"{label}: skipped ({ctx.broken[job.server.name]})")
            continue
        report = run_job(job, ctx, sizes)
        log(f"{label}: {one_line(job.scenario, report)}")


def one_line(scenario: str, report: dict) -> str:
    """The progress line's verdict on one run."""
    if "error" in report:
        return f"ERROR {report['error']}"
    m = run_metrics(report)
    rate = f"{fmt_num(m['deliveries_per_s'])} deliveries/s"
    cpu = f"{fmt_num(m['cpu_ns_per_delivery'])} ns CPU/delivery"
    latency = f"p50 {fmt_short(m['p50_ms'])} ms, p99 {fmt_short(m['p99_ms'])} ms"
    shown = {
        "burst": f"{rate}, {cpu}",
        "idle": f"{fmt_num(m['connects_per_s'])} connects/s, {fmt_bytes(m['rss_per_conn_bytes'])}/conn",
        "steady": f"{latency}, {cpu}",
        "per-user": f"{rate}, {cpu}",
        "per-user-paced": f"{fmt_num(m['publishes_per_s'])} publishes/s, {latency}, {cpu}",
    }[scenario]
    return f"{shown} ({'ok' if m['ok'] else 'FAIL: ' + '; '.join(m['failed_checks'])})"


def fmt_duration(s: float) -> str:
    return f"{int(s // 60)}m{int(s % 60):02d}s"


# ---------------------------------------------------------------- metadata


def capture(argv: list[str]) -> str | None:
    """First line of a command's output (stdout or stderr), or None."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=20, cwd=ROOT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = (p.stdout.strip() or p.stderr.strip()).splitlines()
    return out[0] if p.returncode == 0 and out else None


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "kernel": platform.release(),
        "mem_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "hostname": platform.node(),
    }


def dpkg_version(package: str) -> str | None:
    return capture(["dpkg-query", "-W", "-f=${Version}", package])


def cargo_lock_versions(lock: Path, names: tuple[str, ...]) -> dict:
    text = lock.read_text() if lock.exists() else ""
    found = re.findall(r'^name = "([^"]+)"\nversion = "([^"]+)"', text, re.M)
    return {n: v for n, v in found if n in names}


def versions() -> dict:
    venv_python = PEERS / "run" / "venv" / "bin" / "python"
    venv = None
    if venv_python.exists():
        venv = capture([
            str(venv_python), "-c",
            "import json, platform, importlib.metadata as m; print(json.dumps({'python': platform.python_version(), "
            "**{p: m.version(p) for p in ('django', 'gunicorn', 'uvicorn', 'redis')}}))",
        ])  # fmt: skip
    return {
        "rustc": capture(["rustc", "--version"]),
        "ssehub": capture([str(SSEHUB), "--version"]),
        "python_compare": platform.python_version(),
        "nginx": capture(["nginx", "-v"]),
        "libnginx-mod-nchan": dpkg_version("libnginx-mod-nchan"),
        "pushpin": dpkg_version("pushpin"),
        "redis-server": dpkg_version("redis-server"),
        "django_venv": json.loads(venv) if venv else None,
        "axum_peer": cargo_lock_versions(PEERS / "axum" / "Cargo.lock", ("axum", "tokio")),
    }


def git_state() -> dict:
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=ROOT, check=False
    ).stdout.splitlines()
    return {"commit": capture(["git", "rev-parse", "HEAD"]), "dirty": bool(status), "modified": status}


def new_meta(args: argparse.Namespace, sizes: Sizes, selected: list[Server], jobs: list[Job]) -> dict:
    return {
        "date": now_iso(),
        "command": shlex.join(["benches/compare.py", *sys.argv[1:]]),
        "quick": args.quick,
        "reps": sizes.reps,
        "servers": [s.name for s in selected],
        "scenarios": args.scenarios,
        "subscribers": list(sizes.counts),
        "planned_runs": len(jobs),
        "machine": machine(),
        "git": git_state(),
        "versions": {},
        "commands": [],
        "runs": [],
        "skipped": {},
    }


def build(ctx: Context) -> None:
    argv = ["cargo", "build", "--release", "-p", "ssehub", "-p", "ssehub-bench"]
    ctx.command(argv)
    log("building: " + shlex.join(argv))
    if subprocess.run(argv, cwd=ROOT, check=False).returncode != 0:
        sys.exit("compare.py: cargo build failed (--no-build runs the binaries already in target/release)")


# ---------------------------------------------------------------- summary


@dataclass(frozen=True)
class Metric:
    label: str
    path: tuple[str, ...]
    higher_is_better: bool
    scale: float = 1.0


METRICS = {
    "deliveries_per_s": Metric("deliveries/s", ("delivery", "deliveries_per_s"), True),
    "cpu_ns_per_delivery": Metric("server CPU per delivery", ("server", "cpu_ns_per_delivery"), False),
    "p50_ms": Metric("p50 latency", ("latency", "p50_us"), False, 1e-3),
    "p99_ms": Metric("p99 latency", ("latency", "p99_us"), False, 1e-3),
    "rss_per_conn_bytes": Metric("RSS per connection", ("server", "rss_per_connection_bytes"), False),
    "connects_per_s": Metric("connect rate", ("connect", "rate_per_s"), True),
    "cpu_us_per_conn": Metric("server CPU per connect", ("server", "cpu_us_per_connection"), False),
    "missing": Metric("missing events", ("delivery", "stayers", "missing"), False),
    "duplicates": Metric("duplicate events", ("delivery", "stayers", "duplicates"), False),
    "failed_connects": Metric("failed connects", ("connect", "failed"), False),
    "established": Metric("subscribers connected", ("connect", "established"), True),
    "deliveries": Metric("deliveries", ("delivery", "deliveries"), True),
    "publishes_ok": Metric("publishes accepted", ("publish", "ok"), True),
    "publishes_attempted": Metric("publishes attempted", ("publish", "attempted"), True),
    "publishes_per_s": Metric("publish rate", ("publish", "rate_achieved"), True),
}
RATIO_METRICS = ("deliveries_per_s", "cpu_ns_per_delivery", "p50_ms", "p99_ms", "rss_per_conn_bytes", "connects_per_s")
HEADLINE_METRICS = {
    "burst": ("deliveries_per_s", "cpu_ns_per_delivery"),
    "idle": ("connects_per_s", "rss_per_conn_bytes"),
    "steady": ("p99_ms", "cpu_ns_per_delivery"),
    "per-user": ("deliveries_per_s", "cpu_ns_per_delivery"),
    "per-user-paced": ("cpu_ns_per_delivery", "p99_ms"),
}
# Longest names first, so that `per-user-paced-…` is not read as `per-user` of a count `paced`.
RESULT_FILE = re.compile(
    rf"^({'|'.join(map(re.escape, sorted(ALL_SCENARIOS, key=len, reverse=True)))})-(\d+)-(.+)-rep(\d+)\.json$"
)


def dig(report: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(report, dict):
            return None
        report = report.get(key)
    return report


def run_metrics(report: dict) -> dict:
    """The numbers the summary uses from one raw report (or error record)."""
    if "error" in report:
        return {"ok": False, "failed_checks": [report["error"]]} | dict.fromkeys(METRICS)
    m = {"ok": report["ok"], "failed_checks": [f"{c['name']}: {c['detail']}" for c in report["checks"] if not c["ok"]]}
    for key, metric in METRICS.items():
        v = dig(report, metric.path)
        m[key] = None if v is None else v * metric.scale
    m["events"] = dig(report, ("config", "events"))
    m["generator_cores"] = dig(report, ("generator", "cpu_cores_window"))
    return m


def load_results(out: Path) -> dict[tuple[str, int], dict[str, list[dict]]]:
    """{(scenario, n): {server: [metrics of each rep]}} from OUT's raw files."""
    cells: dict[tuple[str, int], dict[str, list[dict]]] = {}
    for path in sorted(out.glob("*.json")):
        match = RESULT_FILE.match(path.name)
        if match:
            scenario, n, server, _rep = match.groups()
            metrics = run_metrics(json.loads(path.read_text()))
            cells.setdefault((scenario, int(n)), {}).setdefault(server, []).append(metrics)
    return cells


def median_of(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def connects_paced(name: str) -> bool:
    """Its connect rate is the ramp we chose (Pushpin), so it gets no ratio."""
    return "--connect-rate" in getattr(SERVERS.get(name), "bench_flags", {})


def advantage(key: str, ssehub: float | None, it: float | None) -> float | None:
    """How many times better ssehub is (> 1: ssehub better): ssehub / it for
    rates, it / ssehub for costs."""
    if not ssehub or not it or min(ssehub, it) <= 0:
        return None
    return ssehub / it if METRICS[key].higher_is_better else it / ssehub


def summarize_server(runs: list[dict]) -> dict:
    failures = sorted({f for r in runs for f in r["failed_checks"]})
    median = {k: median_of(runs, k) for k in [*METRICS, "events", "generator_cores"]}
    return {"runs": len(runs), "ok_runs": sum(r["ok"] for r in runs), "median": median, "failures": failures}


def server_rank(name: str) -> tuple[int, str]:
    """Sort key: the order of SERVERS, unknown names last."""
    return (list(SERVERS).index(name) if name in SERVERS else len(SERVERS), name)


def server_order(names) -> list[str]:
    return sorted(names, key=server_rank)


SUMMARY_META = ("date", "command", "quick", "reps", "run_count", "out", "machine", "versions", "git", "skipped")


def summarize(out: Path, meta: dict) -> dict:
    cells = []
    for (scenario, n), by_server in sorted(
        load_results(out).items(), key=lambda kv: (ALL_SCENARIOS.index(kv[0][0]), kv[0][1])
    ):
        servers = {name: summarize_server(by_server[name]) for name in server_order(by_server)}
        base = servers.get("ssehub", {}).get("median", {})
        for name, s in servers.items():
            if name != "ssehub":
                s["advantage_of_ssehub"] = {k: advantage(k, base.get(k), s["median"][k]) for k in RATIO_METRICS}
                if connects_paced(name):
                    s["advantage_of_ssehub"]["connects_per_s"] = None
        cells.append({"scenario": scenario, "subscribers": n, "servers": servers})
    return {
        "meta": {k: meta.get(k) for k in SUMMARY_META},
        "advantage_definition": "how many times better ssehub is: ssehub / it for deliveries/s and connect rate, "
        "it / ssehub for CPU, latency and RSS (> 1: ssehub better)",
        "cells": cells,
        "headlines": headlines(cells),
    }


def headlines(cells: list[dict]) -> list[str]:
    """One line per server and scenario, at the largest count both it and ssehub ran."""
    best: dict[tuple[str, str], dict] = {}
    for cell in cells:
        if "ssehub" in cell["servers"]:
            for name in cell["servers"]:
                if name != "ssehub":
                    best[(cell["scenario"], name)] = cell  # cells are sorted by count
    lines = []
    for scenario, name in sorted(best, key=lambda k: (ALL_SCENARIOS.index(k[0]), server_rank(k[1]))):
        cell = best[(scenario, name)]
        parts = [
            quotient_text(key, cell["servers"]["ssehub"], cell["servers"][name], name)
            for key in HEADLINE_METRICS[scenario]
        ]
        parts = [p for p in parts if p]
        established = cell["servers"][name]["median"]["established"]
        if not parts or (established or 0) * 2 <= cell["subscribers"]:
            parts = [stall_text(name, cell["subscribers"], cell["servers"][name])]
        elif established < cell["subscribers"]:
            parts.append(f"{name} served {established:,.0f} of {cell['subscribers']:,} subscribers")
        lines.append(f"{scenario}, {cell['subscribers']:,} subscribers: " + "; ".join(parts))
    return lines


def stall_text(name: str, n: int, s: dict) -> str:
    """What a server without comparable numbers did (gunicorn's stall)."""
    m = s["median"]
    if m["established"] is None:
        return f"{name}: {'; '.join(s['failures']) or 'no numbers'}"
    text = f"{name} served {m['established']:,.0f} of {n:,} subscribers"
    if m["publishes_attempted"] is not None:
        text += f", accepted {m['publishes_ok']:,.0f} of {m['publishes_attempted']:,.0f} publishes"
        text += f" and delivered {m['deliveries']:,.0f} events"
    return text + f" ({s['ok_runs']} of {s['runs']} runs passed)"


def quotient_text(key: str, ssehub: dict, it: dict, name: str) -> str | None:
    """`ssehub / nchan deliveries/s = 6.1×`, ordered so the ratio reads as
    ssehub's advantage; against the floor always ssehub / floor."""
    a, b = ssehub["median"][key], it["median"][key]
    if not a or not b or min(a, b) <= 0 or (key == "connects_per_s" and connects_paced(name)):
        return None
    if name == "floor" or METRICS[key].higher_is_better:
        return f"ssehub / {name} {METRICS[key].label} = {fmt_ratio(a / b)}"
    return f"{name} / ssehub {METRICS[key].label} = {fmt_ratio(b / a)}"


# ---------------------------------------------------------------- formatting


def fmt_date(iso: str | None) -> str:
    if not iso:
        return "?"
    return datetime.datetime.fromisoformat(iso).astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def fmt_num(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f}"


def fmt_short(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def fmt_bytes(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v / 1024:,.1f} KiB" if abs(v) >= 10 * 1024 else f"{v:,.0f} B"


def fmt_ratio(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:,.0f}×" if v >= 100 else f"{v:.1f}×" if v >= 1 else f"{v:.2f}×"


@dataclass(frozen=True)
class Column:
    title: str
    cell: Callable[[dict], str]


def col(key: str, fmt: Callable[[float | None], str], title: str) -> Column:
    return Column(title, lambda s: fmt(s["median"][key]))


def ratio_col(key: str) -> Column:
    title = "ssehub ÷ it" if METRICS[key].higher_is_better else "it ÷ ssehub"
    return Column(title, lambda s: fmt_ratio(s.get("advantage_of_ssehub", {}).get(key)))


def throughput_columns(rate_title: str) -> list[Column]:
    """Columns of a back-to-back scenario."""
    return [
        col("events", fmt_num, "events"),
        col("deliveries_per_s", fmt_num, rate_title),
        ratio_col("deliveries_per_s"),
        col("cpu_ns_per_delivery", fmt_num, "server CPU ns/delivery"),
        ratio_col("cpu_ns_per_delivery"),
        col("p99_ms", fmt_short, "p99 ms (queueing)"),
        *loss_columns(),
    ]


def latency_columns() -> list[Column]:
    """Columns of a paced scenario."""
    return [
        col("p50_ms", fmt_short, "p50 ms"),
        col("p99_ms", fmt_short, "p99 ms"),
        ratio_col("p99_ms"),
        col("cpu_ns_per_delivery", fmt_num, "server CPU ns/delivery"),
        ratio_col("cpu_ns_per_delivery"),
        *loss_columns(),
    ]


def loss_columns() -> list[Column]:
    return [col("missing", fmt_num, "missing"), col("duplicates", fmt_num, "dup")]


TABLES = {
    "burst": ("Burst: events published back to back to one topic", throughput_columns("deliveries/s")),
    "idle": (
        "Idle: connections opened unpaced, then held",
        [
            col("connects_per_s", fmt_num, "connects/s"),
            ratio_col("connects_per_s"),
            col("rss_per_conn_bytes", fmt_bytes, "RSS/connection"),
            ratio_col("rss_per_conn_bytes"),
            col("cpu_us_per_conn", fmt_short, "server CPU µs/connect"),
            col("failed_connects", fmt_num, "failed connects"),
        ],
    ),
    "steady": (f"Steady: {STEADY_RATE} events/s to one topic", latency_columns()),
    "per-user": (
        "Per-user: each subscriber on its own topic, events spread over the topics back to back "
        f"({PER_USER_PUB_CONNS} publish connections)",
        # One subscriber per event: a delivery is a delivered publish.
        throughput_columns("publishes delivered/s"),
    ),
    "per-user-paced": (
        f"Per-user, paced: {PER_USER_RATE:,} events/s spread over the subscribers' own topics "
        f"({PER_USER_PUB_CONNS} publish connections)",
        [col("publishes_per_s", fmt_num, "publishes/s"), *latency_columns()],
    ),
}


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    right = "|".join("---" if i < 2 else "---:" for i in range(len(header)))
    return ["| " + " | ".join(header) + " |", f"|{right}|", *("| " + " | ".join(r) + " |" for r in rows)]


def scenario_section(scenario: str, cells: list[dict], h: str) -> list[str]:
    title, columns = TABLES[scenario]
    rows, notes = [], []
    for cell in (c for c in cells if c["scenario"] == scenario):
        for name, s in cell["servers"].items():
            rows.append(
                [f"{cell['subscribers']:,}", name, f"{s['ok_runs']}/{s['runs']}", *(c.cell(s) for c in columns)]
            )
            notes += [f"- {name}, {cell['subscribers']:,} subscribers: {f}" for f in s["failures"]]
    if not rows:
        return []
    out = [f"{h} {title}", "", *md_table(["subscribers", "server", "runs ok", *(c.title for c in columns)], rows), ""]
    if notes:
        out += ["Failed checks:", "", *notes, ""]
    return out


def describe_run(meta: dict) -> list[str]:
    m, v, g = meta.get("machine") or {}, meta.get("versions") or {}, meta.get("git") or {}
    commit = (g.get("commit") or "?")[:12] + (" with uncommitted changes" if g.get("dirty") else "")
    quick = " (**quick smoke run: not for publication**)" if meta.get("quick") else ""
    return [
        f"- Command: `{meta.get('command')}`{quick}",
        f"- Date: {fmt_date(meta.get('date'))}; machine: {m.get('cpu_model')}, {m.get('nproc')} cores, "
        f"{m.get('mem_gib')} GiB, "
        f"kernel {m.get('kernel')}; {v.get('rustc')}; commit {commit}",
        f"- Runs: {meta.get('run_count')} ({meta.get('reps')} per server, scenario and size), raw reports in "
        f"`{meta.get('out')}/`. Each number is the median over the repetitions. Ratio columns say how many "
        "times better ssehub is: ssehub ÷ it for rates, it ÷ ssehub for costs.",
    ]


def render_markdown(summary: dict, h: str, chart: str) -> str:
    """The summary as markdown; `h` is the heading prefix of its sections."""
    meta = summary["meta"]
    lines = [*describe_run(meta), "", f"{h} Headlines", "", *(f"- {x}" for x in summary["headlines"]), ""]
    lines += [f"![{chart_alt(summary['cells'])}]({chart})", ""]
    for scenario in ALL_SCENARIOS:
        lines += scenario_section(scenario, summary["cells"], h)
    names = {name for cell in summary["cells"] for name in cell["servers"]}
    notes = [
        "- The load generator (`ssehub-bench`) shares the machine with the server: its CPU use is in each raw "
        "report (`generator`), its median cores busy in summary.json (`generator_cores`)."
    ]
    notes += [f"- {n}: {SERVERS[n].note}" for n in server_order(names) if n in SERVERS and SERVERS[n].note]
    notes += [f"- {name} was not measured after: {why}" for name, why in (meta.get("skipped") or {}).items()]
    return "\n".join([*lines, f"{h} Notes", "", *notes, ""])


# ---------------------------------------------------------------- chart


@dataclass(frozen=True)
class LogAxis:
    """Maps [lo, hi] (whole decades) onto pixels [a, b] logarithmically."""

    lo: float
    hi: float
    a: float
    b: float

    @classmethod
    def covering(cls, values: list[float], a: float, b: float) -> LogAxis:
        lo = 10 ** math.floor(math.log10(min(values)))
        hi = 10 ** math.ceil(math.log10(max(values)))
        return cls(lo, hi if hi > lo else lo * 10, a, b)

    def __call__(self, v: float) -> float:
        span = math.log10(self.hi) - math.log10(self.lo)
        return self.a + (math.log10(v) - math.log10(self.lo)) / span * (self.b - self.a)

    def decades(self) -> list[float]:
        return [10.0**e for e in range(round(math.log10(self.lo)), round(math.log10(self.hi)) + 1)]

    def minor(self) -> list[float]:
        return [d * k for d in self.decades()[:-1] for k in range(2, 10)]


def fmt_si(v: float) -> str:
    for factor, suffix in ((1e6, "M"), (1e3, "k")):
        if v >= factor:
            return f"{v / factor:g}{suffix}"
    return f"{v:g}"


def chart_series(cells: list[dict], scenario: str, key: str) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for cell in cells:
        if cell["scenario"] == scenario:
            for name, s in cell["servers"].items():
                v = s["median"][key]
                if v is not None and v > 0:
                    series.setdefault(name, []).append((cell["subscribers"], v))
    return series


def svg_panel(box: tuple[float, float, float, float], title: tuple[str, str], series: dict) -> list[str]:
    """One log-log panel at `box` (x, y, width, height): grid, ticks, a line per server."""
    x0, y0, w, h = box
    out = [
        f'<text x="{x0 + w / 2}" y="{y0 - 28}" class="title">{escape(title[0])}</text>',
        f'<text x="{x0 + w / 2}" y="{y0 - 10}" class="label">{escape(title[1])}</text>',
    ]
    out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" class="frame"/>')
    points = [p for pts in series.values() for p in pts]
    if not points:
        return out + [f'<text x="{x0 + w / 2}" y="{y0 + h / 2}" class="title">no data</text>']
    xs = LogAxis.covering([p[0] for p in points], x0, x0 + w)
    ys = LogAxis.covering([p[1] for p in points], y0 + h, y0)
    for v in xs.minor():
        out.append(f'<line x1="{xs(v):.1f}" y1="{y0}" x2="{xs(v):.1f}" y2="{y0 + h}" class="minor"/>')
    for v in ys.minor():
        out.append(f'<line x1="{x0}" y1="{ys(v):.1f}" x2="{x0 + w}" y2="{ys(v):.1f}" class="minor"/>')
    for v in xs.decades():
        out.append(f'<line x1="{xs(v):.1f}" y1="{y0}" x2="{xs(v):.1f}" y2="{y0 + h}" class="grid"/>')
        out.append(f'<text x="{xs(v):.1f}" y="{y0 + h + 18}" class="tick">{fmt_si(v)}</text>')
    for v in ys.decades():
        out.append(f'<line x1="{x0}" y1="{ys(v):.1f}" x2="{x0 + w}" y2="{ys(v):.1f}" class="grid"/>')
        out.append(f'<text x="{x0 - 8}" y="{ys(v) + 4:.1f}" class="tick end">{fmt_si(v)}</text>')
    out.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 40}" class="label">subscribers (log scale)</text>')
    for name in server_order(series):
        pts = sorted(series[name])
        color = COLORS.get(name, "#000")
        dash = ' stroke-dasharray="6 4"' if name == "floor" else ""
        coords = " ".join(f"{xs(n):.1f},{ys(v):.1f}" for n, v in pts)
        out.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2.5"{dash}/>')
        out += [
            f'<circle cx="{xs(n):.1f}" cy="{ys(v):.1f}" r="4" fill="{color}"><title>{escape(name)}, {n:,} subscribers: '
            f"{v:,.3g}</title></circle>"
            for n, v in pts
        ]
    return out


@dataclass(frozen=True)
class Panel:
    scenario: str
    key: str
    title: str
    subtitle: str
    alt: str  # its part of the chart's alt text


# Burst and steady are drawn as a pair unless only per-user ones have data;
# per-user ones when the run has them.
CHART_PANELS = (
    Panel(
        "burst",
        "deliveries_per_s",
        "Burst: deliveries/s",
        "events back to back; higher is better",
        "Deliveries/s in burst",
    ),
    Panel(
        "steady",
        "p99_ms",
        "Steady: p99 latency, ms",
        f"{STEADY_RATE} events/s; lower is better",
        "p99 latency in steady",
    ),
    Panel(
        "per-user",
        "deliveries_per_s",
        "Per-user: publishes delivered/s",
        "own topic each, back to back; higher is better",
        "publishes delivered/s in per-user",
    ),
    Panel(
        "per-user-paced",
        "p99_ms",
        "Per-user, paced: p99 latency, ms",
        f"{PER_USER_RATE:,} events/s over the topics; lower is better",
        "p99 latency in per-user-paced",
    ),
)


def chart_panels(cells: list[dict]) -> list[tuple[Panel, dict]]:
    """Each panel to draw, with its series."""
    panels = [(panel, chart_series(cells, panel.scenario, panel.key)) for panel in CHART_PANELS]
    pair, extra = panels[:2], [(panel, series) for panel, series in panels[2:] if series]
    return (pair if any(series for _, series in pair) or not extra else []) + extra


def chart_alt(cells: list[dict]) -> str:
    """The chart's alt text in markdown."""
    parts = [panel.alt for panel, _ in chart_panels(cells)]
    text = ", ".join(parts[:-1]) + " and " + parts[-1] + ", against subscribers"
    return text[0].upper() + text[1:]


def svg_chart(summary: dict) -> str:
    cells, meta = summary["cells"], summary["meta"]
    panels = chart_panels(cells)
    top, plot_w, plot_h, row_h = 110, 390, 300, 420
    width, height = 1000, 520 + row_h * ((len(panels) - 1) // 2)
    body = []
    for i, (panel, series) in enumerate(panels):
        box = (80 + i % 2 * 500, top + i // 2 * row_h, plot_w, plot_h)
        body += svg_panel(box, (panel.title, panel.subtitle), series)
    names = server_order({n for _, series in panels for n in series})
    x = 80.0
    for name in names:
        color = COLORS.get(name, "#000")
        dash = ' stroke-dasharray="6 4"' if name == "floor" else ""
        body.append(f'<line x1="{x}" y1="30" x2="{x + 28}" y2="30" stroke="{color}" stroke-width="3"{dash}/>')
        body.append(f'<text x="{x + 34}" y="35" class="legend">{escape(name)}</text>')
        x += 34 + 7.5 * len(name) + 30
    m = meta.get("machine") or {}
    undrawn = server_order(
        {n for c in cells if c["scenario"] in {p.scenario for p, _ in panels} for n in c["servers"]} - set(names)
    )
    footer = [
        f"Median of {meta.get('reps')} run(s) per point · {fmt_date(meta.get('date'))} · {m.get('cpu_model')}, "
        f"{m.get('nproc')} cores · load generator on the same machine",
        "No point: no number from any run" + (f" (not drawn at all: {', '.join(undrawn)})" if undrawn else ""),
    ]
    body += [
        f'<text x="{width / 2}" y="{height - 32 + 16 * i}" class="foot">{escape(line)}</text>'
        for i, line in enumerate(footer)
    ]
    style = (
        "text{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;fill:#222}"
        ".title{font-size:15px;font-weight:600;text-anchor:middle}.label{font-size:13px;text-anchor:middle}"
        ".tick{font-size:12px;text-anchor:middle}.end{text-anchor:end}.legend{font-size:13px}"
        ".foot{font-size:11px;text-anchor:middle;fill:#555}.frame{fill:#fff;stroke:#888}"
        ".grid{stroke:#d0d0d0}.minor{stroke:#efefef}"
    )
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img">',
            f"<style>{style}</style>",
            f'<rect width="{width}" height="{height}" fill="#fff"/>',
            *body,
            "</svg>",
            "",
        ]
    )


# ---------------------------------------------------------------- outputs


def replace_doc_section(text: str, section: str) -> str:
    """`text` with the part between the compare markers replaced (markers
    appended at the end when absent); nothing else changes."""
    block = f"{DOC_BEGIN}\n{section.rstrip()}\n{DOC_END}"
    begins, ends = text.count(DOC_BEGIN), text.count(DOC_END)
    if (begins, ends) == (0, 0):
        return (text.rstrip("\n") + "\n\n" if text.strip() else "") + block + "\n"
    if (begins, ends) != (1, 1) or text.index(DOC_BEGIN) > text.index(DOC_END):
        raise SystemExit(f"compare.py: {DOC.name} has unmatched compare markers; fix them by hand")
    head, rest = text.split(DOC_BEGIN, 1)
    return head + block + rest.split(DOC_END, 1)[1]


def publish(out: Path, meta: dict, update_latest: bool, update_doc: bool) -> dict:
    summary = summarize(out, meta)
    write_json(out / "summary.json", summary)
    title = "# ssehub compared with other SSE servers\n\n"
    (out / "summary.md").write_text(title + render_markdown(summary, "##", "chart.svg"))
    (out / "chart.svg").write_text(svg_chart(summary))
    if update_latest or update_doc:
        latest = RESULTS / "latest"
        latest.mkdir(parents=True, exist_ok=True)
        for name in ("summary.md", "summary.json", "chart.svg"):
            shutil.copyfile(out / name, latest / name)
    if update_doc:
        section = "## Comparison with other servers\n\n" + (
            "<!-- Generated by benches/compare.py --update-doc: "
            "edits between the compare markers are overwritten. -->\n\n"
        )
        section += render_markdown(summary, "###", "benches/results/latest/chart.svg")
        DOC.write_text(replace_doc_section(DOC.read_text() if DOC.exists() else "", section))
    return summary


def display_path(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


# ---------------------------------------------------------------- main


def csv_of(allowed) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        unknown = [x for x in items if x not in allowed]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"expected some of {','.join(allowed)}; got {text!r}")
        return items

    return parse


def counts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        values = ()
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas; got {text!r}")
    return values


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="benches/compare.py",
        description="Run ssehub-bench scenarios against ssehub, its peers and the floor in one interleaved run; "
        "write raw JSON, medians, ratios, markdown tables and an SVG chart.",
        epilog="Defaults take about 25 minutes on a 2-core machine; --quick about 3; "
        "--scenarios per-user,per-user-paced --subscribers 5000 with 4 servers about 5. "
        "See the module docstring (and benches/peers/README.md) for what runs where.",
    )
    defaults = [name for name in SERVERS if name not in OPT_IN]
    p.add_argument("--servers", type=csv_of(SERVERS), default=defaults, help="default: " + ",".join(defaults))
    p.add_argument(
        "--scenarios",
        type=csv_of(ALL_SCENARIOS),
        default=list(SCENARIOS),
        help=f"some of {','.join(ALL_SCENARIOS)} (default: {','.join(SCENARIOS)})",
    )
    p.add_argument("--subscribers", type=counts, help="subscriber counts (default: 1000,5000,10000; quick: 100,1000)")
    p.add_argument("--reps", type=int, help="repetitions per server and size (default: 3; quick: 1)")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 rep, small sizes, short runs (< 3 min)")
    p.add_argument("--out", type=Path, help="result directory (default: benches/results/<UTC date-time>)")
    p.add_argument("--update-doc", action="store_true", help="rewrite the compare section of PERFORMANCE.md")
    p.add_argument("--no-build", action="store_true", help="skip `cargo build --release`; use target/release as is")
    p.add_argument(
        "--report-only", action="store_true", help="run nothing: rebuild summary, chart (and doc) from --out's JSON"
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=BINARY[,FLAG...]",
        help="also run another ssehub build or flag set as server NAME, e.g. "
        "before=/tmp/ssehub-old or one-worker=target/release/ssehub,--workers,1 (repeatable)",
    )
    args = p.parse_args(argv)
    for i, spec in enumerate(args.variant):
        name, sep, rest = spec.partition("=")
        if not sep or not name or not rest or name in SERVERS:
            p.error(f"--variant {spec!r}: want a new NAME=BINARY[,FLAG...]")
        binary, *flags = rest.split(",")
        SERVERS[name] = Server(name, 8100 + i, argv=(str(Path(binary).resolve()), *flags), note=f"`{shlex.join([binary, *flags])}`")
        if name not in args.servers:
            args.servers.append(name)
    if args.reps is not None and args.reps < 1:
        p.error("--reps must be at least 1")
    if args.report_only and not args.out:
        p.error("--report-only needs --out")
    return args


def sizes_for(args: argparse.Namespace) -> Sizes:
    base = QUICK if args.quick else FULL
    return replace(base, counts=args.subscribers or base.counts, reps=args.reps or base.reps)


def prepare_out(out: Path) -> None:
    if any(RESULT_FILE.match(p.name) for p in out.glob("*.json")):
        sys.exit(f"compare.py: {out} already holds results; choose another --out")
    (out / "logs").mkdir(parents=True, exist_ok=True)


def measure(args: argparse.Namespace, out: Path) -> tuple[dict, bool]:
    """Runs the plan; returns the meta and whether it was interrupted."""
    sizes = sizes_for(args)
    selected = [SERVERS[n] for n in args.servers]
    jobs = make_plan(selected, args.scenarios, sizes, args.quick)
    prepare_out(out)
    meta = new_meta(args, sizes, selected, jobs)
    meta["out"] = display_path(out)
    ctx = Context(out, meta)
    if not args.no_build:
        build(ctx)
    missing = [str(b) for b in (SSEHUB, BENCH) if not b.exists()]
    if missing:
        sys.exit(f"compare.py: missing {', '.join(missing)} (cargo build --release)")
    ctx.save_meta()
    log(f"{len(jobs)} runs ({sizes.reps} rep(s)) into {display_path(out)}")
    interrupted = False
    try:
        run_all(jobs, ctx, sizes)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: every server started has been stopped; summarizing the runs done")
    finally:
        meta.update(finished=now_iso(), skipped=ctx.broken, versions=versions(), run_count=len(meta["runs"]))
        ctx.save_meta()
    return meta, interrupted


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)
    if args.report_only:
        out = args.out
        meta = json.loads((out / "meta.json").read_text())
        interrupted = False
    else:
        out = args.out or RESULTS / datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d-%H%M%S")
        meta, interrupted = measure(args, out)
    # latest/ is what PERFORMANCE.md shows: only a complete run of the default scenarios replaces it.
    complete = not meta["quick"] and not interrupted and set(SCENARIOS) <= set(meta.get("scenarios") or SCENARIOS)
    summary = publish(out, meta, update_latest=complete, update_doc=args.update_doc)
    print("\n".join(summary["headlines"]) or "no ratios (did ssehub run?)")
    log(
        f"wrote {display_path(out)}/summary.md, summary.json, chart.svg"
        + (f" and {DOC.name}" if args.update_doc else "")
    )
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
