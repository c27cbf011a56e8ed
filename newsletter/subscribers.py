"""Subscribers: validated addresses, safe names, statuses, preferences, double opt-in, CSV in and out.

An address is unique whatever its case. Names are plain text without line breaks or control characters,
so nothing a subscriber typed can ever become a new mail header. Statuses: ``pending`` (waiting for
confirmation), ``active`` (receives editions), ``unsubscribed``, ``bounced``. The suppression list holds
addresses that must never be mailed again (hard bounces), whatever their status.

Readers who sign up on the web start ``pending`` and become ``active`` only through the signed link in
the confirmation email; admins (command line, imports, admin pages) add confirmed readers directly.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import sqlite_utils
from email_validator import EmailNotValidError, validate_email

from newsletter.dates import iso
from newsletter.db import write_transaction
from newsletter.errors import SubscriberError
from newsletter.preferences import Follows, Preferences

STATUSES = ("pending", "active", "unsubscribed", "bounced")
MAX_NAME_LENGTH = 100
# A mailbox gets at most one sign-up email in this time, however often the form is sent and however the
# address is spelt (see mailbox_key).
CONFIRMATION_INTERVAL = timedelta(minutes=10)
# A confirmation link is valid this many days; a pending sign-up is deleted a week after that (the email
# may have gone out up to a day after the request, see newsletter.signups).
CONFIRMATION_DAYS = 7
PENDING_KEPT = timedelta(days=CONFIRMATION_DAYS + 7)
IMPORT_BATCH = 5000


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
    preferences: Preferences = field(default_factory=Preferences)
    follows: Follows = field(default_factory=Follows)


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


# A name greets the reader in every digest, and a sign-up can be made by anybody for any address: a name
# that reads as a link or an address ("verify at evil.example/login") is refused at sign-up.
_LINK_LIKE = re.compile(r"@|://|\bwww\.|\w\.[^\W\d_]{2,}\b", re.IGNORECASE)


def signup_name(raw: str | None) -> str:
    """A name typed into the public form: ``clean_name``, and nothing that looks like a web or email
    address (admins, who vouch for what they add, are not held to this)."""
    name = clean_name(raw)
    if _LINK_LIKE.search(name):
        raise SubscriberError(
            "a name cannot look like a web or email address (put a space after an initial's dot)"
        )
    return name


def mailbox_key(address: str) -> str:
    """The mailbox an address delivers to, for the anti-bombing throttle: ``Ann+news@Example.org`` and
    ``ann+x@example.org`` are both ``ann@example.org``. Sub-addressing with "+" (RFC 5233) is what the large
    providers and the common mail servers deliver to the base mailbox, and case is ignored in practice.
    Rules only one provider has (Gmail ignoring dots, "-" as a separator) are left alone: guessing them
    for every domain would merge mailboxes that differ; the per-client limit bounds what they allow."""
    local, _, domain = address.rpartition("@")
    return f"{local.split('+', 1)[0]}@{domain}".lower()


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
    preferences: Preferences | None = None,
    now: datetime | None = None,
) -> AddResult:
    """Add a subscriber (admins add confirmed, active subscribers). An address that is already there is
    left as it is: an unsubscribed reader is not re-activated behind their back."""
    address = normalise_email(email)
    display = clean_name(name)
    if status not in STATUSES:
        raise SubscriberError(f"unknown status {status!r}")
    prefs = preferences or Preferences()
    stamp = iso(now or datetime.now(UTC))
    with write_transaction(db):
        existing = _by_email(db, address)
        if existing is not None:
            return AddResult(existing, created=False, note=_note(existing))
        _insert(db, address, display, status, source, attributes or {}, prefs, stamp)
        created = _by_email(db, address)
    assert created is not None
    return AddResult(created, created=True)


def _note(existing: Subscriber) -> str:
    return {
        "active": "already subscribed",
        "pending": "waiting for confirmation",
        "unsubscribed": f"unsubscribed on {(existing.unsubscribed_at or '')[:10]}; not re-activated",
        "bounced": "address bounced; not re-activated",
    }[existing.status]


def _insert(
    db: sqlite_utils.Database,
    address: str,
    name: str,
    status: str,
    source: str,
    attributes: dict[str, Any],
    prefs: Preferences,
    stamp: str | None,
) -> None:
    db.conn.execute(
        """
        INSERT INTO subscribers (email, name, status, source, attributes, created_at, confirmed_at, updated_at,
                                 categories, keywords, frequency, empty_digest)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """,
        [
            address,
            name,
            status,
            source,
            json.dumps(attributes, ensure_ascii=False),
            stamp,
            stamp if status == "active" else None,
            stamp,
            prefs.categories_json,
            prefs.keywords_json,
            prefs.frequency,
            prefs.empty_digest,
        ],
    )


def get_subscriber(db: sqlite_utils.Database, subscriber_id: int) -> Subscriber | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM subscribers WHERE id = ?", [subscriber_id]).fetchone()
    return _subscriber(row) if row else None


def find_subscriber(db: sqlite_utils.Database, email: str) -> Subscriber | None:
    return _by_email(db, normalise_email(email))


def list_subscribers(
    db: sqlite_utils.Database,
    *,
    status: str | None = None,
    search: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> Iterator[Subscriber]:
    where, params = _filters(status, search)
    page = f" LIMIT {int(limit)} OFFSET {int(offset)}" if limit else ""
    for row in db.execute(f"SELECT {_COLUMNS} FROM subscribers {where} ORDER BY id{page}", params):
        yield _subscriber(row)


def count_subscribers(
    db: sqlite_utils.Database, *, status: str | None = None, search: str | None = None
) -> int:
    where, params = _filters(status, search)
    return int(db.execute(f"SELECT count(*) FROM subscribers {where}", params).fetchone()[0])


def _filters(status: str | None, search: str | None) -> tuple[str, list[str]]:
    clauses, params = [], []
    if status:
        clauses.append("status = ?")
        params.append(status)
    if search:
        clauses.append("(email LIKE ? ESCAPE '\\' OR name LIKE ? ESCAPE '\\')")
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        params += [pattern, pattern]
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


def set_status(
    db: sqlite_utils.Database, subscriber_id: int, status: str, *, now: datetime | None = None
) -> Subscriber | None:
    """Change a status; unsubscribing and confirming record when. Returns the subscriber, or None."""
    if status not in STATUSES:
        raise SubscriberError(f"unknown status {status!r}")
    stamp = iso(now or datetime.now(UTC))
    with write_transaction(db):
        db.conn.execute(
            """
            UPDATE subscribers SET status = ?, updated_at = ?,
                unsubscribed_at = CASE WHEN ? = 'unsubscribed' THEN ? ELSE unsubscribed_at END,
                confirmed_at = CASE WHEN ? = 'active' THEN coalesce(confirmed_at, ?) ELSE confirmed_at END
            WHERE id = ?
            """,
            [status, stamp, status, stamp, status, stamp, subscriber_id],
        )
    return get_subscriber(db, subscriber_id)


def set_preferences(
    db: sqlite_utils.Database, subscriber_id: int, preferences: Preferences, *, now: datetime | None = None
) -> None:
    with write_transaction(db):
        _write_preferences(db, subscriber_id, preferences, iso(now or datetime.now(UTC)))


def _write_preferences(
    db: sqlite_utils.Database, subscriber_id: int, preferences: Preferences, stamp: str
) -> None:
    db.conn.execute(
        """
        UPDATE subscribers SET categories = ?, keywords = ?, frequency = ?, empty_digest = ?, updated_at = ?
        WHERE id = ?
        """,
        [
            preferences.categories_json,
            preferences.keywords_json,
            preferences.frequency,
            preferences.empty_digest,
            stamp,
            subscriber_id,
        ],
    )


def change_follows(
    db: sqlite_utils.Database,
    subscriber_id: int,
    change: Callable[[Follows], Follows],
    *,
    now: datetime | None = None,
) -> Follows:
    """Replace the reader's follows with ``change(current follows)``, read and written under the write lock
    so that two changes at once both count; returns the follows stored. A PreferenceError from ``change``
    leaves them as they were."""
    with write_transaction(db):
        row = db.execute(
            "SELECT follow_authors, exclude_keywords FROM subscribers WHERE id = ?", [subscriber_id]
        ).fetchone()
        if row is None:
            raise SubscriberError("that reader is no longer on the list")
        follows = change(Follows.from_row(row[0], row[1]))
        db.conn.execute(
            "UPDATE subscribers SET follow_authors = ?, exclude_keywords = ?, updated_at = ? WHERE id = ?",
            [
                follows.authors_json,
                follows.exclude_keywords_json,
                iso(now or datetime.now(UTC)),
                subscriber_id,
            ],
        )
    return follows


def delete_subscriber(db: sqlite_utils.Database, subscriber_id: int) -> bool:
    """Delete the subscriber's row; False when there was none. Runs in the caller's transaction:
    ``newsletter.erasure`` forgets a reader, their other records first."""
    return db.conn.execute("DELETE FROM subscribers WHERE id = ?", [subscriber_id]).rowcount == 1


def _add_suppression(db: sqlite_utils.Database, email: str, reason: str, stamp: str | None) -> None:
    """The address goes on the suppression list; the first reason stays."""
    db.conn.execute(
        "INSERT INTO suppressions (email, reason, created_at) VALUES (?, ?, ?) ON CONFLICT (email) DO NOTHING",
        [email, reason, stamp],
    )


def suppress(db: sqlite_utils.Database, email: str, reason: str, *, now: datetime | None = None) -> None:
    """Never mail this address again (a hard bounce); an existing subscriber becomes ``bounced``."""
    stamp = iso(now or datetime.now(UTC))
    _add_suppression(db, email, reason, stamp)
    db.conn.execute(
        "UPDATE subscribers SET status = 'bounced', updated_at = ? WHERE email = ? AND status != 'bounced'",
        [stamp, email],
    )


def complained(db: sqlite_utils.Database, email: str, reason: str, *, now: datetime | None = None) -> None:
    """The reader marked a message as spam: never mail them again, and they are unsubscribed (not
    ``bounced``: the address works, its owner does not want the list). Inside the caller's transaction."""
    stamp = iso(now or datetime.now(UTC))
    _add_suppression(db, email, reason, stamp)
    db.conn.execute(
        """
        UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = coalesce(unsubscribed_at, ?), updated_at = ?
        WHERE email = ? AND status != 'unsubscribed'
        """,
        [stamp, stamp, email],
    )


def suppression_reason(db: sqlite_utils.Database, email: str) -> str | None:
    row = db.execute("SELECT reason FROM suppressions WHERE email = ?", [email]).fetchone()
    return str(row[0]) if row else None


def lift_suppression(db: sqlite_utils.Database, email: str, *, now: datetime | None = None) -> str | None:
    """Mail this address again (an operator's decision: a bounce that was wrong, a mailbox fixed): its
    suppression goes, and a ``bounced`` reader is ``active`` again; an unsubscribed one stays so (they can
    sign up again). Returns the suppression's reason, None when the address was not suppressed."""
    stamp = iso(now or datetime.now(UTC))
    with write_transaction(db):
        reason = suppression_reason(db, email)
        db.conn.execute("DELETE FROM suppressions WHERE email = ?", [email])
        db.conn.execute(
            "UPDATE subscribers SET status = 'active', updated_at = ? WHERE email = ? AND status = 'bounced'",
            [stamp, email],
        )
    return reason


def is_suppressed(db: sqlite_utils.Database, email: str) -> bool:
    return db.execute("SELECT 1 FROM suppressions WHERE email = ?", [email]).fetchone() is not None


# --- double opt-in ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class SignupOutcome:
    """What a sign-up led to. The page shown is the same whatever it is, so nobody can learn from the
    form who is subscribed; ``email`` says which email, if any, the address should now receive."""

    subscriber: Subscriber | None
    email: str | None  # "confirm" | "already-subscribed" | None (suppressed, or asked too often)


def request_subscription(
    db: sqlite_utils.Database,
    email: str,
    name: str | None,
    preferences: Preferences,
    *,
    now: datetime | None = None,
) -> SignupOutcome:
    """A reader asks to subscribe: a new address becomes pending, everybody gets the right email."""
    with write_transaction(db):
        return decide_subscription(db, email, name, preferences, now=now)


def decide_subscription(
    db: sqlite_utils.Database,
    email: str,
    name: str | None,
    preferences: Preferences,
    *,
    now: datetime | None = None,
) -> SignupOutcome:
    """``request_subscription`` inside the caller's write transaction (the sign-up queue records the
    outcome in the same transaction)."""
    address = normalise_email(email)
    display = signup_name(name)
    moment = now or datetime.now(UTC)
    stamp = iso(moment)
    existing = _by_email(db, address)
    if is_suppressed(db, address) or (existing is not None and existing.status == "bounced"):
        return SignupOutcome(existing, None)
    if existing is None:
        _insert(db, address, display, "pending", "web", {}, preferences, stamp)
        subscriber = _by_email(db, address)
        kind = "confirm"
    elif existing.status == "active":
        subscriber, kind = existing, "already-subscribed"
    else:
        # Pending: update the choices. Unsubscribed: keep everything until the owner confirms.
        if existing.status == "pending":
            db.conn.execute("UPDATE subscribers SET name = ? WHERE id = ?", [display, existing.id])
            _write_preferences(db, existing.id, preferences, stamp)
        subscriber, kind = existing, "confirm"
    assert subscriber is not None
    mailbox = mailbox_key(address)
    last = db.execute("SELECT sent_at FROM signup_mailboxes WHERE mailbox = ?", [mailbox]).fetchone()
    if last and moment - datetime.fromisoformat(last[0]) < CONFIRMATION_INTERVAL:
        return SignupOutcome(subscriber, None)  # this mailbox got an email moments ago: no mail bombing
    db.conn.execute(
        "INSERT INTO signup_mailboxes (mailbox, sent_at) VALUES (?, ?) "
        "ON CONFLICT (mailbox) DO UPDATE SET sent_at = excluded.sent_at",
        [mailbox, stamp],
    )
    return SignupOutcome(subscriber, kind)


def confirmation_not_sent(db: sqlite_utils.Database, email: str) -> None:
    """The sign-up email could not be sent: the next request for this mailbox may send one at once.
    Runs inside the caller's write transaction."""
    db.conn.execute("DELETE FROM signup_mailboxes WHERE mailbox = ?", [mailbox_key(email)])


def link_predates_unsubscribe(subscriber: Subscriber, issued_at: datetime | None) -> bool:
    """A confirmation link issued before the reader last unsubscribed: it must not subscribe them again."""
    unsubscribed = subscriber.unsubscribed_at
    return issued_at is not None and unsubscribed is not None and (iso(issued_at) or "") <= unsubscribed


def confirm(
    db: sqlite_utils.Database,
    subscriber_id: int,
    *,
    link_issued_at: datetime | None = None,
    now: datetime | None = None,
) -> Subscriber | None:
    """The owner of the address confirmed: pending (or unsubscribed) readers become active, unless the
    link was issued before they unsubscribed."""
    stamp = iso(now or datetime.now(UTC))
    issued = iso(link_issued_at)
    # Every condition sits in the UPDATE itself, read under the write lock.
    with write_transaction(db):
        db.conn.execute(
            """
            UPDATE subscribers SET status = 'active', confirmed_at = ?, unsubscribed_at = NULL, updated_at = ?
            WHERE id = ? AND status IN ('pending', 'unsubscribed')
              AND NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.email = subscribers.email)
              AND (? IS NULL OR unsubscribed_at IS NULL OR unsubscribed_at < ?)
            """,
            [stamp, stamp, subscriber_id, issued, issued],
        )
    return get_subscriber(db, subscriber_id)


def delete_stale_signups(db: sqlite_utils.Database, *, now: datetime | None = None) -> int:
    """Forget web sign-ups never confirmed within their link's validity (plus a margin), and throttle
    marks that no longer throttle; returns how many sign-ups went. Runs inside the caller's transaction."""
    moment = now or datetime.now(UTC)
    db.conn.execute("DELETE FROM signup_mailboxes WHERE sent_at < ?", [iso(moment - CONFIRMATION_INTERVAL)])
    return db.conn.execute(
        "DELETE FROM subscribers WHERE status = 'pending' AND source = 'web' AND updated_at < ? "
        "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.subscriber_id = subscribers.id)",
        [iso(moment - PENDING_KEPT)],
    ).rowcount


# --- CSV import and export ----------------------------------------------------------------------------------


# A cell that a spreadsheet would read as a formula (OWASP's "CSV Injection": =, +, -, @, tab, carriage
# return) is written with one leading quote, which the spreadsheet shows as text. Names come from public
# sign-ups, so an exported list must never run what a visitor typed.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# One CSV record per physical line, at most this long (the csv module's own field limit): a broken line
# (an unclosed quote, a huge field) is rejected alone and can never swallow the rows after it.
MAX_CSV_LINE = 131_072
# Every rejected line is counted; the first ones are kept with their reasons, so a file of garbage
# cannot fill the memory with its report.
MAX_REPORTED_ERRORS = 1000


def spreadsheet_safe(value: str) -> str:
    """``value`` as a CSV cell no spreadsheet runs: a leading quote before what would be a formula, and
    before a value that already looks like such a quoted formula, so that ``from_spreadsheet_safe``
    gives back exactly the original."""
    return "'" + value if value.lstrip("'")[:1] in FORMULA_START else value


def from_spreadsheet_safe(cell: str) -> str:
    """The value of a cell written by ``spreadsheet_safe``: the one added quote removed."""
    return cell[1:] if cell[:1] == "'" and cell.lstrip("'")[:1] in FORMULA_START else cell


@dataclass(slots=True)
class ImportReport:
    added: int = 0
    existing: int = 0
    rejected: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason), the first ones

    def reject(self, line: int, reason: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append((line, reason))


def import_csv(db: sqlite_utils.Database, path: Path, *, now: datetime | None = None) -> ImportReport:
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise SubscriberError(f"cannot read {path}: {exc.strerror or exc}") from None
    with raw:
        return import_file(db, raw, now=now)


def import_file(db: sqlite_utils.Database, raw: BinaryIO, *, now: datetime | None = None) -> ImportReport:
    """Import from a binary file (a path opened, an upload), read line by line as UTF-8."""
    # Undecodable bytes become lone surrogates, so that only their line is rejected, not the file.
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline=None)
    try:
        return import_lines(db, text, now=now)
    finally:
        text.detach()  # the caller owns the file


def import_rows(db: sqlite_utils.Database, text: str, *, now: datetime | None = None) -> ImportReport:
    return import_lines(db, io.StringIO(text, newline=None), now=now)


def import_lines(db: sqlite_utils.Database, lines: TextIO, *, now: datetime | None = None) -> ImportReport:
    """Import subscribers from CSV; imported subscribers are active (an admin vouches for them).

    Accepts listmonk's columns (``email,name,attributes`` with attributes as JSON; a header line names
    them) and plain ``email`` or ``email,name`` rows with or without a header. Each record is one line;
    bad lines are reported with their number and reason while the good ones are imported; importing the
    same file again adds nothing. The text is read a line at a time and written in large transactions:
    memory stays flat however long the file, and 100,000 rows take seconds. An address seen twice counts
    as existing the second time (the database's unique index sees it).
    """
    report = ImportReport()
    stamp = iso(now or datetime.now(UTC))
    columns = {"email": 0, "name": 1, "attributes": 2}
    pending: list[tuple[Any, ...]] = []
    for line_number, row in _csv_records(lines, report):
        if line_number == 1:
            header = [cell.strip().lower() for cell in row]
            if "email" in header:
                columns = {
                    name: header.index(name) for name in ("email", "name", "attributes") if name in header
                }
                continue
        if not any(cell.strip() for cell in row):
            continue
        try:
            record = _import_record(row, columns, stamp)
        except SubscriberError as exc:
            report.reject(line_number, str(exc))
            continue
        pending.append(record)
        if len(pending) >= IMPORT_BATCH:
            _write_batch(db, pending, report)
            pending = []
    _write_batch(db, pending, report)
    return report


def _csv_records(lines: TextIO, report: ImportReport) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of each line that is one whole CSV record; the others go to the report."""
    line_number = 0
    while line := lines.readline(MAX_CSV_LINE + 1):
        line_number += 1
        if len(line) > MAX_CSV_LINE and not line.endswith("\n"):
            while (rest := lines.readline(65536)) and not rest.endswith("\n"):
                pass  # the rest of the overlong line, a piece at a time
            report.reject(line_number, f"the line is longer than {MAX_CSV_LINE:,} characters")
            continue
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            report.reject(line_number, "the line is not UTF-8 text")
            continue
        try:
            yield line_number, next(csv.reader((line,), strict=True), [])
        except csv.Error as exc:
            report.reject(line_number, _csv_problem(exc))


def _csv_problem(error: csv.Error) -> str:
    if "unexpected end of data" in str(error):
        return "a quoted value is not closed on its line (each record must be on one line)"
    return f"not a valid CSV line: {error}"


def _import_record(row: list[str], columns: dict[str, int], stamp: str | None) -> tuple[Any, ...]:
    def cell(name: str) -> str:
        index = columns.get(name)
        return from_spreadsheet_safe(row[index]) if index is not None and index < len(row) else ""

    address = normalise_email(cell("email"))
    name = clean_name(cell("name"))
    raw_attributes = cell("attributes").strip()
    attributes: Any = {}
    if raw_attributes:
        try:
            attributes = json.loads(raw_attributes)
        except json.JSONDecodeError as exc:
            raise SubscriberError(f"attributes are not valid JSON: {exc.msg}") from None
        if not isinstance(attributes, dict):
            raise SubscriberError("attributes must be a JSON object")
    return (address, name, json.dumps(attributes, ensure_ascii=False), stamp, stamp, stamp)


def _write_batch(db: sqlite_utils.Database, records: list[tuple[Any, ...]], report: ImportReport) -> None:
    if not records:
        return
    with write_transaction(db):
        before = db.execute("SELECT total_changes()").fetchone()[0]
        db.conn.executemany(
            """
            INSERT INTO subscribers (email, name, status, source, attributes, created_at, confirmed_at, updated_at)
            VALUES (?, ?, 'active', 'import', ?, ?, ?, ?)
            ON CONFLICT (email) DO NOTHING
            """,
            records,
        )
        added = db.execute("SELECT total_changes()").fetchone()[0] - before
    report.added += added
    report.existing += len(records) - added


EXPORT_COLUMNS = (
    "email", "name", "status", "attributes", "categories", "keywords", "frequency", "created_at",
    "confirmed_at", "unsubscribed_at", "follow_authors", "exclude_keywords",
)  # fmt: skip


def export_csv(db: sqlite_utils.Database, out: io.TextIOBase, *, status: str | None = None) -> int:
    """Write every subscriber (or those with ``status``) as CSV, row by row; returns the count. Cells a
    spreadsheet would run as formulas are quoted (``spreadsheet_safe``); importing the file undoes it."""
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    where, params = _filters(status, None)
    count = 0
    for row in db.execute(f"SELECT {', '.join(EXPORT_COLUMNS)} FROM subscribers {where} ORDER BY id", params):
        writer.writerow(["" if value is None else _export_cell(value) for value in row])
        count += 1
    return count


def _export_cell(value: Any) -> Any:
    return spreadsheet_safe(value) if isinstance(value, str) else value


_COLUMNS = (
    "id, email, name, status, source, created_at, confirmed_at, unsubscribed_at, attributes, categories, "
    "keywords, frequency, empty_digest, follow_authors, exclude_keywords"
)


def _by_email(db: sqlite_utils.Database, address: str) -> Subscriber | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM subscribers WHERE email = ?", [address]).fetchone()
    return _subscriber(row) if row else None


def _subscriber(row: tuple[Any, ...]) -> Subscriber:
    preferences = Preferences.from_row(row[9], row[10], row[11], row[12], row[14])
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
        preferences=preferences,
        follows=Follows.from_row(row[13], row[14]),
    )


# --- what a send needs to know ------------------------------------------------------------------------------


def preference_sets(db: sqlite_utils.Database, frequency: str) -> list[tuple[str, str, str, str]]:
    """The distinct (categories, keywords, empty_digest, exclude_keywords) stored for the active readers
    of ``frequency``, as stored (the ledger matches readers to them by these values)."""
    return db.execute(
        "SELECT DISTINCT categories, keywords, empty_digest, exclude_keywords FROM subscribers "
        "WHERE status = 'active' AND frequency = ?",
        [frequency],
    ).fetchall()


def follows_by_reader(db: sqlite_utils.Database, subscriber_ids: Iterable[int]) -> dict[int, Follows]:
    """The follows of each of ``subscriber_ids`` who follows an author or excludes a keyword."""
    rows = db.execute(
        """
        SELECT id, follow_authors, exclude_keywords FROM subscribers
        WHERE id IN (SELECT value FROM json_each(?)) AND (follow_authors != '[]' OR exclude_keywords != '[]')
        """,
        [json.dumps(list(subscriber_ids))],
    )
    return {
        subscriber_id: follows
        for subscriber_id, authors, keywords in rows
        if not (follows := Follows.from_row(authors, keywords)).empty
    }


def first_active_subscriber(db: sqlite_utils.Database) -> Subscriber | None:
    """The active subscriber who joined first: whose copy a preview shows when nobody is named."""
    row = db.execute("SELECT email FROM subscribers WHERE status = 'active' ORDER BY id LIMIT 1").fetchone()
    return find_subscriber(db, row[0]) if row else None


def count_by_status(db: sqlite_utils.Database) -> dict[str, int]:
    """How many subscribers are in each status (a status nobody is in is left out)."""
    return dict(db.execute("SELECT status, count(*) FROM subscribers GROUP BY status").fetchall())
