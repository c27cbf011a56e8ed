"""The job_runs table: a record of every run of a scheduled job (when, for which scheduled time, by which
process, how it ended, what it did), read by the scheduler's catch-up, ``jobs list`` and ``status``.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from typing import Any

import sqlite_utils

from newsletter.dates import iso
from newsletter.db import write_transaction


def start_run(db: sqlite_utils.Database, job: str, action: str, scheduled_for: datetime | None) -> int:
    """A run of ``job`` starts in this process; returns its record's id."""
    with write_transaction(db):
        cursor = db.conn.execute(
            "INSERT INTO job_runs (job, action, scheduled_for, started_at, status, host, pid) "
            "VALUES (?, ?, ?, ?, 'running', ?, ?)",
            [job, action, iso(scheduled_for), iso(datetime.now(UTC)), socket.gethostname(), os.getpid()],
        )
    return int(cursor.lastrowid or 0)


def finish_run(
    db: sqlite_utils.Database, run_id: int, status: str, counts: dict[str, Any], error: str | None
) -> None:
    with write_transaction(db):
        db.conn.execute(
            "UPDATE job_runs SET finished_at = ?, status = ?, counts = ?, error = ? WHERE id = ?",
            [iso(datetime.now(UTC)), status, json.dumps(counts), error, run_id],
        )


def last_scheduled_run(db: sqlite_utils.Database, job: str) -> datetime | None:
    """The latest scheduled time the job completed (or that another instance was already doing); an
    interrupted or failed run does not count, so a restart within the grace time tries again."""
    row = db.execute(
        "SELECT max(scheduled_for) FROM job_runs WHERE job = ? AND status IN ('ok', 'partial', 'skipped')",
        [job],
    ).fetchone()
    return datetime.fromisoformat(row[0]) if row and row[0] else None


def latest_job_runs(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """The last run of each job: job, status, started_at, error."""
    return [
        dict(zip(("job", "status", "started_at", "error"), row, strict=True))
        for row in db.execute(
            "SELECT job, status, started_at, error FROM job_runs WHERE id IN "
            "(SELECT max(id) FROM job_runs GROUP BY job) ORDER BY job"
        )
    ]


def delete_finished_runs(db: sqlite_utils.Database, started_before: str) -> int:
    """Delete the records of finished runs started before ``started_before``; a running one is kept.
    Runs in the caller's transaction."""
    return db.conn.execute(
        "DELETE FROM job_runs WHERE started_at < ? AND status != 'running'", [started_before]
    ).rowcount
