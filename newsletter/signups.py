"""The sign-up queue: what the form records, and the sender that turns it into emails.

The form's handler validates what was typed and records it here with one INSERT, whatever the address's
state: neither the answer nor the work behind it (and so its timing) depends on who is subscribed, and a
slow SMTP server holds up no page. A sender thread, owned by the web app, claims the requests one at a
time, applies the subscription rules (``subscribers.decide_subscription``: pending, already subscribed,
suppressed, the per-mailbox throttle) and sends the email, retrying with backoff when the server defers.

Nothing is lost when the process stops: a request stays in the table until its email is sent or given up
on. A claim is a lease in the database, so two processes draining one queue never take the same request,
and the claim of a process that died runs out and another sender takes the request over.
"""

from __future__ import annotations

import logging
import os
import smtplib
import socket
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlite_utils

from newsletter.dates import iso
from newsletter.db import open_database, write_transaction
from newsletter.errors import ServerUnavailable, SubscriberError
from newsletter.outbox import send_signup_email
from newsletter.preferences import Preferences
from newsletter.settings import Settings
from newsletter.subscribers import (
    confirmation_not_sent,
    decide_subscription,
    get_subscriber,
    normalise_email,
    signup_name,
)

log = logging.getLogger(__name__)

# A request whose email could not be sent for this long is given up (its link would arrive stale).
GIVE_UP_AFTER = timedelta(days=1)
MAX_BACKOFF = timedelta(minutes=15)
POLL_SECONDS = 10.0  # how often an idle sender looks for requests from other processes and retries


@dataclass(frozen=True, slots=True)
class SignupRequest:
    """A validated sign-up: a well-formed address, a name fit to greet a reader, valid choices."""

    email: str
    name: str
    preferences: Preferences

    @classmethod
    def create(cls, email: str, name: str, preferences: Preferences) -> SignupRequest:
        """Raises SubscriberError with the reason; looks nothing up."""
        return cls(normalise_email(email), signup_name(name), preferences)


def enqueue(db: sqlite_utils.Database, request: SignupRequest, *, now: datetime | None = None) -> None:
    """Record a sign-up: the same single INSERT for every address."""
    stamp = iso(now or datetime.now(UTC))
    prefs = request.preferences
    with write_transaction(db):
        db.conn.execute(
            "INSERT INTO signup_requests (email, name, categories, keywords, frequency, requested_at, "
            "next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                request.email,
                request.name,
                prefs.categories_json,
                prefs.keywords_json,
                prefs.frequency,
                stamp,
                stamp,
            ],
        )


@dataclass(frozen=True, slots=True)
class _Claim:
    id: int
    email: str
    name: str
    preferences: Preferences
    requested_at: datetime
    attempts: int
    subscriber_id: int | None
    kind: str | None


class SignupSender:
    """Drains the queue in a thread of its own: ``start()``, ``wake()`` after a request is recorded,
    ``stop()``. ``drain()`` does one pass in the calling thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Long enough for the slowest send (connect, TLS, DATA: each may take the SMTP timeout).
        self.lease = timedelta(seconds=max(60.0, 10 * settings.smtp.timeout))
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="signup-sender", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Finish the email in hand (bounded by the SMTP timeout) and return; the rest stays queued."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            # A send stuck longer than this is abandoned with the process; its claim runs out and the
            # request is sent by the next sender.
            self._thread.join(timeout=self.settings.smtp.timeout + 5)
            self._thread = None

    def _run(self) -> None:
        # The thread keeps one connection open while it runs. The last connection to a WAL database to
        # close checkpoints it, which takes time; were the sender's connection open only while it works,
        # the time a sign-up takes would tell whether the request before it led to an email.
        db: sqlite_utils.Database | None = None
        try:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    db = db or open_database(self.settings.database)
                    wait = self._drain(db)
                except sqlite3.Error as exc:  # locked or unreadable: the requests wait in the table
                    log.warning("sign-up emails wait: the database is not available (%s)", exc)
                    wait = POLL_SECONDS
                except Exception:
                    # A bug or a broken installation (a template that cannot be rendered). The request in
                    # hand keeps its claim until it runs out, then is tried again; the others go on.
                    log.exception("a sign-up request could not be handled")
                    wait = POLL_SECONDS
                self._wake.wait(wait)
        finally:
            if db is not None:
                db.close()

    def drain(self) -> float:
        """Handle every request that is due, in the calling thread; returns the seconds until the next
        one is (at most the poll interval)."""
        db = open_database(self.settings.database)
        try:
            return self._drain(db)
        finally:
            db.close()

    def _drain(self, db: sqlite_utils.Database) -> float:
        while not self._stop.is_set():
            claim = self._claim(db)
            if claim is None:
                break
            self._handle(db, claim)
        return self._next_due(db)

    def _claim(self, db: sqlite_utils.Database) -> _Claim | None:
        now = datetime.now(UTC)
        with write_transaction(db):
            row = db.execute(
                "SELECT id, email, name, categories, keywords, frequency, requested_at, attempts, "
                "subscriber_id, email_kind FROM signup_requests "
                "WHERE next_attempt_at <= ? AND (claimed_until IS NULL OR claimed_until < ?) "
                "ORDER BY next_attempt_at, id LIMIT 1",
                [iso(now), iso(now)],
            ).fetchone()
            if row is None:
                return None
            db.conn.execute(
                "UPDATE signup_requests SET claimed_until = ? WHERE id = ?", [iso(now + self.lease), row[0]]
            )
        return _Claim(
            id=row[0],
            email=row[1],
            name=row[2],
            preferences=Preferences.from_row(row[3], row[4], row[5]),
            requested_at=datetime.fromisoformat(row[6]),
            attempts=row[7],
            subscriber_id=row[8],
            kind=row[9],
        )

    def _handle(self, db: sqlite_utils.Database, claim: _Claim) -> None:
        subscriber_id, kind = claim.subscriber_id, claim.kind
        if kind is None:
            # Decided and recorded in one transaction: a retry after a crash sends the email decided on,
            # rather than asking again and finding the mailbox throttled by its own first attempt.
            with write_transaction(db):
                try:
                    outcome = decide_subscription(db, claim.email, claim.name, claim.preferences)
                except SubscriberError as exc:  # valid when queued, refused by a stricter rule since
                    log.warning("sign-up request %d dropped: %s", claim.id, exc)
                    outcome = None
                if outcome is None or outcome.email is None or outcome.subscriber is None:
                    db.conn.execute("DELETE FROM signup_requests WHERE id = ?", [claim.id])
                    return
                subscriber_id, kind = outcome.subscriber.id, outcome.email
                db.conn.execute(
                    "UPDATE signup_requests SET subscriber_id = ?, email_kind = ? WHERE id = ?",
                    [subscriber_id, kind, claim.id],
                )
        subscriber = get_subscriber(db, subscriber_id) if subscriber_id is not None else None
        if subscriber is None or kind is None:  # removed meanwhile
            self._finish(db, claim)
            return
        try:
            send_signup_email(self.settings, subscriber, kind)
        except (ServerUnavailable, smtplib.SMTPException, OSError) as exc:
            self._failed(db, claim, exc)
            return
        self._finish(db, claim)

    def _finish(self, db: sqlite_utils.Database, claim: _Claim) -> None:
        with write_transaction(db):
            db.conn.execute("DELETE FROM signup_requests WHERE id = ?", [claim.id])

    def _failed(self, db: sqlite_utils.Database, claim: _Claim, error: Exception) -> None:
        now = datetime.now(UTC)
        attempts = claim.attempts + 1
        reason = _describe(error)
        with write_transaction(db):
            if _permanent(error) or now - claim.requested_at >= GIVE_UP_AFTER:
                log.error("sign-up email given up after %d attempt(s): %s", attempts, reason)
                db.conn.execute("DELETE FROM signup_requests WHERE id = ?", [claim.id])
                confirmation_not_sent(db, claim.email)  # the owner may ask again at once
                return
            delay = min(
                timedelta(seconds=self.settings.smtp.retry_backoff * 2 ** (attempts - 1)), MAX_BACKOFF
            )
            log.warning("sign-up email deferred (attempt %d, next in %s): %s", attempts, delay, reason)
            db.conn.execute(
                "UPDATE signup_requests SET attempts = ?, next_attempt_at = ?, claimed_until = NULL, "
                "last_error = ? WHERE id = ?",
                [attempts, iso(now + delay), reason, claim.id],
            )

    def _next_due(self, db: sqlite_utils.Database) -> float:
        row = db.execute(
            "SELECT min(max(next_attempt_at, coalesce(claimed_until, ''))) FROM signup_requests"
        ).fetchone()
        if not row or row[0] is None:
            return POLL_SECONDS
        seconds = (datetime.fromisoformat(row[0]) - datetime.now(UTC)).total_seconds()
        return min(max(seconds, 0.05), POLL_SECONDS)


def _permanent(error: Exception) -> bool:
    """A 5xx for this recipient or this message: sending again cannot help. A refused login or sender is
    the configuration's trouble, retried until the operator fixes it."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in error.recipients.values())
    if isinstance(error, smtplib.SMTPDataError):
        return error.smtp_code >= 500
    if isinstance(error, ServerUnavailable):  # send_single's refused recipient: "550 ..."
        return str(error)[:1] == "5"
    return False


def _describe(error: Exception) -> str:
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return "; ".join(f"{code} {text!r}" for code, text in error.recipients.values())
    return str(error) or type(error).__name__
