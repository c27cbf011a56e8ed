"""export.arxiv.org/api/query: Atom search results with OpenSearch paging.

Results are paged with ``start`` / ``max_results`` until ``opensearch:totalResults`` (or the configured
``max_results``) is reached, with at least ``min_interval`` (3 s by default, as arXiv asks) between
requests. With ``lookback_days`` the query is sorted by submission date, newest first, and paging stops at
the first page that reaches past the window. The API reports problems as a feed holding one entry whose
id is ``.../api/errors#...``; those become a clear source error. Both the current response format and the
legacy one (namespaces declared on every element) parse.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from newsletter import ids
from newsletter.config_keys import SettingError
from newsletter.errors import SourceError
from newsletter.fetched import Document, FetchError
from newsletter.models import Paper, ParsedFeed
from newsletter.settings import SourceConfig
from newsletter.sources.base import (
    NO_PROGRESS,
    Collected,
    Progress,
    SourceKind,
    SourceState,
    XmlStream,
    check_body,
    entry_config,
    parse_date,
    read_entries,
    safe_url,
    unique,
)
from newsletter.text import clean_authors, clean_text

if TYPE_CHECKING:  # only its get() is called: the sources load without the HTTP client
    from newsletter.fetch import Fetcher

DEFAULT_URL = "https://export.arxiv.org/api/query"
DEFAULT_INTERVAL = 3.0
MAX_PAGE_SIZE = 2000
ATOM = "{http://www.w3.org/2005/Atom}"
ARXIV = "{http://arxiv.org/schemas/atom}"
OPENSEARCH = "{http://a9.com/-/spec/opensearch/1.1/}"
# A page that comes back empty although the totals promise more is a known hiccup of the API: ask again.
EMPTY_PAGE_RETRIES = 2


def configure(entry: Mapping[str, Any]) -> SourceConfig:
    source = entry_config(entry, url=DEFAULT_URL, min_interval=DEFAULT_INTERVAL)
    if not source.query and not source.id_list:
        raise SettingError("kind", "an arxiv_api source needs a query or an id_list")
    if source.page_size > MAX_PAGE_SIZE:
        raise SettingError("page_size", f"the arXiv API returns at most {MAX_PAGE_SIZE} results a page")
    return source


def collect(
    config: SourceConfig, fetcher: Fetcher, state: SourceState, progress: Progress = NO_PROGRESS
) -> Collected:
    collected = Collected(state=state)
    cutoff = (
        datetime.now(UTC) - timedelta(days=config.lookback_days) if config.lookback_days is not None else None
    )
    limit = max(1, config.max_results)
    start = 0
    total: int | None = None
    empty_retries = 0
    while start < limit and (total is None or start < total):
        page_size = min(config.page_size, limit - start)
        progress(f"page from {start}" + (f" of {min(total, limit)}" if total is not None else ""))
        document = _get_page(config, fetcher, start, page_size, sort_by_date=cutoff is not None)
        collected.requests += document.attempts
        check_body(document, expected="an arXiv API Atom feed")
        page = parse(document.body)
        collected.documents_parsed += 1
        collected.problems.extend(page.problems)
        total = page.total_results if page.total_results is not None else total
        if page.entries_seen == 0:
            if total is not None and start < min(total, limit) and empty_retries < EMPTY_PAGE_RETRIES:
                empty_retries += 1
                continue
            if total is not None and start < min(total, limit):
                collected.problems.append(
                    f"the API returned empty pages at start={start} although it reported {total} results; "
                    f"stopped after {len(collected.papers)} papers"
                )
            break
        empty_retries = 0
        fresh = [p for p in page.papers if cutoff is None or p.published is None or p.published >= cutoff]
        collected.papers.extend(fresh)
        if len(fresh) < len(page.papers):
            break  # sorted newest first: the rest is older than the window
        start += page.entries_seen
    collected.state = SourceState(last_success_at=datetime.now(UTC))
    return collected


def _get_page(
    config: SourceConfig, fetcher: Fetcher, start: int, page_size: int, *, sort_by_date: bool
) -> Document:
    params: dict[str, str | int] = {"start": start, "max_results": page_size}
    if config.query:
        params["search_query"] = config.query
    if config.id_list:
        params["id_list"] = ",".join(config.id_list)
    if sort_by_date:
        params["sortBy"] = "submittedDate"
        params["sortOrder"] = "descending"
    try:
        return fetcher.get(
            config.url,
            params=params,
            min_interval=config.min_interval,
            accept="application/atom+xml",
        )
    except FetchError as error:
        # A malformed query gets HTTP 400 with the explanation in an Atom error entry: surface that.
        if error.status == 400 and error.body:
            try:
                parse(error.body)
            except SourceError as api_error:
                raise SourceError(f"{api_error} (HTTP 400)") from error
        raise


def parse(body: bytes) -> ParsedFeed:
    xml = XmlStream(body)
    root = xml.root
    if root.tag != f"{ATOM}feed":
        raise SourceError(f"not an arXiv API Atom feed (document element <{root.tag.rsplit('}', 1)[-1]}>)")
    result = read_entries(ParsedFeed(), xml.entries(f"{ATOM}entry", depth=1), _read_entry)
    result.entries_seen = xml.entries_seen
    # The paging totals come before the entries, and stay in the tree when the entries are let go of.
    result.total_results = _int(root.findtext(f"{OPENSEARCH}totalResults"))
    result.start_index = _int(root.findtext(f"{OPENSEARCH}startIndex"))
    return result


def _read_entry(entry: ET.Element) -> Paper:
    identifier = entry.findtext(f"{ATOM}id")
    if "/api/errors" in (identifier or ""):
        message = clean_text(entry.findtext(f"{ATOM}summary"), html_input=False) or "unspecified error"
        raise SourceError(f"arXiv API error: {message}")  # the whole answer is this error, not one entry
    arxiv = ids.parse_arxiv_id(identifier)
    if arxiv is None:
        raise ValueError(f"no arXiv identifier in {identifier!r}")
    title = clean_text(entry.findtext(f"{ATOM}title"), html_input=False, latex=True)
    if not title:
        raise ValueError(f"arXiv:{arxiv.id} has no title")
    url = pdf_url = None
    for link in entry.findall(f"{ATOM}link"):
        if link.get("title") == "pdf":
            pdf_url = safe_url(link.get("href"))
        elif link.get("rel", "alternate") == "alternate":
            url = safe_url(link.get("href"))
    categories = unique([(c.get("term") or "").strip() for c in entry.findall(f"{ATOM}category")])
    primary = entry.find(f"{ARXIV}primary_category")
    primary_category = (primary.get("term") if primary is not None else None) or (
        categories[0] if categories else None
    )
    if primary_category and primary_category not in categories:
        categories.insert(0, primary_category)
    authors = [a.findtext(f"{ATOM}name") or "" for a in entry.findall(f"{ATOM}author")]
    return Paper(
        title=title,
        abstract=clean_text(entry.findtext(f"{ATOM}summary"), html_input=False, latex=True),
        authors=clean_authors(authors, latex=True),
        categories=categories,
        primary_category=primary_category,
        url=url or f"https://arxiv.org/abs/{arxiv.id}",
        pdf_url=pdf_url,
        arxiv_id=arxiv.id,
        version=arxiv.version,
        doi=ids.normalise_doi(entry.findtext(f"{ARXIV}doi")),
        published=parse_date(entry.findtext(f"{ATOM}published")),
        updated=parse_date(entry.findtext(f"{ATOM}updated")),
        comment=clean_text(entry.findtext(f"{ARXIV}comment"), html_input=False, latex=True) or None,
        journal_ref=clean_text(entry.findtext(f"{ARXIV}journal_ref"), html_input=False, latex=True) or None,
    )


def _int(value: str | None) -> int | None:
    try:
        return int(value.strip()) if value else None
    except ValueError:
        return None


KIND = SourceKind(
    configure=configure,
    collect=collect,
    about=(
        "export.arxiv.org search; `query` (arXiv search syntax) and/or `id_list`, paged with",
        "`page_size` up to `max_results`, `lookback_days` stops at older submissions,",
        f"at least `min_interval` = {DEFAULT_INTERVAL:g} seconds between requests as arXiv asks",
    ),
)
