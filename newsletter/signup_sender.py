"""The sender of sign-up emails: a thread, owned by the web app, that drains the sign-up queue
(``newsletter.signups``), one request at a time, and sends each its email (``outbox.send_signup_email``),
retrying with backoff when the server defers.
"""

from __future__ import annotations

import logging
import os
import smtplib
import socket
import sqlite3
import threading
from datetime import UTC, datetime, timedelta

import sqlite_utils

from newsletter.db import open_database
from newsletter.errors import DkimKeyError, ServerUnavailable
from newsletter.outbox import send_signup_email
from newsletter.settings import Settings
from newsletter.signups import ClaimedSignup, claim_next, decide, defer, done, give_up, next_due
from newsletter.subscribers import get_subscriber

log = logging.getLogger(__name__)

# A request whose email could not be sent for this long is given up (its link would arrive stale).
GIVE_UP_AFTER = timedelta(days=1)
MAX_BACKOFF = timedelta(minutes=15)
POLL_SECONDS = 10.0  # how often an idle sender looks for requests from other processes and retries


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
            claim = claim_next(db, self.lease)
            if claim is None:
                break
            self._handle(db, claim)
        return self._seconds_to_next(db)

    def _handle(self, db: sqlite_utils.Database, claim: ClaimedSignup) -> None:
        subscriber_id, kind = claim.subscriber_id, claim.kind
        if kind is None:
            decision = decide(db, claim)
            if decision is None:
                return
            subscriber_id, kind = decision
        subscriber = get_subscriber(db, subscriber_id) if subscriber_id is not None else None
        if subscriber is None or kind is None:  # removed meanwhile
            done(db, claim)
            return
        try:
            send_signup_email(self.settings, subscriber, kind)
        except (ServerUnavailable, smtplib.SMTPException, OSError, DkimKeyError) as exc:
            # A DKIM key that cannot be used is the configuration's trouble: retried until it is fixed.
            self._failed(db, claim, exc)
            return
        done(db, claim)

    def _failed(self, db: sqlite_utils.Database, claim: ClaimedSignup, error: Exception) -> None:
        now = datetime.now(UTC)
        attempts = claim.attempts + 1
        reason = _describe(error)
        if _permanent(error) or now - claim.requested_at >= GIVE_UP_AFTER:
            log.error("sign-up email given up after %d attempt(s): %s", attempts, reason)
            give_up(db, claim)
            return
        delay = min(timedelta(seconds=self.settings.smtp.retry_backoff * 2 ** (attempts - 1)), MAX_BACKOFF)
        log.warning("sign-up email deferred (attempt %d, next in %s): %s", attempts, delay, reason)
        defer(db, claim, attempts, now + delay, reason)

    def _seconds_to_next(self, db: sqlite_utils.Database) -> float:
        due = next_due(db)
        if due is None:
            return POLL_SECONDS
        seconds = (due - datetime.now(UTC)).total_seconds()
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
