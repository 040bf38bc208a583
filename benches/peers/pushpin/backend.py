#!/usr/bin/env python3
"""GRIP backend for the Pushpin benchmark peer (standard library only).

Pushpin forwards each subscriber's request here; the answer tells Pushpin to hold the
connection open as a stream subscribed to the requested channel(s):

    GET /events?topic=T[&topic=U...]  ->  200, Grip-Hold: stream, Grip-Channel: T, U

Pushpin then keeps the client connection and appends whatever is published to those
channels through its control API (POST /publish/ on the handler's HTTP port). This
process only ever sees the initial subscribe request, never the events.

Usage: backend.py PORT   (binds 127.0.0.1:PORT)
"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # Subscribers may arrive in bursts of thousands; the default backlog is 5.
    request_queue_size = 4096


class GripHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = urlsplit(self.path)
        topics = parse_qs(url.query).get("topic", [])
        if url.path != "/events":
            self.reply(404, b"not found\n")
        elif not topics:
            self.reply(400, b"missing topic parameter\n")
        else:
            self.reply(
                200,
                b": subscribed\n\n",
                content_type="text/event-stream",
                headers={
                    "Cache-Control": "no-cache",
                    "Grip-Hold": "stream",
                    "Grip-Channel": ", ".join(topics),
                },
            )

    def reply(self, status, body, content_type="text/plain", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 - quiet: no access log
        pass


def main():
    port = int(sys.argv[1])
    server = Server(("127.0.0.1", port), GripHandler)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
