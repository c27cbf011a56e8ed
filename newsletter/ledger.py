"""The ledger: the deliveries table (one row per edition and recipient) and delivery_variants (the
preference sets of an edition's readers), with every statement that reads or writes them.

Before anything is sent, the ledger gets one row per (edition, subscriber): ``queued``, or ``suppressed``
for an address on the suppression list. A sending worker then moves each row through

    queued -> sending      claimed by a worker (nothing has reached the server yet)
           -> committing   the whole message is at the server, only the final "." is not (written first)
           -> sent         the server answered 250 to the final "."
           -> queued       a 4xx reply or a dropped connection before the final ".": retried with backoff
           -> failed       a 5xx reply, or too many attempts; a 5.1.x hard bounce also suppresses the address
           -> suppressed   the reader unsubscribed (or bounced) while the edition was going out

so after a crash (``kill -9``) the state of every row says what happened: ``sending`` rows never reached
the server and are sent again; a ``committing`` row is the one message each worker had in flight when the
process died: the server may or may not have accepted it, so it becomes ``unknown`` and is listed rather
than risk sending it twice. There are never more of them than workers.

To keep the ledger's cost per message at one transaction, a worker's ``WorkerLedger`` writes a message's
``sent`` together with the next message's ``committing`` (or with whatever it writes next, and always
before the worker stops); both facts land in one transaction, so a worker still never has more than one
``committing`` row.

Which readers get an edition, and whether a reader still wants it the moment before its final ".", are
read from subscribers and suppressions inside the ledger's own statements: read anywhere else, the answer
could change between the read and the write.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import sqlite_utils

from newsletter import locks
from newsletter.dates import iso
from newsletter.db import write_transaction
from newsletter.editions import mark_sending
from newsletter.subscribers import suppress

FINAL_STATES = ("sent", "failed", "suppressed", "skipped", "unknown")
PENDING_STATES = ("queued", "sending", "committing")
CLAIM_BATCH = 16


@dataclass(frozen=True, slots=True)
class Variant:
    """A distinct set of readers' choices for one edition: its readers share one rendered email."""

    categories_json: str
    keywords_json: str
    empty_digest: str
    papers: int  # papers of the edition this variant gets
    exclude_keywords_json: str = "[]"  # the readers' excluded keywords, as stored on their rows

    @property
    def skipped(self) -> bool:
        return self.papers == 0 and self.empty_digest == "skip"


# --- creating an edition's ledger -----------------------------------------------------------------------------


def create_ledger(
    db: sqlite_utils.Database,
    edition_id: int,
    *,
    message_domain: str,
    variants: dict[str, Variant] | None = None,
    frequency: str | None = None,
    only: list[int] | None = None,
    now: datetime | None = None,
) -> int:
    """One row per recipient; suppressed addresses as ``suppressed``; idempotent.

    Recipients are the active subscribers (with ``frequency``, or the ids in ``only``). With ``variants``
    (digests) each row names its reader's preference set; a set that gets no paper and asked for no
    empty digests is ``skipped``. Returns the number of rows created. The recipients are fixed when the
    edition first goes out: a re-run or resume sends to those, not to whoever subscribed since.
    """
    stamp = iso(now or datetime.now(UTC))
    with write_transaction(db):
        if db.execute("SELECT 1 FROM deliveries WHERE edition_id = ? LIMIT 1", [edition_id]).fetchone():
            return 0
        _store_variants(db, edition_id, {"": Variant("", "", "", 1)} if variants is None else variants)
        created = _queue_recipients(
            db,
            edition_id,
            stamp,
            message_domain=message_domain,
            by_preferences=variants is not None,
            frequency=frequency,
            only=only,
        )
        mark_sending(db, edition_id)
        return created


def _store_variants(db: sqlite_utils.Database, edition_id: int, variants: dict[str, Variant]) -> None:
    db.conn.executemany(
        "INSERT INTO delivery_variants "
        "(edition_id, variant, categories, keywords, empty_digest, papers, exclude_keywords) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                edition_id,
                key,
                v.categories_json,
                v.keywords_json,
                v.empty_digest,
                v.papers,
                v.exclude_keywords_json,
            )
            for key, v in variants.items()
        ],
    )


# Each recipient's row: its state decided by the suppression list and its variant, and a Message-ID of
# its own, kept through every retry so that a reader's mail program can tell a second copy.
_QUEUE_RECIPIENTS = """
    INSERT INTO deliveries (edition_id, subscriber_id, email, state, message_id, created_at, updated_at,
                            last_reply, variant)
    SELECT ?, s.id, s.email,
           CASE WHEN x.email IS NOT NULL THEN 'suppressed'
                WHEN v.papers = 0 AND v.empty_digest = 'skip' THEN 'skipped'
                ELSE 'queued' END,
           '<' || ? || '.' || s.id || '.' || lower(hex(randomblob(6))) || '@' || ? || '>',
           ?, ?,
           CASE WHEN x.email IS NOT NULL THEN 'suppressed: ' || x.reason
                WHEN v.papers = 0 AND v.empty_digest = 'skip' THEN 'nothing in their topics this time'
                END,
           v.variant
    FROM subscribers s
    {variant_join}
    LEFT JOIN suppressions x ON x.email = s.email
    WHERE s.status = 'active'
      AND (? IS NULL OR s.frequency = ?)
      AND (? IS NULL OR s.id IN (SELECT value FROM json_each(?)))
    ORDER BY v.variant, s.id
"""
_ONE_VARIANT = "JOIN delivery_variants v ON v.edition_id = ? AND v.variant = ''"
_VARIANT_OF_PREFERENCES = (
    "JOIN delivery_variants v ON v.edition_id = ? AND v.categories = s.categories "
    "AND v.keywords = s.keywords AND v.empty_digest = s.empty_digest "
    "AND v.exclude_keywords = s.exclude_keywords"
)


def _queue_recipients(
    db: sqlite_utils.Database,
    edition_id: int,
    stamp: str,
    *,
    message_domain: str,
    by_preferences: bool,
    frequency: str | None,
    only: list[int] | None,
) -> int:
    variant_join = _VARIANT_OF_PREFERENCES if by_preferences else _ONE_VARIANT
    cursor = db.conn.execute(
        _QUEUE_RECIPIENTS.format(variant_join=variant_join),
        [
            edition_id,
            f"e{edition_id}",
            message_domain,
            stamp,
            stamp,
            edition_id,
            frequency,
            frequency,
            None if only is None else 1,
            json.dumps(only or []),
        ],
    )
    return cursor.rowcount


def stored_variants(db: sqlite_utils.Database, edition_id: int) -> dict[str, Variant]:
    """The preference sets the edition's ledger was created with, by variant key."""
    return {
        variant: Variant(categories, keywords, empty, papers, excluded)
        for variant, categories, keywords, empty, papers, excluded in db.execute(
            "SELECT variant, categories, keywords, empty_digest, papers, exclude_keywords "
            "FROM delivery_variants WHERE edition_id = ?",
            [edition_id],
        )
    }


# --- before and after a run -----------------------------------------------------------------------------------


def recover(
    db: sqlite_utils.Database, edition_id: int, lock: locks.Lock, *, now: datetime | None = None
) -> list[str]:
    """After a crash: ``sending`` rows go back to the queue; ``committing`` rows become ``unknown``.

    Only the holder of the edition's send lock may do this: the rows in flight of a live send are its
    own (``LockLost`` otherwise). Returns the addresses whose message may or may not have been
    accepted by the server.
    """
    stamp = iso(now or datetime.now(UTC))
    with write_transaction(db):
        locks.check(db, lock)
        unknown = [
            row[0]
            for row in db.execute(
                "SELECT email FROM deliveries WHERE edition_id = ? AND state = 'committing' ORDER BY id",
                [edition_id],
            )
        ]
        db.conn.execute(
            """
            UPDATE deliveries SET state = 'unknown', updated_at = ?,
                last_reply = 'interrupted after the whole message was sent: the server may or may not have '
                             || 'accepted it, so it is not sent again'
            WHERE edition_id = ? AND state = 'committing'
            """,
            [stamp, edition_id],
        )
        db.conn.execute(
            "UPDATE deliveries SET state = 'queued', updated_at = ? WHERE edition_id = ? AND state = 'sending'",
            [stamp, edition_id],
        )
    return unknown


def requeue_unknown(db: sqlite_utils.Database, edition_id: int) -> None:
    """The messages whose fate is unknown go out again (the operator accepted possible second copies)."""
    with write_transaction(db):
        db.conn.execute(
            "UPDATE deliveries SET state = 'queued', next_attempt_at = NULL WHERE edition_id = ? AND state = 'unknown'",
            [edition_id],
        )


def requeue_unclaimed(db: sqlite_utils.Database, delivery_ids: list[int]) -> None:
    """Rows a worker claimed but did not get to go back to the queue."""
    if not delivery_ids:
        return
    with write_transaction(db):
        db.conn.executemany(
            "UPDATE deliveries SET state = 'queued' WHERE id = ? AND state = 'sending'",
            [(delivery_id,) for delivery_id in delivery_ids],
        )


def ledger_counts(db: sqlite_utils.Database, edition_id: int) -> dict[str, int]:
    return dict(
        db.execute(
            "SELECT state, count(*) FROM deliveries WHERE edition_id = ? GROUP BY state", [edition_id]
        ).fetchall()
    )


@dataclass(slots=True)
class LedgerReport:
    """What an edition's ledger says after a run."""

    counts: dict[str, int] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)  # addresses whose message's fate is unknowable
    failures: list[tuple[str, str]] = field(default_factory=list)  # (address, last reply)
    next_retry_at: datetime | None = None


def ledger_report(db: sqlite_utils.Database, edition_id: int) -> LedgerReport:
    counts = ledger_counts(db, edition_id)
    unknown = [
        row[0]
        for row in db.execute(
            "SELECT email FROM deliveries WHERE edition_id = ? AND state = 'unknown' ORDER BY id",
            [edition_id],
        )
    ]
    failures = [
        (row[0], row[1] or "")
        for row in db.execute(
            "SELECT email, last_reply FROM deliveries WHERE edition_id = ? AND state = 'failed' ORDER BY id",
            [edition_id],
        )
    ]
    next_retry = db.execute(
        "SELECT min(next_attempt_at) FROM deliveries WHERE edition_id = ? AND state = 'queued'",
        [edition_id],
    ).fetchone()[0]
    return LedgerReport(counts, unknown, failures, datetime.fromisoformat(next_retry) if next_retry else None)


def editions_with_pending(db: sqlite_utils.Database) -> list[int]:
    """Editions with deliveries still to do: deferred retries, interrupted sends."""
    return [
        row[0]
        for row in db.execute(
            "SELECT DISTINCT edition_id FROM deliveries WHERE state IN ('queued', 'sending', 'committing') "
            "ORDER BY edition_id"
        )
    ]


# What an operator sees of an edition's ledger: each state counted under one heading.
DELIVERY_HEADINGS = {
    "sent": ("sent",),
    "failed": ("failed", "unknown"),
    "pending": PENDING_STATES,
    "not_sent": ("suppressed", "skipped"),
}
_HEADING_OF = {state: heading for heading, states in DELIVERY_HEADINGS.items() for state in states}


def delivery_summaries(db: sqlite_utils.Database, edition_ids: list[int]) -> dict[int, dict[str, int]]:
    """For each edition: its delivery rows counted under ``DELIVERY_HEADINGS``."""
    summaries = {edition_id: dict.fromkeys(DELIVERY_HEADINGS, 0) for edition_id in edition_ids}
    for edition_id, state, number in db.execute(
        "SELECT edition_id, state, count(*) FROM deliveries "
        "WHERE edition_id IN (SELECT value FROM json_each(?)) GROUP BY edition_id, state",
        [json.dumps(edition_ids)],
    ):
        summaries[edition_id][_HEADING_OF[state]] += number
    return summaries


# --- retention ------------------------------------------------------------------------------------------------


def quiet_ledgers(db: sqlite_utils.Database, edition_ids: list[int], before: str) -> list[int]:
    """Those of the editions that have a ledger and no row of it changed at or after ``before``."""
    return [
        row[0]
        for row in db.execute(
            """
            SELECT e.value FROM json_each(?) e
            WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.edition_id = e.value)
              AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.edition_id = e.value AND d.updated_at >= ?)
            """,
            [json.dumps(edition_ids), before],
        )
    ]


def delete_ledgers(db: sqlite_utils.Database, edition_ids: list[int]) -> int:
    """Delete these editions' ledgers; returns the delivery rows deleted. Runs in the caller's transaction."""
    ids = json.dumps(edition_ids)
    deleted = db.conn.execute(
        "DELETE FROM deliveries WHERE edition_id IN (SELECT value FROM json_each(?))", [ids]
    ).rowcount
    db.conn.execute(
        "DELETE FROM delivery_variants WHERE edition_id IN (SELECT value FROM json_each(?))", [ids]
    )
    return deleted


# --- forgetting a reader --------------------------------------------------------------------------------------


def delete_deliveries_to(db: sqlite_utils.Database, subscriber_id: int) -> int:
    """Delete every delivery record of this subscriber (a deletion request); returns how many went. Runs in
    the caller's transaction."""
    return db.conn.execute("DELETE FROM deliveries WHERE subscriber_id = ?", [subscriber_id]).rowcount


# --- a sending worker's ledger --------------------------------------------------------------------------------


class Unplanned(NamedTuple):
    """A queued row whose reader's layout is not planned yet."""

    delivery_id: int
    subscriber_id: int
    variant: str


def unplanned(db: sqlite_utils.Database, edition_id: int, limit: int) -> list[Unplanned]:
    """Queued rows of the edition with no layout yet, in the order the workers claim them."""
    rows = db.execute(
        """
        SELECT id, subscriber_id, variant FROM deliveries
        WHERE edition_id = ? AND state = 'queued' AND layout IS NULL ORDER BY variant, id LIMIT ?
        """,
        [edition_id, limit],
    ).fetchall()
    return [Unplanned(*row) for row in rows]


def store_layouts(db: sqlite_utils.Database, layouts: Iterable[tuple[int, str]]) -> None:
    """Each (delivery id, layout) of rows still queued; what a claim then hands to the worker."""
    with write_transaction(db):
        db.conn.executemany(
            "UPDATE deliveries SET layout = ? WHERE id = ? AND state = 'queued'",
            [(layout, delivery_id) for delivery_id, layout in layouts],
        )


class DeliveryRef(NamedTuple):
    """Which reader and edition one delivery was: what a bounce is attributed to."""

    id: int
    edition_id: int
    subscriber_id: int
    email: str


_REF = "id, edition_id, subscriber_id, email"  # a DeliveryRef's columns


def delivery_by_id(db: sqlite_utils.Database, delivery_id: int) -> DeliveryRef | None:
    row = db.execute(f"SELECT {_REF} FROM deliveries WHERE id = ?", [delivery_id]).fetchone()
    return DeliveryRef(*row) if row else None


def delivery_by_message_id(db: sqlite_utils.Database, message_id: str) -> DeliveryRef | None:
    """The delivery that sent the message with this Message-ID ("<...>", as in its header)."""
    row = db.execute(
        f"SELECT {_REF} FROM deliveries WHERE message_id = ? LIMIT 1",
        [message_id.strip()],
    ).fetchone()
    return DeliveryRef(*row) if row else None


def latest_delivery_to(db: sqlite_utils.Database, email: str) -> DeliveryRef | None:
    """The last message sent to ``email``: the best guess for a bounce that names only the address."""
    row = db.execute(
        f"""
        SELECT {_REF} FROM deliveries
        WHERE email = ? COLLATE NOCASE AND state IN ('sent', 'unknown', 'committing')
        ORDER BY coalesce(sent_at, updated_at) DESC, id DESC LIMIT 1
        """,
        [email],
    ).fetchone()
    return DeliveryRef(*row) if row else None


class Claim(NamedTuple):
    """A row a worker took from the queue, with what its message needs."""

    delivery_id: int
    subscriber_id: int
    email: str
    name: str
    message_id: str
    attempts: int  # counting this one
    variant: str
    layout: str | None = None  # planned by ``store_layouts``: "" the edition's order


class WorkerLedger:
    """One sending worker's side of an edition's ledger, on the worker's own database connection. The
    messages the server accepted are written as ``sent`` with the worker's next write (``flush`` writes
    the rest)."""

    def __init__(self, db: sqlite_utils.Database, edition_id: int) -> None:
        self.db = db
        self.edition_id = edition_id
        self._accepted: list[tuple[int, str, str]] = []  # (id, reply, time) of 250s not yet written as sent

    @property
    def unwritten(self) -> int:
        """Accepted messages not yet written as sent."""
        return len(self._accepted)

    def claim(self, *, laid_out: bool = False) -> list[Claim]:
        """Up to ``CLAIM_BATCH`` due rows, in variant order, now ``sending``; with ``laid_out``, only rows
        whose layout is planned (while the planning goes on beside the send)."""
        now = iso(datetime.now(UTC))
        planned = "AND d.layout IS NOT NULL" if laid_out else ""
        with self._transaction():
            rows = self.db.execute(
                f"""
                SELECT d.id, d.subscriber_id, d.email, s.name, d.message_id, d.attempts, d.variant, d.layout
                FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
                WHERE d.edition_id = ? AND d.state = 'queued' AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= ?)
                {planned} ORDER BY d.variant, d.id LIMIT ?
                """,
                [self.edition_id, now, CLAIM_BATCH],
            ).fetchall()
            self.db.conn.executemany(
                "UPDATE deliveries SET state = 'sending', attempts = attempts + 1, updated_at = ? WHERE id = ?",
                [(now, row[0]) for row in rows],
            )
        return [Claim(r[0], r[1], r[2], r[3], r[4], r[5] + 1, r[6], r[7]) for r in rows]

    def outlook(self) -> tuple[int, datetime | None]:
        """Rows other workers hold in flight, and when the next deferred row is due (None: none is)."""
        in_flight, next_due = self.db.execute(
            """
            SELECT sum(state IN ('sending', 'committing')), min(CASE WHEN state = 'queued' THEN next_attempt_at END)
            FROM deliveries WHERE edition_id = ?
            """,
            [self.edition_id],
        ).fetchone()
        return in_flight or 0, datetime.fromisoformat(next_due) if next_due else None

    def mark_committing(self, delivery_id: int) -> bool:
        """Written before the final dot, and only if the reader still wants the edition."""
        with self._transaction():
            cursor = self.db.conn.execute(
                """
                UPDATE deliveries SET state = 'committing', updated_at = ?
                WHERE id = ? AND state = 'sending'
                  AND EXISTS (SELECT 1 FROM subscribers s WHERE s.id = deliveries.subscriber_id AND s.status = 'active')
                  AND NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.email = deliveries.email)
                """,
                [iso(datetime.now(UTC)), delivery_id],
            )
        return cursor.rowcount == 1

    def accepted(self, delivery_id: int, reply: str) -> None:
        """The server accepted the message: written as ``sent`` with the next write."""
        self._accepted.append((delivery_id, reply, iso(datetime.now(UTC))))

    def settle(self, delivery_id: int, state: str, reply: str) -> None:
        """A final state other than sent (``failed``, ``unknown``)."""
        with self._transaction():
            self._update(delivery_id, state, reply)

    def bounced(self, delivery_id: int, address: str, reply: str) -> None:
        """A hard bounce: the message failed and the address is never mailed again."""
        with self._transaction():
            suppress(self.db, address, f"hard bounce: {reply}")
            self._update(delivery_id, "failed", reply)

    def defer(self, delivery_id: int, due: datetime, why: str) -> None:
        """Back to the queue, to be tried again at ``due``."""
        with self._transaction():
            self.db.conn.execute(
                "UPDATE deliveries SET state = 'queued', next_attempt_at = ?, last_reply = ?, updated_at = ? WHERE id = ?",
                [iso(due), why, iso(datetime.now(UTC)), delivery_id],
            )

    def suppress_unsent(self, delivery_id: int) -> None:
        """The reader left before the final ".". Only a row still in this worker's hands is written: a row
        in any other state is not this send's to describe."""
        with self._transaction():
            self.db.conn.execute(
                "UPDATE deliveries SET state = 'suppressed', last_reply = ?, updated_at = ?, sent_at = NULL "
                "WHERE id = ? AND state = 'sending'",
                ["unsubscribed before this edition reached them", iso(datetime.now(UTC)), delivery_id],
            )

    def flush(self) -> None:
        """Write the accepted messages not written yet."""
        if self._accepted:
            with self._transaction():
                pass

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """A write transaction that also records the messages the server accepted since the last one."""
        with write_transaction(self.db):
            if self._accepted:
                self.db.conn.executemany(
                    # The layout is in the message now: the row need not keep it.
                    "UPDATE deliveries SET state = 'sent', last_reply = ?, updated_at = ?, sent_at = ?, layout = NULL "
                    "WHERE id = ?",
                    [(reply, when, when, delivery_id) for delivery_id, reply, when in self._accepted],
                )
            yield
        self._accepted.clear()  # only once committed: after a rollback the next transaction tries again

    def _update(self, delivery_id: int, state: str, reply: str) -> None:
        self.db.conn.execute(
            "UPDATE deliveries SET state = ?, last_reply = ?, updated_at = ?, sent_at = NULL WHERE id = ?",
            [state, reply, iso(datetime.now(UTC)), delivery_id],
        )
