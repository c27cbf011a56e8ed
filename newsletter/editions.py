"""Editions: the editions table with its sections and ranked papers (edition_sections, edition_papers),
as stored by the digests built in ``newsletter.compose`` and the one-off messages; loading an edition or
one of its papers by any key (what a reader's feedback names), what is public (the archive and the feed),
an edition's send status, the list of every edition and what retention marks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlite_utils

from newsletter.dates import iso
from newsletter.db import write_transaction
from newsletter.errors import EditionNotFound, PaperNotFound


@dataclass(slots=True)
class EditionPaper:
    paper_id: int
    key: str
    title: str
    score: float
    summary: str
    authors: list[str] = field(default_factory=list)
    url: str | None = None
    upvotes: int | None = None
    primary_category: str | None = None
    github_repo: str | None = None
    categories: list[str] = field(default_factory=list)  # primary first
    abstract: str = ""  # for matching readers' keywords; not shown
    arxiv_id: str | None = None
    pdf_url: str | None = None
    doi: str | None = None
    dated: str | None = None  # ISO: when the source announced it (published), else when first seen
    venue: str | None = None  # a journal's name, for papers from its feed


@dataclass(slots=True)
class Section:
    label: str
    keywords: list[str]
    papers: list[EditionPaper]
    is_other: bool = False


@dataclass(slots=True)
class Edition:
    id: int
    kind: str
    status: str
    created_at: datetime
    window_start: datetime
    window_end: datetime
    sections: list[Section]
    engine: str
    seconds: float = 0.0  # time to build, when just built
    subject: str | None = None  # one-off messages
    body: str | None = None  # one-off messages: Markdown
    frequency: str = "weekly"

    @property
    def paper_count(self) -> int:
        return sum(len(section.papers) for section in self.sections)

    def to_json(self) -> dict[str, Any]:
        return {
            "edition": self.id,
            "kind": self.kind,
            "window": {"start": iso(self.window_start), "end": iso(self.window_end)},
            "paper_count": self.paper_count,
            "engine": self.engine,
            "clusters": [
                {
                    "label": section.label,
                    "keywords": section.keywords,
                    "other": section.is_other,
                    "papers": [
                        {"id": p.key, "title": p.title, "score": p.score, "summary": p.summary}
                        for p in section.papers
                    ],
                }
                for section in self.sections
            ],
        }


def last_digest_end(db: sqlite_utils.Database, frequency: str, *, until: datetime) -> datetime | None:
    """Where the latest digest of this frequency whose window ended by ``until`` ended, if there is one."""
    row = db.execute(
        "SELECT max(window_end) FROM editions WHERE kind = 'digest' AND frequency = ? AND window_end <= ?",
        [frequency, iso(until)],
    ).fetchone()
    return datetime.fromisoformat(row[0]) if row and row[0] else None


def store_digest(
    db: sqlite_utils.Database,
    *,
    created_at: datetime,
    window: tuple[datetime, datetime],
    paper_count: int,
    sections: list[Section],
    engine: str,
    frequency: str,
    period: str | None,
) -> int:
    """A digest edition (``built``) with its sections and their papers, in one transaction; returns its id."""
    start, end = window
    with write_transaction(db):
        cursor = db.conn.execute(
            """
            INSERT INTO editions (kind, status, created_at, window_start, window_end, paper_count, topic_count,
                                  engine, frequency, period)
            VALUES ('digest', 'built', ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            [iso(created_at), iso(start), iso(end), paper_count, len(sections), engine, frequency, period],
        )
        edition_id = int(cursor.lastrowid or 0)
        _store_sections(db, edition_id, sections)
    return edition_id


def _store_sections(db: sqlite_utils.Database, edition_id: int, sections: list[Section]) -> None:
    db.conn.executemany(
        "INSERT INTO edition_sections (edition_id, position, label, keywords, size, is_other) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                edition_id,
                position,
                s.label,
                json.dumps(s.keywords, ensure_ascii=False),
                len(s.papers),
                int(s.is_other),
            )
            for position, s in enumerate(sections)
        ],
    )
    db.conn.executemany(
        "INSERT INTO edition_papers (edition_id, paper_id, section, rank, score, summary) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (edition_id, paper.paper_id, position, rank, paper.score, paper.summary)
            for position, section in enumerate(sections)
            for rank, paper in enumerate(section.papers)
        ],
    )


def load_edition(db: sqlite_utils.Database, edition_id: int) -> Edition:
    row = db.execute(
        "SELECT id, kind, status, created_at, window_start, window_end, engine, subject, body, frequency "
        "FROM editions WHERE id = ?",
        [edition_id],
    ).fetchone()
    if row is None:
        raise EditionNotFound(f"there is no edition {edition_id}")
    sections = [
        Section(label=label, keywords=json.loads(keywords), papers=[], is_other=bool(is_other))
        for label, keywords, is_other in db.execute(
            "SELECT label, keywords, is_other FROM edition_sections WHERE edition_id = ? ORDER BY position",
            [edition_id],
        )
    ]
    for section, *paper in db.execute(
        f"SELECT ep.section, {_PAPER_COLUMNS} FROM edition_papers ep JOIN papers p ON p.id = ep.paper_id "
        "WHERE ep.edition_id = ? ORDER BY ep.section, ep.rank",
        [edition_id],
    ):
        sections[section].papers.append(_edition_paper(paper))
    return Edition(
        id=row[0],
        kind=row[1],
        status=row[2],
        created_at=datetime.fromisoformat(row[3]),
        window_start=datetime.fromisoformat(row[4]),
        window_end=datetime.fromisoformat(row[5]),
        sections=sections,
        engine=row[6],
        subject=row[7],
        body=row[8],
        frequency=row[9],
    )


_PAPER_COLUMNS = (
    "ep.score, ep.summary, p.id, p.key, p.title, p.authors, p.url, p.upvotes, p.primary_category, "
    "p.github_repo, p.categories, p.abstract, p.arxiv_id, p.pdf_url, p.doi, "
    "coalesce(p.published, p.first_seen_at), p.venue"
)


def _edition_paper(row: list[Any]) -> EditionPaper:
    score, summary, paper_id, key, title, authors, url, upvotes, category, repo, categories, abstract = row[
        :12
    ]
    arxiv_id, pdf_url, doi, dated, venue = row[12:]
    return EditionPaper(
        paper_id=paper_id,
        key=key,
        title=title,
        score=score,
        summary=summary,
        authors=json.loads(authors or "[]"),
        url=url,
        upvotes=upvotes,
        primary_category=category,
        github_repo=repo,
        categories=json.loads(categories or "[]"),
        abstract=abstract or "",
        arxiv_id=arxiv_id,
        pdf_url=pdf_url,
        doi=doi,
        dated=dated,
        venue=venue,
    )


def edition_paper(db: sqlite_utils.Database, edition_id: int, paper_key: str) -> EditionPaper | None:
    """The paper stored under ``paper_key`` (any of its keys) as the edition shows it, or None when that
    paper is not in the edition. Raises EditionNotFound for an edition that is not kept, PaperNotFound
    for a key no stored paper has."""
    if db.execute("SELECT 1 FROM editions WHERE id = ?", [edition_id]).fetchone() is None:
        raise EditionNotFound(f"there is no edition {edition_id}")
    found = db.execute("SELECT paper_id FROM paper_keys WHERE key = ?", [paper_key]).fetchone()
    if found is None:
        raise PaperNotFound(f"no stored paper is {paper_key}")
    row = db.execute(
        f"SELECT {_PAPER_COLUMNS} FROM edition_papers ep JOIN papers p ON p.id = ep.paper_id "
        "WHERE ep.edition_id = ? AND ep.paper_id = ? ORDER BY ep.section, ep.rank LIMIT 1",
        [edition_id, found[0]],
    ).fetchone()
    return _edition_paper(list(row)) if row else None


# --- what is public ----------------------------------------------------------------------------------------

# Only what went to the whole list is public: a digest once its send to the readers started (the ledger
# exists, so the status left 'built'), or a one-off message whose segment was everyone. Never a digest that
# was only built (test copies go outside the ledger and change nothing), never a message to one address.
# The archive, the Atom feed and the edition page all ask through this one predicate.
PUBLISHED = "status IN ('sending', 'sent') AND (kind = 'digest' OR (kind = 'one-off' AND segment = 'all'))"


@dataclass(frozen=True, slots=True)
class PublishedEdition:
    """An archive entry: what the list and the feed show, without the papers."""

    id: int
    kind: str
    created_at: str
    window_start: str
    window_end: str
    paper_count: int
    topic_count: int
    frequency: str
    subject: str | None
    body: str | None
    sections: list[tuple[str, int]]  # (label, papers) in the email's order


def published_editions(db: sqlite_utils.Database, *, limit: int | None = None) -> list[PublishedEdition]:
    """The public editions, newest first, with their section labels and sizes, in one query."""
    editions: dict[int, PublishedEdition] = {}
    for *columns, label, size in db.execute(
        f"""
        WITH published AS (
            SELECT id, kind, created_at, window_start, window_end, paper_count, topic_count, frequency,
                   subject, body
            FROM editions WHERE {PUBLISHED} ORDER BY id DESC LIMIT ?
        )
        SELECT published.*, s.label, s.size
        FROM published LEFT JOIN edition_sections s ON s.edition_id = published.id
        ORDER BY published.id DESC, s.position
        """,
        [-1 if limit is None else limit],
    ):
        edition = editions.get(columns[0])
        if edition is None:
            edition = editions[columns[0]] = PublishedEdition(*columns, sections=[])
        if label is not None:
            edition.sections.append((label, size))
    return list(editions.values())


def load_published_edition(db: sqlite_utils.Database, edition_id: int) -> Edition:
    """The edition, if it is public; EditionNotFound otherwise, as if it did not exist."""
    if db.execute(f"SELECT 1 FROM editions WHERE id = ? AND {PUBLISHED}", [edition_id]).fetchone() is None:
        raise EditionNotFound(f"there is no public edition {edition_id}")
    return load_edition(db, edition_id)


def public_among(db: sqlite_utils.Database, edition_ids: list[int]) -> set[int]:
    """Which of these editions are public."""
    return {
        row[0]
        for row in db.execute(
            f"SELECT id FROM editions WHERE id IN (SELECT value FROM json_each(?)) AND {PUBLISHED}",
            [json.dumps(edition_ids)],
        )
    }


# --- an edition's send ---------------------------------------------------------------------------------------


def store_one_off(
    db: sqlite_utils.Database, subject: str, body: str, segment: str, *, now: datetime | None = None
) -> int:
    """A one-off message as an edition of its own (``built``, no papers); returns its id."""
    stamp = iso(now or datetime.now(UTC))
    with write_transaction(db):
        cursor = db.conn.execute(
            """
            INSERT INTO editions (kind, status, created_at, window_start, window_end, paper_count, topic_count,
                                  engine, subject, body, segment)
            VALUES ('one-off', 'built', ?, ?, ?, 0, 0, '', ?, ?, ?)
            """,
            [stamp, stamp, stamp, subject, body, segment],
        )
    return int(cursor.lastrowid or 0)


def digest_for_period(db: sqlite_utils.Database, frequency: str, period: str) -> int | None:
    """The digest edition built for this period (an ISO week or a day), if there is one."""
    row = db.execute(
        "SELECT id FROM editions WHERE kind = 'digest' AND frequency = ? AND period = ?", [frequency, period]
    ).fetchone()
    return int(row[0]) if row else None


def edition_status(db: sqlite_utils.Database, edition_id: int) -> str:
    """``built``, ``sending`` or ``sent``."""
    return str(db.execute("SELECT status FROM editions WHERE id = ?", [edition_id]).fetchone()[0])


def is_ledger_pruned(db: sqlite_utils.Database, edition_id: int) -> bool:
    """Whether the edition's delivery records were deleted by retention (it can never be sent again)."""
    return bool(db.execute("SELECT ledger_pruned FROM editions WHERE id = ?", [edition_id]).fetchone()[0])


def mark_sending(db: sqlite_utils.Database, edition_id: int) -> None:
    """A built edition whose ledger now exists is going out. Runs in the caller's transaction."""
    db.conn.execute("UPDATE editions SET status = 'sending' WHERE id = ? AND status = 'built'", [edition_id])


def mark_sent(db: sqlite_utils.Database, edition_id: int) -> None:
    """Every recipient's message reached a final state."""
    with write_transaction(db):
        db.conn.execute("UPDATE editions SET status = 'sent' WHERE id = ?", [edition_id])


# --- the list of every edition ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EditionEntry:
    """One line of a list of editions of every kind and status (the admin pages, `newsletter status`)."""

    id: int
    kind: str
    status: str
    created_at: str
    window_start: str
    window_end: str
    paper_count: int
    subject: str | None


def recent_editions(db: sqlite_utils.Database, *, limit: int) -> list[EditionEntry]:
    """The newest editions of every kind and status, newest first."""
    return [
        EditionEntry(*row)
        for row in db.execute(
            "SELECT id, kind, status, created_at, window_start, window_end, paper_count, subject FROM editions "
            "ORDER BY id DESC LIMIT ?",
            [limit],
        )
    ]


# --- retention -----------------------------------------------------------------------------------------------


def sent_before(db: sqlite_utils.Database, before: str) -> list[int]:
    """Editions sent, created before ``before``, whose delivery records are still kept."""
    return [
        row[0]
        for row in db.execute(
            "SELECT id FROM editions WHERE status = 'sent' AND created_at < ? AND ledger_pruned = 0 ORDER BY id",
            [before],
        )
    ]


def mark_ledger_pruned(db: sqlite_utils.Database, edition_ids: list[int]) -> None:
    """These editions' delivery records go: they can never be sent again (without its ledger, a second
    send could reach readers twice). Runs in the caller's transaction."""
    db.conn.execute(
        "UPDATE editions SET ledger_pruned = 1 WHERE id IN (SELECT value FROM json_each(?))",
        [json.dumps(edition_ids)],
    )


def ledger_pruned(db: sqlite_utils.Database) -> list[int]:
    """Every edition whose delivery records were pruned."""
    return [row[0] for row in db.execute("SELECT id FROM editions WHERE ledger_pruned = 1 ORDER BY id")]
