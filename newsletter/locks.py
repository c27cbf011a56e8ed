"""Locks kept in the database: one sender per edition, one running instance per job.

A lock belongs to one acquisition, not to a process: it stores a random owner token with the holder's
host and process id, so a second acquisition in the same process (the retry job while the digest job
sends, a one-off sent from the admin page of ``newsletter run``) is refused like one from another
process. A holder that died without releasing it (``kill -9``, a crash) is recognised on the same host
because its process is gone, and the lock is taken over; a holder on another host is assumed alive. A row
naming this very process with a token it does not hold was left by an earlier process that had the same
id (a restarted container's process 1), and is taken over too.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlite_utils

from newsletter.dates import iso
from newsletter.db import write_transaction
from newsletter.errors import LockLost, NewsletterError

log = logging.getLogger(__name__)

# Lock tables and the column that names what is locked.
TABLES = {"send_locks": "edition_id", "job_locks": "job"}

# Owner tokens of the locks this process holds now.
_held: set[str] = set()
_held_guard = threading.Lock()


class LockHeld(NewsletterError, RuntimeError):
    """Another live holder (another process, or another run in this one) holds the lock."""

    def __init__(self, what: str, host: str, pid: int) -> None:
        self.host = host
        self.pid = pid
        super().__init__(f"{what} is held by {self.holder}")

    @property
    def this_process(self) -> bool:
        return _is_this_process(self.host, self.pid)

    @property
    def holder(self) -> str:
        return "this process (another run)" if self.this_process else f"process {self.pid} on {self.host}"


@dataclass(frozen=True, slots=True)
class Lock:
    table: str
    key: object
    owner: str


def acquire(db: sqlite_utils.Database, table: str, key: object) -> Lock:
    column = TABLES[table]
    lock = Lock(table, key, secrets.token_hex(16))
    host, pid = socket.gethostname(), os.getpid()
    try:
        with write_transaction(db):
            row = db.execute(f"SELECT host, pid, owner FROM {table} WHERE {column} = ?", [key]).fetchone()
            if row and _holder_alive(row[0], row[1], row[2]):
                raise LockHeld(f"{column} {key}", row[0], row[1])
            db.conn.execute(
                f"""
                INSERT INTO {table} ({column}, host, pid, owner, acquired_at) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT ({column}) DO UPDATE SET host = excluded.host, pid = excluded.pid,
                    owner = excluded.owner, acquired_at = excluded.acquired_at
                """,
                [key, host, pid, lock.owner, iso(datetime.now(UTC))],
            )
            # Registered before the commit: once the row is visible, a rival in this process must find
            # its token held, or it would take the lock over as one left by a dead process.
            with _held_guard:
                _held.add(lock.owner)
    except BaseException:
        with _held_guard:
            _held.discard(lock.owner)
        raise
    return lock


def release(db: sqlite_utils.Database, lock: Lock) -> None:
    """Let go of ``lock``; a database error is logged, not raised. Runs release on their way out, where
    what went wrong before matters more, and a row that cannot be deleted now (a locked or full database)
    is taken over anyway: by the next run in this process, which no longer holds its token, and by other
    processes once this one has ended."""
    try:
        with write_transaction(db):
            db.conn.execute(
                f"DELETE FROM {lock.table} WHERE {TABLES[lock.table]} = ? AND owner = ?",
                [lock.key, lock.owner],
            )
    except sqlite3.Error as exc:
        log.error("could not release the lock on %s %s: %s", TABLES[lock.table], lock.key, exc)
    finally:
        with _held_guard:
            _held.discard(lock.owner)


def check(db: sqlite_utils.Database, lock: Lock) -> None:
    """Raise ``LockLost`` unless ``lock`` still holds its key; call it inside the write transaction
    whose changes only the holder may make."""
    row = db.execute(f"SELECT owner FROM {lock.table} WHERE {TABLES[lock.table]} = ?", [lock.key]).fetchone()
    if not row or row[0] != lock.owner:
        raise LockLost(f"{TABLES[lock.table]} {lock.key}: the lock was taken over by another holder")


def _holder_alive(host: str, pid: int, owner: str) -> bool:
    if _is_this_process(host, pid):
        with _held_guard:
            return owner in _held
    return alive(host, pid)


def _is_this_process(host: str, pid: int) -> bool:
    return host == socket.gethostname() and pid == os.getpid()


def alive(host: str, pid: int) -> bool:
    if host != socket.gethostname():
        return True  # cannot tell for another machine: assume it is still working
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
