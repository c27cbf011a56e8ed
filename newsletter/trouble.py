"""Ordinary trouble as one line and an exit code: a full disk, a locked, read-only or damaged database, an
output path that cannot be written, a port already in use.

None of these is a bug, so none of them deserves a traceback: the command line prints the line ``explain``
gives and exits with its code. The codes are the table in README.md ("Exit codes"):

- 0 the command did what it was asked;
- 1 a runtime failure: the command was right, something failed while doing it (a source, a send, the
  disk, the database, a port); what was done is kept, and running it again after fixing the cause finishes;
- 2 a usage or configuration error: the command line or the configuration must change (or ``newsletter
  init`` must run first); nothing was done;
- 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from newsletter.db import BUSY_TIMEOUT_MS
from newsletter.errors import FAILURE, USAGE, DatabaseMissing, DatabaseReadOnly, DatabaseUnusable


@dataclass(frozen=True, slots=True)
class Trouble:
    cause: str  # what happened
    remedy: str  # what to do about it ("" when the cause says it all)
    code: int

    @property
    def message(self) -> str:
        """The one line a command prints."""
        return f"{self.cause}: {self.remedy}" if self.remedy else self.cause


def explain(error: BaseException, *, database: Path | str | None = None) -> Trouble | None:
    """The line and exit code for ``error`` (or what it was raised from), or None when it is not ordinary
    trouble. Only explicit causes (``raise ... from``) are followed: an error raised while handling another
    one may be a bug, and must not pass for the trouble it happened during."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _explain_one(current, database)
        if found is not None:
            return found
        current = current.__cause__
    return None


AGAIN = "run the command again"
WRITABLE = (
    "this user must be able to write the database file and its directory, on a file system mounted read-write"
)


def _explain_one(error: BaseException, database: Path | str | None) -> Trouble | None:
    if isinstance(error, DatabaseMissing):
        return Trouble(
            f"there is no database at {error.filename}",
            "run `newsletter init` first (or choose the database with --db or NEWSLETTER_DB)",
            USAGE,
        )
    if isinstance(error, DatabaseReadOnly):
        return Trouble(f"the database cannot be written: {error.filename} is read-only", WRITABLE, FAILURE)
    if isinstance(error, DatabaseUnusable):
        return Trouble(f"cannot open the database {error.filename}: {error.reason}", "", USAGE)
    if isinstance(error, sqlite3.Error):
        return _database_trouble(error, database)
    if isinstance(error, OSError):
        return _system_trouble(error)
    return None


def _database_trouble(error: sqlite3.Error, database: Path | str | None) -> Trouble | None:
    name = getattr(error, "sqlite_errorname", None) or ""
    kind = name.removeprefix("SQLITE_").split("_", 1)[0]
    detail = str(error)
    where = f"the database {database}" if database else "the database"
    if kind in ("BUSY", "LOCKED"):
        return Trouble(
            f"{where} is locked: another process kept it busy for more than {BUSY_TIMEOUT_MS // 1000} s",
            f"{AGAIN} once it has finished",
            FAILURE,
        )
    if kind == "READONLY":
        return Trouble(f"{where} cannot be written ({detail})", WRITABLE, FAILURE)
    if kind == "CANTOPEN":
        return Trouble(
            f"cannot open {where} ({detail})",
            "check that its directory exists and that this user may write there",
            USAGE,
        )
    if kind in ("CORRUPT", "NOTADB"):
        return Trouble(
            f"{where} is damaged or is not a newsletter database ({detail})",
            "restore a backup (newsletter backup makes them) or point --db at the right file",
            FAILURE,
        )
    if kind == "FULL":
        return Trouble(
            f"the disk holding {where} is full ({detail})", f"free some space and {AGAIN}", FAILURE
        )
    if kind == "IOERR":
        return Trouble(f"the disk failed while using {where} ({detail})", "", FAILURE)
    return None


def _system_trouble(error: OSError) -> Trouble:
    target = error.filename
    what = error.strerror or str(error)
    if error.errno == errno.EADDRINUSE:
        return Trouble(what, "another program is listening there: stop it or choose another port", FAILURE)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return Trouble(
            f"no space left on the device for {target or 'a file'} ({what})",
            f"free some space and {AGAIN}",
            FAILURE,
        )
    if error.errno == errno.EROFS:
        return Trouble(f"{target or 'a file'} is on a read-only file system", "", FAILURE)
    return Trouble(f"{what}: {target}" if target else what, "", FAILURE)


def output_problem(path: Path) -> str | None:
    """Why ``path`` cannot be written as a command's output file, checked before any work is done."""
    directory = path.parent
    if path.is_dir():
        return f"{path} is a directory"
    if not directory.exists():
        return f"the directory {directory} does not exist"
    if not directory.is_dir():
        return f"{directory} is not a directory"
    if path.exists():
        if not os.access(path, os.W_OK):
            return f"{path} is not writable"
    elif not os.access(directory, os.W_OK | os.X_OK):
        return f"the directory {directory} is not writable"
    return None
