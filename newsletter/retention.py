"""Retention and backups: what old data goes, when (``[retention]``), and a consistent copy of the live
database. Each table's rows are deleted by its owner; this module decides what is old, in one transaction.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlite_utils

from newsletter.bounces import delete_bounce_runs_before, delete_bounces_before
from newsletter.dates import iso
from newsletter.db import open_database, write_transaction
from newsletter.editions import ledger_pruned, mark_ledger_pruned, sent_before
from newsletter.ledger import delete_ledgers, quiet_ledgers
from newsletter.runs import delete_finished_runs
from newsletter.settings import RetentionSettings
from newsletter.source_log import delete_fetch_runs
from newsletter.store import delete_unused_papers
from newsletter.subscribers import delete_stale_signups


def prune(
    db: sqlite_utils.Database, retention: RetentionSettings, *, now: datetime | None = None
) -> dict[str, int]:
    """Delete what is old and no longer needed; editions themselves are always kept.

    Papers never placed in an edition and not seen for ``papers_days`` go, with their keys. Delivery rows
    of editions finished more than ``deliveries_days`` ago go, and the edition is marked so that it can
    never be sent again (without its ledger, a second send could reach readers twice); bounces and
    complaints received that long ago go too. Fetch, job and bounce-mailbox run records older than
    ``runs_days`` go, and so do web sign-ups never confirmed while their link was valid.
    """
    moment = now or datetime.now(UTC)
    papers_before = iso(moment - timedelta(days=retention.papers_days))
    deliveries_before = iso(moment - timedelta(days=retention.deliveries_days))
    runs_before = iso(moment - timedelta(days=retention.runs_days))
    with write_transaction(db):
        papers = delete_unused_papers(db, papers_before)
        mark_ledger_pruned(db, quiet_ledgers(db, sent_before(db, deliveries_before), deliveries_before))
        deliveries = delete_ledgers(db, ledger_pruned(db))
        fetch_runs = delete_fetch_runs(db, runs_before)
        job_runs = delete_finished_runs(db, runs_before) + delete_bounce_runs_before(db, runs_before)
        bounces = delete_bounces_before(db, deliveries_before)
        pending = delete_stale_signups(db, now=moment)
    return {
        "papers": papers,
        "deliveries": deliveries,
        "fetch_runs": fetch_runs,
        "job_runs": job_runs,
        "bounces": bounces,
        "pending_signups": pending,
    }


def backup(database: Path, target: Path) -> int:
    """A consistent copy of the live database (SQLite's online backup: the app may keep writing), as it
    is: not migrated. A missing database raises DatabaseMissing, and nothing is created, not even it."""
    source = open_database(database, create=False, migrate=False)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            raise FileExistsError(f"{target} already exists")
        destination = sqlite3.connect(target)
        try:
            source.conn.backup(destination, pages=1024)
            pages = destination.execute("PRAGMA page_count").fetchone()[0]
        finally:
            destination.close()
    finally:
        source.close()
    return int(pages)
