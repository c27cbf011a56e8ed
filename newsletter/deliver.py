"""Deliver an edition to every recipient exactly once, over SMTP, with a crash-safe ledger.

Before anything is sent, the ledger gets one row per (edition, subscriber): ``queued``, or ``suppressed``
for an address on the suppression list. A worker then moves each row through

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

To keep the ledger's cost per message at one transaction, a worker writes a message's ``sent`` together
with the next message's ``committing`` (or with whatever it writes next, and always before it stops);
both facts land in one transaction, so a worker still never has more than one ``committing`` row. While the
server works on a message's final dot, the worker builds the next message.

Each worker has its own SMTP connection (reused for every message) and its own database connection;
a shared token bucket keeps the whole run under ``rate`` messages per second. If the server cannot be
reached the run stops, says so, and leaves the rest queued for ``newsletter resume``; so it does when the
final "." of a few messages in a row gets no answer (a relay slower than ``[smtp] timeout``), since each
of those becomes ``unknown``.

One run sends an edition at a time: it holds the edition's send lock (``newsletter.locks``), which a
second run refuses to share even inside the same process, so no run ever touches another's rows.
"""

from __future__ import annotations

import json
import logging
import smtplib
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlite_utils

from newsletter import locks
from newsletter.dates import iso
from newsletter.db import open_database, write_transaction
from newsletter.errors import MessageError, SendInProgress, ServerUnavailable
from newsletter.locks import LockHeld
from newsletter.message import MessageTemplate, Recipient
from newsletter.settings import SmtpSettings
from newsletter.subscribers import suppress
from newsletter.tokens import Links
from newsletter.trouble import explain

log = logging.getLogger(__name__)

FINAL_STATES = ("sent", "failed", "suppressed", "skipped", "unknown")
CLAIM_BATCH = 16
UNANSWERED_LIMIT = 3  # messages in a row with no answer to their final "." before the send stops


@dataclass(slots=True)
class DeliveryReport:
    edition_id: int
    counts: dict[str, int] = field(default_factory=dict)
    sent_now: int = 0
    seconds: float = 0.0
    stopped: str | None = None  # why the run stopped before the end
    unknown: list[str] = field(default_factory=list)  # addresses whose message's fate is unknowable
    failures: list[tuple[str, str]] = field(default_factory=list)  # (address, last reply)
    next_retry_at: datetime | None = None

    @property
    def pending(self) -> int:
        return sum(self.counts.get(state, 0) for state in ("queued", "sending", "committing"))

    @property
    def complete(self) -> bool:
        """Nothing left to do, and the run was not cut short."""
        return self.pending == 0 and self.stopped is None

    @property
    def rate(self) -> float:
        return self.sent_now / self.seconds if self.seconds > 0 else 0.0


# --- the ledger ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Variant:
    """A distinct set of readers' choices for one edition: its readers share one rendered email."""

    categories_json: str
    keywords_json: str
    empty_digest: str
    papers: int  # papers of the edition this variant gets

    @property
    def skipped(self) -> bool:
        return self.papers == 0 and self.empty_digest == "skip"


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
        if variants is None:
            variants = {"": Variant("", "", "", 1)}
            join = "JOIN delivery_variants v ON v.edition_id = ? AND v.variant = ''"
        else:
            join = (
                "JOIN delivery_variants v ON v.edition_id = ? AND v.categories = s.categories "
                "AND v.keywords = s.keywords AND v.empty_digest = s.empty_digest"
            )
        db.conn.executemany(
            "INSERT INTO delivery_variants (edition_id, variant, categories, keywords, empty_digest, papers) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (edition_id, key, v.categories_json, v.keywords_json, v.empty_digest, v.papers)
                for key, v in variants.items()
            ],
        )
        cursor = db.conn.execute(
            f"""
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
            {join}
            LEFT JOIN suppressions x ON x.email = s.email
            WHERE s.status = 'active'
              AND (? IS NULL OR s.frequency = ?)
              AND (? IS NULL OR s.id IN (SELECT value FROM json_each(?)))
            ORDER BY v.variant, s.id
            """,
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
        db.conn.execute(
            "UPDATE editions SET status = 'sending' WHERE id = ? AND status = 'built'", [edition_id]
        )
        return cursor.rowcount


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


def ledger_counts(db: sqlite_utils.Database, edition_id: int) -> dict[str, int]:
    return dict(
        db.execute(
            "SELECT state, count(*) FROM deliveries WHERE edition_id = ? GROUP BY state", [edition_id]
        ).fetchall()
    )


# --- sending --------------------------------------------------------------------------------------------------


class RateLimiter:
    """A token bucket shared by all workers; ``rate`` 0 means no limit."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def acquire(self) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + 1.0 / self.rate
        delay = start - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class UnansweredStreak:
    """Messages in a row, across all connections of a send, whose final "." got no answer (a timeout or a
    hang-up). Each becomes ``unknown`` and is never sent again without the operator, so a relay slower
    than ``[smtp] timeout`` would otherwise turn the whole list into ``unknown`` rows."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._count = 0
        self._lock = threading.Lock()

    def answered(self) -> None:
        with self._lock:
            self._count = 0

    def unanswered(self) -> bool:
        """Count one; True for the one that reaches the limit (that one only: the send stops once)."""
        with self._lock:
            self._count += 1
            return self._count == self.limit


class _Reply(Exception):
    """An SMTP reply other than the expected one, at a stage of the transaction."""

    def __init__(self, code: int, text: str, stage: str) -> None:
        super().__init__(f"{code} {text} (at {stage})")
        self.code = code
        self.text = text
        self.stage = stage


class _Aborted(Exception):
    """The reader left between claim and send: the message was not completed."""


Progress = Callable[[str], None]


Templates = Callable[[str], MessageTemplate]  # the message of a variant, rendered on first use


def deliver(
    database: Path,
    edition_id: int,
    templates: Templates,
    links: Links,
    settings: SmtpSettings,
    *,
    progress: Progress | None = None,
    resend_unknown: bool = False,
    interrupt: threading.Event | None = None,
) -> DeliveryReport:
    """Send every queued message of ``edition_id``; returns what happened. Create the ledger first.

    ``resend_unknown``: also send the messages whose fate is unknown, accepting that some readers may get
    a second copy (with the same Message-ID, which lets many mail programs hide it).
    ``interrupt``: when set (SIGTERM), every connection finishes the message in hand and the send stops,
    leaving the rest queued for the next run.
    Raises ``SendInProgress`` while another run, in this process or another, sends the edition: its rows
    in flight are its own, and only it can tell what became of them.
    """
    started = time.perf_counter()
    db = open_database(database, migrate=False)
    try:
        try:
            lock = locks.acquire(db, "send_locks", edition_id)
        except LockHeld as exc:
            raise SendInProgress(f"edition {edition_id} is being sent by {exc.holder}") from None
        try:
            report = _deliver_holding(
                db,
                lock,
                database,
                edition_id,
                templates,
                links,
                settings,
                progress,
                resend_unknown,
                interrupt,
            )
        finally:
            locks.release(db, lock)
    finally:
        db.close()
    report.seconds = time.perf_counter() - started
    return report


def _deliver_holding(
    db: sqlite_utils.Database,
    lock: locks.Lock,
    database: Path,
    edition_id: int,
    templates: Templates,
    links: Links,
    settings: SmtpSettings,
    progress: Progress | None,
    resend_unknown: bool,
    interrupt: threading.Event | None,
) -> DeliveryReport:
    report = DeliveryReport(edition_id)
    report.unknown = recover(db, edition_id, lock)
    if resend_unknown:
        with write_transaction(db):
            db.conn.execute(
                "UPDATE deliveries SET state = 'queued', next_attempt_at = NULL WHERE edition_id = ? AND state = 'unknown'",
                [edition_id],
            )
        report.unknown = []
    stop = threading.Event()
    limiter = RateLimiter(settings.rate)
    unanswered = UnansweredStreak(UNANSWERED_LIMIT)
    workers = [
        _Worker(
            database,
            edition_id,
            templates,
            links,
            settings,
            limiter,
            stop,
            progress or (lambda _s: None),
            unanswered,
        )
        for _ in range(max(1, settings.concurrency))
    ]
    threads = [
        threading.Thread(target=worker.run, name=f"smtp-{n}", daemon=True) for n, worker in enumerate(workers)
    ]
    for thread in threads:
        thread.start()
    try:
        for worker in workers:
            while not worker.finished.wait(0.2):
                if interrupt is not None and interrupt.is_set() and not stop.is_set():
                    stop.set()
                    report.stopped = "interrupted"
    except KeyboardInterrupt:  # each connection finishes the message in hand; the rest stays queued
        stop.set()
        report.stopped = "interrupted"
        for worker in workers:
            worker.finished.wait()
    report.sent_now = sum(worker.sent for worker in workers)
    stops = [worker.stopped for worker in workers if worker.stopped]
    if stops and not report.stopped:
        report.stopped = stops[0]
    _requeue(db, [row for worker in workers for row in worker.leftover])
    report.counts = ledger_counts(db, edition_id)
    report.unknown += [
        row[0]
        for row in db.execute(
            "SELECT email FROM deliveries WHERE edition_id = ? AND state = 'unknown' ORDER BY id",
            [edition_id],
        )
        if row[0] not in report.unknown
    ]
    report.failures = [
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
    report.next_retry_at = datetime.fromisoformat(next_retry) if next_retry else None
    if report.complete:  # never after a run that stopped early: a resume finishes it, and says so
        with write_transaction(db):
            db.conn.execute("UPDATE editions SET status = 'sent' WHERE id = ?", [edition_id])
    return report


def _requeue(db: sqlite_utils.Database, delivery_ids: list[int]) -> None:
    if not delivery_ids:
        return
    with write_transaction(db):
        db.conn.executemany(
            "UPDATE deliveries SET state = 'queued' WHERE id = ? AND state = 'sending'",
            [(delivery_id,) for delivery_id in delivery_ids],
        )


@dataclass(slots=True)
class _Outgoing:
    """A claimed row and its message, built ahead of the SMTP transaction."""

    delivery_id: int
    address: str
    attempts: int
    envelope_from: str
    payload: bytes | None
    error: str | None = None  # why the message cannot be built


Row = tuple[int, int, str, str, str, int, str]


class _Worker:
    def __init__(
        self,
        database: Path,
        edition_id: int,
        templates: Templates,
        links: Links,
        settings: SmtpSettings,
        limiter: RateLimiter,
        stop: threading.Event,
        progress: Progress,
        unanswered: UnansweredStreak,
    ) -> None:
        self.database = database
        self.edition_id = edition_id
        self.templates = templates
        self.links = links
        self.settings = settings
        self.limiter = limiter
        self.stop_event = stop
        self.progress = progress
        self.unanswered = unanswered
        self.sent = 0
        self.stopped: str | None = None
        self.leftover: list[int] = []  # rows this worker claimed but did not get to
        # Set when run() has returned. Waited on instead of Thread.join: on Python 3.11 a Ctrl-C that
        # interrupts join() can leave the thread marked finished while it still runs (bpo-45274).
        self.finished = threading.Event()
        self._smtp: smtplib.SMTP | None = None
        self._accepted: list[tuple[int, str, str]] = []  # (id, reply, time) of 250s not yet written as sent
        self._ahead: _Outgoing | None = None  # the next message, built while the server was busy

    # The loop: claim a handful of due rows, send them one by one, until nothing is left to do.
    def run(self) -> None:
        try:
            db = open_database(self.database, migrate=False)
        except Exception as exc:
            self._stop_for(exc)
        else:
            self._run(db)
        finally:
            self.finished.set()

    def _stop_for(self, exc: Exception) -> None:
        """The send stops visibly, never leaving rows half-done in silence."""
        trouble = explain(exc, database=self.database)  # a locked or full database is no bug
        if trouble is None:
            log.exception("sending worker failed")
        self.stopped = trouble.message if trouble else f"internal error: {type(exc).__name__}: {exc}"
        self.stop_event.set()

    def _run(self, db: sqlite_utils.Database) -> None:
        try:
            self._loop(db)
        except Exception as exc:
            self._stop_for(exc)
        finally:
            # Accepted messages that cannot be recorded stay "committing": the next run lists them as unknown.
            try:
                self._flush(db)
            except sqlite3.Error as exc:
                log.error(
                    "could not record %d accepted message(s) as sent (%s): the next run lists them as unknown",
                    len(self._accepted),
                    exc,
                )
            except Exception:
                log.exception("could not record %d accepted message(s) as sent", len(self._accepted))
            self._disconnect()
            db.close()

    def _loop(self, db: sqlite_utils.Database) -> None:
        while not self.stop_event.is_set():
            batch = self._claim(db)
            if not batch:
                if not self._wait_for_retries(db):
                    break
                continue
            for position, row in enumerate(batch):
                if self.stop_event.is_set():
                    self.leftover += [r[0] for r in batch[position:]]
                    break
                following = batch[position + 1] if position + 1 < len(batch) else None
                try:
                    self._deliver_one(db, self._outgoing(row), following)
                except ServerUnavailable as exc:
                    self.stopped = str(exc)
                    self.stop_event.set()
                    self.leftover += [r[0] for r in batch[position:]]
                    break
                except Exception:
                    # Rows not reached go back to the queue; the row in hand stays "sending", which a
                    # resume treats as never sent (the failure happened before its final dot).
                    self.leftover += [r[0] for r in batch[position + 1 :]]
                    raise

    def _claim(self, db: sqlite_utils.Database) -> list[Row]:
        now = iso(datetime.now(UTC))
        with self._transaction(db):
            rows = db.execute(
                """
                SELECT d.id, d.subscriber_id, d.email, s.name, d.message_id, d.attempts, d.variant
                FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
                WHERE d.edition_id = ? AND d.state = 'queued' AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= ?)
                ORDER BY d.variant, d.id LIMIT ?
                """,
                [self.edition_id, now, CLAIM_BATCH],
            ).fetchall()
            db.conn.executemany(
                "UPDATE deliveries SET state = 'sending', attempts = attempts + 1, updated_at = ? WHERE id = ?",
                [(now, row[0]) for row in rows],
            )
        return [(r[0], r[1], r[2], r[3], r[4], r[5] + 1, r[6]) for r in rows]

    def _wait_for_retries(self, db: sqlite_utils.Database) -> bool:
        """Nothing due now: wait for retries due soon or rows other workers still hold; False to finish."""
        row = db.execute(
            """
            SELECT sum(state IN ('sending', 'committing')), min(CASE WHEN state = 'queued' THEN next_attempt_at END)
            FROM deliveries WHERE edition_id = ?
            """,
            [self.edition_id],
        ).fetchone()
        in_flight, next_due = row[0] or 0, row[1]
        if next_due:
            wait = (datetime.fromisoformat(next_due) - datetime.now(UTC)).total_seconds()
            if wait <= self.settings.max_inline_wait:
                self.stop_event.wait(min(max(wait, 0.01), 1.0))
                return True
            return bool(in_flight) and not self.stop_event.wait(0.1)
        if in_flight:
            # Another worker's message may come back to the queue (a 4xx): stay until it settles.
            return not self.stop_event.wait(0.05)
        return False

    def _build(self, row: Row) -> _Outgoing:
        delivery_id, subscriber_id, address, name, message_id, attempts, variant = row
        recipient = Recipient(
            email=address,
            name=name,
            preferences_url=self.links.preferences(subscriber_id, address),
            unsubscribe_url=self.links.unsubscribe(subscriber_id, address),
            message_id=message_id,
        )
        template = self.templates(variant)
        try:
            payload = template.wire(recipient)
        except MessageError as exc:
            error = f"cannot build the message: {exc}"
            return _Outgoing(delivery_id, address, attempts, template.envelope_from, None, error)
        return _Outgoing(delivery_id, address, attempts, template.envelope_from, payload)

    def _outgoing(self, row: Row) -> _Outgoing:
        ahead, self._ahead = self._ahead, None
        return ahead if ahead is not None and ahead.delivery_id == row[0] else self._build(row)

    def _build_ahead(self, row: Row | None) -> None:
        """Build the next message while the server works; a failure surfaces when its turn comes."""
        if row is None:
            return
        try:
            self._ahead = self._build(row)
        except Exception:
            log.debug("building message %s ahead failed; retried in turn", row[0], exc_info=True)

    def _deliver_one(self, db: sqlite_utils.Database, outgoing: _Outgoing, following: Row | None) -> None:
        delivery_id, address, attempts = outgoing.delivery_id, outgoing.address, outgoing.attempts
        if outgoing.payload is None:
            self._finish(db, delivery_id, "failed", outgoing.error or "cannot build the message")
            self.progress("failed")
            return
        self.limiter.acquire()
        smtp = self._connection()
        stage = "before the message"
        try:
            self._open_transaction(smtp, outgoing.envelope_from, address)
            stage = "while sending the message"
            smtp.send(outgoing.payload)
            if not self._mark_committing(db, delivery_id):
                raise _Aborted()
            stage = "after the whole message"
            smtp.send(b".\r\n")
            self._build_ahead(following)
            code, text = smtp.getreply()
        except _Reply as reply:
            self._rset(smtp)
            self._settle_reply(db, delivery_id, address, attempts, reply)
            return
        except _Aborted:
            self._disconnect()  # mid-DATA the only way to abandon a message is to hang up
            self._suppress_unsent(db, delivery_id)
            return
        except (smtplib.SMTPException, OSError) as exc:
            self._disconnect()
            if stage == "after the whole message":
                self._finish(
                    db,
                    delivery_id,
                    "unknown",
                    f"connection lost after the whole message was sent ({_describe(exc)}): "
                    "the server may or may not have accepted it, so it is not sent again",
                )
                if self.unanswered.unanswered():
                    raise ServerUnavailable(self._unanswered_reason(exc)) from None
            else:
                self._retry_later(db, delivery_id, attempts, f"connection lost {stage}: {_describe(exc)}")
            return
        self.unanswered.answered()
        if code == 250:
            self._accepted.append((delivery_id, f"{code} {_text(text)}", iso(datetime.now(UTC))))
            self.sent += 1
            self.progress("sent")
        else:
            self._settle_reply(db, delivery_id, address, attempts, _Reply(code, _text(text), "end of DATA"))

    def _unanswered_reason(self, error: BaseException) -> str:
        timed_out = isinstance(error, TimeoutError) or isinstance(error.__context__, TimeoutError)
        what = (
            f"did not answer within [smtp] timeout ({self.settings.timeout:g} s)"
            if timed_out
            else "hung up without an answer"
        )
        action = "raise [smtp] timeout" if timed_out else "check the server"
        return (
            f'the SMTP server {what} after the final "." of {self.unanswered.limit} messages in a row, so '
            f"the send stopped and the rest stays queued: {action}, then run `newsletter resume "
            f"{self.edition_id}` (with --resend-unknown to also send the messages whose fate is unknown; "
            "some readers may then get two copies)"
        )

    def _open_transaction(self, smtp: smtplib.SMTP, sender: str, address: str) -> None:
        """MAIL FROM, RCPT TO and DATA; in one write when the server announces PIPELINING (RFC 2920)."""
        if smtp.has_extn("pipelining"):
            smtp.send(
                f"MAIL FROM:{smtplib.quoteaddr(sender)}\r\nRCPT TO:{smtplib.quoteaddr(address)}\r\nDATA\r\n"
            )
            replies = [smtp.getreply(), smtp.getreply(), smtp.getreply()]
            (mail_code, mail_text), (rcpt_code, rcpt_text), (data_code, data_text) = replies
            if data_code == 354 and (mail_code != 250 or rcpt_code not in (250, 251)):
                smtp.send(b".\r\n")  # a server that opened DATA anyway gets an empty, refused message
                smtp.getreply()
            if mail_code != 250:
                raise _Reply(mail_code, _text(mail_text), "MAIL FROM")
            if rcpt_code not in (250, 251):
                raise _Reply(rcpt_code, _text(rcpt_text), "RCPT TO")
            if data_code != 354:
                raise _Reply(data_code, _text(data_text), "DATA")
            return
        code, text = smtp.mail(sender)
        if code != 250:
            raise _Reply(code, _text(text), "MAIL FROM")
        code, text = smtp.rcpt(address)
        if code not in (250, 251):
            raise _Reply(code, _text(text), "RCPT TO")
        code, text = smtp.docmd("DATA")
        if code != 354:
            raise _Reply(code, _text(text), "DATA")

    def _settle_reply(
        self, db: sqlite_utils.Database, delivery_id: int, address: str, attempts: int, reply: _Reply
    ) -> None:
        if 400 <= reply.code < 500:
            self._retry_later(db, delivery_id, attempts, str(reply))
            return
        hard_bounce = reply.code >= 500 and reply.text.startswith("5.1.")
        with self._transaction(db):
            if hard_bounce:
                suppress(db, address, f"hard bounce: {reply}")
            self._update(db, delivery_id, "failed", str(reply))
        self.progress("failed")

    def _retry_later(self, db: sqlite_utils.Database, delivery_id: int, attempts: int, why: str) -> None:
        if attempts >= self.settings.max_attempts:
            self._finish(db, delivery_id, "failed", f"gave up after {attempts} attempts: {why}")
            self.progress("failed")
            return
        delay = self.settings.retry_backoff * 2 ** (attempts - 1)
        due = iso(datetime.now(UTC) + timedelta(seconds=delay))
        with self._transaction(db):
            db.conn.execute(
                "UPDATE deliveries SET state = 'queued', next_attempt_at = ?, last_reply = ?, updated_at = ? WHERE id = ?",
                [due, why, iso(datetime.now(UTC)), delivery_id],
            )
        self.progress("deferred")

    def _mark_committing(self, db: sqlite_utils.Database, delivery_id: int) -> bool:
        """Written before the final dot, and only if the reader still wants the edition."""
        with self._transaction(db):
            cursor = db.conn.execute(
                """
                UPDATE deliveries SET state = 'committing', updated_at = ?
                WHERE id = ? AND state = 'sending'
                  AND EXISTS (SELECT 1 FROM subscribers s WHERE s.id = deliveries.subscriber_id AND s.status = 'active')
                  AND NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.email = deliveries.email)
                """,
                [iso(datetime.now(UTC)), delivery_id],
            )
        return cursor.rowcount == 1

    def _suppress_unsent(self, db: sqlite_utils.Database, delivery_id: int) -> None:
        """The reader left before the final ".". Only a row still in this worker's hands is written: a row
        in any other state is not this send's to describe."""
        with self._transaction(db):
            db.conn.execute(
                "UPDATE deliveries SET state = 'suppressed', last_reply = ?, updated_at = ?, sent_at = NULL "
                "WHERE id = ? AND state = 'sending'",
                ["unsubscribed before this edition reached them", iso(datetime.now(UTC)), delivery_id],
            )

    def _finish(self, db: sqlite_utils.Database, delivery_id: int, state: str, reply: str) -> None:
        with self._transaction(db):
            self._update(db, delivery_id, state, reply)

    @contextmanager
    def _transaction(self, db: sqlite_utils.Database) -> Iterator[None]:
        """A write transaction that also records the messages the server accepted since the last one."""
        with write_transaction(db):
            if self._accepted:
                db.conn.executemany(
                    "UPDATE deliveries SET state = 'sent', last_reply = ?, updated_at = ?, sent_at = ? WHERE id = ?",
                    [(reply, when, when, delivery_id) for delivery_id, reply, when in self._accepted],
                )
            yield
        self._accepted.clear()  # only once committed: after a rollback the next transaction tries again

    def _flush(self, db: sqlite_utils.Database) -> None:
        if self._accepted:
            with self._transaction(db):
                pass

    @staticmethod
    def _update(db: sqlite_utils.Database, delivery_id: int, state: str, reply: str) -> None:
        """A final state other than sent."""
        db.conn.execute(
            "UPDATE deliveries SET state = ?, last_reply = ?, updated_at = ?, sent_at = NULL WHERE id = ?",
            [state, reply, iso(datetime.now(UTC)), delivery_id],
        )

    # --- the SMTP connection ----------------------------------------------------------------------------------

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is not None:
            return self._smtp
        last_error: Exception | None = None
        for attempt in range(1, self.settings.connect_attempts + 1):
            if self.stop_event.is_set():
                break
            try:
                self._smtp = open_smtp(self.settings)
                return self._smtp
            except smtplib.SMTPAuthenticationError as exc:
                raise ServerUnavailable(f"the SMTP server refused the login: {_describe(exc)}") from exc
            except (smtplib.SMTPException, OSError) as exc:
                last_error = exc
                self.stop_event.wait(min(2.0 ** (attempt - 1) * 0.5, 10.0))
        where = f"{self.settings.host}:{self.settings.port}"
        reason = _describe(last_error) if last_error else "stopped"
        raise ServerUnavailable(f"cannot reach the SMTP server {where}: {reason}")

    def _disconnect(self) -> None:
        if self._smtp is None:
            return
        try:
            self._smtp.close()
        finally:
            self._smtp = None

    def _rset(self, smtp: smtplib.SMTP) -> None:
        try:
            smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._disconnect()


def open_smtp(settings: SmtpSettings) -> smtplib.SMTP:
    """Connect, EHLO, STARTTLS and log in as configured; certificates are always verified."""
    context = ssl.create_default_context(cafile=settings.ca_file or None)
    smtp: smtplib.SMTP
    if settings.tls:
        smtp = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout, context=context)
    else:
        smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
    try:
        smtp.ehlo()
        if settings.starttls:
            smtp.starttls(context=context)
            smtp.ehlo()
        if settings.username:
            smtp.login(settings.username, settings.password)
    except BaseException:
        smtp.close()
        raise
    return smtp


def send_single(settings: SmtpSettings, envelope_from: str, address: str, message: bytes) -> str:
    """One message outside any ledger (a test copy, a confirmation email); returns the server's reply."""
    smtp = open_smtp(settings)
    try:
        refused = smtp.sendmail(envelope_from, [address], message)
        if refused:
            code, text = refused[address]
            raise ServerUnavailable(f"{code} {_text(text)}")
        return "250 accepted"
    finally:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


def _text(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return " ".join(text.split())


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    if isinstance(error, smtplib.SMTPResponseException):
        return f"{error.smtp_code} {_text(error.smtp_error)}"
    return str(error) or type(error).__name__
