"""Composing a digest edition: selects a window's papers, clusters them into ranked, labelled topic
sections, and stores the edition.

An edition's window is ``[start, end)`` over ``papers.first_seen_at``; by default it starts where the
previous digest's window ended (or ``window_days`` ago) and ends now, so consecutive digests neither
overlap nor leave gaps. Only papers that count as new are selected (a revision of an old paper is not).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlite_utils

from newsletter.dates import iso
from newsletter.editions import Edition, EditionPaper, Section, last_digest_end, load_edition, store_digest
from newsletter.settings import DigestSettings
from newsletter.store import new_papers_between
from newsletter.summaries import summarize


def default_window(
    db: sqlite_utils.Database, *, now: datetime, window_days: float, frequency: str = "weekly"
) -> tuple[datetime, datetime]:
    previous_end = last_digest_end(db, frequency, until=now)
    start = previous_end or now - timedelta(days=window_days)
    return start, now


def build_edition(
    db: sqlite_utils.Database,
    settings: DigestSettings,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
    frequency: str = "weekly",
    period: str | None = None,
) -> Edition:
    """Select, cluster, rank and store a digest edition; returns it as stored.

    A daily edition follows the previous daily one (or covers a day); a weekly one the previous weekly
    one (or ``window_days``).
    """
    if frequency not in ("weekly", "daily"):
        raise ValueError(f"unknown frequency {frequency!r}")
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    window_days = 1.0 if frequency == "daily" else settings.window_days
    default_start, default_end = default_window(db, now=now, window_days=window_days, frequency=frequency)
    start = since or default_start
    end = until or default_end
    if end <= start:
        raise ValueError(f"the window ends ({iso(end)}) before it starts ({iso(start)})")
    papers = new_papers_between(db, start, end)
    sections = _sections(papers, settings)
    elapsed = time.perf_counter() - started
    edition_id = store_digest(
        db,
        created_at=now,
        window=(start, end),
        paper_count=len(papers),
        sections=sections,
        engine=settings.engine,
        frequency=frequency,
        period=period,
    )
    edition = load_edition(db, edition_id)
    edition.seconds = elapsed
    return edition


def _sections(papers: list[dict[str, Any]], settings: DigestSettings) -> list[Section]:
    if not papers:
        return []
    # Imported here: scikit-learn and SciPy add ~90 MB and a second to a process, and every command of the
    # command line loads this module, while sending, serving and fetching never cluster.
    from newsletter.cluster import PaperText, cluster_documents, score_paper

    clustering = cluster_documents(
        [PaperText(id=p["key"], title=p["title"], abstract=p["abstract"] or "") for p in papers],
        topics=settings.topics,
        min_topics=settings.min_topics,
        max_topics=settings.max_topics,
        min_topic_size=settings.min_topic_size,
        engine=settings.engine,
    )
    dates = [p["dated"] or "" for p in papers]
    oldest, newest = min(dates), max(dates)
    sections = []
    for topic in clustering.topics:
        ranked = []
        for index, centrality in zip(topic.members, topic.centrality, strict=True):
            paper = papers[index]
            recency = _position(paper["dated"] or "", oldest, newest)
            ranked.append(
                EditionPaper(
                    paper_id=paper["id"],
                    key=paper["key"],
                    title=paper["title"],
                    score=score_paper(upvotes=paper["upvotes"], centrality=centrality, recency=recency),
                    summary=paper["ai_summary"]
                    or summarize(paper["abstract"] or "", max_chars=settings.summary_chars),
                    authors=json.loads(paper["authors"] or "[]"),
                    url=paper["url"],
                    upvotes=paper["upvotes"],
                    primary_category=paper["primary_category"],
                    github_repo=paper["github_repo"],
                    categories=json.loads(paper["categories"] or "[]"),
                    abstract=paper["abstract"] or "",
                )
            )
        ranked.sort(key=lambda p: (-p.score, p.key))
        sections.append(Section(topic.label, topic.keywords, ranked, topic.is_other))
    return sections


def _position(value: str, oldest: str, newest: str) -> float:
    if newest == oldest:
        return 1.0
    try:
        low, high, here = (datetime.fromisoformat(v).timestamp() for v in (oldest, newest, value))
    except ValueError:
        return 0.0
    return (here - low) / (high - low)
