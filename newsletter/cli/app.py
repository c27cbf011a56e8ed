"""What every command shares: the global options as an ``AppContext`` (settings loaded once, the database
opened and closed in one place) and the way a command ends with an error line and an exit code."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import click
import sqlite_utils

import newsletter.cli.show as show
from newsletter import logs, trouble
from newsletter.config import load_settings
from newsletter.db import open_database
from newsletter.errors import FAILURE, USAGE, ConfigError
from newsletter.settings import Settings


def fail(message: str, *, code: int = FAILURE) -> NoReturn:
    show.error(message)
    raise SystemExit(code)


def check_output(path: Path | str, option: str) -> None:
    """Refuse an output file that cannot be written before doing the work that would fill it."""
    problem = trouble.output_problem(Path(path))
    if problem:
        fail(f"{option} {path}: {problem}", code=USAGE)


def write_json(document: Any, json_path: str) -> None:
    """``document`` as indented JSON on standard output (``-``) or into the file ``json_path`` (checked
    beforehand with ``check_output``); OSError says why the file could not be written."""
    text = json.dumps(document, ensure_ascii=False, indent=2)
    if json_path == "-":
        click.echo(text)
    else:
        Path(json_path).write_text(text + "\n", encoding="utf-8")


def parse_when(value: str | None, option: str) -> datetime | None:
    """A moment given on the command line: a date, an ISO 8601 date and time (UTC unless it says), or a
    time ago ("7d", "12h")."""
    if value is None:
        return None
    if ago := re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([dh])\s*", value):
        hours = float(ago.group(1)) * (24 if ago.group(2) == "d" else 1)
        return datetime.now(UTC) - timedelta(hours=hours)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(
            f"{option} {value!r} is not a date (YYYY-MM-DD), an ISO 8601 date and time, or a time ago (7d, 12h)",
            code=USAGE,
        )
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def check_frequency(settings: Settings, frequency: str) -> None:
    """Refuse daily editions and readers unless the configuration turned daily digests on."""
    if frequency == "daily" and not settings.digest.daily:
        fail("daily digests are not enabled ([digest] daily = true)", code=USAGE)


class AppContext:
    """The global options of one command: the configuration file, ``--db`` and the verbosity."""

    def __init__(
        self, config_path: Path, database_path: Path | None, verbosity: int = 0, *, config_named: bool = False
    ) -> None:
        self.config_path = config_path
        self.config_named = config_named  # by --config or NEWSLETTER_CONFIG: then it must exist
        self.database_path = database_path
        self.verbosity = verbosity
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            # Without --config, a missing ./newsletter.toml means the built-in defaults.
            path = self.config_path if self.config_named or self.config_path.exists() else None
            try:
                self._settings = load_settings(path, database=self.database_path)
            except ConfigError as exc:
                fail(f"configuration error: {exc}", code=USAGE)
            web, smtp = self._settings.web, self._settings.smtp
            hooks = self._settings.webhooks
            logs.hide_secrets(
                smtp.password,
                web.secret_key,
                web.admin_password_hash,
                hooks.postmark_password,
                self._settings.bounces.password,
                hooks.mailgun_signing_key,
            )
        return self._settings

    def reload(self) -> Settings:
        self._settings = None
        return self.settings

    @property
    def loaded_database(self) -> Path | None:
        """The database in use, once the settings are loaded (for error messages)."""
        return self._settings.database if self._settings is not None else self.database_path

    @contextmanager
    def database(self, *, create: bool = True) -> Iterator[sqlite_utils.Database]:
        """The configured database, open for the ``with`` block and closed after it. Commands that only read
        pass ``create=False``: no database yet is then an error that tells the user to run init. What goes
        wrong is said by the command group's one handler, the same way whichever command hits it."""
        db = open_database(self.settings.database, create=create)
        try:
            yield db
        finally:
            db.close()
