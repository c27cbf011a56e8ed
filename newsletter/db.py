"""The SQLite database: opening it for shared use and migrating its schema.

The scheduler, the web app and the command line open the same file at the same time, so every connection
uses WAL (readers never block the writer) and waits for a lock instead of failing at once. The schema
version lives in ``PRAGMA user_version``; each migration runs once, in order, in its own transaction.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import sqlite_utils

from newsletter.errors import DatabaseMissing, DatabaseReadOnly, DatabaseUnusable

BUSY_TIMEOUT_MS = 10_000


def check_writable(path: Path | str) -> None:
    """Raise ``DatabaseReadOnly`` unless this process may write the database and its directory (SQLite
    writes the -wal and -shm files there). Long-running processes check once at start, rather than
    failing at their first write hours later."""
    path = Path(path)
    if not path.exists():
        return  # open_database creates it, or says why it cannot
    for target in (path, path.parent):
        if not os.access(target, os.W_OK):
            raise DatabaseReadOnly(errno.EACCES, "not writable", str(target))


def open_database(path: Path | str, *, migrate: bool = True, create: bool = True) -> sqlite_utils.Database:
    """Open the database at ``path`` and bring its schema up to date.

    With ``create`` (the default) a missing file and its directory are created; without it, a missing
    database raises ``DatabaseMissing`` and nothing is created (the read-only commands: status, doctor...).
    """
    path = Path(path)
    if not create:
        if not path.is_file():
            raise DatabaseMissing(errno.ENOENT, "no database", str(path))
        # mode=rw: SQLite itself never creates the file, even if it disappears after the check above.
        target: Path | str = f"{path.resolve().as_uri()}?mode=rw"
    else:
        target = path
        if not path.parent.exists():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseUnusable(path, f"cannot make its directory: {exc.strerror or exc}") from exc
    # isolation_level=None: no implicit transactions; every write goes through write_transaction().
    # check_same_thread=False: one connection may be handed to a worker thread, never used by two at once.
    conn = sqlite3.connect(
        target,
        timeout=BUSY_TIMEOUT_MS / 1000,
        check_same_thread=False,
        isolation_level=None,
        uri=not create,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        journal_mode = _enable_wal(conn)
        if journal_mode.lower() != "wal":
            raise DatabaseUnusable(
                path, f"SQLite refused WAL mode (got {journal_mode!r}); is it on a network share?"
            )
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        db = sqlite_utils.Database(conn)
        if migrate:
            migrate_database(db)
    except BaseException:
        conn.close()
        raise
    return db


@contextmanager
def write_transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """All-or-nothing writes. IMMEDIATE takes the write lock up front (waiting up to the busy timeout),
    so a transaction never fails half-way because another process wrote after it started reading."""
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.conn.execute("COMMIT")
    except BaseException:
        # SQLite may already have rolled back (a full disk can end the transaction); and a COMMIT that
        # failed can leave it open, which would let this connection go on seeing rows nobody committed.
        if db.conn.in_transaction:
            with suppress(sqlite3.Error):
                db.conn.execute("ROLLBACK")
        raise


def _enable_wal(conn: sqlite3.Connection) -> str:
    """Switch to WAL (a setting stored in the file). Switching needs an exclusive lock and SQLite does not
    wait for it through the busy handler, so two processes creating the database together retry here."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            current = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if current.lower() == "wal":
                return str(current)
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def schema_version(db: sqlite_utils.Database) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate_database(db: sqlite_utils.Database) -> int:
    """Apply every migration newer than the database's version; returns the resulting version."""
    version = schema_version(db)
    for number, migration in enumerate(MIGRATIONS, start=1):
        if number <= version:
            continue
        # Re-checked under the write lock: two processes starting together must not both migrate.
        with write_transaction(db):
            if schema_version(db) < number:
                migration(db)
                db.conn.execute(f"PRAGMA user_version = {number}")
    return schema_version(db)


def _initial_schema(db: sqlite_utils.Database) -> None:
    db["papers"].create(
        {
            "id": int,
            "key": str,  # canonical key: arxiv:ID, doi:DOI or title:normalised title
            "arxiv_id": str,
            "version": int,
            "doi": str,
            "title": str,
            "abstract": str,
            "authors": str,  # JSON list of names
            "categories": str,  # JSON list, primary category first
            "primary_category": str,
            "url": str,
            "pdf_url": str,
            "published": str,  # ISO 8601, UTC
            "updated": str,
            "announce_type": str,  # how it was first announced: new, cross, replace, replace-cross
            "upvotes": int,
            "ai_summary": str,
            "keywords": str,  # JSON list
            "github_repo": str,
            "comment": str,
            "journal_ref": str,
            "venue": str,
            "sources": str,  # JSON list of source names that listed it
            "is_new": int,  # 1 when it counts as new in the edition covering first_seen_at
            "first_seen_at": str,
            "last_seen_at": str,
            "changed_at": str,
        },
        pk="id",
        not_null=["key", "title", "first_seen_at", "last_seen_at", "is_new"],
        defaults={"abstract": "", "authors": "[]", "categories": "[]", "keywords": "[]", "sources": "[]"},
    )
    db["papers"].create_index(["key"], unique=True)
    db["papers"].create_index(["first_seen_at"])
    db["papers"].create_index(["arxiv_id"])

    db["paper_keys"].create(
        {"key": str, "paper_id": int},
        pk="key",
        foreign_keys=[("paper_id", "papers", "id")],
        not_null=["paper_id"],
    )
    db["paper_keys"].create_index(["paper_id"])

    db["sources"].create(
        {
            "name": str,
            "kind": str,
            "url": str,
            "etag": str,
            "last_modified": str,
            "body_sha256": str,
            "last_attempt_at": str,
            "last_success_at": str,
            "last_status": str,  # ok | not_modified | failed
            "last_error": str,
            "last_counts": str,  # JSON
        },
        pk="name",
    )

    db["fetch_runs"].create(
        {
            "id": int,
            "source": str,
            "started_at": str,
            "finished_at": str,
            "status": str,
            "fetched": int,
            "new": int,
            "updated": int,
            "duplicates": int,
            "errors": int,
            "error": str,
            "problems": str,  # JSON list
        },
        pk="id",
    )
    db["fetch_runs"].create_index(["source", "started_at"])


def _editions(db: sqlite_utils.Database) -> None:
    db["editions"].create(
        {
            "id": int,
            "kind": str,  # digest | one-off
            "status": str,  # built, then the delivery states
            "created_at": str,
            "window_start": str,  # papers first seen in [window_start, window_end)
            "window_end": str,
            "paper_count": int,
            "topic_count": int,
            "engine": str,
            "subject": str,
        },
        pk="id",
        not_null=["kind", "status", "created_at"],
    )
    db["editions"].create_index(["kind", "window_end"])
    db["edition_sections"].create(
        {
            "edition_id": int,
            "position": int,  # 0 = first section of the email
            "label": str,
            "keywords": str,  # JSON list
            "size": int,
            "is_other": int,
        },
        pk=("edition_id", "position"),
        foreign_keys=[("edition_id", "editions", "id")],
    )
    db["edition_papers"].create(
        {
            "edition_id": int,
            "paper_id": int,
            "section": int,  # edition_sections.position
            "rank": int,  # 0 = first paper of its section
            "score": float,
            "summary": str,  # one or two sentences for the email
        },
        pk=("edition_id", "paper_id"),
        foreign_keys=[("edition_id", "editions", "id"), ("paper_id", "papers", "id")],
    )
    db["edition_papers"].create_index(["edition_id", "section", "rank"])


def _subscribers_and_deliveries(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE subscribers (
            id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: signed links carry it
            email TEXT NOT NULL UNIQUE COLLATE NOCASE,
            name TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL,                   -- pending | active | unsubscribed | bounced
            source TEXT NOT NULL DEFAULT '',        -- cli | import | web | demo
            attributes TEXT NOT NULL DEFAULT '{}',  -- JSON
            created_at TEXT NOT NULL,
            confirmed_at TEXT,
            unsubscribed_at TEXT,
            updated_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX subscribers_status ON subscribers (status)")
    db.execute(
        """
        CREATE TABLE suppressions (
            email TEXT PRIMARY KEY COLLATE NOCASE,
            reason TEXT NOT NULL,
            created_at TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            edition_id INTEGER NOT NULL REFERENCES editions (id),
            subscriber_id INTEGER NOT NULL REFERENCES subscribers (id),
            email TEXT NOT NULL,
            state TEXT NOT NULL,            -- queued | sending | committing | sent | failed | suppressed | unknown
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT,
            last_reply TEXT,
            message_id TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            sent_at TEXT,
            UNIQUE (edition_id, subscriber_id)
        )
        """
    )
    db.execute("CREATE INDEX deliveries_edition_state ON deliveries (edition_id, state)")
    db.execute("CREATE TABLE app_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    # One sending process per edition at a time; a dead owner (same host, process gone) is taken over.
    db.execute(
        """
        CREATE TABLE send_locks (
            edition_id INTEGER PRIMARY KEY REFERENCES editions (id),
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            acquired_at TEXT NOT NULL
        )
        """
    )
    db["editions"].add_column("body", str)  # one-off messages: the Markdown source
    db["editions"].add_column("segment", str)


def _preferences(db: sqlite_utils.Database) -> None:
    # Preferences are stored canonically (sorted, compact JSON) so that equal choices compare equal in SQL
    # and an edition is rendered once per distinct set, not once per subscriber.
    for statement in (
        "ALTER TABLE subscribers ADD COLUMN categories TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE subscribers ADD COLUMN keywords TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE subscribers ADD COLUMN frequency TEXT NOT NULL DEFAULT 'weekly'",
        "ALTER TABLE subscribers ADD COLUMN empty_digest TEXT NOT NULL DEFAULT 'notice'",
        "ALTER TABLE subscribers ADD COLUMN confirmation_sent_at TEXT",
        "ALTER TABLE editions ADD COLUMN frequency TEXT NOT NULL DEFAULT 'weekly'",
        "ALTER TABLE deliveries ADD COLUMN variant TEXT NOT NULL DEFAULT ''",
    ):
        db.execute(statement)
    db.execute(
        """
        CREATE TABLE delivery_variants (
            edition_id INTEGER NOT NULL REFERENCES editions (id),
            variant TEXT NOT NULL,
            categories TEXT NOT NULL,
            keywords TEXT NOT NULL,
            empty_digest TEXT NOT NULL,
            papers INTEGER NOT NULL,          -- papers this preference set gets from the edition
            PRIMARY KEY (edition_id, variant)
        )
        """
    )
    db.execute("CREATE INDEX deliveries_claim ON deliveries (edition_id, state, variant, id)")


def _scheduler(db: sqlite_utils.Database) -> None:
    # The period a scheduled digest covers ("2026-W48", "2026-11-24"): one edition per period, so a job
    # that runs twice (a restart, a manual run, two schedulers by mistake) finds the edition and resumes it.
    db.execute("ALTER TABLE editions ADD COLUMN period TEXT")
    db.execute("ALTER TABLE editions ADD COLUMN ledger_pruned INTEGER NOT NULL DEFAULT 0")
    db.execute(
        "CREATE UNIQUE INDEX editions_period ON editions (kind, frequency, period) WHERE period IS NOT NULL"
    )
    db.execute(
        """
        CREATE TABLE job_runs (
            id INTEGER PRIMARY KEY,
            job TEXT NOT NULL,
            action TEXT NOT NULL,
            scheduled_for TEXT,            -- the cron time this run stands for; NULL for a manual run
            started_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL,          -- running | ok | partial | failed | interrupted | skipped
            counts TEXT NOT NULL DEFAULT '{}',
            error TEXT,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX job_runs_job ON job_runs (job, started_at)")
    db.execute(
        """
        CREATE TABLE job_locks (
            job TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            acquired_at TEXT NOT NULL
        )
        """
    )


def _admin_sessions(db: sqlite_utils.Database) -> None:
    # Server-side admin sessions: logging out deletes the row, so a copied cookie stops working.
    db.execute(
        """
        CREATE TABLE admin_sessions (
            id_hash TEXT PRIMARY KEY,               -- SHA-256 of the session id the cookie carries
            password_fingerprint TEXT NOT NULL,     -- of the admin password hash it was opened under
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL
        ) WITHOUT ROWID
        """
    )


def _signup_queue(db: sqlite_utils.Database) -> None:
    # What the sign-up form records: one INSERT per request, whatever the address's state (no index on
    # the address, so every request costs the same); the sender deletes a row once its email is handled.
    db.execute(
        """
        CREATE TABLE signup_requests (
            id INTEGER PRIMARY KEY,
            email TEXT NOT NULL,
            name TEXT NOT NULL,
            categories TEXT NOT NULL,
            keywords TEXT NOT NULL,
            frequency TEXT NOT NULL,
            requested_at TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            claimed_until TEXT,             -- a sender's lease: no other sender takes the row before then
            subscriber_id INTEGER,          -- set with email_kind once the request has been decided
            email_kind TEXT,                -- confirm | already-subscribed
            last_error TEXT
        )
        """
    )
    # The anti-bombing throttle: when a mailbox (an address without its +tag, any case) last got a
    # sign-up email.
    db.execute("CREATE TABLE signup_mailboxes (mailbox TEXT PRIMARY KEY, sent_at TEXT NOT NULL)")


def _lock_owners(db: sqlite_utils.Database) -> None:
    # A lock belongs to one acquisition (a random token), not to a process: two runs in one process
    # (the retry job while the digest job sends) must exclude each other like two processes do.
    for table in ("send_locks", "job_locks"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN owner TEXT NOT NULL DEFAULT ''")


def _revisions_counted(db: sqlite_utils.Database) -> None:
    # Replace announcements of papers never seen before are stored but neither new nor updates: counted apart.
    db.execute("ALTER TABLE fetch_runs ADD COLUMN revisions INTEGER NOT NULL DEFAULT 0")


def _reader_library(db: sqlite_utils.Database) -> None:
    # What each reader taught the ranking: one row per reader and paper, the latest choice winning. The
    # papers stay as long as a reader keeps them (retention skips them); a reader's rows go with the reader.
    db.execute(
        """
        CREATE TABLE reader_signals (
            subscriber_id INTEGER NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
            paper_id INTEGER NOT NULL REFERENCES papers (id),
            kind TEXT NOT NULL CHECK (kind IN ('like', 'dislike', 'library')),
            created_at TEXT NOT NULL,
            PRIMARY KEY (subscriber_id, paper_id)
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE INDEX reader_signals_paper ON reader_signals (paper_id)")
    # Items a reader gave that are not a stored paper yet (a DOI no source has brought, a title alone, an
    # arXiv id the API could not be asked for), by the key that will find the paper once it is stored.
    db.execute(
        """
        CREATE TABLE library_pending (
            subscriber_id INTEGER NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
            key TEXT NOT NULL,                 -- arxiv:ID, doi:DOI or title:normalised title
            item TEXT NOT NULL,                -- what the reader gave, as given
            title TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (subscriber_id, key)
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE INDEX library_pending_key ON library_pending (key)")
    # Follows that are not learned: authors whose papers a reader always wants, keywords they never want.
    db.execute("ALTER TABLE subscribers ADD COLUMN follow_authors TEXT NOT NULL DEFAULT '[]'")
    db.execute("ALTER TABLE subscribers ADD COLUMN exclude_keywords TEXT NOT NULL DEFAULT '[]'")


Migration = Callable[[sqlite_utils.Database], None]


def _reader_layouts(db: sqlite_utils.Database) -> None:
    # What a reader's digest holds beyond the edition's order ("For you", each topic's papers for them),
    # planned before the send: NULL not planned (or sent), "" the edition's order, else JSON.
    db.execute("ALTER TABLE deliveries ADD COLUMN layout TEXT")


def _variant_exclusions(db: sqlite_utils.Database) -> None:
    # A reader's excluded keywords shape their digest like their topics do: part of the preference set
    # an edition is rendered for. Variants stored before ('[]') exclude nothing.
    db.execute("ALTER TABLE delivery_variants ADD COLUMN exclude_keywords TEXT NOT NULL DEFAULT '[]'")


def _bounces(db: sqlite_utils.Database) -> None:
    # Bounces and complaints that arrive after the send (the bounce mailbox, relays' webhooks): one row
    # per report and reader address, so that the same report taken twice counts once.
    db.execute(
        """
        CREATE TABLE bounces (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,             -- mailbox | ses | postmark | mailgun | sendgrid
            source_id TEXT NOT NULL,          -- unique within the source: a message's SHA-256, an event id
            kind TEXT NOT NULL,               -- hard | soft | complaint | auto_reply | unknown
            email TEXT NOT NULL DEFAULT '' COLLATE NOCASE,  -- the reader's address; '' for nobody of ours
            subscriber_id INTEGER,
            delivery_id INTEGER,
            edition_id INTEGER,
            attributed_by TEXT NOT NULL DEFAULT '',  -- verp | message-id | address | ''
            status TEXT NOT NULL DEFAULT '',
            detail TEXT NOT NULL DEFAULT '',
            action TEXT NOT NULL,             -- suppressed | unsubscribed | counted | ignored | unmatched
            occurred_at TEXT,
            received_at TEXT NOT NULL,
            UNIQUE (source, source_id, email)
        )
        """
    )
    db.execute("CREATE INDEX bounces_email ON bounces (email, kind, received_at)")
    db.execute("CREATE INDEX bounces_received ON bounces (received_at)")
    db.execute(
        """
        CREATE TABLE bounce_runs (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,             -- mailbox
            started_at TEXT NOT NULL,
            finished_at TEXT,
            found INTEGER NOT NULL DEFAULT 0,
            taken INTEGER NOT NULL DEFAULT 0,     -- new reports
            repeated INTEGER NOT NULL DEFAULT 0,  -- reports taken before (a rerun after a crash)
            failed INTEGER NOT NULL DEFAULT 0,
            error TEXT
        )
        """
    )
    db.execute("CREATE INDEX deliveries_message_id ON deliveries (message_id)")


MIGRATIONS: list[Migration] = [
    _initial_schema,
    _editions,
    _subscribers_and_deliveries,
    _preferences,
    _scheduler,
    _admin_sessions,
    _signup_queue,
    _lock_owners,
    _revisions_counted,
    _reader_library,
    _reader_layouts,
    _variant_exclusions,
    _bounces,
]


def ping(db: sqlite_utils.Database) -> None:
    """Raise unless the database answers a query (health checks)."""
    db.execute("SELECT 1").fetchone()


def prove_writable(db: sqlite_utils.Database) -> None:
    """Write to the database in a transaction that leaves nothing behind (a table created and dropped),
    raising what would stop any write: a read-only file or directory, a full disk, a lock held past the
    busy timeout. ``check_writable`` only asks the file system, before a long-running process starts;
    this is the write itself (the doctor)."""
    with write_transaction(db):
        db.conn.execute("CREATE TABLE write_probe (x)")
        db.conn.execute("DROP TABLE write_probe")


def journal_mode(db: sqlite_utils.Database) -> str:
    """The file's journal mode (``wal`` once opened here)."""
    return str(db.execute("PRAGMA journal_mode").fetchone()[0])
