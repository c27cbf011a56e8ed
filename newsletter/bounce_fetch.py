"""Reading the bounce mailbox into the bounce policy: each message read as a report
(``bounce_reports``), taken once (``bounce_policy``), then marked on the server (``mailbox``), and every
read recorded in bounce_runs for ``status``.

A message is taken (recorded in the database, its policy applied, in one transaction) before the server
marks it: a crash in between leaves it waiting, and the next read finds it already taken (by the SHA-256
of its bytes) and only marks it. So a rerun, or a read killed half-way, never counts a bounce twice and
loses none.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime

import sqlite_utils

from newsletter import bounces
from newsletter.bounce_policy import Taken, take
from newsletter.bounce_reports import read_report
from newsletter.db import open_database
from newsletter.errors import MailboxError, MailboxUnusable
from newsletter.mailbox import MailboxRun, read_mailbox
from newsletter.outbox import return_paths
from newsletter.settings import Settings


@dataclass(slots=True)
class BounceFetch:
    """What one read of the mailbox found and did."""

    mailbox: MailboxRun
    taken: int = 0  # reports taken now
    repeated: int = 0  # messages taken by an earlier read that had not been marked (a crash)
    kinds: Counter[str] = field(default_factory=Counter)  # of the reports taken now
    actions: Counter[str] = field(default_factory=Counter)  # what they did, one per reader address

    def counts(self) -> dict[str, int]:
        """For the job's record: every figure, by name."""
        return {
            "messages": self.mailbox.found,
            "new": self.taken,
            "taken_before": self.repeated,
            **{kind: count for kind, count in self.kinds.items()},
            **{action: count for action, count in self.actions.items() if action != "ignored"},
            "failed": self.mailbox.failed,
        }


def fetch_bounces(
    settings: Settings,
    *,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    now: datetime | None = None,
) -> BounceFetch:
    """Read the waiting messages of the bounce mailbox (at most ``limit``). Raises ``MailboxError`` for
    trouble with the server, and what the database raised when a message could not be taken (the run
    stops there; that message and the rest stay for the next read)."""
    if not settings.bounces.host:
        raise MailboxUnusable(
            "no bounce mailbox is configured: set [bounces] host (and username, password) to read one"
        )
    db = open_database(settings.database)
    try:
        paths = return_paths(settings, db)
        run_id = bounces.start_run(db, "mailbox", now)
        fetched = BounceFetch(MailboxRun())

        def handle(raw: bytes) -> None:
            taken = take(db, settings, read_report(raw), paths=paths, now=now)
            _count(fetched, taken)

        try:
            fetched.mailbox = read_mailbox(settings.bounces, handle, limit=limit, progress=progress)
        except MailboxError as exc:
            _finish(db, run_id, fetched, str(exc))
            raise
        _finish(db, run_id, fetched, fetched.mailbox.stopped)
        if fetched.mailbox.handler_error is not None:
            raise fetched.mailbox.handler_error
        return fetched
    finally:
        db.close()


def _count(fetched: BounceFetch, taken: Taken) -> None:
    if not taken.new:
        fetched.repeated += 1
        return
    fetched.taken += 1
    fetched.kinds[taken.kind] += 1
    for reader in taken.readers:
        fetched.actions[reader.action] += 1


def _finish(db: sqlite_utils.Database, run_id: int, fetched: BounceFetch, error: str | None) -> None:
    # A database that cannot record the run's end (locked, full) must not hide why the run stopped.
    with suppress(sqlite3.Error):
        bounces.finish_run(
            db,
            run_id,
            found=fetched.mailbox.found,
            taken=fetched.taken,
            repeated=fetched.repeated,
            failed=fetched.mailbox.failed,
            error=error,
        )
