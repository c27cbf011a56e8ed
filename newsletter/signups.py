"""The sign-up queue: the signup_requests table, what the form records in it and how a sender takes
requests from it.

The form's handler validates what was typed and records it here with one INSERT, whatever the address's
state: neither the answer nor the work behind it (and so its timing) depends on who is subscribed, and a
slow SMTP server holds up no page. A sender (``newsletter.signup_sender``) claims the requests one at a
time, has the subscription rules decide each (``subscribers.decide_subscription``: pending, already
subscribed, suppressed, the per-mailbox throttle) and sends the email.

Nothing is lost when the process stops: a request stays in the table until its email is sent or given up
on. A claim is a lease in the database, so two processes draining one queue never take the same request,
and the claim of a process that died runs out and another sender takes the request over.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlite_utils

from newsletter.dates import iso
from newsletter.db import write_transaction
from newsletter.errors import SubscriberError
from newsletter.preferences import Preferences
from newsletter.subscribers import confirmation_not_sent, decide_subscription, normalise_email, signup_name

log = logging.getLogger(__name__)


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
class ClaimedSignup:
    """A request a sender holds, with the decision about it once one was made."""

    id: int
    email: str
    name: str
    preferences: Preferences
    requested_at: datetime
    attempts: int
    subscriber_id: int | None
    kind: str | None  # the email decided on: "confirm" or "already"


def claim_next(db: sqlite_utils.Database, lease: timedelta) -> ClaimedSignup | None:
    """The next request due and not claimed by another sender, now claimed for ``lease``."""
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
            "UPDATE signup_requests SET claimed_until = ? WHERE id = ?", [iso(now + lease), row[0]]
        )
    return ClaimedSignup(
        id=row[0],
        email=row[1],
        name=row[2],
        preferences=Preferences.from_row(row[3], row[4], row[5]),
        requested_at=datetime.fromisoformat(row[6]),
        attempts=row[7],
        subscriber_id=row[8],
        kind=row[9],
    )


def decide(db: sqlite_utils.Database, claim: ClaimedSignup) -> tuple[int, str] | None:
    """Apply the subscription rules and record their decision with the request, in one transaction: a
    retry after a crash sends the email decided on, rather than asking again and finding the mailbox
    throttled by its own first attempt. Returns (subscriber id, email kind), or None when no email is
    due (the request is then gone)."""
    with write_transaction(db):
        try:
            outcome = decide_subscription(db, claim.email, claim.name, claim.preferences)
        except SubscriberError as exc:  # valid when queued, refused by a stricter rule since
            log.warning("sign-up request %d dropped: %s", claim.id, exc)
            outcome = None
        if outcome is None or outcome.email is None or outcome.subscriber is None:
            db.conn.execute("DELETE FROM signup_requests WHERE id = ?", [claim.id])
            return None
        db.conn.execute(
            "UPDATE signup_requests SET subscriber_id = ?, email_kind = ? WHERE id = ?",
            [outcome.subscriber.id, outcome.email, claim.id],
        )
    return outcome.subscriber.id, outcome.email


def done(db: sqlite_utils.Database, claim: ClaimedSignup) -> None:
    """The request's email went out (or is no longer due)."""
    with write_transaction(db):
        db.conn.execute("DELETE FROM signup_requests WHERE id = ?", [claim.id])


def give_up(db: sqlite_utils.Database, claim: ClaimedSignup) -> None:
    """The request's email cannot be sent: the request goes, and the mailbox may ask again at once."""
    with write_transaction(db):
        db.conn.execute("DELETE FROM signup_requests WHERE id = ?", [claim.id])
        confirmation_not_sent(db, claim.email)


def defer(db: sqlite_utils.Database, claim: ClaimedSignup, attempts: int, due: datetime, error: str) -> None:
    """The email could not be sent this time: the request is released, to be tried again at ``due``."""
    with write_transaction(db):
        db.conn.execute(
            "UPDATE signup_requests SET attempts = ?, next_attempt_at = ?, claimed_until = NULL, "
            "last_error = ? WHERE id = ?",
            [attempts, iso(due), error, claim.id],
        )


def forget_requests(db: sqlite_utils.Database, email: str, subscriber_id: int) -> int:
    """Erasure: the reader's sign-ups still queued (inside the caller's transaction), so that no email
    goes to a forgotten address later."""
    cursor = db.conn.execute(
        "DELETE FROM signup_requests WHERE email = ? COLLATE NOCASE OR subscriber_id = ?",
        [email, subscriber_id],
    )
    return cursor.rowcount


def next_due(db: sqlite_utils.Database) -> datetime | None:
    """When the next request is due and unclaimed (None: the queue is empty)."""
    row = db.execute(
        "SELECT min(max(next_attempt_at, coalesce(claimed_until, ''))) FROM signup_requests"
    ).fetchone()
    return datetime.fromisoformat(row[0]) if row and row[0] is not None else None
