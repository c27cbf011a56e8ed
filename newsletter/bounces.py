"""The bounces and bounce_runs tables: every bounce, complaint or auto-reply taken, and every read of the
bounce mailbox.

A report is stored once per reader address it is about, keyed by its source and its id there (a mailbox
message's SHA-256, a relay's event id): taking the same report again, after a crash or from a replayed
webhook, finds it stored and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlite_utils

from newsletter.dates import iso
from newsletter.models import BounceEvent

ACTIONS = ("suppressed", "unsubscribed", "counted", "ignored", "unmatched")


@dataclass(frozen=True, slots=True)
class BounceRow:
    """One stored report about one address (``email`` is "" when it named nobody the newsletter mailed)."""

    id: int
    source: str
    source_id: str
    kind: str
    email: str
    subscriber_id: int | None
    delivery_id: int | None
    edition_id: int | None
    attributed_by: str
    status: str
    detail: str
    action: str
    occurred_at: str | None
    received_at: str


@dataclass(frozen=True, slots=True)
class Attribution:
    """Whom a report is about, and how that was found (VERP, the Message-ID, or the address it names)."""

    email: str
    subscriber_id: int | None = None
    delivery_id: int | None = None
    edition_id: int | None = None
    by: str = ""


def already_taken(db: sqlite_utils.Database, source: str, source_id: str) -> bool:
    row = db.execute(
        "SELECT 1 FROM bounces WHERE source = ? AND source_id = ? LIMIT 1", [source, source_id]
    ).fetchone()
    return row is not None


def record(
    db: sqlite_utils.Database, event: BounceEvent, whom: Attribution, action: str, received_at: datetime
) -> bool:
    """Store the report about one address (inside the caller's transaction); False if it was stored before."""
    if action not in ACTIONS:
        raise ValueError(f"unknown bounce action {action!r}")
    cursor = db.conn.execute(
        """
        INSERT INTO bounces (source, source_id, kind, email, subscriber_id, delivery_id, edition_id,
                             attributed_by, status, detail, action, occurred_at, received_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (source, source_id, email) DO NOTHING
        """,
        [
            event.source,
            event.source_id,
            event.kind,
            whom.email,
            whom.subscriber_id,
            whom.delivery_id,
            whom.edition_id,
            whom.by,
            event.status,
            event.detail,
            action,
            iso(event.occurred_at),
            iso(received_at),
        ],
    )
    return cursor.rowcount == 1


def set_action(db: sqlite_utils.Database, event: BounceEvent, email: str, action: str) -> None:
    """What a stored report led to, once that is known (a soft bounce that reached the limit)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown bounce action {action!r}")
    db.conn.execute(
        "UPDATE bounces SET action = ? WHERE source = ? AND source_id = ? AND email = ?",
        [action, event.source, event.source_id, email],
    )


def soft_bounce_days(db: sqlite_utils.Database, email: str, since: datetime) -> int:
    """On how many different days ``email`` soft-bounced, or was refused for policy reasons (5.7.x), since
    ``since`` (at most one a day counts, as in Mailman: a server that answers every retry with a soft
    bounce must not disable a reader in an hour)."""
    row = db.execute(
        """
        SELECT count(DISTINCT substr(coalesce(occurred_at, received_at), 1, 10)) FROM bounces
        WHERE email = ? AND (kind = 'soft' OR (kind = 'hard' AND status LIKE '5.7.%'))
          AND coalesce(occurred_at, received_at) >= ?
        """,
        [email, iso(since)],
    ).fetchone()
    return int(row[0] or 0)


def list_bounces(
    db: sqlite_utils.Database,
    *,
    since: datetime | None = None,
    kind: str | None = None,
    email: str | None = None,
    subscriber_ids: list[int] | None = None,
    limit: int | None = None,
) -> list[BounceRow]:
    """Newest first."""
    clauses, params = ["1 = 1"], []
    if since is not None:
        clauses.append("received_at >= ?")
        params.append(iso(since))
    if kind is not None:
        clauses.append("kind = ?")
        params.append(kind)
    if email is not None:
        clauses.append("email = ?")
        params.append(email)
    if subscriber_ids is not None:
        clauses.append(f"subscriber_id IN ({', '.join('?' * len(subscriber_ids)) or 'NULL'})")
        params.extend(subscriber_ids)
    tail = ""
    if limit is not None:
        tail = " LIMIT ?"
        params.append(limit)
    rows = db.execute(
        f"""
        SELECT id, source, source_id, kind, email, subscriber_id, delivery_id, edition_id, attributed_by,
               status, detail, action, occurred_at, received_at
        FROM bounces WHERE {" AND ".join(clauses)} ORDER BY received_at DESC, id DESC{tail}
        """,
        params,
    ).fetchall()
    return [BounceRow(*row) for row in rows]


def counts_by_kind(db: sqlite_utils.Database, since: datetime) -> dict[str, int]:
    rows = db.execute(
        "SELECT kind, count(*) FROM bounces WHERE received_at >= ? GROUP BY kind", [iso(since)]
    ).fetchall()
    return {kind: count for kind, count in rows}


def forget_address(db: sqlite_utils.Database, email: str, subscriber_id: int) -> int:
    """Erasure: every report about a reader (inside the caller's transaction)."""
    cursor = db.conn.execute(
        "DELETE FROM bounces WHERE subscriber_id = ? OR (email != '' AND email = ?)", [subscriber_id, email]
    )
    return cursor.rowcount


def delete_bounces_before(db: sqlite_utils.Database, before: str) -> int:
    """Retention: reports received before ``before`` (inside the caller's transaction)."""
    return db.conn.execute("DELETE FROM bounces WHERE received_at < ?", [before]).rowcount


def delete_bounce_runs_before(db: sqlite_utils.Database, before: str) -> int:
    """Retention: reads of the mailbox that started before ``before``."""
    return db.conn.execute("DELETE FROM bounce_runs WHERE started_at < ?", [before]).rowcount


# --- reads of the bounce mailbox ------------------------------------------------------------------------------


def start_run(db: sqlite_utils.Database, source: str, now: datetime | None = None) -> int:
    cursor = db.conn.execute(
        "INSERT INTO bounce_runs (source, started_at) VALUES (?, ?)", [source, iso(now or datetime.now(UTC))]
    )
    db.conn.commit()
    return int(cursor.lastrowid or 0)


def finish_run(
    db: sqlite_utils.Database,
    run_id: int,
    *,
    found: int,
    taken: int,
    repeated: int,
    failed: int,
    error: str | None,
    now: datetime | None = None,
) -> None:
    db.conn.execute(
        """
        UPDATE bounce_runs SET finished_at = ?, found = ?, taken = ?, repeated = ?, failed = ?, error = ?
        WHERE id = ?
        """,
        [iso(now or datetime.now(UTC)), found, taken, repeated, failed, error, run_id],
    )
    db.conn.commit()


def last_run(db: sqlite_utils.Database) -> dict[str, Any] | None:
    row = db.execute(
        """
        SELECT source, started_at, finished_at, found, taken, repeated, failed, error
        FROM bounce_runs ORDER BY started_at DESC, id DESC LIMIT 1
        """
    ).fetchone()
    if row is None:
        return None
    keys = ("source", "started_at", "finished_at", "found", "taken", "repeated", "failed", "error")
    return dict(zip(keys, row, strict=True))
