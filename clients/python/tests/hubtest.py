"""Test helpers: the real ``ssehub`` binary on port 0, stopped by pid; a
private ``redis-server``; an SSE reader. Every wait polls a condition with a
deadline (``TIMEOUT``) that only matters when a test fails."""

from __future__ import annotations

import os
import queue
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[3]
TIMEOUT = 10.0  # seconds any single wait may take before the test fails


def binary() -> str:
    """``$SSEHUB_BINARY``, else cargo's debug build (``./test.sh`` builds it)."""
    path = os.environ.get("SSEHUB_BINARY") or str(REPO / "target" / "debug" / "ssehub")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"no ssehub binary at {path}: run `cargo build` (./test.sh does), or set SSEHUB_BINARY")
    return path


def wait_for(condition: Callable[[], object], what: str, timeout: float = TIMEOUT) -> object:
    """Polls ``condition`` until it is truthy; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def read_line(stream: object, timeout: float = TIMEOUT) -> str:
    """One line from a child's stdout pipe, within ``timeout``."""
    fd = stream.fileno()  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise AssertionError(f"no line within {timeout} s (got {data!r})")
        chunk = os.read(fd, 1)
        if not chunk:
            raise AssertionError(f"the process closed its output (got {data!r})")
        data += chunk
    return data.decode().rstrip("\n")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without SSEHUB_* (the binary reads them as flags)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SSEHUB_")}
    env.update(extra or {})
    return env


class HubProcess:
    """``ssehub --listen 127.0.0.1:0 ARGS``; the address from its first line."""

    def __init__(self, *args: str, env: Mapping[str, str] | None = None) -> None:
        argv = [binary()]
        if "--listen" not in args:
            argv += ["--listen", "127.0.0.1:0"]
        argv += list(args)
        log = None if os.environ.get("SSEHUB_TEST_LOG") else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=clean_env(env)
        )
        line = read_line(self.proc.stdout)
        assert line.startswith("listening on "), line
        self.addr = line.removeprefix("listening on ")
        self.url = f"http://{self.addr}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def metric(self, name: str) -> int:
        """One sample of ``/metrics``: ``name`` with its labels, e.g. ``x{status="503"}``."""
        text = httpx.get(f"{self.url}/metrics", timeout=TIMEOUT).text
        for line in text.splitlines():
            sample, _, value = line.rpartition(" ")
            if sample == name:
                return int(float(value))
        raise AssertionError(f"no metric {name}")

    def wait_metric(self, name: str, ready: Callable[[int], bool]) -> int:
        wait_for(lambda: ready(self.metric(name)), f"metric {name}")
        return self.metric(name)

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def stop(self) -> int | None:
        """SIGTERM, then the exit code (SIGKILL if it does not exit in time)."""
        if self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> HubProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """A private ``redis-server`` on a free loopback port, no persistence."""

    def __init__(self, tmp: Path) -> None:
        import redis

        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"redis://127.0.0.1:{self.port}"
        self.client = redis.Redis(port=self.port, socket_timeout=TIMEOUT)

        def up() -> bool:
            try:
                return bool(self.client.ping())
            except redis.ConnectionError:
                assert self.proc.poll() is None, "redis-server exited"
                return False

        wait_for(up, "redis-server to answer PING")

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(TIMEOUT)


@dataclass
class Event:
    """An event as an EventSource dispatches it, plus the ``retry:`` seen with it."""

    id: str
    event: str
    data: str
    retry: int | None = None


@dataclass
class Subscriber:
    """``GET url`` held open on a thread, parsed as the WHATWG spec says."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._events: queue.Queue[Event | BaseException | None] = queue.Queue()
        self._client = httpx.Client(timeout=httpx.Timeout(TIMEOUT, read=None))
        self.response = self._client.send(self._client.build_request("GET", self.url, headers=self.headers), stream=True)
        self.status = self.response.status_code
        if self.status == 200:
            threading.Thread(target=self._read, daemon=True).start()
        else:
            self.body = self.response.read().decode()
            self.response.close()

    def _read(self) -> None:
        last_id, event, data, retry = "", "", [], None
        try:
            for line in self.response.iter_lines():
                if line == "":
                    if data:
                        self._events.put(Event(last_id, event or "message", "\n".join(data), retry))
                    event, data, retry = "", [], None
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "id":
                    last_id = value
                elif name == "event":
                    event = value
                elif name == "data":
                    data.append(value)
                elif name == "retry" and value.isdigit():
                    retry = int(value)
            self._events.put(None)
        except BaseException as e:  # the stream was closed under us, or broke
            self._events.put(e)

    def next(self, timeout: float = TIMEOUT) -> Event:
        try:
            item = self._events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout} s on {self.url}") from None
        if not isinstance(item, Event):
            raise AssertionError(f"the stream ended: {item!r}")
        return item

    def ended(self, timeout: float = TIMEOUT) -> bool:
        """Waits for the stream to end cleanly (no more events first)."""
        item = self._events.get(timeout=timeout)
        return item is None

    def close(self) -> None:
        self.response.close()
        self._client.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def subscribe(hub: HubProcess, topics: Sequence[str], headers: Mapping[str, str] | None = None) -> Subscriber:
    """A subscription to plain ASCII ``topics`` (tests of the encoding use ``Hub.events_url``)."""
    query = "&".join(f"topic={topic}" for topic in topics)
    return Subscriber(f"{hub.url}/events?{query}", headers or {})
