"""A real HTTP server on 127.0.0.1 that serves feed files and scripted failures, for tests and benchmarks."""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/xml; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering
    truncate_to: int | None = None  # declare the full length but send only this many bytes, then hang up
    omit_length: bool = False  # no Content-Length: the body ends when the connection closes
    etag: str | None = None  # answer 304 when the request's If-None-Match matches
    last_modified: str | None = None  # answer 304 when If-Modified-Since matches exactly


@dataclass
class RecordedRequest:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    at: float  # time.monotonic() when the request arrived


Responder = Callable[[RecordedRequest], Reply]


def file_reply(path: Path, content_type: str = "application/xml; charset=utf-8") -> Reply:
    """Serve a file the way a well-behaved feed server does, with an ETag and a Last-Modified date."""
    body = path.read_bytes()
    return Reply(
        body=body,
        content_type=content_type,
        etag='"' + hashlib.sha1(body).hexdigest() + '"',
        last_modified=formatdate(path.stat().st_mtime, usegmt=True),
    )


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that hang up early (timeouts, size caps) are what several tests provoke on purpose.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class FeedServer:
    def __init__(self) -> None:
        self._routes: dict[str, list[Reply] | Responder] = {}
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, *replies: Reply) -> str:
        """Answer ``path`` with ``replies`` in turn; the last one repeats. Returns the full URL."""
        with self._lock:
            self._routes[path] = list(replies)
        return self.url(path)

    def respond(self, path: str, responder: Responder) -> str:
        with self._lock:
            self._routes[path] = responder
        return self.url(path)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next_reply(self, request: RecordedRequest) -> Reply:
        with self._lock:
            route = self._routes.get(request.path)
            if route is None:
                return Reply(
                    status=404, body=b"<html><title>Not Found</title></html>", content_type="text/html"
                )
            if callable(route):
                responder = route
            else:
                return route.pop(0) if len(route) > 1 else route[0]
        return responder(request)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        request = RecordedRequest(
            path=parts.path,
            query=parse_qs(parts.query),
            headers={k.lower(): v for k, v in handler.headers.items()},
            at=time.monotonic(),
        )
        with self._lock:
            self.requests.append(request)
        reply = self._next_reply(request)
        if reply.delay:
            time.sleep(reply.delay)
        try:
            if (reply.etag and request.headers.get("if-none-match") == reply.etag) or (
                reply.last_modified and request.headers.get("if-modified-since") == reply.last_modified
            ):
                handler.send_response(304)
                self._validators(handler, reply)
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            handler.send_response(reply.status)
            handler.send_header("Content-Type", reply.content_type)
            if not reply.omit_length:
                handler.send_header("Content-Length", str(len(reply.body)))
            self._validators(handler, reply)
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            hang_up = reply.truncate_to is not None or reply.omit_length
            if hang_up:
                handler.send_header("Connection", "close")
            handler.end_headers()
            body = reply.body if reply.truncate_to is None else reply.body[: reply.truncate_to]
            handler.wfile.write(body)
            handler.wfile.flush()
            if hang_up:
                handler.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first (timeouts, size caps): that is what the test wanted

    @staticmethod
    def _validators(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        if reply.etag:
            handler.send_header("ETag", reply.etag)
        if reply.last_modified:
            handler.send_header("Last-Modified", reply.last_modified)
