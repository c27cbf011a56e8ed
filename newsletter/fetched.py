"""What a fetch hands to the sources, without the HTTP client: the ``Document`` that arrived, the
``FetchError`` when none could, and the words that describe a body in a message.

``newsletter.fetch`` makes these; the source kinds read them. Keeping them apart from the client lets the
sources (and the configuration, which asks each kind to check its entry) load without httpx.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from newsletter.errors import NewsletterError

TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class FetchError(NewsletterError):
    """A request that could not produce a usable response, with a message meant for the user."""

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        status: int | None = None,
        body: bytes = b"",
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.kind = kind  # dns | network | timeout | http | too_large | protocol | content
        self.status = status
        self.body = body
        self.retry_after = retry_after
        self.attempts = attempts

    @property
    def transient(self) -> bool:
        if self.kind == "dns":
            return False  # an unknown host, or no network at all: seconds of retrying change nothing
        if self.kind in ("network", "timeout", "protocol"):
            return True
        return self.kind == "http" and self.status in TRANSIENT_STATUSES

    @property
    def unreachable(self) -> bool:
        """The host could not be reached at all (no network, DNS failure, refused connection)."""
        return self.kind in ("dns", "network", "timeout")


@dataclass(slots=True)
class Document:
    """A fetched resource; ``not_modified`` means the server answered 304 and ``body`` is empty."""

    url: str
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    not_modified: bool = False
    attempts: int = 1

    @property
    def etag(self) -> str | None:
        return self.headers.get("etag")

    @property
    def last_modified(self) -> str | None:
        return self.headers.get("last-modified")

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


_HTML_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_HTML_START = re.compile(
    rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b", re.IGNORECASE | re.DOTALL
)


def looks_like_html(body: bytes) -> bool:
    return bool(_HTML_START.match(body[:2051].lstrip(b"\xef\xbb\xbf")[:2048]))


def describe_body(body: bytes, limit: int = 160) -> str:
    """A short, single-line description of a response body for error messages."""
    if not body.strip():
        return ""
    if looks_like_html(body):
        title = _HTML_TITLE.search(body[:65536])
        if title:
            text = " ".join(title.group(1).decode("utf-8", "replace").split())
            return f"HTML page titled {html.unescape(text)[:limit]!r}"
        return "an HTML page"
    text = " ".join(body[:4096].decode("utf-8", "replace").split())
    return text[:limit] + ("..." if len(text) > limit else "")
