"""The send engine: worker threads that take an edition's queued messages from the ledger
(``newsletter.ledger``, which records every step so that each reader gets at most one copy) and hand
them to the SMTP server (``newsletter.smtp``), at a pace the whole run keeps.

Each worker has its own SMTP connection (reused for every message) and its own database connection;
a shared ``SendPacer`` keeps the whole run under ``rate`` messages per second. While the server works on a
message's final dot, the worker builds the next message. If the server cannot be reached the run stops,
says so, and leaves the rest queued for ``newsletter resume``; so it does when the final "." of a few
messages in a row gets no answer (a relay slower than ``[smtp] timeout``), since each of those becomes
``unknown``.

One run sends an edition at a time: it holds the edition's send lock (``newsletter.locks``), which a
second run refuses to share even inside the same process, so no run ever touches another's rows.
"""

from __future__ import annotations

import logging
import smtplib
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlite_utils

from newsletter import locks
from newsletter.db import open_database
from newsletter.editions import mark_sent
from newsletter.errors import MessageError, SendInProgress, ServerUnavailable
from newsletter.ledger import (
    PENDING_STATES,
    Claim,
    WorkerLedger,
    ledger_report,
    recover,
    requeue_unclaimed,
    requeue_unknown,
)
from newsletter.locks import LockHeld
from newsletter.message import DigestTemplate, MessageTemplate, ReaderLayout, Recipient
from newsletter.settings import SmtpSettings
from newsletter.smtp import (
    Reply,
    begin_message,
    describe,
    end_message,
    final_reply,
    open_smtp,
    reset,
    send_content,
)
from newsletter.tokens import Links, ReturnPaths
from newsletter.trouble import explain

log = logging.getLogger(__name__)

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
        return sum(self.counts.get(state, 0) for state in PENDING_STATES)

    @property
    def complete(self) -> bool:
        """Nothing left to do, and the run was not cut short."""
        return self.pending == 0 and self.stopped is None

    @property
    def rate(self) -> float:
        return self.sent_now / self.seconds if self.seconds > 0 else 0.0


class SendPacer:
    """Spaces the messages of a whole send, all workers together, ``1 / rate`` seconds apart; ``rate`` 0
    means no limit."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def wait_turn(self) -> None:
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


class _Aborted(Exception):
    """The reader left between claim and send: the message was not completed."""


Progress = Callable[[str], None]


Templates = Callable[[str], MessageTemplate]  # the message of a variant, rendered on first use
# Work beside the workers, under the send's lock, on its own database connection: a digest lays out each
# reader's copy, and the workers send only what is laid out until it is done. Stops when the event is set.
Plan = Callable[[sqlite_utils.Database, threading.Event], None]


@dataclass(frozen=True, slots=True)
class _Send:
    """What every worker of one run shares."""

    database: Path
    edition_id: int
    templates: Templates
    links: Links
    settings: SmtpSettings
    progress: Progress
    pacer: SendPacer
    unanswered: UnansweredStreak
    stop: threading.Event
    plan: Plan | None = None
    return_paths: ReturnPaths | None = None  # None: every message has its template's envelope sender


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
    plan: Plan | None = None,
    return_paths: ReturnPaths | None = None,
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
    send = _Send(
        database,
        edition_id,
        templates,
        links,
        settings,
        progress or (lambda _s: None),
        SendPacer(settings.rate),
        UnansweredStreak(UNANSWERED_LIMIT),
        threading.Event(),
        plan,
        return_paths,
    )
    db = open_database(database, migrate=False)
    try:
        try:
            lock = locks.acquire(db, "send_locks", edition_id)
        except LockHeld as exc:
            raise SendInProgress(f"edition {edition_id} is being sent by {exc.holder}") from None
        try:
            report = _deliver_holding(db, lock, send, resend_unknown, interrupt)
        finally:
            locks.release(db, lock)
    finally:
        db.close()
    report.seconds = time.perf_counter() - started
    return report


def _deliver_holding(
    db: sqlite_utils.Database,
    lock: locks.Lock,
    send: _Send,
    resend_unknown: bool,
    interrupt: threading.Event | None,
) -> DeliveryReport:
    report = DeliveryReport(send.edition_id)
    report.unknown = recover(db, send.edition_id, lock)
    if resend_unknown:
        requeue_unknown(db, send.edition_id)
        report.unknown = []
    planner = _Planner(send) if send.plan is not None else None
    workers = [_Worker(send, planner) for _ in range(max(1, send.settings.concurrency))]
    if planner is not None:
        planner.start()
    try:
        report.stopped = _run_workers(workers, send.stop, interrupt)
    finally:
        if planner is not None:
            send.stop.set()  # the workers are done: so is laying out for them
            planner.finished.wait()
    if planner is not None and planner.stopped and not report.stopped:
        report.stopped = planner.stopped
    _conclude(db, report, workers)
    return report


class _Planner:
    """Runs the send's plan in a thread of its own, ahead of the workers."""

    def __init__(self, send: _Send) -> None:
        self.send = send
        self.done = threading.Event()  # everything queued is laid out
        self.finished = threading.Event()  # the thread has ended, done or not
        self.stopped: str | None = None

    def start(self) -> None:
        threading.Thread(target=self._run, name="plan", daemon=True).start()

    def _run(self) -> None:
        assert self.send.plan is not None
        try:
            db = open_database(self.send.database, migrate=False)
            try:
                self.send.plan(db, self.send.stop)
                if not self.send.stop.is_set():
                    self.done.set()
            finally:
                db.close()
        except Exception as exc:
            trouble = explain(exc, database=self.send.database)
            if trouble is None:
                log.exception("laying out the readers' copies failed")
            self.stopped = trouble.message if trouble else f"internal error: {type(exc).__name__}: {exc}"
            self.send.stop.set()
        finally:
            self.finished.set()


def _run_workers(
    workers: list[_Worker], stop: threading.Event, interrupt: threading.Event | None
) -> str | None:
    """Run the workers until each has finished; returns "interrupted" when the run was told to stop."""
    stopped = None
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
                    stopped = "interrupted"
    except KeyboardInterrupt:  # each connection finishes the message in hand; the rest stays queued
        stop.set()
        stopped = "interrupted"
        for worker in workers:
            worker.finished.wait()
    return stopped


def _conclude(db: sqlite_utils.Database, report: DeliveryReport, workers: list[_Worker]) -> None:
    """What the workers did and what the ledger now says; the edition is sent once nothing is left."""
    report.sent_now = sum(worker.sent for worker in workers)
    stops = [worker.stopped for worker in workers if worker.stopped]
    if stops and not report.stopped:
        report.stopped = stops[0]
    requeue_unclaimed(db, [delivery_id for worker in workers for delivery_id in worker.leftover])
    ledger = ledger_report(db, report.edition_id)
    report.counts = ledger.counts
    report.unknown += [address for address in ledger.unknown if address not in report.unknown]
    report.failures = ledger.failures
    report.next_retry_at = ledger.next_retry_at
    if report.complete:  # never after a run that stopped early: a resume finishes it, and says so
        mark_sent(db, report.edition_id)


@dataclass(slots=True)
class _Outgoing:
    """A claimed row and its message, built ahead of the SMTP transaction."""

    delivery_id: int
    address: str
    attempts: int
    envelope_from: str
    payload: bytes | None
    error: str | None = None  # why the message cannot be built


class _Worker:
    def __init__(self, send: _Send, planner: _Planner | None = None) -> None:
        self.send = send
        self.planner = planner
        self.settings = send.settings
        self.progress = send.progress
        self.stop_event = send.stop
        self.sent = 0
        self.stopped: str | None = None
        self.leftover: list[int] = []  # rows this worker claimed but did not get to
        # Set when run() has returned. Waited on instead of Thread.join: on Python 3.11 a Ctrl-C that
        # interrupts join() can leave the thread marked finished while it still runs (bpo-45274).
        self.finished = threading.Event()
        self._smtp: smtplib.SMTP | None = None
        self._ahead: _Outgoing | None = None  # the next message, built while the server was busy

    # The loop: claim a handful of due rows, send them one by one, until nothing is left to do.
    def run(self) -> None:
        try:
            db = open_database(self.send.database, migrate=False)
        except Exception as exc:
            self._stop_for(exc)
        else:
            self._run(db)
        finally:
            self.finished.set()

    def _stop_for(self, exc: Exception) -> None:
        """The send stops visibly, never leaving rows half-done in silence."""
        trouble = explain(exc, database=self.send.database)  # a locked or full database is no bug
        if trouble is None:
            log.exception("sending worker failed")
        self.stopped = trouble.message if trouble else f"internal error: {type(exc).__name__}: {exc}"
        self.stop_event.set()

    def _run(self, db: sqlite_utils.Database) -> None:
        ledger = WorkerLedger(db, self.send.edition_id)
        try:
            self._loop(ledger)
        except Exception as exc:
            self._stop_for(exc)
        finally:
            # Accepted messages that cannot be recorded stay "committing": the next run lists them as unknown.
            try:
                ledger.flush()
            except sqlite3.Error as exc:
                log.error(
                    "could not record %d accepted message(s) as sent (%s): the next run lists them as unknown",
                    ledger.unwritten,
                    exc,
                )
            except Exception:
                log.exception("could not record %d accepted message(s) as sent", ledger.unwritten)
            self._disconnect()
            db.close()

    def _loop(self, ledger: WorkerLedger) -> None:
        while not self.stop_event.is_set():
            planning = self.planner is not None and not self.planner.done.is_set()
            batch = ledger.claim(laid_out=planning)
            if not batch:
                if planning:  # the next readers' copies are being laid out
                    assert self.planner is not None
                    self.planner.done.wait(0.02)
                    continue
                if not self._wait_for_retries(ledger):
                    break
                continue
            for position, claim in enumerate(batch):
                if self.stop_event.is_set():
                    self.leftover += [c.delivery_id for c in batch[position:]]
                    break
                following = batch[position + 1] if position + 1 < len(batch) else None
                try:
                    self._deliver_one(ledger, self._outgoing(claim), following)
                except ServerUnavailable as exc:
                    self.stopped = str(exc)
                    self.stop_event.set()
                    self.leftover += [c.delivery_id for c in batch[position:]]
                    break
                except Exception:
                    # Rows not reached go back to the queue; the row in hand stays "sending", which a
                    # resume treats as never sent (the failure happened before its final dot).
                    self.leftover += [c.delivery_id for c in batch[position + 1 :]]
                    raise

    def _wait_for_retries(self, ledger: WorkerLedger) -> bool:
        """Nothing due now: wait for retries due soon or rows other workers still hold; False to finish."""
        in_flight, next_due = ledger.outlook()
        if next_due:
            wait = (next_due - datetime.now(UTC)).total_seconds()
            if wait <= self.settings.max_inline_wait:
                self.stop_event.wait(min(max(wait, 0.01), 1.0))
                return True
            return bool(in_flight) and not self.stop_event.wait(0.1)
        if in_flight:
            # Another worker's message may come back to the queue (a 4xx): stay until it settles.
            return not self.stop_event.wait(0.05)
        return False

    # --- the message ------------------------------------------------------------------------------------------

    def _build(self, claim: Claim) -> _Outgoing:
        links = self.send.links
        template = self.send.templates(claim.variant)
        digest = isinstance(template, DigestTemplate)
        recipient = Recipient(
            email=claim.email,
            name=claim.name,
            preferences_url=links.preferences(claim.subscriber_id, claim.email),
            unsubscribe_url=links.unsubscribe(claim.subscriber_id, claim.email),
            message_id=claim.message_id,
            feedback_token=links.feedback_token(claim.subscriber_id, claim.email, self.send.edition_id)
            if digest
            else "",
        )
        return_paths = self.send.return_paths
        envelope_from = (
            template.envelope_from if return_paths is None else return_paths.for_delivery(claim.delivery_id)
        )
        outgoing = _Outgoing(claim.delivery_id, claim.email, claim.attempts, envelope_from, None)
        try:
            if isinstance(template, DigestTemplate):
                layout = ReaderLayout.decode(claim.layout, template.kit)
                outgoing.payload = template.wire(recipient, layout=layout)
            else:
                outgoing.payload = template.wire(recipient)
        except MessageError as exc:
            outgoing.error = f"cannot build the message: {exc}"
        return outgoing

    def _outgoing(self, claim: Claim) -> _Outgoing:
        ahead, self._ahead = self._ahead, None
        return ahead if ahead is not None and ahead.delivery_id == claim.delivery_id else self._build(claim)

    def _build_ahead(self, claim: Claim | None) -> None:
        """Build the next message while the server works; a failure surfaces when its turn comes."""
        if claim is None:
            return
        try:
            self._ahead = self._build(claim)
        except Exception:
            log.debug("building message %s ahead failed; retried in turn", claim.delivery_id, exc_info=True)

    # --- its transaction --------------------------------------------------------------------------------------

    def _deliver_one(self, ledger: WorkerLedger, outgoing: _Outgoing, following: Claim | None) -> None:
        if outgoing.payload is None:
            ledger.settle(outgoing.delivery_id, "failed", outgoing.error or "cannot build the message")
            self.progress("failed")
            return
        self.send.pacer.wait_turn()
        smtp = self._connection()
        stage = "before the message"
        try:
            begin_message(smtp, outgoing.envelope_from, outgoing.address)
            stage = "while sending the message"
            send_content(smtp, outgoing.payload)
            if not ledger.mark_committing(outgoing.delivery_id):
                raise _Aborted()
            stage = "after the whole message"
            end_message(smtp)
            self._build_ahead(following)
            code, text = final_reply(smtp)
        except Reply as reply:
            if not reset(smtp):
                self._disconnect()
            self._settle_reply(ledger, outgoing, reply)
            return
        except _Aborted:
            self._disconnect()  # mid-DATA the only way to abandon a message is to hang up
            ledger.suppress_unsent(outgoing.delivery_id)
            return
        except (smtplib.SMTPException, OSError) as exc:
            self._disconnect()
            self._connection_lost(ledger, outgoing, stage, exc)
            return
        self.send.unanswered.answered()
        if code == 250:
            ledger.accepted(outgoing.delivery_id, f"{code} {text}")
            self.sent += 1
            self.progress("sent")
        else:
            self._settle_reply(ledger, outgoing, Reply(code, text, "end of DATA"))

    def _connection_lost(
        self, ledger: WorkerLedger, outgoing: _Outgoing, stage: str, error: smtplib.SMTPException | OSError
    ) -> None:
        if stage != "after the whole message":
            why = f"connection lost {stage}: {describe(error)}"
            self._retry_later(ledger, outgoing.delivery_id, outgoing.attempts, why)
            return
        ledger.settle(
            outgoing.delivery_id,
            "unknown",
            f"connection lost after the whole message was sent ({describe(error)}): "
            "the server may or may not have accepted it, so it is not sent again",
        )
        if self.send.unanswered.unanswered():
            raise ServerUnavailable(self._unanswered_reason(error)) from None

    def _unanswered_reason(self, error: BaseException) -> str:
        timed_out = isinstance(error, TimeoutError) or isinstance(error.__context__, TimeoutError)
        what = (
            f"did not answer within [smtp] timeout ({self.settings.timeout:g} s)"
            if timed_out
            else "hung up without an answer"
        )
        action = "raise [smtp] timeout" if timed_out else "check the server"
        return (
            f'the SMTP server {what} after the final "." of {self.send.unanswered.limit} messages in a row, so '
            f"the send stopped and the rest stays queued: {action}, then run `newsletter resume "
            f"{self.send.edition_id}` (with --resend-unknown to also send the messages whose fate is unknown; "
            "some readers may then get two copies)"
        )

    def _settle_reply(self, ledger: WorkerLedger, outgoing: _Outgoing, reply: Reply) -> None:
        if 400 <= reply.code < 500:
            self._retry_later(ledger, outgoing.delivery_id, outgoing.attempts, str(reply))
            return
        if reply.code >= 500 and reply.text.startswith("5.1."):
            ledger.bounced(outgoing.delivery_id, outgoing.address, str(reply))
        else:
            ledger.settle(outgoing.delivery_id, "failed", str(reply))
        self.progress("failed")

    def _retry_later(self, ledger: WorkerLedger, delivery_id: int, attempts: int, why: str) -> None:
        if attempts >= self.settings.max_attempts:
            ledger.settle(delivery_id, "failed", f"gave up after {attempts} attempts: {why}")
            self.progress("failed")
            return
        delay = self.settings.retry_backoff * 2 ** (attempts - 1)
        ledger.defer(delivery_id, datetime.now(UTC) + timedelta(seconds=delay), why)
        self.progress("deferred")

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
                raise ServerUnavailable(f"the SMTP server refused the login: {describe(exc)}") from exc
            except (smtplib.SMTPException, OSError) as exc:
                last_error = exc
                self.stop_event.wait(min(2.0 ** (attempt - 1) * 0.5, 10.0))
        where = f"{self.settings.host}:{self.settings.port}"
        reason = describe(last_error) if last_error else "stopped"
        raise ServerUnavailable(f"cannot reach the SMTP server {where}: {reason}")

    def _disconnect(self) -> None:
        if self._smtp is None:
            return
        try:
            self._smtp.close()
        finally:
            self._smtp = None
