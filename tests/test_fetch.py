"""The HTTP layer against a real local server: conditional GET, retries, timeouts, truncation, size cap."""

from __future__ import annotations

import itertools
import os
import resource
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from newsletter.fetch import Fetcher
from newsletter.fetched import Document, FetchError
from newsletter.settings import FetchSettings
from tests.support.feedserver import Reply
from tests.test_cli import config_with_sources

FEED = b"<?xml version='1.0'?><rss version='2.0'><channel><title>t</title></channel></rss>"


def test_conditional_get_with_etag_and_last_modified(feed_server, fetcher):
    url = feed_server.route(
        "/feed", Reply(body=FEED, etag='"v1"', last_modified="Mon, 06 Jan 2025 10:00:00 GMT")
    )
    first = fetcher.get(url)
    assert (first.status, first.body, first.etag, first.not_modified) == (200, FEED, '"v1"', False)
    assert first.last_modified == "Mon, 06 Jan 2025 10:00:00 GMT"
    second = fetcher.get(url, etag=first.etag, last_modified=first.last_modified)
    assert second.not_modified and second.status == 304 and second.body == b""
    sent = feed_server.requests_to("/feed")[1].headers
    assert sent["if-none-match"] == '"v1"'
    assert sent["if-modified-since"] == "Mon, 06 Jan 2025 10:00:00 GMT"


def test_user_agent_names_the_project(feed_server, fetcher):
    fetcher.get(feed_server.route("/feed", Reply(body=FEED)))
    assert feed_server.requests[0].headers["user-agent"].startswith("newsletter/")


def test_server_error_is_retried_then_reported(feed_server, fetcher):
    url = feed_server.route("/broken", Reply(status=500, body=b"oops", content_type="text/plain"))
    with pytest.raises(FetchError) as caught:
        fetcher.get(url)
    assert caught.value.status == 500
    assert "HTTP 500" in str(caught.value) and "gave up after 3 attempts" in str(caught.value)
    assert len(feed_server.requests_to("/broken")) == 3


def test_429_then_200_succeeds_after_waiting_retry_after(feed_server, fetcher):
    url = feed_server.route(
        "/busy",
        Reply(status=429, body=b"slow down", content_type="text/plain", headers={"Retry-After": "1"}),
        Reply(body=FEED),
    )
    started = time.monotonic()
    document = fetcher.get(url)
    assert document.body == FEED and document.attempts == 2
    first, second = feed_server.requests_to("/busy")
    assert second.at - first.at >= 0.95  # the server's Retry-After, though our own backoff is 0.05 s
    assert time.monotonic() - started < 10


def test_client_errors_are_not_retried(feed_server, fetcher):
    url = feed_server.route(
        "/gone",
        Reply(status=404, body=b"<html><title>Page not found</title></html>", content_type="text/html"),
    )
    with pytest.raises(FetchError, match="HTTP 404 Not Found: HTML page titled 'Page not found'"):
        fetcher.get(url)
    assert len(feed_server.requests_to("/gone")) == 1


def test_slow_response_times_out(feed_server, fetcher):
    url = feed_server.route("/slow", Reply(body=FEED, delay=2.5))
    with pytest.raises(FetchError) as caught:
        fetcher.get(url)
    assert caught.value.kind == "timeout"
    assert "timed out after 1 s" in str(caught.value)


def test_truncated_body_is_an_error_not_a_short_feed(feed_server, fetcher):
    url = feed_server.route("/cut", Reply(body=FEED * 50, truncate_to=100))
    with pytest.raises(FetchError) as caught:
        fetcher.get(url)
    assert caught.value.kind == "protocol"
    assert "connection closed before the whole response arrived" in str(caught.value)


def test_declared_oversize_body_is_refused_without_reading(feed_server):
    with Fetcher(FetchSettings(max_bytes=10_000, attempts=1)) as small:
        url = feed_server.route("/big", Reply(body=b"x" * 50_000))
        with pytest.raises(FetchError, match=r"response of 50.0 KB exceeds the 10.0 KB size cap") as caught:
            small.get(url)
    assert caught.value.kind == "too_large"


def test_undeclared_oversize_body_is_cut_off_while_streaming(feed_server):
    with Fetcher(FetchSettings(max_bytes=10_000, attempts=1)) as small:
        url = feed_server.route("/stream", Reply(body=b"x" * 200_000, omit_length=True))
        with pytest.raises(FetchError, match=r"exceeds the 10\.0 KB size cap") as caught:
            small.get(url)
    assert caught.value.kind == "too_large"


def test_dns_failure_is_reported_at_once(fetcher):
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        fetcher.get("http://no-such-host.invalid/feed")
    assert caught.value.unreachable and not caught.value.transient
    assert "could not connect" in str(caught.value)
    assert time.monotonic() - started < 5


def test_refused_connection_is_unreachable(fetcher):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FetchError, match="connection refused") as caught:
        fetcher.get(f"http://127.0.0.1:{port}/feed")
    assert caught.value.unreachable


def test_requests_to_one_host_are_spaced(feed_server, fetcher):
    url = feed_server.route("/api", Reply(body=FEED))
    for _ in range(3):
        fetcher.get(url, min_interval=0.4)
    times = [r.at for r in feed_server.requests_to("/api")]
    assert all(later - earlier >= 0.39 for earlier, later in itertools.pairwise(times))


def test_file_urls_and_unsupported_schemes(tmp_path, fetcher):
    path = tmp_path / "feed.xml"
    path.write_bytes(FEED)
    assert fetcher.get(path.as_uri()).body == FEED
    with pytest.raises(FetchError, match="unsupported URL scheme 'ftp'"):
        fetcher.get("ftp://example.org/feed")
    with pytest.raises(FetchError, match="cannot read"):
        fetcher.get((tmp_path / "missing.xml").as_uri())


def test_file_urls_read_only_regular_files_and_stop_at_the_cap(tmp_path):
    fetcher = Fetcher(FetchSettings(max_bytes=1024))
    big = tmp_path / "big.xml"
    big.write_bytes(b"x" * 2000)
    with pytest.raises(FetchError, match=r"exceeds the 1\.0 KB size cap") as caught:
        fetcher.get(big.as_uri())
    assert caught.value.kind == "too_large"
    # A /proc file says it holds 0 bytes and then gives more: only cap + 1 bytes are ever read.
    maps = Path("/proc/self/maps")
    if maps.exists():
        with pytest.raises(FetchError, match="size cap") as caught:
            fetcher.get(maps.as_uri())
        assert caught.value.kind == "too_large"
    # (file:///dev/zero is tried through the program, with its memory bounded, in the next test.)
    with pytest.raises(FetchError, match="it is a directory"):
        fetcher.get(tmp_path.as_uri())

    # A named pipe nobody writes to: refused at once, not waited on (the read runs in a thread so that a
    # hang shows as a failure; a writer is then connected to free it).
    fifo = tmp_path / "feed.pipe"
    os.mkfifo(fifo)
    outcome: list[BaseException | Document] = []
    reader = threading.Thread(
        target=lambda: outcome.append(_get_or_error(fetcher, fifo.as_uri())), daemon=True
    )
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():
        os.close(os.open(fifo, os.O_WRONLY))
        reader.join(timeout=10)
        pytest.fail("reading a named pipe waited for a writer")
    assert isinstance(outcome[0], FetchError) and "it is a named pipe, not a regular file" in str(outcome[0])
    fetcher.close()


def _get_or_error(fetcher: Fetcher, url: str) -> BaseException | Document:
    try:
        return fetcher.get(url)
    except FetchError as error:
        return error


def test_a_dev_zero_source_fails_at_once_and_the_other_sources_are_fetched(tmp_path, fixtures):
    config = config_with_sources(
        tmp_path,
        [
            ("zero", "feed", "file:///dev/zero"),
            ("good", "arxiv_rss", (fixtures / "arxiv_rss_small.xml").as_uri()),
        ],
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    environment["COLUMNS"] = "200"

    def address_space_limit() -> None:
        # Without the fix the process reads /dev/zero until it runs out of memory: keep that bounded.
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    result = subprocess.run(
        [sys.executable, "-m", "newsletter", "--config", str(config), "fetch"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=address_space_limit,
    )
    assert result.returncode == 1, result.stderr
    assert "zero failed: cannot read /dev/zero: it is a character device, not a regular file" in result.stdout
    assert "1 of 2 sources failed: zero" in result.stderr and "Traceback" not in result.stderr
    with sqlite3.connect(tmp_path / "news.db") as conn:
        assert conn.execute("SELECT count(*) FROM papers").fetchone()[0] > 0  # the file:// feed still works


def test_a_long_retry_after_is_not_waited_for(feed_server, fetcher):
    url = feed_server.route(
        "/later",
        Reply(status=503, body=b"maintenance", content_type="text/plain", headers={"Retry-After": "3600"}),
    )
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"asks to wait 300 s: try later"):
        fetcher.get(url)
    assert time.monotonic() - started < 2
    assert len(feed_server.requests_to("/later")) == 1
