"""Logging: one line per event, human-readable or JSON, and never a secret.

Passwords and keys from the configuration are replaced wherever they would appear, and so are the signed
tokens in unsubscribe, preferences, confirmation and feedback links (each one is a key to a reader's
subscription or their library), in a path or in an edition page's ``?r=`` query, including in the web
server's access log.

A warning or error that repeats (a flood of refused connections, or the event loop failing to accept while
file descriptors run out) is logged at most once a minute, saying how many copies were left out.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

_TOKEN_PATH = re.compile(r"/(unsubscribe|preferences|confirm|feedback)/[A-Za-z0-9_\-.~%]+")
_TOKEN_QUERY = re.compile(r"([?&]r=)[^&#\s\"']+")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class RedactSecrets(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _TOKEN_QUERY.sub(r"\1[token]", _TOKEN_PATH.sub(r"/\1/[token]", message))
        for secret in self.secrets:
            if secret and len(secret) >= 4:
                redacted = redacted.replace(secret, "[secret]")
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


MAX_TRACKED = 10_000  # distinct messages whose repeats are held back


@dataclass(slots=True)
class _Repeats:
    since: float
    suppressed: int = 0


class RepeatedErrors(logging.Filter):
    """Lets a warning or error through once per ``window`` seconds when it repeats (the same first line
    from the same logger, with the same exception); the next one let through says how many copies were
    left out."""

    def __init__(self, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self.clock = clock
        self._seen: dict[tuple[str, int, str, str], _Repeats] = {}  # logger, level, first line, exception
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        exception = record.exc_info[1] if record.exc_info else None
        # The first line: asyncio puts the changing repr of a timer or socket on the lines after it.
        first_line, newline, rest = record.getMessage().partition("\n")
        key = (record.name, record.levelno, first_line, f"{type(exception).__name__}: {exception}")
        now = self.clock()
        with self._lock:
            repeats = self._seen.get(key)
            if repeats is not None and now - repeats.since < self.window:
                repeats.suppressed += 1
                return False
            if repeats is not None:
                del self._seen[key]  # inserted again below: the oldest message stays first
            elif len(self._seen) >= MAX_TRACKED:
                # A flood of distinct messages (one per client address...) must neither grow memory nor
                # cost more than a constant per line: forget the oldest.
                del self._seen[next(iter(self._seen))]
            self._seen[key] = _Repeats(since=now)
        if repeats is not None and repeats.suppressed:
            record.msg, record.args = f"{first_line} {_left_out(repeats.suppressed)}{newline}{rest}", ()
        return True

    def take_left_out(self) -> list[tuple[str, int, str, int]]:
        """(logger, level, first line, copies left out) for each message with copies not yet reported."""
        with self._lock:
            pending = [(key, repeats) for key, repeats in self._seen.items() if repeats.suppressed]
            taken = [
                (name, level, message, repeats.suppressed) for (name, level, message, _), repeats in pending
            ]
            for _, repeats in pending:
                repeats.suppressed = 0
        return taken


def _left_out(count: int) -> str:
    return f"[{count} identical message{'s' if count != 1 else ''} left out since this one was last logged]"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(
            {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


REDACTOR = RedactSecrets()
REPEATS = RepeatedErrors()


def setup(*, verbosity: int = 0, json_format: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(REDACTOR)
    handler.addFilter(REPEATS)
    if json_format:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING - 10 * min(verbosity, 2))


def hide_secrets(*values: str | None) -> None:
    """Register configured secrets so that no log line ever shows them."""
    REDACTOR.secrets.update(v for v in values if v)


def report_left_out() -> None:
    """Say how many copies of repeated messages were left out since each was last logged (at shutdown)."""
    for name, level, message, count in REPEATS.take_left_out():
        logging.getLogger(name).log(level, "%s %s", message, _left_out(count))
