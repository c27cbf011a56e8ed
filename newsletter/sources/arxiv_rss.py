"""rss.arxiv.org announcement feeds, in their RSS 2.0 and Atom flavours.

Every item is one announcement: ``new`` (first version, in its primary category), ``cross`` (cross-listed
into a followed category), ``replace`` / ``replace-cross`` (a revision). The description starts with
``arXiv:2411.17700v1 Announce Type: new Abstract: ...``, authors are one ``dc:creator`` byline and the
categories list the primary category first. The format is fixed and generated, so it is read with a strict
XML parser: much faster than a general feed parser and exact about what is wrong when a feed is broken.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from newsletter import ids
from newsletter.config_keys import SettingError
from newsletter.errors import SourceError
from newsletter.fetched import Document
from newsletter.models import AnnounceType, Paper, ParsedFeed
from newsletter.settings import SourceConfig
from newsletter.sources.base import (
    SourceKind,
    XmlStream,
    document_collector,
    entry_config,
    parse_date,
    read_entries,
    safe_url,
    unique,
)
from newsletter.text import clean_authors, clean_text, split_authors

ATOM = "{http://www.w3.org/2005/Atom}"
ARXIV = "{http://arxiv.org/schemas/atom}"
DC = "{http://purl.org/dc/elements/1.1/}"

_PREFIX = re.compile(
    r"^\s*arXiv:(?P<id>\S+)\s+Announce\s+Type:\s*(?P<type>[\w-]+)\s*(?:Abstract:\s*)?",
    re.IGNORECASE,
)


def configure(entry: Mapping[str, Any]) -> SourceConfig:
    """Without a url, the feed of the entry's categories, in its format."""
    source = entry_config(entry)
    if source.url:
        return source
    if not source.categories:
        raise SettingError("kind", "an arxiv_rss source needs categories or a url")
    return replace(source, url=feed_url(source.categories, source.format))


def feed_url(categories: tuple[str, ...], flavour: str = "rss") -> str:
    """rss.arxiv.org joins several categories or archives with '+' into one feed."""
    return f"https://rss.arxiv.org/{flavour}/" + "+".join(categories)


def parse(body: bytes, _document: Document | None = None) -> ParsedFeed:
    xml = XmlStream(body)
    root = xml.root
    if root.tag == "rss":
        result = read_entries(ParsedFeed(), xml.entries("item", depth=2), _read_rss_item)
        channel = root.find("channel")
        if channel is None:
            raise SourceError("RSS document without a <channel>")
        title, description = channel.findtext("title"), channel.findtext("description")
    elif root.tag == f"{ATOM}feed":
        result = read_entries(ParsedFeed(), xml.entries(f"{ATOM}entry", depth=1), _read_atom_entry)
        title, description = root.findtext(f"{ATOM}title"), root.findtext(f"{ATOM}subtitle")
    else:
        raise SourceError(f"not an arXiv RSS or Atom feed (document element <{_local(root.tag)}>)")
    # The feed's own title is read after its items, which were let go of one by one: an error feed has none.
    _raise_for_feed_error(title, description)
    result.entries_seen = xml.entries_seen
    return result


def _raise_for_feed_error(title: str | None, description: str | None) -> None:
    # arXiv answers a bad category with a valid feed titled "Feed error for query: ..." and no items.
    if title and title.strip().lower().startswith("feed error"):
        reason = " ".join((description or title).split())
        raise SourceError(f"arXiv feed error: {reason}")


def _read_rss_item(item: ET.Element) -> Paper:
    return _build_paper(
        title=item.findtext("title"),
        description=item.findtext("description") or "",
        identifier=item.findtext("guid"),
        link=item.findtext("link"),
        categories=[(c.text or "").strip() for c in item.findall("category")],
        published=item.findtext("pubDate"),
        announce_type=item.findtext(f"{ARXIV}announce_type"),
        byline=item.findtext(f"{DC}creator"),
    )


def _read_atom_entry(entry: ET.Element) -> Paper:
    link = None
    for element in entry.findall(f"{ATOM}link"):
        if element.get("rel", "alternate") == "alternate":
            link = element.get("href")
            break
    return _build_paper(
        title=entry.findtext(f"{ATOM}title"),
        description=entry.findtext(f"{ATOM}summary") or "",
        identifier=entry.findtext(f"{ATOM}id"),
        link=link,
        categories=[(c.get("term") or "").strip() for c in entry.findall(f"{ATOM}category")],
        published=entry.findtext(f"{ATOM}published") or entry.findtext(f"{ATOM}updated"),
        announce_type=entry.findtext(f"{ARXIV}announce_type"),
        byline=entry.findtext(f"{DC}creator"),
    )


def _build_paper(
    *,
    title: str | None,
    description: str,
    identifier: str | None,
    link: str | None,
    categories: list[str],
    published: str | None,
    announce_type: str | None,
    byline: str | None,
) -> Paper:
    prefix = _PREFIX.match(description)
    abstract = description[prefix.end() :] if prefix else description
    arxiv = (
        ids.parse_arxiv_id(identifier)
        or (ids.parse_arxiv_id(prefix.group("id")) if prefix else None)
        or ids.parse_arxiv_id(link)
    )
    if arxiv is None:
        raise ValueError(f"no arXiv identifier in guid {identifier!r} or link {link!r}")
    clean_title = clean_text(title, html_input=False, latex=True)
    if not clean_title:
        raise ValueError(f"arXiv:{arxiv.id} has no title")
    kind_text = (announce_type or (prefix.group("type") if prefix else "") or "").strip().lower()
    try:
        kind = AnnounceType(kind_text) if kind_text else AnnounceType.NEW
    except ValueError:
        raise ValueError(f"arXiv:{arxiv.id} has an unknown announce type {kind_text!r}") from None
    categories = unique(categories)
    url = safe_url(link) or f"https://arxiv.org/abs/{arxiv.id}"
    return Paper(
        title=clean_title,
        abstract=clean_text(abstract, html_input=False, latex=True),
        authors=clean_authors(split_authors(byline or ""), latex=True),
        categories=categories,
        primary_category=categories[0] if categories else None,
        url=url,
        pdf_url=_pdf_url(url, arxiv),
        arxiv_id=arxiv.id,
        version=arxiv.version,
        published=parse_date(published),
        announce_type=kind,
    )


def _pdf_url(url: str, arxiv: ids.ArxivId) -> str | None:
    if "arxiv.org/" not in url:
        return None
    version = f"v{arxiv.version}" if arxiv.version else ""
    return f"https://arxiv.org/pdf/{arxiv.id}{version}"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


collect = document_collector(
    parse,
    expected="an arXiv RSS feed",
    accept="application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.1",
)
KIND = SourceKind(
    configure=configure,
    collect=collect,
    about=(
        "rss.arxiv.org announcements; `categories` (joined into one feed) or an explicit `url`;",
        '`format` = "atom" for the Atom flavour',
    ),
)
