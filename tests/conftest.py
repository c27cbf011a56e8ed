from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlite_utils

from newsletter.db import open_database
from newsletter.fetch import Fetcher
from newsletter.settings import FetchSettings
from tests.support.feedserver import FeedServer
from tests.support.mailserver import Dovecot, Mailbox, dovecot, require_dovecot
from tests.support.smtpserver import ScriptedSMTPServer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def corpus_root() -> Path:
    return Path(os.environ.get("NEWSLETTER_CORPUS", ROOT.parent / "shared" / "corpus"))


@pytest.fixture(scope="session")
def corpus_feeds() -> Path:
    feeds = corpus_root() / "feeds"
    if not feeds.is_dir():
        pytest.skip(f"captured corpus not found at {feeds} (set NEWSLETTER_CORPUS to its location)")
    return feeds


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    server = FeedServer()
    yield server
    server.close()


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[ScriptedSMTPServer]:
    """A real aiosmtpd server on 127.0.0.1 storing into a Maildir, with scripted trouble on demand."""
    server = ScriptedSMTPServer(tmp_path / "maildir")
    yield server
    server.stop()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite_utils.Database]:
    database = open_database(tmp_path / "newsletter.db")
    yield database
    database.close()


@pytest.fixture
def fast_settings() -> FetchSettings:
    """Short timeouts and backoff so that failure tests take fractions of a second."""
    return FetchSettings(timeout=1.0, deadline=5.0, attempts=3, backoff=0.05, max_backoff=5.0)


@pytest.fixture
def fetcher(fast_settings: FetchSettings) -> Iterator[Fetcher]:
    with Fetcher(fast_settings) as client:
        yield client


@pytest.fixture(scope="session")
def mail_server() -> Iterator[Dovecot]:
    """A real dovecot on 127.0.0.1 for the whole run: IMAP (with STARTTLS), IMAPS, POP3 (with STLS) and
    POP3S, its certificate trusted through ``mail_server.ca_file``. Skipped where dovecot is not
    installed, except under CI=true."""
    require_dovecot()
    with dovecot() as server:
        yield server


@pytest.fixture
def mailbox(mail_server: Dovecot) -> Mailbox:
    """An empty mailbox of its own on ``mail_server``: ``.append(raw, ...)`` puts messages in,
    ``.settings(protocol, security, **keys)`` gives the [bounces] settings that read it."""
    return mail_server.new_mailbox()
