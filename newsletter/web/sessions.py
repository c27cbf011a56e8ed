"""Admin sessions, kept server-side so that logging out, or changing the admin password, ends them.

The session cookie carries a random session id; the database keeps only its SHA-256 (a copy of the database
logs nobody in), when the session expires, and a fingerprint of the admin password hash it was opened under.
Once the configured hash changes, every session opened under the old one is over. The secret that signs the
cookie and the mailed links is not involved: revoking a session never breaks a reader's link.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta

import sqlite_utils

from newsletter.dates import iso
from newsletter.db import write_transaction

SESSION_LIFETIME = timedelta(hours=8)  # idle time after which a session ends
# An active session's expiry moves forward at most this often: one write per few minutes, not per request.
REFRESH_AFTER = timedelta(minutes=5)


def password_fingerprint(password_hash: str) -> str:
    """Tells whether the configured hash changed, without storing the hash (or anything to attack it with)."""
    return hashlib.sha256(b"newsletter admin password\0" + password_hash.encode()).hexdigest()


def open_session(
    db: sqlite_utils.Database,
    fingerprint: str,
    *,
    replacing: str | None = None,
    now: datetime | None = None,
) -> str:
    """A new session under the password hash with ``fingerprint``; returns the id for the cookie. The
    session the browser had before (``replacing``) ends, and so do the expired ones."""
    now = now or datetime.now(UTC)
    session_id = secrets.token_urlsafe(32)
    with write_transaction(db):
        db.conn.execute(
            "DELETE FROM admin_sessions WHERE expires_at <= ? OR id_hash = ?",
            [iso(now), _digest(replacing) if replacing else None],
        )
        db.conn.execute(
            "INSERT INTO admin_sessions (id_hash, password_fingerprint, created_at, expires_at) VALUES (?, ?, ?, ?)",
            [_digest(session_id), fingerprint, iso(now), iso(now + SESSION_LIFETIME)],
        )
    return session_id


def session_valid(
    db: sqlite_utils.Database, session_id: str, fingerprint: str, *, now: datetime | None = None
) -> bool:
    """Whether ``session_id`` names an open, unexpired session opened under the current password hash."""
    now = now or datetime.now(UTC)
    row = db.execute(
        "SELECT password_fingerprint, expires_at FROM admin_sessions WHERE id_hash = ?", [_digest(session_id)]
    ).fetchone()
    if row is None or row[1] <= iso(now) or not hmac.compare_digest(row[0], fingerprint):
        return False
    if row[1] < iso(now + SESSION_LIFETIME - REFRESH_AFTER):
        with write_transaction(db):
            db.conn.execute(
                "UPDATE admin_sessions SET expires_at = ? WHERE id_hash = ?",
                [iso(now + SESSION_LIFETIME), _digest(session_id)],
            )
    return True


def close_session(db: sqlite_utils.Database, session_id: str) -> None:
    with write_transaction(db):
        db.conn.execute("DELETE FROM admin_sessions WHERE id_hash = ?", [_digest(session_id)])


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()
