"""One Python SSE client of the client matrix (tests/clients.rs).

    client.py --lib requests-sse|sseclient-requests|sseclient-urllib3|httpx-sse URL

Subscribes to URL with the chosen library, used as its README shows, and
prints one JSON line per event on stdout, flushed at once:
``{"id": ..., "event": ..., "data": ...}`` (plus ``"json"`` when the data
parses as a JSON object), ``{"open": true}`` when a response head arrives
(the subscription is live from then on), and ``{"error": ...}`` or
``{"closed": ...}`` when a stream fails or ends. It reconnects with
``Last-Event-ID`` for ever: requests-sse does that itself; sseclient-py and
httpx-sse do not, so this script runs the idiom the README documents (a loop
that remembers the last id and the server's ``retry:``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable

# Read timeouts above ssehub's heartbeat (15 s by default), so a dead
# connection is noticed and a quiet one is not dropped (httpx's default of
# 5 s would drop every quiet stream).
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 45.0


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def emit_event(event_id: str | None, event: str | None, data: str) -> None:
    """One event as the test reads it; no type means the default, `message`."""
    line: dict[str, Any] = {"id": event_id or "", "event": event or "message", "data": data}
    try:
        parsed: Any = json.loads(data)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        line["json"] = parsed
    emit(line)


class Resume:
    """The reconnect idiom for clients without one: remember the last event id
    and the server's reconnection time, and send ``Last-Event-ID`` again."""

    def __init__(self) -> None:
        self.last_id = ""
        self.retry_ms = 3000  # until the stream's `retry:` line says otherwise

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self.last_id:
            headers["Last-Event-ID"] = self.last_id
        return headers

    def saw(self, event_id: str | None, retry: int | str | None) -> None:
        if event_id:
            self.last_id = event_id
        if retry is not None and str(retry).isdigit():
            self.retry_ms = int(retry)

    def wait(self) -> None:
        time.sleep(self.retry_ms / 1000)


def fatal(message: str) -> None:
    """A refusal (not 200, not an event stream): like EventSource, give up."""
    emit({"error": message, "fatal": True})
    sys.exit(1)


def run_requests_sse(url: str) -> None:
    import requests
    from requests_sse import EventSource

    # Built-in reconnect with Last-Event-ID; on_open fires on every response head.
    with EventSource(
        url,
        timeout=READ_TIMEOUT,
        on_open=lambda: emit({"open": True}),
        on_error=lambda: emit({"error": "stream ended or failed"}),
    ) as source:
        try:
            for event in source:
                emit_event(event.last_event_id, event.type, event.data or "")
        except requests.RequestException as error:
            # It gives up after max_connect_retry failed connects in a row.
            fatal(f"requests-sse gave up: {error!r}")


def run_sseclient_requests(url: str) -> None:
    import requests
    import sseclient

    resume = Resume()
    while True:
        try:
            response = requests.get(
                url, stream=True, headers=resume.headers(), timeout=(CONNECT_TIMEOUT, READ_TIMEOUT)
            )
            check_head(response.status_code, response.headers.get("Content-Type"))
            emit({"open": True})
            # The stub asks for an Iterator; the README passes the Response (an Iterable).
            for event in sseclient.SSEClient(response).events():  # type: ignore[arg-type]
                resume.saw(event.id, event.retry)
                emit_event(event.id, event.event, event.data)
            emit({"closed": "end of stream"})
        except requests.RequestException as error:
            emit({"error": repr(error)})
        resume.wait()


def run_sseclient_urllib3(url: str) -> None:
    import sseclient
    import urllib3

    http = urllib3.PoolManager()
    resume = Resume()
    while True:
        try:
            response = http.request(
                "GET",
                url,
                preload_content=False,
                headers=resume.headers(),
                timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
            )
            check_head(response.status, response.headers.get("Content-Type"))
            emit({"open": True})
            for event in sseclient.SSEClient(response).events():
                resume.saw(event.id, event.retry)
                emit_event(event.id, event.event, event.data)
            response.release_conn()
            emit({"closed": "end of stream"})
        except urllib3.exceptions.HTTPError as error:
            emit({"error": repr(error)})
        resume.wait()


def run_httpx_sse(url: str) -> None:
    import httpx
    from httpx_sse import connect_sse

    resume = Resume()
    with httpx.Client(timeout=httpx.Timeout(CONNECT_TIMEOUT, read=READ_TIMEOUT)) as client:
        while True:
            try:
                with connect_sse(client, "GET", url, headers=resume.headers()) as source:
                    response = source.response
                    check_head(response.status_code, response.headers.get("content-type"))
                    emit({"open": True})
                    for sse in source.iter_sse():
                        resume.saw(sse.id, sse.retry)
                        emit_event(sse.id, sse.event, sse.data)
                emit({"closed": "end of stream"})
            except httpx.HTTPError as error:
                emit({"error": repr(error)})
            resume.wait()


def check_head(status: int, content_type: str | None) -> None:
    if status != 200:
        fatal(f"status {status}")
    if (content_type or "").split(";")[0].strip().lower() != "text/event-stream":
        fatal(f"content type {content_type!r}")


LIBS: dict[str, Callable[[str], None]] = {
    "requests-sse": run_requests_sse,
    "sseclient-requests": run_sseclient_requests,
    "sseclient-urllib3": run_sseclient_urllib3,
    "httpx-sse": run_httpx_sse,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lib", required=True, choices=sorted(LIBS))
    parser.add_argument("url")
    args = parser.parse_args()
    LIBS[args.lib](args.url)


if __name__ == "__main__":
    main()
