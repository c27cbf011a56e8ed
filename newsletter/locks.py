"""Process locks kept in the database: one sender per edition, one running instance per job.

A lock names its holder (host and process id). A holder that died without releasing it (``kill -9``, a
crash) is recognised on the same host because its process is gone, and the lock is taken over; a holder
on another host is assumed alive.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime

import sqlite_utils

from newsletter.db import write_transaction
from newsletter.store import iso

# Lock tables and the column that names what is locked.
TABLES = {"send_locks": "edition_id", "job_locks": "job"}


class LockHeld(RuntimeError):
    """Another live process holds the lock."""

    def __init__(self, what: str, host: str, pid: int) -> None:
        super().__init__(f"{what} is held by process {pid} on {host}")
        self.host = host
        self.pid = pid


def acquire(db: sqlite_utils.Database, table: str, key: object) -> None:
    column = TABLES[table]
    host, pid = socket.gethostname(), os.getpid()
    with write_transaction(db):
        row = db.execute(f"SELECT host, pid FROM {table} WHERE {column} = ?", [key]).fetchone()
        if row and not (row[0] == host and row[1] == pid) and alive(row[0], row[1]):
            raise LockHeld(f"{column} {key}", row[0], row[1])
        db.conn.execute(
            f"""
            INSERT INTO {table} ({column}, host, pid, acquired_at) VALUES (?, ?, ?, ?)
            ON CONFLICT ({column}) DO UPDATE SET host = excluded.host, pid = excluded.pid,
                acquired_at = excluded.acquired_at
            """,
            [key, host, pid, iso(datetime.now(UTC))],
        )


def release(db: sqlite_utils.Database, table: str, key: object) -> None:
    column = TABLES[table]
    with write_transaction(db):
        db.conn.execute(
            f"DELETE FROM {table} WHERE {column} = ? AND host = ? AND pid = ?",
            [key, socket.gethostname(), os.getpid()],
        )


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
