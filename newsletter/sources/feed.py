"""Any RSS 0.9x / 1.0 / 2.0 or Atom feed, read with feedparser (journal tables of contents, PubMed...).

Publishers put the abstract, the DOI and the byline in different places: the longest of the description
and the content is taken as the text, an "Abstract" heading in it marks where the abstract starts, and the
DOI is looked for in the PRISM / Dublin Core fields, the guid, the link and finally the text itself.
"""

from __future__ import annotations

import re
from calendar import timegm
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import feedparser

from newsletter import ids
from newsletter.errors import SourceError
from newsletter.fetched import Document
from newsletter.models import Paper, ParsedFeed
from newsletter.sources.base import (
    SourceKind,
    document_collector,
    entry_config,
    read_entries,
    safe_url,
    unique,
)
from newsletter.sources.pieces import feed_pieces
from newsletter.text import clean_authors, clean_text, html_to_text, split_authors

_ABSTRACT_HEADING = re.compile(r"^[ \t]*abstract\b[ \t]*[:.]?[ \t]*\n?", re.IGNORECASE | re.MULTILINE)
_BYLINE = re.compile(r"^[ \t]*authors?[ \t]*:[ \t]*(?P<names>.+)$", re.IGNORECASE | re.MULTILINE)
# Lines after an abstract that are navigation or identifiers, not prose ("PDF", "PMID: 123 | DOI: ...").
_TRAILER_LINE = re.compile(r"^\s*(?:(?:\S+\s*){1,3}|(?:pmid|doi)\s*:.*)$", re.IGNORECASE)


def parse(body: bytes, document: Document | None = None) -> ParsedFeed:
    headers = dict(document.headers) if document else {}
    pieces = feed_pieces(body)  # a large feed is read a piece at a time
    parsed = _feedparser(next(pieces), headers)
    if not parsed.entries:
        if parsed.bozo:
            raise SourceError(f"not a readable feed: {_bozo_reason(parsed)}")
        if not parsed.version:
            raise SourceError("not an RSS or Atom feed (no feed elements found)")
    result = ParsedFeed()
    bozo = _bozo_reason(parsed) if parsed.bozo and parsed.entries else None
    venue = clean_text(parsed.feed.get("prism_publicationname") or parsed.feed.get("title"), html_input=True)
    read_entries(
        result, _entries(parsed, pieces, headers, result), lambda entry: _read_entry(entry, venue or None)
    )
    if bozo:
        result.problems.insert(
            0, f"feed is not well-formed ({bozo}); read {result.entries_seen} entries anyway"
        )
    return result


def _feedparser(body: bytes, headers: dict[str, str]) -> Any:
    # No sanitising here: everything is reduced to plain text below, which drops all markup anyway.
    return feedparser.parse(body, response_headers=headers, sanitize_html=False, resolve_relative_uris=False)


def _entries(
    first: Any, pieces: Iterator[bytes], headers: dict[str, str], result: ParsedFeed
) -> Iterator[Any]:
    """Every entry of every piece in order, each dropped once read: feedparser's dictionaries weigh several
    times the papers made of them. (Later pieces repeat the first one's head, and so its verdict on it.)"""
    parsed: Any = first
    while parsed is not None:
        entries = parsed.pop("entries")
        result.entries_seen += len(entries)
        entries.reverse()
        while entries:
            yield entries.pop()
        piece = next(pieces, None)
        parsed = _feedparser(piece, headers) if piece is not None else None


def _read_entry(entry: Any, venue: str | None) -> Paper:
    title = clean_text(entry.get("title"), html_input=True)
    link = safe_url(entry.get("link"))
    guid = (entry.get("id") or "").strip()
    if not title:
        raise ValueError(f"entry without a title ({link or guid or 'no link'})")
    lines = _text_lines(entry)
    doi = _find_doi(entry, guid, link, lines)
    arxiv = ids.parse_arxiv_id(link) or ids.parse_arxiv_id(guid)
    if arxiv is None and doi and doi.startswith("10.48550/arxiv."):
        arxiv = ids.parse_arxiv_id(doi)
    names = [a.get("name", "") for a in entry.get("authors") or [] if isinstance(a, dict)]
    if not names:
        byline = _BYLINE.search(lines)
        names = [byline.group("names")] if byline else []
    authors = [name for raw in names for name in split_authors(raw)]
    extra_keys = [key for key in (ids.url_key(link), ids.url_key(guid) if guid != link else None) if key]
    paper = Paper(
        title=title,
        abstract=clean_text(_abstract(lines), html_input=False),
        authors=clean_authors(authors),
        categories=unique([clean_text(t.get("term"), html_input=False) for t in entry.get("tags") or []]),
        url=link,
        arxiv_id=arxiv.id if arxiv else None,
        version=arxiv.version if arxiv else None,
        doi=None if arxiv and doi and doi.startswith("10.48550/") else doi,
        published=_date(entry.get("published_parsed") or _own(entry, "updated_parsed")),
        updated=_date(_own(entry, "updated_parsed")),
        venue=venue,
        extra_keys=extra_keys,
    )
    if not paper.all_keys:
        raise ValueError(f"{title!r} has no link, id, DOI or title specific enough to recognise it again")
    return paper


def _text_lines(entry: Any) -> str:
    """The richest text the entry offers, as plain text with one line per block."""
    candidates = [c.get("value", "") for c in entry.get("content") or []]
    candidates.append(entry.get("summary") or "")
    best = max(candidates, key=len)
    return html_to_text(best) if "<" in best or "&" in best else best


def _abstract(lines: str) -> str:
    heading = _ABSTRACT_HEADING.search(lines)
    text = lines[heading.end() :] if heading else lines
    kept = [line.strip() for line in text.split("\n") if line.strip()]
    while len(kept) > 1 and _TRAILER_LINE.match(kept[-1]):
        kept.pop()
    return "\n".join(kept)


def _find_doi(entry: Any, guid: str, link: str | None, lines: str) -> str | None:
    for field in ("prism_doi", "dc_identifier"):
        doi = ids.normalise_doi(entry.get(field))
        if doi:
            return doi
    for candidate in (guid, link or ""):
        if candidate.startswith("10.") or "doi" in candidate.lower():
            doi = ids.normalise_doi(candidate)
            if doi:
                return _strip_query(doi)
    match = re.search(r"\bdoi\s*:\s*(10\.\S+)", lines, re.IGNORECASE)
    return ids.normalise_doi(match.group(1)) if match else None


def _strip_query(doi: str) -> str:
    # Publisher links carry tracking parameters after the DOI ("10.1002/tax.12650?af=r").
    return doi.split("?", 1)[0]


def _own(entry: Any, key: str) -> Any:
    # FeedParserDict maps a missing "updated" to "published" with a deprecation warning; read the real key.
    return dict.get(entry, key)


def _date(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromtimestamp(timegm(value), UTC)
    except (TypeError, ValueError, OverflowError):
        return None


_SAX_POSITION = re.compile(r"^<unknown>:(\d+):(\d+):\s*")


def _bozo_reason(parsed: Any) -> str:
    error = parsed.get("bozo_exception")
    text = " ".join(str(error).split()) if error else "unknown problem"
    text = _SAX_POSITION.sub(lambda m: f"line {m.group(1)}, column {m.group(2)}: ", text)
    return text[:200]


collect = document_collector(
    parse,
    expected="an RSS or Atom feed",
    accept="application/rss+xml, application/atom+xml, application/rdf+xml, application/xml;q=0.9, "
    "text/xml;q=0.9, */*;q=0.1",
)
KIND = SourceKind(
    configure=entry_config,  # a url and nothing else
    collect=collect,
    about=("any RSS 0.9x / 1.0 / 2.0 or Atom feed: `url`",),
)
