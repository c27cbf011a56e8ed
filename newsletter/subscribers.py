"""Subscribers: validated addresses, safe names, statuses, suppressions, CSV import.

An address is unique whatever its case. Names are plain text without line breaks or control characters,
so nothing a subscriber typed can ever become a new mail header. Statuses: ``pending`` (waiting for
confirmation), ``active`` (receives editions), ``unsubscribed``, ``bounced``. The suppression list holds
addresses that must never be mailed again (hard bounces), whatever their status.
"""

from __future__ import annotations

import csv
import json
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils
from email_validator import EmailNotValidError, validate_email

from newsletter.db import write_transaction
from newsletter.store import iso

STATUSES = ("pending", "active", "unsubscribed", "bounced")
MAX_NAME_LENGTH = 100


class SubscriberError(ValueError):
    """Input that cannot become a subscriber; the message says why."""


@dataclass(slots=True)
class Subscriber:
    id: int
    email: str
    name: str
    status: str
    source: str
    created_at: str
    confirmed_at: str | None = None
    unsubscribed_at: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


def normalise_email(raw: str) -> str:
    """The address in canonical form (domain lower-cased, IDN as ASCII), or SubscriberError."""
    text = (raw or "").strip()
    if not text:
        raise SubscriberError("the email address is empty")
    try:
        result = validate_email(text, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise SubscriberError(f"{text!r} is not a valid email address: {exc}") from None
    return result.ascii_email or result.normalized


def clean_name(raw: str | None) -> str:
    """A display name safe for headers and pages: no line breaks or control characters, bounded length."""
    name = unicodedata.normalize("NFC", (raw or "").strip())
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        raise SubscriberError("a name cannot contain line breaks or control characters")
    if len(name) > MAX_NAME_LENGTH:
        raise SubscriberError(f"a name can be at most {MAX_NAME_LENGTH} characters")
    return name


@dataclass(slots=True)
class AddResult:
    subscriber: Subscriber
    created: bool
    note: str = ""


def add_subscriber(
    db: sqlite_utils.Database,
    email: str,
    name: str | None = None,
    *,
    status: str = "active",
    source: str = "cli",
    attributes: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> AddResult:
    """Add a subscriber (admins add confirmed, active subscribers). An address that is already there is
    left as it is: an unsubscribed reader is not re-activated behind their back."""
    address = normalise_email(email)
    display = clean_name(name)
    if status not in STATUSES:
        raise SubscriberError(f"unknown status {status!r}")
    stamp = iso(now or datetime.now(UTC))
    with write_transaction(db):
        existing = _by_email(db, address)
        if existing is not None:
            note = {
                "active": "already subscribed",
                "pending": "waiting for confirmation",
                "unsubscribed": f"unsubscribed on {(existing.unsubscribed_at or '')[:10]}; not re-activated",
                "bounced": "address bounced; not re-activated",
            }[existing.status]
            return AddResult(existing, created=False, note=note)
        db.conn.execute(
            """
            INSERT INTO subscribers (email, name, status, source, attributes, created_at, confirmed_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """,
            [
                address,
                display,
                status,
                source,
                json.dumps(attributes or {}, ensure_ascii=False),
                stamp,
                stamp if status == "active" else None,
                stamp,
            ],
        )
        created = _by_email(db, address)
    assert created is not None
    return AddResult(created, created=True)


def get_subscriber(db: sqlite_utils.Database, subscriber_id: int) -> Subscriber | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM subscribers WHERE id = ?", [subscriber_id]).fetchone()
    return _subscriber(row) if row else None


def find_subscriber(db: sqlite_utils.Database, email: str) -> Subscriber | None:
    return _by_email(db, normalise_email(email))


def list_subscribers(
    db: sqlite_utils.Database, *, status: str | None = None, search: str | None = None
) -> Iterator[Subscriber]:
    clauses, params = [], []
    if status:
        clauses.append("status = ?")
        params.append(status)
    if search:
        clauses.append("(email LIKE ? ESCAPE '\\' OR name LIKE ? ESCAPE '\\')")
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        params += [pattern, pattern]
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    for row in db.execute(f"SELECT {_COLUMNS} FROM subscribers {where} ORDER BY id", params):
        yield _subscriber(row)


def set_status(
    db: sqlite_utils.Database, subscriber_id: int, status: str, *, now: datetime | None = None
) -> Subscriber | None:
    """Change a status; unsubscribing records when. Returns the subscriber, or None if unknown."""
    if status not in STATUSES:
        raise SubscriberError(f"unknown status {status!r}")
    stamp = iso(now or datetime.now(UTC))
    with write_transaction(db):
        db.conn.execute(
            """
            UPDATE subscribers SET status = ?, updated_at = ?,
                unsubscribed_at = CASE WHEN ? = 'unsubscribed' THEN coalesce(unsubscribed_at, ?) ELSE unsubscribed_at END,
                confirmed_at = CASE WHEN ? = 'active' THEN coalesce(confirmed_at, ?) ELSE confirmed_at END
            WHERE id = ?
            """,
            [status, stamp, status, stamp, status, stamp, subscriber_id],
        )
    return get_subscriber(db, subscriber_id)


def suppress(db: sqlite_utils.Database, email: str, reason: str, *, now: datetime | None = None) -> None:
    """Never mail this address again (a hard bounce); an existing subscriber becomes ``bounced``."""
    stamp = iso(now or datetime.now(UTC))
    db.conn.execute(
        "INSERT INTO suppressions (email, reason, created_at) VALUES (?, ?, ?) ON CONFLICT (email) DO NOTHING",
        [email, reason, stamp],
    )
    db.conn.execute(
        "UPDATE subscribers SET status = 'bounced', updated_at = ? WHERE email = ? AND status != 'bounced'",
        [stamp, email],
    )


def is_suppressed(db: sqlite_utils.Database, email: str) -> bool:
    return db.execute("SELECT 1 FROM suppressions WHERE email = ?", [email]).fetchone() is not None


# --- CSV import -------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ImportReport:
    added: int = 0
    existing: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def import_csv(db: sqlite_utils.Database, path: Path, *, now: datetime | None = None) -> ImportReport:
    """Import ``email,name`` rows (a header line is optional); imported subscribers are active.

    Bad rows are reported with their line number and reason while the good ones are imported; importing
    the same file again adds nothing.
    """
    report = ImportReport()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SubscriberError(f"cannot read {path}: {exc}") from None
    rows = list(csv.reader(text.splitlines()))
    start = 1 if rows and rows[0] and rows[0][0].strip().lower() == "email" else 0
    for line_number, row in enumerate(rows[start:], start=start + 1):
        if not row or not any(cell.strip() for cell in row):
            continue
        try:
            result = add_subscriber(
                db, row[0], row[1] if len(row) > 1 else "", status="active", source="import", now=now
            )
        except SubscriberError as exc:
            report.errors.append((line_number, str(exc)))
            continue
        if result.created:
            report.added += 1
        else:
            report.existing += 1
    return report


_COLUMNS = "id, email, name, status, source, created_at, confirmed_at, unsubscribed_at, attributes"


def _by_email(db: sqlite_utils.Database, address: str) -> Subscriber | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM subscribers WHERE email = ?", [address]).fetchone()
    return _subscriber(row) if row else None


def _subscriber(row: tuple[Any, ...]) -> Subscriber:
    return Subscriber(
        id=row[0],
        email=row[1],
        name=row[2],
        status=row[3],
        source=row[4],
        created_at=row[5],
        confirmed_at=row[6],
        unsubscribed_at=row[7],
        attributes=json.loads(row[8] or "{}"),
    )
