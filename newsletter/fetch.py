"""HTTP fetching shared by every source: conditional GET, timeouts, bounded retries, a size cap, politeness.

One ``Fetcher`` (one ``httpx.Client``) serves a whole run. Requests to a host can be spaced
(``min_interval``: the arXiv API asks for 3 s between calls); transient failures (timeouts, dropped
connections, 408/429/5xx) are retried with exponential backoff, honouring ``Retry-After`` when sent.
Everything else becomes a ``fetched.FetchError`` whose message says what happened in words a user understands.
"""

from __future__ import annotations

import io
import logging
import os
import random
import stat
import threading
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import tenacity

from newsletter.fetched import Document, FetchError, describe_body
from newsletter.settings import FetchSettings

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 300.0


class _HostThrottle:
    """Keeps successive requests to one host at least ``interval`` seconds apart, across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._host_locks: dict[str, threading.Lock] = {}
        self._last_done: dict[str, float] = {}

    def lock_for(self, host: str) -> threading.Lock:
        with self._lock:
            return self._host_locks.setdefault(host, threading.Lock())

    def wait_turn(self, host: str, interval: float) -> None:
        last = self._last_done.get(host)
        if last is not None and interval > 0:
            remaining = last + interval - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)

    def done(self, host: str) -> None:
        self._last_done[host] = time.monotonic()


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - time.time()), MAX_RETRY_AFTER)


class Fetcher:
    """GETs URLs with the project's policies; safe to share between threads."""

    def __init__(self, settings: FetchSettings | None = None) -> None:
        self.settings = settings or FetchSettings()
        self._throttle = _HostThrottle()
        self._client = httpx.Client(
            headers={"User-Agent": self.settings.user_agent},
            timeout=httpx.Timeout(self.settings.timeout),
            follow_redirects=True,
            max_redirects=5,
        )

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def get(
        self,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        etag: str | None = None,
        last_modified: str | None = None,
        min_interval: float = 0.0,
        accept: str | None = None,
    ) -> Document:
        """Fetch ``url``; raises ``FetchError`` once retries are exhausted or on a permanent failure."""
        scheme = urlsplit(url).scheme.lower()
        if scheme == "file":
            return self._read_file(url)
        if scheme not in ("http", "https"):
            raise FetchError(f"unsupported URL scheme {scheme!r} in {url}", kind="content")
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        if accept:
            headers["Accept"] = accept
        # A host that asks for spacing between requests gets at least that much before a retry, too.
        first_wait = max(self.settings.backoff, min_interval)
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(max(1, self.settings.attempts)),
            wait=_BackoffWait(first_wait, self.settings.max_backoff),
            retry=tenacity.retry_if_exception(self._worth_retrying),
            before_sleep=lambda state: log.info(
                "retrying %s after attempt %d: %s", url, state.attempt_number, state.outcome.exception()
            ),
            reraise=True,
        )
        try:
            document = retrying(self._get_once, url, params, headers, min_interval)
        except FetchError as error:
            error.attempts = retrying.statistics.get("attempt_number", 1)
            if error.transient and error.retry_after and error.retry_after > self.settings.max_backoff:
                error.args = (
                    f"{error.args[0]} (the server asks to wait {error.retry_after:g} s: try later)",
                )
            elif error.transient and error.attempts > 1:
                error.args = (f"{error.args[0]} (gave up after {error.attempts} attempts)",)
            raise
        document.attempts = retrying.statistics.get("attempt_number", 1)
        return document

    def _worth_retrying(self, error: BaseException) -> bool:
        if not isinstance(error, FetchError) or not error.transient:
            return False
        # A server asking for a long pause is better asked again on the next scheduled run.
        return error.retry_after is None or error.retry_after <= self.settings.max_backoff

    def _get_once(
        self, url: str, params: Mapping[str, str | int] | None, headers: dict[str, str], min_interval: float
    ) -> Document:
        host = urlsplit(url).netloc.lower()
        with self._throttle.lock_for(host):
            self._throttle.wait_turn(host, min_interval)
            try:
                return self._request(url, params, headers)
            finally:
                self._throttle.done(host)

    def _request(self, url: str, params: Mapping[str, str | int] | None, headers: dict[str, str]) -> Document:
        cap = self.settings.max_bytes
        started = time.monotonic()
        try:
            with self._client.stream("GET", url, params=params, headers=headers) as response:
                final_url = str(response.url)
                response_headers = {k.lower(): v for k, v in response.headers.items()}
                if response.status_code == 304:
                    return Document(final_url, 304, b"", response_headers, not_modified=True)
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > cap:
                    raise FetchError(
                        f"response of {_size(int(declared))} exceeds the {_size(cap)} size cap",
                        kind="too_large",
                        status=response.status_code,
                    )
                # One growing buffer whose bytes become the body without a copy: a list of chunks
                # joined at the end would hold the body twice.
                buffer = io.BytesIO()
                received = 0
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    if received > cap:
                        raise FetchError(
                            f"response exceeds the {_size(cap)} size cap (stopped reading)",
                            kind="too_large",
                            status=response.status_code,
                        )
                    if time.monotonic() - started > self.settings.deadline:
                        raise FetchError(
                            f"response still arriving after {self.settings.deadline:g} s; gave up",
                            kind="timeout",
                        )
                    buffer.write(chunk)
                body = buffer.getvalue()
                del buffer
                status = response.status_code
                if status >= 400:
                    raise FetchError(
                        f"HTTP {status} {response.reason_phrase or ''}".rstrip() + _body_hint(body),
                        kind="http",
                        status=status,
                        body=body[:65536],
                        retry_after=_retry_after_seconds(response.headers.get("retry-after")),
                    )
                return Document(final_url, status, body, response_headers)
        except httpx.TimeoutException as exc:
            raise FetchError(
                f"timed out after {self.settings.timeout:g} s ({type(exc).__name__})", kind="timeout"
            ) from exc
        except httpx.RemoteProtocolError as exc:
            raise FetchError(
                f"connection closed before the whole response arrived ({exc})", kind="protocol"
            ) from exc
        except httpx.TooManyRedirects as exc:
            raise FetchError("too many redirects", kind="http") from exc
        except httpx.TransportError as exc:
            reason, kind = _transport_reason(exc)
            raise FetchError(f"could not connect: {reason}", kind=kind) from exc

    def _read_file(self, url: str) -> Document:
        """A local feed: only a regular file, read with the same size cap as a response."""
        path = Path(unquote(urlsplit(url).path))
        cap = self.settings.max_bytes
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer before the checks below refuse it.
            descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError as exc:
            raise FetchError(f"cannot read {path}: {exc.strerror or exc}", kind="network") from exc
        try:
            info = os.fstat(descriptor)
            kind = _file_kind(info.st_mode)
            if kind != "regular file":
                raise FetchError(f"cannot read {path}: it is a {kind}, not a regular file", kind="content")
            if info.st_size > cap:
                raise FetchError(
                    f"file of {_size(info.st_size)} exceeds the {_size(cap)} size cap", kind="too_large"
                )
            with open(descriptor, "rb", closefd=False) as file:
                body = file.read(cap + 1)  # a file that grows while it is read still stops at the cap
        except OSError as exc:
            raise FetchError(f"cannot read {path}: {exc.strerror or exc}", kind="network") from exc
        finally:
            os.close(descriptor)
        if len(body) > cap:
            raise FetchError(f"file exceeds the {_size(cap)} size cap (stopped reading)", kind="too_large")
        return Document(url, 200, body, {})


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISFIFO, "named pipe"),
        (stat.S_ISSOCK, "socket"),
    )
    return next((name for test, name in kinds if test(mode)), "special file")


class _BackoffWait(tenacity.wait.wait_base):
    """Exponential backoff with a little jitter; a server's Retry-After wins when it asks for longer."""

    def __init__(self, first: float, ceiling: float) -> None:
        self.first = first
        self.ceiling = ceiling

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exponential = self.first * 2 ** (retry_state.attempt_number - 1)
        wait = min(self.ceiling, exponential * random.uniform(1.0, 1.2))
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, FetchError) and error.retry_after is not None:
            wait = max(wait, error.retry_after)
        return wait


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} bytes"
    if n < 1_000_000:
        return f"{n / 1000:.1f} KB"
    return f"{n / 1_000_000:.1f} MB"


_DNS_FAILURES = ("name or service not known", "temporary failure in name resolution", "nodename nor servname")


def _transport_reason(exc: httpx.TransportError) -> tuple[str, str]:
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if any(marker in lowered for marker in _DNS_FAILURES):
        return f"host name could not be resolved ({text})", "dns"
    if "connection refused" in lowered:
        return f"connection refused ({text})", "network"
    return text, "network"


def _body_hint(body: bytes) -> str:
    hint = describe_body(body)
    return f": {hint}" if hint else ""
