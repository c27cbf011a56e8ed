"""Store papers exactly once: resolve each incoming record to a known paper through its keys, merge it in.

A record matches a stored paper by its strong keys (arXiv id, then DOI); a record that has neither
matches by its weak keys (normalised title, then link or guid). A record with a strong key never matches
on title alone, so two different papers that happen to share a title stay two papers. Seeing a paper
again (another category, another source, a new version, an arXiv ``replace`` announcement) updates its row
and never makes it new again; a revision of a paper never seen before is stored but not counted as new
(it is counted as a revision: it was announced new in an earlier week).

Papers a reader adds to their library are stored under the source name ``READER_ADDED``, which no
configured source can have: they are never new (an old paper a reader keeps is not news). When a source
later lists such a paper, that is its first sighting as far as the digests go.

Callers wrap ``store_papers`` in ``db.write_transaction`` so a source's papers land all together or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlite_utils

from newsletter import ids
from newsletter.dates import iso
from newsletter.models import Paper

_LOOKUP_CHUNK = 500
# The source name of papers fetched because a reader added them (source names cannot hold parentheses).
READER_ADDED = "(library)"
_JSON_COLUMNS = ("authors", "categories", "keywords", "sources")
# Optional fields that are filled in when a later sighting knows them and the stored row does not.
_FILL_COLUMNS = ("doi", "arxiv_id", "github_repo", "ai_summary", "comment", "journal_ref", "venue", "pdf_url")


@dataclass(slots=True)
class StoreCounts:
    fetched: int = 0
    new: int = 0
    updated: int = 0
    duplicates: int = 0
    revisions: int = 0  # replace announcements of papers never seen before: stored, neither new nor updated


def key_rank(key: str) -> int:
    """Lower is stronger: the canonical key of a paper is its strongest known key."""
    for rank, prefix in enumerate((ids.ARXIV_PREFIX, ids.DOI_PREFIX, ids.TITLE_PREFIX)):
        if key.startswith(prefix):
            return rank
    return 3


def store_papers(
    db: sqlite_utils.Database, papers: Sequence[Paper], *, source: str, now: datetime
) -> StoreCounts:
    counts = StoreCounts(fetched=len(papers))
    if not papers:
        return counts
    known = _lookup_keys(db, {key for paper in papers for key in paper.all_keys})
    rows = _load_rows(db, set(known.values()))
    inserted: set[int] = set()
    dirty: set[int] = set()
    new_aliases: list[tuple[str, int]] = []
    stamp = iso(now)

    for paper in papers:
        paper_id = _resolve(paper, known)
        if paper_id is None:
            row = _new_row(paper, source, stamp)
            paper_id = _insert(db, row)
            rows[paper_id] = row
            inserted.add(paper_id)
            _count_first_sighting(counts, row)
        else:
            row = rows[paper_id]
            announced = row["sources"] == [READER_ADDED] and source != READER_ADDED
            if announced:
                # Only a reader had it: a source listing it now announces it, as if first seen now.
                row["is_new"], row["first_seen_at"], row["changed_at"] = _is_new(paper, source), stamp, stamp
            changed = _merge(row, paper, source)
            row["last_seen_at"] = stamp
            if announced:
                _count_first_sighting(counts, row)
            elif changed and paper_id not in inserted:
                row["changed_at"] = stamp
                counts.updated += 1
            else:
                counts.duplicates += 1
            dirty.add(paper_id)
        for key in paper.all_keys:
            if key not in known:
                known[key] = paper_id
                new_aliases.append((key, paper_id))

    _update_rows(db, [rows[paper_id] for paper_id in dirty])
    db.conn.executemany("INSERT OR IGNORE INTO paper_keys (key, paper_id) VALUES (?, ?)", new_aliases)
    return counts


def _count_first_sighting(counts: StoreCounts, row: dict[str, Any]) -> None:
    if row["is_new"]:
        counts.new += 1
    elif row["sources"] != [READER_ADDED]:
        counts.revisions += 1  # a revision of a paper we never saw: stored, not new


def _resolve(paper: Paper, known: dict[str, int]) -> int | None:
    for key in paper.strong_keys:
        if key in known:
            return known[key]
    if paper.strong_keys:
        return None
    for key in paper.weak_keys:
        if key in known:
            return known[key]
    return None


def paper_ids_by_key(db: sqlite_utils.Database, keys: Iterable[str]) -> dict[str, int]:
    """The stored paper each of ``keys`` (``arxiv:...``, ``doi:...``, ``title:...``, any alias) names; keys
    of no stored paper are left out."""
    return _lookup_keys(db, keys)


def paper_titles(db: sqlite_utils.Database, paper_ids: Iterable[int]) -> dict[int, tuple[str, str]]:
    """The canonical key and title of each stored paper among ``paper_ids``."""
    found: dict[int, tuple[str, str]] = {}
    id_list = list(dict.fromkeys(paper_ids))
    for start in range(0, len(id_list), _LOOKUP_CHUNK):
        chunk = id_list[start : start + _LOOKUP_CHUNK]
        marks = ",".join("?" * len(chunk))
        for paper_id, key, title in db.execute(
            f"SELECT id, key, title FROM papers WHERE id IN ({marks})", chunk
        ):
            found[paper_id] = (key, title)
    return found


def _lookup_keys(db: sqlite_utils.Database, keys: Iterable[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    key_list = list(keys)
    for start in range(0, len(key_list), _LOOKUP_CHUNK):
        chunk = key_list[start : start + _LOOKUP_CHUNK]
        marks = ",".join("?" * len(chunk))
        for key, paper_id in db.execute(
            f"SELECT key, paper_id FROM paper_keys WHERE key IN ({marks})", chunk
        ):
            found[key] = paper_id
    return found


def _load_rows(db: sqlite_utils.Database, paper_ids: set[int]) -> dict[int, dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    id_list = list(paper_ids)
    for start in range(0, len(id_list), _LOOKUP_CHUNK):
        chunk = id_list[start : start + _LOOKUP_CHUNK]
        marks = ",".join("?" * len(chunk))
        cursor = db.execute(f"SELECT * FROM papers WHERE id IN ({marks})", chunk)
        columns = [c[0] for c in cursor.description]
        for values in cursor:
            row = dict(zip(columns, values, strict=True))
            for column in _JSON_COLUMNS:
                row[column] = json.loads(row[column] or "[]")
            rows[row["id"]] = row
    return rows


def _new_row(paper: Paper, source: str, stamp: str | None) -> dict[str, Any]:
    return {
        "key": paper.canonical_key,
        "arxiv_id": paper.arxiv_id,
        "version": paper.version,
        "doi": paper.doi,
        "title": paper.title,
        "abstract": paper.abstract,
        "authors": list(paper.authors),
        "categories": list(paper.categories),
        "primary_category": paper.primary_category,
        "url": paper.url,
        "pdf_url": paper.pdf_url,
        "published": iso(paper.published),
        "updated": iso(paper.updated),
        "announce_type": paper.announce_type.value if paper.announce_type else None,
        "upvotes": paper.upvotes,
        "ai_summary": paper.ai_summary,
        "keywords": list(paper.keywords),
        "github_repo": paper.github_repo,
        "comment": paper.comment,
        "journal_ref": paper.journal_ref,
        "venue": paper.venue,
        "sources": [source],
        "is_new": _is_new(paper, source),
        "first_seen_at": stamp,
        "last_seen_at": stamp,
        "changed_at": stamp,
    }


def _is_new(paper: Paper, source: str) -> int:
    revision = paper.announce_type is not None and paper.announce_type.is_revision
    return 0 if revision or source == READER_ADDED else 1


def _merge(row: dict[str, Any], paper: Paper, source: str) -> bool:
    """Fold what ``paper`` knows into ``row``; True when the stored paper changed."""
    before = {k: (list(v) if isinstance(v, list) else v) for k, v in row.items()}

    if paper.version and (row["version"] is None or paper.version > row["version"]):
        # A newer version replaces what the paper says about itself.
        row["version"] = paper.version
        row["title"] = paper.title or row["title"]
        row["abstract"] = paper.abstract or row["abstract"]
        row["authors"] = list(paper.authors) or row["authors"]
        if paper.url and "arxiv.org/" in paper.url:
            row["url"] = paper.url
        if paper.pdf_url:
            row["pdf_url"] = paper.pdf_url
    else:
        if not row["abstract"] and paper.abstract:
            row["abstract"] = paper.abstract
        if not row["authors"] and paper.authors:
            row["authors"] = list(paper.authors)
        if not row["url"] and paper.url:
            row["url"] = paper.url

    for column in _FILL_COLUMNS:
        value = getattr(paper, column)
        if value and not row[column]:
            row[column] = value
    if paper.upvotes is not None and paper.upvotes != row["upvotes"]:
        row["upvotes"] = paper.upvotes
    row["categories"] = _union(row["categories"], paper.categories)
    if not row["primary_category"] and paper.primary_category:
        row["primary_category"] = paper.primary_category
    row["keywords"] = _union(row["keywords"], paper.keywords)
    if paper.published and not row["published"]:
        row["published"] = iso(paper.published)
    if paper.updated and (not row["updated"] or iso(paper.updated) > row["updated"]):
        row["updated"] = iso(paper.updated)
    if key_rank(paper.canonical_key) < key_rank(row["key"]):
        row["key"] = paper.canonical_key

    changed = any(row[k] != before[k] for k in row if k not in ("sources", "last_seen_at"))
    row["sources"] = _union(row["sources"], [source])
    return changed


def _union(first: list[str], second: Iterable[str]) -> list[str]:
    merged = list(first)
    merged.extend(value for value in second if value not in merged)
    return merged


def _db_values(row: dict[str, Any]) -> dict[str, Any]:
    values = dict(row)
    for column in _JSON_COLUMNS:
        values[column] = json.dumps(values[column], ensure_ascii=False)
    return values


def _insert(db: sqlite_utils.Database, row: dict[str, Any]) -> int:
    values = _db_values(row)
    columns = ",".join(values)
    marks = ",".join("?" * len(values))
    cursor = db.conn.execute(f"INSERT INTO papers ({columns}) VALUES ({marks})", list(values.values()))
    paper_id = cursor.lastrowid
    assert paper_id is not None
    row["id"] = paper_id
    return paper_id


def _update_rows(db: sqlite_utils.Database, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = [c for c in rows[0] if c != "id"]
    assignments = ",".join(f"{c} = ?" for c in columns)
    parameters = []
    for row in rows:
        values = _db_values(row)
        parameters.append([values[c] for c in columns] + [row["id"]])
    db.conn.executemany(f"UPDATE papers SET {assignments} WHERE id = ?", parameters)


# --- what an edition selects -------------------------------------------------------------------------------


def new_papers_between(db: sqlite_utils.Database, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The papers first seen in ``[start, end)`` that count as new, by key, with what an edition shows of
    them (``dated``: when published, else when first seen)."""
    cursor = db.execute(
        """
        SELECT id, key, title, abstract, authors, url, upvotes, ai_summary, primary_category, github_repo,
               categories, coalesce(published, first_seen_at) AS dated
        FROM papers
        WHERE is_new = 1 AND first_seen_at >= ? AND first_seen_at < ?
        ORDER BY key
        """,
        [iso(start), iso(end)],
    )
    columns = [c[0] for c in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor]


# --- what an operator looks at, and retention --------------------------------------------------------------


def paper_count(db: sqlite_utils.Database) -> int:
    return int(db.execute("SELECT count(*) FROM papers").fetchone()[0])


def common_categories(
    db: sqlite_utils.Database, *, limit: int, seen_since: datetime | None = None
) -> list[tuple[str, int]]:
    """The primary categories with the most papers (first seen since ``seen_since``, if given), commonest
    first, each with its number of papers."""
    since = "first_seen_at >= ? AND " if seen_since else ""
    return [
        (category, number)
        for category, number in db.execute(
            f"SELECT primary_category, count(*) FROM papers WHERE {since}primary_category IS NOT NULL "
            "GROUP BY primary_category ORDER BY count(*) DESC LIMIT ?",
            [*([iso(seen_since)] if seen_since else []), limit],
        )
    ]


def delete_unused_papers(db: sqlite_utils.Database, last_seen_before: str) -> int:
    """Delete the papers never placed in an edition, kept by no reader and not seen since
    ``last_seen_before``, with their keys; returns how many papers went. Runs in the caller's transaction."""
    unused = """
        SELECT id FROM papers WHERE last_seen_at < ?
        AND NOT EXISTS (SELECT 1 FROM edition_papers ep WHERE ep.paper_id = papers.id)
        AND NOT EXISTS (SELECT 1 FROM reader_signals rs WHERE rs.paper_id = papers.id)
    """
    db.conn.execute(f"DELETE FROM paper_keys WHERE paper_id IN ({unused})", [last_seen_before])
    return db.conn.execute(f"DELETE FROM papers WHERE id IN ({unused})", [last_seen_before]).rowcount
