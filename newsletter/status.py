"""What ``newsletter status`` shows: sources, papers, the latest editions with their deliveries,
subscribers by status, the last run of each job, and the bounces (the mailbox's last read, and what came
back lately), gathered from each table's owner as plain data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlite_utils

from newsletter.bounces import counts_by_kind, last_run
from newsletter.editions import recent_editions
from newsletter.ledger import delivery_summaries
from newsletter.runs import latest_job_runs
from newsletter.source_log import source_states
from newsletter.store import paper_count
from newsletter.subscribers import count_by_status

LATEST_EDITIONS = 5
BOUNCE_DAYS = 30


def collect(db: sqlite_utils.Database) -> dict[str, Any]:
    """Everything an operator looks at first, as plain data for the command line to print."""
    editions = recent_editions(db, limit=LATEST_EDITIONS)
    return {
        "sources": source_states(db),
        "papers": paper_count(db),
        "editions": editions,
        "deliveries": delivery_summaries(db, [edition.id for edition in editions]),
        "subscribers": count_by_status(db),
        "runs": latest_job_runs(db),
        "bounces": {
            "days": BOUNCE_DAYS,
            "counts": counts_by_kind(db, datetime.now(UTC) - timedelta(days=BOUNCE_DAYS)),
            "last_run": last_run(db),
        },
    }
