"""huggingface.co/api/daily_papers: the community's daily list of arXiv papers, with upvotes.

Each item wraps a ``paper`` object: arXiv id, title, abstract (``summary``), authors, ``upvotes``, an
``ai_summary`` and ``ai_keywords`` where the site generated them, and a ``githubRepo`` where one is known.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from newsletter import ids
from newsletter.errors import SourceError
from newsletter.fetched import Document
from newsletter.models import Paper, ParsedFeed
from newsletter.settings import SourceConfig
from newsletter.sources.base import (
    SourceKind,
    document_collector,
    entry_config,
    parse_date,
    read_entries,
    safe_url,
)
from newsletter.text import clean_authors, clean_text

DEFAULT_URL = "https://huggingface.co/api/daily_papers"


def configure(entry: Mapping[str, Any]) -> SourceConfig:
    return entry_config(entry, url=DEFAULT_URL)


def parse(body: bytes, _document: Document | None = None) -> ParsedFeed:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"not valid JSON: {exc}") from exc
    if isinstance(data, dict):
        message = data.get("error") or data.get("message")
        if message:
            raise SourceError(f"Hugging Face API error: {clean_text(str(message), html_input=False)}")
        raise SourceError("expected a JSON list of daily papers, got an object")
    if not isinstance(data, list):
        raise SourceError(f"expected a JSON list of daily papers, got {type(data).__name__}")
    return read_entries(ParsedFeed(entries_seen=len(data)), data, _read_item)


def _read_item(item: Any) -> Paper:
    if not isinstance(item, dict):
        raise ValueError("not a JSON object")
    paper = item.get("paper")
    if not isinstance(paper, dict):
        raise ValueError("no 'paper' object")
    arxiv = ids.parse_arxiv_id(str(paper.get("id") or ""))
    if arxiv is None:
        raise ValueError(f"no arXiv id in {paper.get('id')!r}")
    title = clean_text(paper.get("title") or item.get("title"), html_input=False, latex=True)
    if not title:
        raise ValueError(f"arXiv:{arxiv.id} has no title")
    authors = [a.get("name", "") for a in paper.get("authors") or [] if isinstance(a, dict)]
    upvotes = paper.get("upvotes")
    keywords = paper.get("ai_keywords") or []
    return Paper(
        title=title,
        abstract=clean_text(paper.get("summary") or item.get("summary"), html_input=False, latex=True),
        authors=clean_authors([str(name) for name in authors], latex=True),
        url=f"https://arxiv.org/abs/{arxiv.id}",
        pdf_url=f"https://arxiv.org/pdf/{arxiv.id}",
        arxiv_id=arxiv.id,
        version=arxiv.version,
        published=parse_date(paper.get("publishedAt")),
        upvotes=int(upvotes) if isinstance(upvotes, int | float) and not isinstance(upvotes, bool) else None,
        ai_summary=clean_text(paper.get("ai_summary"), html_input=False, latex=True) or None,
        keywords=[clean_text(str(k), html_input=False) for k in keywords if isinstance(k, str)][:20],
        github_repo=safe_url(paper.get("githubRepo")),
    )


collect = document_collector(parse, expected="Hugging Face daily papers JSON", accept="application/json")
KIND = SourceKind(
    configure=configure,
    collect=collect,
    about=("huggingface.co/api/daily_papers (upvotes and short AI summaries)",),
)
