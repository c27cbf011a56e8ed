"""The bounce mailbox end to end: an edition sent through aiosmtpd with VERP, then real bounce messages (DSNs
a real Postfix wrote, flufl.bounce's samples from many mail servers, ARF reports, auto-replies) addressed
back to that send and put in a real dovecot, read by ``newsletter bounces fetch`` and by the job, a rerun,
and a read killed half-way."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from newsletter.config import load_settings
from newsletter.db import open_database
from newsletter.outbox import send_edition
from newsletter.scheduler import Scheduler
from newsletter.subscribers import find_subscriber, is_suppressed
from tests.test_cli import run
from tests.test_deliver import edition_with_sample_papers, make_settings, subscribe

BOUNCES = Path(__file__).resolve().parent / "fixtures" / "bounces"
FIXTURE_VERP = re.compile(rb"bounces\+e3\.r\d+@news\.example\.test")
FIXTURE_MESSAGE_ID = re.compile(rb"<e3\.r\d+@news\.example\.test>")


def configured(tmp_path: Path, smtp_port: int, mailbox) -> Path:
    """The delivery tests' configuration, with VERP and the test mailbox read over IMAPS."""
    make_settings(tmp_path, smtp_port)
    reading = mailbox.settings("imap", "tls")
    path = tmp_path / "newsletter.toml"
    path.write_text(
        path.read_text()
        + "[bounces]\n"
        + 'address = "bounces@example.org"\n'
        + f'host = "{reading.host}"\nport = {reading.port}\nsecurity = "tls"\n'
        + f'ca_file = "{reading.ca_file}"\nusername = "{reading.username}"\npassword = "{reading.password}"\n'
    )
    return path


def addressed(
    fixture: str, *, verp: str | None, message_id: str | None, recipient: tuple[str, str] | None
) -> bytes:
    """A real bounce message made to be about one of this send's messages: its VERP address, Message-ID
    and failed recipient put where the mail server had written the fixture's own."""
    raw = (BOUNCES / fixture).read_bytes()
    if verp is not None:
        raw = FIXTURE_VERP.sub(verp.encode(), raw)
    if message_id is not None:
        raw = FIXTURE_MESSAGE_ID.sub(message_id.encode(), raw)
    if recipient is not None:
        raw = raw.replace(recipient[0].encode(), recipient[1].encode())
    return raw


def sent_messages(settings, smtp_server, addresses):
    """Each reader's received message's envelope sender (Return-Path) and Message-ID."""
    found = {}
    for address in addresses:
        [message] = smtp_server.messages(address)
        found[address] = (message["Return-Path"].strip("<>"), message["Message-ID"])
    return found


def states(settings) -> dict[str, tuple[str, bool]]:
    db = open_database(settings.database)
    try:
        emails = [row[0] for row in db.execute("SELECT email FROM subscribers ORDER BY id")]
        return {email: (find_subscriber(db, email).status, is_suppressed(db, email)) for email in emails}
    finally:
        db.close()


def bounce_rows(settings) -> list[tuple[str, str, str, str]]:
    db = sqlite3.connect(settings.database)
    try:
        return db.execute("SELECT source_id, kind, email, action FROM bounces ORDER BY id").fetchall()
    finally:
        db.close()


def test_real_bounces_suppress_exactly_the_right_readers_once(tmp_path, smtp_server, mailbox):
    config = configured(tmp_path, smtp_server.port, mailbox)
    settings = load_settings(config, environ={})
    edition_id = edition_with_sample_papers(settings)
    readers = subscribe(settings, 8)
    assert send_edition(settings, edition_id).counts == {"sent": 8}
    sent = sent_messages(settings, smtp_server, readers)
    r = readers
    flufl = sorted((BOUNCES / "flufl").glob("*.txt"))
    mailbox.append(
        # VERP names reader 0, whatever address the report says failed (here a forward).
        addressed("postfix/local-unknown-user.eml", verp=sent[r[0]][0], message_id=sent[r[0]][1],
                  recipient=("nosuchuser@example.test", "forwarded@elsewhere.example")),
        # A relay rewrote the envelope: the returned Message-ID names reader 1.
        addressed("postfix/remote-user-unknown.eml", verp="bounces@example.org", message_id=sent[r[1]][1],
                  recipient=("gone@remote.test", r[1])),
        addressed("postfix/remote-mailbox-full.eml", verp=sent[r[2]][0], message_id=sent[r[2]][1],
                  recipient=("full@remote.test", r[2])),
        addressed("arf/yahoo-style-abuse.eml", verp=None, message_id=sent[r[3]][1],
                  recipient=("Reader.Thirty@yahoo.example", r[3])),
        addressed("replies/exchange-out-of-office.eml", verp=sent[r[4]][0], message_id=sent[r[4]][1],
                  recipient=None),
        addressed("replies/human-reply.eml", verp=None, message_id=None, recipient=None),
        *(path.read_bytes() for path in flufl),  # bounces for addresses that are not on this list
    )  # fmt: skip

    fetched = run("bounces", "fetch", cwd=tmp_path)
    assert fetched.returncode == 0, fetched.stderr
    total = 6 + len(flufl)
    assert f"bounce mailbox: {total} messages waiting, {total} new" in fetched.stdout
    assert "readers: 2 suppressed, 1 unsubscribed, 1 counted" in fetched.stdout

    assert (
        states(settings)
        == {
            r[0]: ("bounced", True),
            r[1]: ("bounced", True),
            r[2]: ("active", False),  # one soft bounce: counted
            r[3]: ("unsubscribed", True),  # the complaint
            **{
                address: ("active", False) for address in r[4:]
            },  # the auto-reply, and readers nothing came back for
        }
    )
    rows = bounce_rows(settings)
    assert len({row[0] for row in rows}) == total
    about_readers = {(row[2], row[1], row[3]) for row in rows if row[2]}
    assert about_readers == {
        (r[0], "hard", "suppressed"),
        (r[1], "hard", "suppressed"),
        (r[2], "soft", "counted"),
        (r[3], "complaint", "unsubscribed"),
        (r[4], "auto_reply", "ignored"),
    }
    assert all(mailbox.messages_with_flags()), "every message is marked on the server"
    assert all("$NewsletterProcessed" in flags for _raw, flags in mailbox.messages_with_flags())

    again = run("bounces", "fetch", cwd=tmp_path)
    assert again.returncode == 0 and "bounce mailbox: 0 messages waiting, 0 new" in again.stdout
    assert bounce_rows(settings) == rows

    listed = run("bounces", "list", "--kind", "hard", cwd=tmp_path)
    assert r[0] in listed.stdout and r[1] in listed.stdout
    status = run("status", cwd=tmp_path)
    assert (
        "mailbox last read" in status.stdout and "(0 found, 0 new, 0 taken before, 0 failed)" in status.stdout
    )


def test_the_job_reads_the_mailbox_and_is_scheduled_only_with_one(tmp_path, smtp_server, mailbox):
    configured(tmp_path, smtp_server.port, mailbox)
    mailbox.append(addressed("postfix/local-unknown-user.eml", verp=None, message_id=None, recipient=None))
    run("init", cwd=tmp_path)
    listed = run("jobs", "list", cwd=tmp_path)
    assert re.search(r"bounces\s+│ bounces │ \*/15 \* \* \* \* │ UTC\s+│ \d{4}-", listed.stdout), (
        listed.stdout
    )
    ran = run("jobs", "run", "bounces", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "job bounces: ok" in ran.stdout and "1 messages, 1 new, 0 taken before, 1 hard" in ran.stdout

    (tmp_path / "plain").mkdir()
    make_settings(tmp_path / "plain", smtp_server.port)
    run("init", cwd=tmp_path / "plain")
    assert "no bounce mailbox ([bounces] host)" in run("jobs", "list", cwd=tmp_path / "plain").stdout
    scheduled = {job.name for job in Scheduler(load_settings(tmp_path / "newsletter.toml", environ={})).jobs}
    unscheduled = {
        job.name for job in Scheduler(load_settings(tmp_path / "plain/newsletter.toml", environ={})).jobs
    }
    assert scheduled - unscheduled == {"bounces"}
    refused = run("bounces", "fetch", cwd=tmp_path / "plain")
    assert refused.returncode == 2 and "no bounce mailbox is configured" in refused.stderr


def test_a_wrong_password_is_one_line_and_is_recorded_for_status(tmp_path, smtp_server, mailbox):
    config = configured(tmp_path, smtp_server.port, mailbox)
    config.write_text(config.read_text().replace(f'password = "{mailbox.password}"', 'password = "wrong"'))
    failed = run("bounces", "fetch", cwd=tmp_path)
    assert failed.returncode == 1 and failed.stderr.startswith("error: the IMAP server 127.0.0.1:")
    assert "Traceback" not in failed.stderr and "wrong" not in failed.stderr
    assert "refused the login" in run("status", cwd=tmp_path).stdout


def test_a_read_killed_half_way_loses_nothing_and_counts_nothing_twice(tmp_path, smtp_server, mailbox):
    configured(tmp_path, smtp_server.port, mailbox)
    template = (BOUNCES / "postfix/local-unknown-user.eml").read_bytes()
    count = 600
    mailbox.append(
        *(
            FIXTURE_MESSAGE_ID.sub(f"<stranger.{n}@elsewhere.example>".encode(), template).replace(
                b"nosuchuser@example.test", f"stranger{n}@elsewhere.example".encode()
            )
            for n in range(count)
        )
    )
    run("init", cwd=tmp_path)  # the database exists before the read, so its rows can be watched
    reading = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "bounces", "fetch"], cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    database = tmp_path / "news.db"
    taken_at_kill = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and reading.poll() is None:
        taken_at_kill = _count(database)
        if taken_at_kill >= 40:
            reading.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    reading.wait(30)
    assert reading.returncode == -signal.SIGKILL, "the read finished before it could be killed"
    assert 40 <= taken_at_kill < count

    rerun = run("bounces", "fetch", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    db = sqlite3.connect(database)
    try:
        assert db.execute("SELECT count(*), count(DISTINCT source_id) FROM bounces").fetchone() == (
            count,
            count,
        )
        runs = db.execute("SELECT finished_at IS NULL, repeated FROM bounce_runs ORDER BY id").fetchall()
    finally:
        db.close()
    assert [unfinished for unfinished, _ in runs] == [1, 0]  # the killed read never said it finished
    assert runs[1][1] <= 1  # at most the message in hand when killed was taken and not yet marked
    assert all("$NewsletterProcessed" in flags for _raw, flags in mailbox.messages_with_flags())


def _count(database: Path) -> int:
    try:
        db = sqlite3.connect(database, timeout=0.2)
        try:
            return int(db.execute("SELECT count(*) FROM bounces").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:  # not created yet, or busy
        return 0


pytestmark = pytest.mark.usefixtures("mail_server")


def test_doctor_logs_in_to_the_bounce_mailbox_and_touches_nothing(tmp_path, smtp_server, mailbox):
    from newsletter.doctor import doctor

    config = configured(tmp_path, smtp_server.port, mailbox)
    mailbox.append(addressed("postfix/local-unknown-user.eml", verp=None, message_id=None, recipient=None))
    [check] = [c for c in doctor(load_settings(config, environ={})).checks if c.name == "bounce mailbox"]
    assert check.ok and check.detail.endswith(f"logged in as {mailbox.username}, INBOX: 1 message waiting")
    assert [flags for _raw, flags in mailbox.messages_with_flags()] == [set()]  # not read, not marked

    config.write_text(config.read_text().replace(f'password = "{mailbox.password}"', 'password = "wrong"'))
    [check] = [c for c in doctor(load_settings(config, environ={})).checks if c.name == "bounce mailbox"]
    assert not check.ok and "refused the login" in check.detail
