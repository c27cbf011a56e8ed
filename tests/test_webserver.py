"""The web server against hostile and careless clients: oversized and slow requests, many connections from
one client, a forged Host header; and `serve` / `run` starting on a bad or taken port. Real `newsletter
serve` subprocesses (and a real uvicorn) hit by raw sockets, with bounded counts and bounded waits."""

from __future__ import annotations

import logging
import os
import re
import select
import socket

import httpx
import pytest

from newsletter.config import load_settings
from newsletter.web import create_app
from tests.support.webserver import RunningApp, ServeProcess

GIB = 1 << 30


@pytest.fixture
def server(tmp_path):
    process = ServeProcess(tmp_path, "header_timeout = 60\nmax_connections_per_client = 5\n")
    yield process
    process.stop()


def read_response(sock: socket.socket, bound: float = 10) -> bytes:
    """What the server answers, until it closes the connection or ``bound`` seconds pass."""
    sock.settimeout(bound)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
            if b"\r\n\r\n" in received and b"connection: close" not in received.lower():
                break
    except (TimeoutError, ConnectionResetError):
        pass
    return received


def status(response: bytes) -> int | None:
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", response)
    return int(match.group(1)) if match else None


# --- item 6: request bodies are capped before anything reads them ---------------------------------------------


@pytest.mark.parametrize("path", ["/admin/login", "/admin/import", "/subscribe"])
def test_a_body_announced_too_large_is_refused_before_it_is_sent(server, path):
    with server.connect() as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {GIB}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n\r\n".encode()
        )
        response = read_response(sock)  # not one byte of the body was sent
    assert status(response) == 413, response
    assert b"too large" in response
    assert os.listdir(server.tmpdir) == [] and server.open_files_under(server.tmpdir) == []
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_a_chunked_upload_is_cut_off_at_the_cap_without_touching_the_disk(server):
    head = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\n"
    )
    piece = b"x" * 32768
    with server.connect() as sock:
        sock.sendall(
            b"POST /admin/login HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
        )
        sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        sent = 0
        answered = False
        while sent < 4_000_000 and not answered:  # 4 MB: more than Starlette keeps in memory (1 MB)
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            except OSError:  # closed after answering
                break
            sent += len(piece)
            answered = bool(select.select([sock], [], [], 0.1)[0])
            assert server.open_files_under(server.tmpdir) == []
        response = read_response(sock)
    assert status(response) == 413, (sent, response)
    assert sent < 1_000_000  # refused at the cap, long before the end of the body
    assert os.listdir(server.tmpdir) == [] and server.open_files_under(server.tmpdir) == []


def test_repeated_identical_errors_are_logged_once_with_a_count(tmp_path):
    from newsletter.logs import RepeatedErrors

    now = [0.0]
    repeats = RepeatedErrors(window=60, clock=lambda: now[0])
    log_file = tmp_path / "log.txt"
    handler = logging.FileHandler(log_file)
    handler.addFilter(repeats)
    logger = logging.getLogger("test.repeats")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        for _ in range(1000):
            try:
                raise OSError(24, "Too many open files")
            except OSError:
                logger.exception("socket.accept() out of system resource")
        logger.error("something else")
        logger.info("info lines are never held back")
        logger.info("info lines are never held back")
        now[0] = 61.0
        try:
            raise OSError(24, "Too many open files")
        except OSError:
            logger.exception("socket.accept() out of system resource")
    finally:
        logger.removeHandler(handler)
        handler.close()
    lines = log_file.read_text().splitlines()
    messages = [line for line in lines if not line.startswith(("Traceback", "  ", "OSError"))]
    assert messages == [
        "socket.accept() out of system resource",
        "something else",
        "info lines are never held back",
        "info lines are never held back",
        "socket.accept() out of system resource [999 identical messages left out since this one was last "
        "logged]",
    ]


# --- item 10: redirects never follow the Host header ---------------------------------------------------------


def test_the_trailing_slash_redirect_stays_on_the_site(tmp_path):
    settings = load_settings(None, database=tmp_path / "news.db", environ={})
    app = RunningApp(create_app(settings))
    try:
        for path in ("/editions/", "/subscribe/?from=x"):
            response = httpx.get(f"{app.url}{path}", headers={"Host": "evil.example"})
            assert response.status_code == 307
            location = response.headers["location"]
            assert location == path.replace("/?", "?").rstrip("/") and "evil" not in location
        followed = httpx.get(f"{app.url}/editions/", follow_redirects=True)
        assert followed.status_code == 200 and str(followed.url) == f"{app.url}/editions"
        for path in ("//evil.example/", "/%5Cevil.example/"):
            response = httpx.get(f"{app.url}{path}", headers={"Host": "evil.example"})
            assert response.status_code == 404 and "location" not in response.headers
    finally:
        app.stop()
