"""Logging: one line per event, human-readable or JSON, and never a secret.

Passwords and keys from the configuration are replaced wherever they would appear, and so are the signed
tokens in unsubscribe, preferences and confirmation links (each one is a key to a reader's subscription),
including in the web server's access log.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

_TOKEN_PATH = re.compile(r"/(unsubscribe|preferences|confirm)/[A-Za-z0-9_\-.~%]+")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class RedactSecrets(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _TOKEN_PATH.sub(r"/\1/[token]", message)
        for secret in self.secrets:
            if secret and len(secret) >= 4:
                redacted = redacted.replace(secret, "[secret]")
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


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


def setup(*, verbosity: int = 0, json_format: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(REDACTOR)
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
