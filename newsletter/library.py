"""What each reader taught the ranking, with every statement on its two tables: ``reader_signals`` (one row
per reader and paper: liked, hidden, or kept in their library) and ``library_pending`` (items a reader gave
that are no stored paper yet).

A reader's choice about a paper replaces the one before: the latest wins; the same choice made again
changes nothing, not even when it was made (a link followed twice, a form sent again). A signal names a stored paper;
a signal for a paper that is no longer stored is refused, and retention keeps the papers readers keep. A
pending item waits under the key that will find its paper (``arxiv:``, ``doi:`` or ``title:``) and joins
the library once that paper is stored (``promote_pending``). The ranking reads a reader's signals as
``ReaderSignal`` values, for one reader or in a few queries for every reader of an edition. Readers are
forgotten through ``newsletter.erasure``; nothing here is ever logged.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import sqlite_utils

from newsletter.dates import iso
from newsletter.db import write_transaction
from newsletter.errors import LibraryError, PaperNotFound, SubscriberError

LIKE = "like"
DISLIKE = "dislike"
LIBRARY = "library"
KINDS = (LIKE, DISLIKE, LIBRARY)
# Readers whose signals one query reads (SQLite allows at least 32,766 parameters; this keeps a batch's
# rows few enough to hold).
READERS_PER_QUERY = 500


@dataclass(frozen=True, slots=True)
class ReaderSignal:
    """One paper a reader taught, as the ranking reads it. ``id`` is the paper's key, as ``digest build
    --json`` writes it; ``paper_id`` its row."""

    id: str
    title: str
    abstract: str
    authors: tuple[str, ...]
    kind: str
    created_at: datetime
    paper_id: int


@dataclass(frozen=True, slots=True)
class Recorded:
    """What ``record_signal`` did: the paper's row, and whether anything changed (False: the reader had
    made this very choice already, and nothing was written)."""

    paper_id: int
    changed: bool


@dataclass(frozen=True, slots=True)
class PendingItem:
    """An item that is no stored paper yet: the key that will find it, what the reader gave, why it waits."""

    key: str
    item: str
    reason: str
    title: str = ""
    created_at: datetime | None = None


def record_signal(
    db: sqlite_utils.Database, subscriber_id: int, paper_key: str, kind: str, *, now: datetime | None = None
) -> Recorded:
    """The reader likes, hides or keeps the paper named by ``paper_key`` (any key it is stored under).
    ``PaperNotFound`` when no stored paper has that key; the same choice again changes nothing."""
    _check_kind(kind)
    with write_transaction(db):
        row = db.execute("SELECT paper_id FROM paper_keys WHERE key = ?", [paper_key]).fetchone()
        if row is None:
            raise PaperNotFound(
                f"no stored paper is {paper_key} (it may have been pruned since it was shown)"
            )
        changed = keep_papers(db, subscriber_id, [row[0]], kind, now=now)
        db.conn.execute(
            "DELETE FROM library_pending WHERE subscriber_id = ? AND key = ?", [subscriber_id, paper_key]
        )
    return Recorded(int(row[0]), changed > 0)


def keep_papers(
    db: sqlite_utils.Database,
    subscriber_id: int,
    paper_ids: Iterable[int],
    kind: str = LIBRARY,
    *,
    now: datetime | None = None,
) -> int:
    """Record ``kind`` for each stored paper of ``paper_ids``, replacing the reader's earlier choice (a
    paper that has this kind already keeps its row as it is); returns how many rows were written. Runs in
    the caller's transaction."""
    _check_kind(kind)
    stamp = iso(now or datetime.now(UTC))
    try:
        return db.conn.executemany(
            """
            INSERT INTO reader_signals (subscriber_id, paper_id, kind, created_at) VALUES (?, ?, ?, ?)
            ON CONFLICT (subscriber_id, paper_id) DO UPDATE SET kind = excluded.kind, created_at = excluded.created_at
            WHERE reader_signals.kind != excluded.kind
            """,
            [(subscriber_id, paper_id, kind, stamp) for paper_id in dict.fromkeys(paper_ids)],
        ).rowcount
    except sqlite3.IntegrityError as exc:  # only the foreign keys can fail: the reader or a paper is gone
        raise SubscriberError("that reader or one of the papers is no longer stored") from exc


def keep_pending(
    db: sqlite_utils.Database,
    subscriber_id: int,
    items: Sequence[PendingItem],
    *,
    now: datetime | None = None,
) -> None:
    """Keep ``items`` as the reader's pending items (an item given again replaces its earlier reason). Runs
    in the caller's transaction."""
    stamp = iso(now or datetime.now(UTC))
    db.conn.executemany(
        """
        INSERT INTO library_pending (subscriber_id, key, item, title, reason, created_at) VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (subscriber_id, key) DO UPDATE SET
            item = excluded.item, title = excluded.title, reason = excluded.reason, created_at = excluded.created_at
        """,
        [(subscriber_id, item.key, item.item, item.title, item.reason, stamp) for item in items],
    )


def drop_pending(db: sqlite_utils.Database, subscriber_id: int, keys: Iterable[str]) -> None:
    """Forget the reader's pending items under ``keys`` (they were found). Runs in the caller's transaction."""
    db.conn.executemany(
        "DELETE FROM library_pending WHERE subscriber_id = ? AND key = ?",
        [(subscriber_id, key) for key in keys],
    )


def promote_pending(db: sqlite_utils.Database, subscriber_id: int | None = None) -> int:
    """Pending items whose paper is stored now join their reader's library (a choice the reader made
    about that paper since is kept); returns how many items were found. For one reader, or every reader
    when ``subscriber_id`` is None. Runs in the caller's transaction."""
    only = "AND subscriber_id = ?" if subscriber_id is not None else ""
    params = [subscriber_id] if subscriber_id is not None else []
    db.conn.execute(
        f"""
        INSERT INTO reader_signals (subscriber_id, paper_id, kind, created_at)
        SELECT subscriber_id, k.paper_id, 'library', created_at
        FROM library_pending JOIN paper_keys k USING (key)
        WHERE 1 {only}
        ON CONFLICT (subscriber_id, paper_id) DO NOTHING
        """,
        params,
    )
    return db.conn.execute(
        f"DELETE FROM library_pending WHERE key IN (SELECT key FROM paper_keys) {only}", params
    ).rowcount


def forget(db: sqlite_utils.Database, subscriber_id: int, keys: Sequence[str]) -> list[str]:
    """Remove the papers (or pending items) named by ``keys`` from the reader's library, likes and hidden
    papers; returns the keys that named nothing of theirs."""
    missing = []
    with write_transaction(db):
        for key in keys:
            signals = db.conn.execute(
                "DELETE FROM reader_signals WHERE subscriber_id = ? "
                "AND paper_id IN (SELECT paper_id FROM paper_keys WHERE key = ?)",
                [subscriber_id, key],
            ).rowcount
            pending = db.conn.execute(
                "DELETE FROM library_pending WHERE subscriber_id = ? AND key = ?", [subscriber_id, key]
            ).rowcount
            if not signals and not pending:
                missing.append(key)
    return missing


def delete_reader_library(db: sqlite_utils.Database, subscriber_id: int) -> int:
    """Delete everything the reader taught; returns how many rows went. Runs in the caller's transaction:
    ``newsletter.erasure`` forgets a reader."""
    signals = db.conn.execute("DELETE FROM reader_signals WHERE subscriber_id = ?", [subscriber_id]).rowcount
    pending = db.conn.execute("DELETE FROM library_pending WHERE subscriber_id = ?", [subscriber_id]).rowcount
    return signals + pending


# --- reading ------------------------------------------------------------------------------------------------


def taught_papers(db: sqlite_utils.Database, limit: int) -> list[tuple[str, str, str]]:
    """(key, title, abstract) of the papers active readers liked, hid or keep, the ``limit`` taught by
    most readers (ties by row), in key order: the ranker fits its space on them with an edition's."""
    rows = db.execute(
        """
        SELECT p.key, p.title, coalesce(p.abstract, '') FROM papers p JOIN (
            SELECT s.paper_id, count(*) AS readers FROM reader_signals s
            JOIN subscribers u ON u.id = s.subscriber_id AND u.status = 'active'
            GROUP BY s.paper_id ORDER BY readers DESC, s.paper_id LIMIT ?
        ) taught ON taught.paper_id = p.id
        ORDER BY p.key
        """,
        [limit],
    ).fetchall()
    return [(str(key), str(title), str(abstract)) for key, title, abstract in rows]


def reader_signals(db: sqlite_utils.Database, subscriber_id: int) -> list[ReaderSignal]:
    """The reader's signals, oldest first."""
    return dict(signals_by_reader(db, [subscriber_id])).get(subscriber_id, [])


def signals_by_reader(
    db: sqlite_utils.Database, subscriber_ids: Iterable[int] | None = None
) -> Iterator[tuple[int, list[ReaderSignal]]]:
    """(reader, signals oldest first) for each of ``subscriber_ids`` that has signals, or for every reader
    who has any (by id) when None. Reads ``READERS_PER_QUERY`` readers a query, and each paper's text once
    however many readers taught it, so a whole list of readers costs a few queries and holds every
    distinct paper once."""
    if subscriber_ids is None:
        wanted = [
            row[0] for row in db.execute("SELECT DISTINCT subscriber_id FROM reader_signals ORDER BY 1")
        ]
    else:
        wanted = list(dict.fromkeys(subscriber_ids))
    papers: dict[int, tuple[str, str, str, tuple[str, ...]]] = {}
    for start in range(0, len(wanted), READERS_PER_QUERY):
        chunk = wanted[start : start + READERS_PER_QUERY]
        marks = ",".join("?" * len(chunk))
        grouped: dict[int, list[ReaderSignal]] = {}
        for subscriber_id, paper_id, kind, created_at, key, title, abstract, authors in db.execute(
            f"""
            SELECT s.subscriber_id, s.paper_id, s.kind, s.created_at, p.key, p.title, p.abstract, p.authors
            FROM reader_signals s JOIN papers p ON p.id = s.paper_id
            WHERE s.subscriber_id IN ({marks})
            ORDER BY s.subscriber_id, s.created_at, p.key
            """,
            chunk,
        ):
            text = papers.get(paper_id)
            if text is None:
                text = papers[paper_id] = (key, title, abstract or "", _authors(authors))
            grouped.setdefault(subscriber_id, []).append(
                ReaderSignal(
                    *text, kind=kind, created_at=datetime.fromisoformat(created_at), paper_id=paper_id
                )
            )
        for subscriber_id in chunk:
            if subscriber_id in grouped:
                yield subscriber_id, grouped[subscriber_id]


def signal_kind(db: sqlite_utils.Database, subscriber_id: int, paper_id: int) -> str | None:
    """What the reader chose about one paper (like, dislike or library), or None."""
    row = db.execute(
        "SELECT kind FROM reader_signals WHERE subscriber_id = ? AND paper_id = ?", [subscriber_id, paper_id]
    ).fetchone()
    return str(row[0]) if row else None


def pending_items(db: sqlite_utils.Database, subscriber_id: int) -> list[PendingItem]:
    """The reader's pending items, oldest first."""
    return _pending_by_reader(db, [subscriber_id]).get(subscriber_id, [])


def _pending_by_reader(db: sqlite_utils.Database, subscriber_ids: list[int]) -> dict[int, list[PendingItem]]:
    marks = ",".join("?" * len(subscriber_ids))
    grouped: dict[int, list[PendingItem]] = {}
    for subscriber_id, key, item, reason, title, created_at in db.execute(
        f"SELECT subscriber_id, key, item, reason, title, created_at FROM library_pending "
        f"WHERE subscriber_id IN ({marks}) ORDER BY subscriber_id, created_at, key",
        subscriber_ids,
    ):
        pending = PendingItem(key, item, reason, title, datetime.fromisoformat(created_at))
        grouped.setdefault(subscriber_id, []).append(pending)
    return grouped


def export_jsonl(db: sqlite_utils.Database, out: TextIO, *, status: str | None = None) -> int:
    """Write, for each reader (with ``status``, if given) who taught anything, one JSON line: their address,
    their papers (``id``, ``title``, ``kind``, ``created_at``) and their pending items; returns how many
    readers were written."""
    where = "AND s.status = ?" if status else ""
    readers = db.execute(
        f"""
        SELECT s.id, s.email FROM subscribers s
        WHERE (EXISTS (SELECT 1 FROM reader_signals r WHERE r.subscriber_id = s.id)
               OR EXISTS (SELECT 1 FROM library_pending p WHERE p.subscriber_id = s.id)) {where}
        ORDER BY s.id
        """,
        [status] if status else [],
    ).fetchall()
    for start in range(0, len(readers), READERS_PER_QUERY):
        chunk = readers[start : start + READERS_PER_QUERY]
        ids = [subscriber_id for subscriber_id, _ in chunk]
        signals, pending = dict(signals_by_reader(db, ids)), _pending_by_reader(db, ids)
        for subscriber_id, email in chunk:
            record = {
                "email": email,
                "papers": [signal_json(signal) for signal in signals.get(subscriber_id, [])],
                "pending": [pending_json(item) for item in pending.get(subscriber_id, [])],
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(readers)


def signal_json(signal: ReaderSignal) -> dict[str, Any]:
    return {"id": signal.id, "title": signal.title, "kind": signal.kind, "created_at": iso(signal.created_at)}


def pending_json(item: PendingItem) -> dict[str, Any]:
    return {
        "item": item.item,
        "key": item.key,
        "title": item.title,
        "reason": item.reason,
        "created_at": iso(item.created_at),
    }


def _authors(stored: str | None) -> tuple[str, ...]:
    try:
        names = json.loads(stored or "[]")
    except ValueError:
        return ()
    return tuple(name for name in names if isinstance(name, str)) if isinstance(names, list) else ()


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise LibraryError(f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
