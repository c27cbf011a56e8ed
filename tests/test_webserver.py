"""The web server against hostile and careless clients: oversized and slow requests, many connections from
one client, a forged Host header; and `serve` / `run` starting on a bad or taken port. Real `newsletter
serve` subprocesses (and a real uvicorn) hit by raw sockets, with bounded counts and bounded waits."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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


# --- item 7: slow clients and greedy clients -----------------------------------------------------------------


def test_trickling_headers_are_cut_off_after_the_header_timeout(tmp_path):
    server = ServeProcess(tmp_path, "header_timeout = 2\n")
    try:
        tricklers = [server.connect("127.0.0.3") for _ in range(3)]
        request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: " + b"a" * 40 + b"\r\n\r\n"
        answers: dict[socket.socket, bytes] = {}
        for byte in request[:-4]:  # one byte a second; the headers never end within the loop
            waiting = [sock for sock in tricklers if sock not in answers]
            if not waiting:
                break
            for sock in waiting:
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    answers[sock] = b""
            for sock in select.select(waiting, [], [], 1.0)[0]:
                answers[sock] = read_response(sock, bound=5)
        assert len(answers) == 3, "trickling connections were still open when their headers were due"
        assert [status(answer) for answer in answers.values()] == [408] * 3, answers
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        for sock in tricklers:
            sock.close()
    finally:
        server.stop()
    closed = [line for line in server.log().splitlines() if "request headers did not arrive" in line]
    # Three identical lines about one client: the first, then the count of the others at shutdown.
    assert len(closed) == 2 and "[2 identical messages left out" in closed[1], closed


def test_a_body_sent_too_slowly_gets_408(tmp_path):
    server = ServeProcess(tmp_path, "body_timeout = 2\n")
    try:
        with server.connect("127.0.0.3") as sock:
            sock.sendall(
                b"POST /subscribe HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
            )
            answer = b""
            for _ in range(90):  # one byte a second: the 100 bytes would take longer
                try:
                    sock.send(b"a")
                except OSError:
                    break
                if select.select([sock], [], [], 1.0)[0]:
                    answer = read_response(sock, bound=5)
                    break
        assert status(answer) == 408, answer
        assert httpx.get(f"{server.url}/healthz").status_code == 200
    finally:
        server.stop()
    assert "Traceback" not in server.log()


def test_one_client_cannot_take_every_connection(server):
    greedy = [server.connect("127.0.0.2") for _ in range(40)]
    try:
        answers = []
        for sock in greedy:
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            except OSError:
                answers.append(b"")
                continue
            answers.append(read_response(sock, bound=10))
        served = [answer for answer in answers if status(answer) == 200]
        assert len(served) == 5 and answers.count(b"") == 35, answers
        # Another client is served meanwhile.
        with server.connect("127.0.0.4") as other:
            other.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert status(read_response(other)) == 200
    finally:
        for sock in greedy:
            sock.close()
    server.stop()
    refusals = [line for line in server.log().splitlines() if "refusing connections from 127.0.0.2" in line]
    # 35 refused connections: the first is logged, the count of the others at shutdown.
    assert len(refusals) == 2 and "[34 identical messages left out" in refusals[1], refusals


def test_connections_beyond_max_connections_are_closed_at_once(tmp_path):
    server = ServeProcess(tmp_path, "header_timeout = 60\nmax_connections = 3\n")
    try:
        held = [server.connect(f"127.0.0.{10 + n}") for n in range(3)]  # three clients, one connection each
        for sock in held:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert status(read_response(sock)) == 200
        with server.connect("127.0.0.20") as late:
            with contextlib.suppress(OSError):
                late.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert read_response(late) == b""  # closed without an answer
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 30  # room again once the server has seen them go
        while True:
            with server.connect("127.0.0.20") as late:
                late.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                if status(read_response(late)) == 200:
                    break
            assert time.monotonic() < deadline, "no connection was accepted after the others closed"
            time.sleep(0.1)
    finally:
        server.stop()


def test_a_crowd_of_clients_neither_stops_the_server_nor_floods_the_log(tmp_path):
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 256:
        pytest.skip(f"the hard limit on open files is {hard}")

    def few_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    server = ServeProcess(tmp_path, "header_timeout = 60\n", preexec=few_files)
    crowd: list[socket.socket] = []
    try:
        for n in range(400):  # 100 clients, 4 connections each: within the per-client limit
            sock = server.connect(f"127.0.{1 + n // 100}.{1 + n % 100}")
            crowd.append(sock)
            with contextlib.suppress(OSError):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answers = [read_response(sock) for sock in crowd]
        assert 0 < sum(status(answer) == 200 for answer in answers) < 400
    finally:
        for sock in crowd:
            sock.close()
    deadline = time.monotonic() + 30  # served again once the crowd has gone
    while not server.answers():
        assert time.monotonic() < deadline, "the server did not answer after the crowd had gone"
        time.sleep(0.1)
    server.stop()
    # With so few files the event loop may still run out while it accepts a burst of connections; each
    # kind of error is then logged once (and once more with its count at shutdown), not once per attempt.
    log = [line for line in server.log().splitlines() if "uvicorn.access" not in line]
    assert len([line for line in log if "out of system resource" in line]) <= 2
    assert len([line for line in log if "refusing new connections" in line]) <= 2
    assert len(log) < 200, log[:50]


def test_serve_raises_the_open_files_limit_to_the_hard_limit(tmp_path):
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 256:
        pytest.skip(f"the hard limit on open files is {hard}: nothing to raise")

    def lower_the_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    server = ServeProcess(tmp_path, preexec=lower_the_soft_limit)
    try:
        limits = Path(f"/proc/{server.process.pid}/limits").read_text()
        [line] = [line for line in limits.splitlines() if line.startswith("Max open files")]
        assert line.split()[3:5] == [str(hard), str(hard)]
    finally:
        server.stop()


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


def test_a_flood_of_distinct_errors_keeps_a_bounded_record_of_repeats():
    from newsletter.logs import MAX_TRACKED, RepeatedErrors

    repeats = RepeatedErrors(window=60, clock=lambda: 0.0)  # every line within one window

    def warning(text: str) -> logging.LogRecord:
        return logging.LogRecord("test.flood", logging.WARNING, __file__, 1, text, (), None)

    # One line per client address, as the connection refusals say: none repeats, all are let through.
    addresses = [f"refusing connections from 2001:db8::{n:x}" for n in range(MAX_TRACKED + 5000)]
    assert all(repeats.filter(warning(text)) for text in addresses)
    assert len(repeats._seen) == MAX_TRACKED  # the oldest are forgotten, memory stays bounded
    assert not repeats.filter(warning(addresses[-1]))  # the recent ones are still held back
    assert repeats.filter(warning(addresses[0]))  # a forgotten one is let through again


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


# --- items 15 and 17: starting on a bad or taken port --------------------------------------------------------


def newsletter(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "newsletter", "--db", str(cwd / "news.db"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("command", ["serve", "run"])
def test_a_port_out_of_range_is_a_usage_error_in_one_line(tmp_path, command):
    result = newsletter(command, "--port", "99999", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --port must be a number from 1 to 65535, not 99999"]


@pytest.mark.parametrize("command", ["serve", "run"])
def test_a_port_in_use_is_one_line_naming_it(tmp_path, command):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = newsletter(command, "--port", str(port), cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot listen on 127.0.0.1:{port}: the port is already in use"), line


def test_serve_warns_when_base_url_names_another_port(tmp_path):
    server = ServeProcess(tmp_path, 'base_url = "http://127.0.0.1:8000"\n')
    server.stop()
    warnings = [line for line in server.log().splitlines() if "base_url" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0]
    assert f"listening on port {server.port}" in warnings[0] and "points to port 8000" in warnings[0]

    (tmp_path / "proxied").mkdir()
    quiet = ServeProcess(tmp_path / "proxied", 'base_url = "https://news.example.org"\n')
    quiet.stop()
    assert "base_url" not in quiet.log()


def test_run_stops_the_scheduler_after_the_web_app_on_sigterm(tmp_path):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "cleanup.toml").write_text('cron = "0 4 1 1 *"\naction = "cleanup"\n')
    run = ServeProcess(
        tmp_path, command="run", more_config='[scheduler]\njobs = "jobs"\nmisfire_grace_time = 1\n'
    )
    run.process.send_signal(signal.SIGTERM)
    assert run.process.wait(timeout=60) == 0, run.log()
    assert "scheduler stopped" in run.log()
