"""The fetch log: what each source's last fetch left behind (the sources table: the conditional-GET
validators of its last success, its last status, error and counts) and a record of every fetch
(fetch_runs), with every statement that reads or writes them.

The writes run in the caller's transaction, so a source's papers, its validators and the record of the
fetch that brought them land together or not at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlite_utils

from newsletter.dates import iso
from newsletter.settings import SourceConfig


@dataclass(frozen=True, slots=True)
class Validators:
    """What a source's last successful fetch left for a conditional GET, and the URL it fetched."""

    url: str | None
    etag: str | None
    last_modified: str | None
    body_sha256: str | None
    last_success_at: datetime | None


@dataclass(frozen=True, slots=True)
class FetchOutcome:
    """What one fetch of a source came to, as the log keeps it."""

    status: str  # ok | not_modified | failed
    fetched: int
    new: int
    updated: int
    duplicates: int
    revisions: int
    errors: int
    error: str | None
    problems: tuple[str, ...]

    def counts_json(self) -> str:
        return json.dumps(
            {
                "fetched": self.fetched,
                "new": self.new,
                "updated": self.updated,
                "duplicates": self.duplicates,
                "revisions": self.revisions,
                "errors": self.errors,
            }
        )


def last_validators(db: sqlite_utils.Database, name: str) -> Validators | None:
    """The source's validators, if it was ever fetched."""
    row = db.execute(
        "SELECT url, etag, last_modified, body_sha256, last_success_at FROM sources WHERE name = ?",
        [name],
    ).fetchone()
    if row is None:
        return None
    url, etag, last_modified, body_sha256, last_success_at = row
    return Validators(
        url=url,
        etag=etag,
        last_modified=last_modified,
        body_sha256=body_sha256,
        last_success_at=datetime.fromisoformat(last_success_at) if last_success_at else None,
    )


def record_success(
    db: sqlite_utils.Database,
    source: SourceConfig,
    *,
    etag: str | None,
    last_modified: str | None,
    body_sha256: str | None,
    outcome: FetchOutcome,
    now: datetime,
) -> None:
    """The source was fetched (or found unchanged) and stored: its new validators and counts, no error.
    Runs in the caller's transaction."""
    db.conn.execute(
        """
        INSERT INTO sources (name, kind, url, etag, last_modified, body_sha256, last_attempt_at,
                             last_success_at, last_status, last_error, last_counts)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)
        ON CONFLICT (name) DO UPDATE SET
            kind = excluded.kind, url = excluded.url, etag = excluded.etag,
            last_modified = excluded.last_modified, body_sha256 = excluded.body_sha256,
            last_attempt_at = excluded.last_attempt_at, last_success_at = excluded.last_success_at,
            last_status = excluded.last_status, last_error = NULL, last_counts = excluded.last_counts
        """,
        [
            source.name,
            source.kind,
            source.url,
            etag,
            last_modified,
            body_sha256,
            iso(now),
            iso(now),
            outcome.status,
            outcome.counts_json(),
        ],
    )


def record_failure(
    db: sqlite_utils.Database, source: SourceConfig, outcome: FetchOutcome, now: datetime
) -> None:
    """The source failed: its error and counts; the validators of its last success stay. Runs in the
    caller's transaction."""
    db.conn.execute(
        """
        INSERT INTO sources (name, kind, url, last_attempt_at, last_status, last_error, last_counts)
        VALUES (?, ?, ?, ?, 'failed', ?, ?)
        ON CONFLICT (name) DO UPDATE SET
            kind = excluded.kind, url = excluded.url, last_attempt_at = excluded.last_attempt_at,
            last_status = 'failed', last_error = excluded.last_error, last_counts = excluded.last_counts
        """,
        [source.name, source.kind, source.url, iso(now), outcome.error, outcome.counts_json()],
    )


def record_run(
    db: sqlite_utils.Database, source: str, outcome: FetchOutcome, *, started_at: datetime
) -> None:
    """A fetch of ``source`` that started at ``started_at`` and ends now. Runs in the caller's transaction."""
    db.conn.execute(
        """
        INSERT INTO fetch_runs (source, started_at, finished_at, status, fetched, new, updated, duplicates,
                                revisions, errors, error, problems)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """,
        [
            source,
            iso(started_at),
            iso(datetime.now(UTC)),
            outcome.status,
            outcome.fetched,
            outcome.new,
            outcome.updated,
            outcome.duplicates,
            outcome.revisions,
            outcome.errors,
            outcome.error,
            json.dumps(list(outcome.problems), ensure_ascii=False),
        ],
    )


# --- what an operator looks at, and retention --------------------------------------------------------------


def source_states(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Each source's last fetch: name, status, last_success_at, last_attempt_at, error; by name."""
    return [
        dict(zip(("name", "status", "last_success_at", "last_attempt_at", "error"), row, strict=True))
        for row in db.execute(
            "SELECT name, last_status, last_success_at, last_attempt_at, last_error FROM sources ORDER BY name"
        )
    ]


def delete_fetch_runs(db: sqlite_utils.Database, started_before: str) -> int:
    """Delete the records of fetches started before ``started_before``. Runs in the caller's transaction."""
    return db.conn.execute("DELETE FROM fetch_runs WHERE started_at < ?", [started_before]).rowcount
