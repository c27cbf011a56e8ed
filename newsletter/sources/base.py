"""What every source kind shares: what a kind is, the result of collecting it, body checks, helpers."""

from __future__ import annotations

import hashlib
import io
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import defusedxml
import defusedxml.ElementTree as SafeET

from newsletter.errors import SourceError
from newsletter.fetched import Document, describe_body, looks_like_html
from newsletter.models import Paper, ParsedFeed
from newsletter.settings import SourceConfig

if TYPE_CHECKING:  # collectors only call its get(): the sources load without the HTTP client
    from newsletter.fetch import Fetcher

Entry = TypeVar("Entry")


@dataclass(slots=True)
class SourceState:
    """What the last successful fetch left behind for a conditional GET next time."""

    etag: str | None = None
    last_modified: str | None = None
    body_sha256: str | None = None
    last_success_at: datetime | None = None


@dataclass(slots=True)
class Collected:
    papers: list[Paper] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    not_modified: bool = False
    documents_parsed: int = 0
    requests: int = 0
    state: SourceState = field(default_factory=SourceState)


Progress = Callable[[str], None]


def _no_progress(_message: str) -> None:
    return None


NO_PROGRESS: Progress = _no_progress


# --- body checks ----------------------------------------------------------------------------------------


def check_body(document: Document, *, expected: str) -> None:
    """Reject bodies that cannot be what a source expects, with a message that says what arrived instead."""
    body = document.body
    if not body or body.isspace():  # strip() would copy a whole large body
        raise SourceError(f"empty response body (HTTP {document.status})")
    if document.content_type == "text/html" or looks_like_html(body):
        raise SourceError(f"expected {expected} but got {describe_body(body)} (HTTP {document.status})")


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class XmlStream:
    """An XML document read as a stream, strictly (defusedxml: entity declarations and external references
    are refused). ``root`` is the document element as soon as its start tag is read; ``entries(tag,
    depth)`` hands out each such element once it is complete and then drops it from the tree, so a large
    feed is never held as a whole tree. Once the entries are read, ``root`` holds everything else."""

    def __init__(self, body: bytes) -> None:
        self._events = SafeET.iterparse(io.BytesIO(body), events=("start", "end"))
        _start, self.root = self._next()
        self._stack = [self.root]
        self.entries_seen = 0

    def entries(self, tag: str, depth: int) -> Iterator[ET.Element]:
        """The elements named ``tag`` at ``depth`` below the root (channel items are at depth 2)."""
        stack = self._stack
        while True:
            try:
                event, element = self._next()
            except StopIteration:
                return
            if event == "start":
                stack.append(element)
                continue
            stack.pop()
            if element.tag == tag and len(stack) == depth:
                self.entries_seen += 1
                yield element
                stack[-1].remove(element)

    def _next(self) -> tuple[str, ET.Element]:
        try:
            return next(self._events)
        except ET.ParseError as exc:
            line, column = exc.position
            raise SourceError(f"malformed XML at line {line}, column {column}: {_expat_reason(exc)}") from exc
        except defusedxml.DefusedXmlException as exc:
            raise SourceError(f"refused unsafe XML: {exc}") from exc


def _expat_reason(exc: ET.ParseError) -> str:
    return str(exc).split(":", 1)[0]


# --- kinds ----------------------------------------------------------------------------------------------


Parser = Callable[[bytes, Document], ParsedFeed]
Collector = Callable[[SourceConfig, "Fetcher", SourceState, Progress], Collected]
Configure = Callable[[Mapping[str, Any]], SourceConfig]


@dataclass(frozen=True, slots=True)
class SourceKind:
    """A kind of source: how its [[sources]] entry (the checked values it sets) becomes a SourceConfig, or
    raises a SettingError naming the key at fault; how it is collected; and the lines ``newsletter init``
    writes about it."""

    configure: Configure
    collect: Collector
    about: tuple[str, ...]


def entry_config(entry: Mapping[str, Any], **kind_defaults: Any) -> SourceConfig:
    """The entry as a SourceConfig: what it sets, else the kind's defaults, else SourceConfig's own; the url
    is empty when none is known yet (an empty url counts as none)."""
    given = {key: value for key, value in entry.items() if key != "url" or value}
    return SourceConfig(**({"url": ""} | kind_defaults | given))


# --- single-document sources ----------------------------------------------------------------------------


def document_collector(parse: Parser, *, expected: str, accept: str) -> Collector:
    """The collector of a source that is one document (a feed, a JSON list) at its configured URL."""

    def collect(
        config: SourceConfig, fetcher: Fetcher, state: SourceState, progress: Progress = NO_PROGRESS
    ) -> Collected:
        return collect_document(
            config.url, fetcher, state, parse, expected=expected, accept=accept, progress=progress
        )

    return collect


def collect_document(
    url: str,
    fetcher: Fetcher,
    state: SourceState,
    parse: Parser,
    *,
    expected: str,
    accept: str,
    progress: Progress = NO_PROGRESS,
) -> Collected:
    """Conditional GET of one document, then parse it unless the server says or the bytes show it is unchanged."""
    progress("requesting")
    document = fetcher.get(url, etag=state.etag, last_modified=state.last_modified, accept=accept)
    if document.not_modified:
        return Collected(not_modified=True, requests=document.attempts, state=state)
    digest = body_digest(document.body)
    new_state = SourceState(
        etag=document.etag,
        last_modified=document.last_modified,
        body_sha256=digest,
    )
    if state.body_sha256 == digest:
        # Servers without ETag/Last-Modified support still send the same bytes for an unchanged feed.
        return Collected(not_modified=True, requests=document.attempts, state=new_state)
    check_body(document, expected=expected)
    progress(f"parsing {len(document.body) / 1000:.0f} KB")
    parsed = parse(document.body, document)
    return Collected(
        papers=parsed.papers,
        problems=parsed.problems,
        documents_parsed=1,
        requests=document.attempts,
        state=new_state,
    )


# --- helpers for parsers --------------------------------------------------------------------------------


def read_entries(result: ParsedFeed, entries: Iterable[Entry], read: Callable[[Entry], Paper]) -> ParsedFeed:
    """Read each entry into a paper; an entry that cannot be read is skipped and said, never fatal."""
    for position, entry in enumerate(entries, start=1):
        try:
            result.papers.append(read(entry))
        except (ValueError, TypeError, AttributeError) as exc:
            result.problems.append(f"entry {position} skipped: {exc}")
    return result


def safe_url(url: str | None) -> str | None:
    """The URL if it is an absolute http(s) URL; ``javascript:`` and friends never leave the parser."""
    if not url:
        return None
    url = url.strip().replace(" ", "%20")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return None
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


def parse_date(value: str | None) -> datetime | None:
    """RFC 822 (RSS) or ISO 8601 (Atom, JSON) dates as aware UTC datetimes; None when unreadable."""
    if not value:
        return None
    value = value.strip()
    parsed: datetime | None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def unique(values: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for value in values:
        if value and value not in seen:
            seen.add(value)
            out.append(value)
    return out
