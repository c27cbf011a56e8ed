"""Reading the bounce mailbox from a real dovecot on 127.0.0.1, over IMAPS, IMAP with STARTTLS, plain
IMAP on loopback, and POP3 the same three ways: each message handed once and then marked processed, a
rerun hands nothing, a handler failure or a killed process loses nothing, and trouble is one clear error."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from newsletter.errors import (
    USAGE,
    MailboxError,
    MailboxFolderMissing,
    MailboxLoginFailed,
    MailboxTlsError,
    MailboxUnreachable,
    MailboxUnusable,
)
from newsletter.mailbox import PROCESSED_KEYWORD, MailboxRun, read_mailbox
from tests.support.mailserver import Dovecot, Mailbox, dovecot, require_dovecot

ROOT = Path(__file__).resolve().parent.parent
WAYS = [
    ("imap", "tls"),
    ("imap", "starttls"),
    ("imap", "none"),
    ("pop3", "tls"),
    ("pop3", "starttls"),
    ("pop3", "none"),
]


def bounce(number: int, body: bytes = b"") -> bytes:
    """A delivery status notification as a mailbox holds it, with CRLF line ends, a line longer than
    POP3's usual 2048-byte limit, and a line starting with a dot (which POP3 transfers dot-stuffed)."""
    return (
        b"From: MAILER-DAEMON@mx.example.net\r\n"
        b"To: bounces@example.org\r\n"
        + f"Subject: Undelivered Mail Returned to Sender {number}\r\n".encode()
        + f"Message-ID: <bounce-{number}@mx.example.net>\r\n".encode()
        + b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"\r\n"
        + f"<reader{number}@example.com>: host mx.example.com said: 550 5.1.1 unknown user\r\n".encode()
        + b".a line that starts with a dot\r\n"
        + b"x" * 3000
        + b"\r\n"
        + body
    )


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def read(settings, **options) -> tuple[MailboxRun, list[bytes]]:
    handed: list[bytes] = []
    run = read_mailbox(settings, handed.append, **options)
    return run, handed


@pytest.mark.parametrize(("protocol", "security"), WAYS)
def test_every_message_is_handed_once_and_a_rerun_hands_nothing(
    mailbox: Mailbox, protocol: str, security: str
) -> None:
    messages = [bounce(number) for number in range(1, 4)]
    mailbox.append(*messages)
    settings = mailbox.settings(protocol, security)

    run, handed = read(settings)

    assert handed == messages  # the very bytes, in order
    assert (run.found, run.handled, run.skipped, run.failures, run.stopped, run.left) == (
        3,
        3,
        0,
        [],
        None,
        0,
    )
    rerun, handed_again = read(settings)
    assert handed_again == []
    assert (rerun.found, rerun.handled) == (0, 0)
    if protocol == "imap":  # flagged where they are, and counted as already processed
        assert [
            (raw, {PROCESSED_KEYWORD, "\\Seen"} <= flags) for raw, flags in mailbox.messages_with_flags()
        ] == [(raw, True) for raw in messages]
        assert rerun.skipped == 3
    else:  # deleted, committed at QUIT
        assert mailbox.messages() == []


def test_messages_arriving_after_a_run_are_handed_by_the_next(mailbox: Mailbox) -> None:
    mailbox.append(bounce(1))
    settings = mailbox.settings()
    assert read(settings)[1] == [bounce(1)]
    mailbox.append(bounce(2), bounce(3))

    run, handed = read(settings)

    assert handed == [bounce(2), bounce(3)]
    assert (run.found, run.handled, run.skipped) == (2, 2, 1)


def test_with_a_processed_folder_messages_are_moved_there_which_is_created_if_absent(
    mailbox: Mailbox,
) -> None:
    messages = [bounce(number) for number in range(1, 4)]
    mailbox.append(*messages)
    settings = mailbox.settings(processed_folder="Processed")
    assert "Processed" not in mailbox.folders()

    run, handed = read(settings)

    assert handed == messages
    assert run.handled == 3
    assert mailbox.messages() == []
    assert mailbox.messages("Processed") == messages
    rerun, handed_again = read(settings)
    assert (handed_again, rerun.found, rerun.skipped) == ([], 0, 0)


def test_a_processed_folder_with_a_non_ascii_name_is_named_in_modified_utf7(mailbox: Mailbox) -> None:
    mailbox.append(bounce(1))

    read(mailbox.settings(processed_folder="Traité"))

    assert "Trait&AOk-" in mailbox.folders()  # RFC 3501 5.1.3: how the server names "Traité"
    assert mailbox.messages("Trait&AOk-") == [bounce(1)]


@pytest.fixture(
    scope="module", params=["IMAP4rev1 LITERAL+ UIDPLUS", "IMAP4rev1 LITERAL+"], ids=["uidplus", "no-uidplus"]
)
def server_without_move(request: pytest.FixtureRequest) -> Iterator[Dovecot]:
    """A dovecot that does not announce MOVE (RFC 6851), with and without UIDPLUS (RFC 4315)."""
    require_dovecot()
    with dovecot(imap_capability=request.param) as server:
        yield server


def test_a_server_without_move_gets_copy_deleted_and_expunge(server_without_move: Dovecot) -> None:
    mailbox = server_without_move.new_mailbox()
    messages = [bounce(number) for number in range(1, 4)]
    mailbox.append(*messages)
    settings = mailbox.settings(processed_folder="Processed")

    run, handed = read(settings)

    assert handed == messages
    assert run.handled == 3
    assert mailbox.messages() == []  # expunged, not just flagged \Deleted
    assert mailbox.messages("Processed") == messages
    assert read(settings)[1] == []
    assert "expunged=3" in server_without_move.log  # copied and expunged, not moved


@pytest.mark.parametrize(
    ("protocol", "processed_folder"), [("imap", ""), ("imap", "Processed"), ("pop3", "")]
)
def test_a_handler_failing_midway_stops_the_run_and_leaves_the_rest_for_the_next(
    mailbox: Mailbox, protocol: str, processed_folder: str
) -> None:
    messages = [bounce(number) for number in range(1, 6)]
    mailbox.append(*messages)
    settings = mailbox.settings(protocol, processed_folder=processed_folder)
    handed: list[bytes] = []

    def handle(raw: bytes) -> None:
        if raw == messages[2]:
            raise sqlite3.OperationalError("database is locked")
        handed.append(raw)

    run = read_mailbox(settings, handle)

    assert handed == messages[:2]
    assert (run.found, run.handled, run.left) == (5, 2, 3)
    assert run.stopped is not None and "database is locked" in run.stopped
    assert isinstance(run.handler_error, sqlite3.OperationalError)
    assert [failure.reason for failure in run.failures] == ["database is locked"]
    rerun, handed_again = read(settings)
    assert handed_again == messages[2:]  # the failed one and those after it, each once
    assert (rerun.handled, rerun.stopped) == (3, None)


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_limit_hands_the_oldest_and_progress_follows_each_message(mailbox: Mailbox, protocol: str) -> None:
    messages = [bounce(number) for number in range(1, 6)]
    mailbox.append(*messages)
    settings = mailbox.settings(protocol)
    steps: list[tuple[int, int]] = []

    run, handed = read(settings, limit=2, progress=lambda done, total: steps.append((done, total)))

    assert handed == messages[:2]
    assert steps == [(1, 2), (2, 2)]
    assert (run.found, run.handled, run.left) == (5, 2, 3)
    assert read(settings)[1] == messages[2:]


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_an_oversized_message_is_reported_and_marked_without_being_handed(
    mailbox: Mailbox, protocol: str
) -> None:
    small, large = bounce(1), bounce(2, body=b"y" * 20_000 + b"\r\n")
    mailbox.append(small, large, bounce(3))
    settings = mailbox.settings(protocol)

    run, handed = read(settings, max_size=10_000)

    assert handed == [small, bounce(3)]
    assert (run.handled, run.too_large, run.left) == (2, 1, 0)
    [failure] = run.failures
    assert failure.message == ("UID 2" if protocol == "imap" else "message 2")
    assert f"{len(large)} bytes, over the" in failure.reason
    assert "marked processed without being read" in failure.reason
    assert read(settings, max_size=10_000)[1] == []  # not offered again


def test_the_default_size_limit_is_ten_megabytes(mailbox: Mailbox) -> None:
    large = bounce(1, body=(b"z" * 998 + b"\r\n") * 10_600)  # a little over 10 MiB
    mailbox.append(large, bounce(2))

    run, handed = read(mailbox.settings())

    assert handed == [bounce(2)]
    assert run.too_large == 1
    assert "over the 10 MB limit" in run.failures[0].reason


# A process killed mid-mailbox: the handler records each message in a real SQLite file (keyed by its
# SHA-256, as the real handler does) and the process SIGKILLs itself right after the Nth record, before
# the message is marked processed on the server.
READER = """
import hashlib, json, os, signal, sqlite3, sys
from newsletter.mailbox import read_mailbox
from newsletter.settings import BouncesSettings

settings = BouncesSettings(**json.loads(sys.argv[1]))
kill_after = int(sys.argv[3])
db = sqlite3.connect(sys.argv[2], isolation_level=None)
db.execute("CREATE TABLE IF NOT EXISTS taken (sha TEXT PRIMARY KEY, raw BLOB)")
db.execute("CREATE TABLE IF NOT EXISTS calls (sha TEXT)")
handed = 0

def handle(raw):
    global handed
    digest = hashlib.sha256(raw).hexdigest()
    db.execute("INSERT INTO calls VALUES (?)", (digest,))
    db.execute("INSERT OR IGNORE INTO taken VALUES (?, ?)", (digest, raw))
    handed += 1
    if handed == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)

run = read_mailbox(settings, handle)
print(run.handled)
"""


def run_reader(settings, database: Path, kill_after: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", READER, json.dumps(asdict(settings)), str(database), str(kill_after)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def read_killed_then_rerun(mailbox: Mailbox, database: Path, protocol: str, processed_folder: str) -> None:
    messages = [bounce(number) for number in range(1, 11)]
    mailbox.append(*messages)
    settings = mailbox.settings(protocol, processed_folder=processed_folder)

    killed = run_reader(settings, database, kill_after=4)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM taken").fetchone() == (4,)

    finished = run_reader(settings, database, kill_after=0)
    assert finished.returncode == 0, finished.stderr

    with sqlite3.connect(database) as db:
        taken = dict(db.execute("SELECT sha, raw FROM taken").fetchall())
        calls = [digest for (digest,) in db.execute("SELECT sha FROM calls")]
    assert sorted(taken) == sorted(sha(raw) for raw in messages)  # every message, each once
    assert all(sha(raw) == digest for digest, raw in taken.items())
    # Handed again after the kill: over IMAP the one recorded but not yet marked, over POP3 all of them
    # (nothing is deleted before QUIT); the record keyed by SHA-256 keeps each once all the same.
    assert len(calls) == (11 if protocol == "imap" else 14)
    assert finished.stdout.strip() == ("7" if protocol == "imap" else "10")
    again = run_reader(settings, database, kill_after=0)
    assert again.stdout.strip() == "0"
    if processed_folder:
        assert mailbox.messages() == []
        assert mailbox.messages(processed_folder) == messages
    elif protocol == "imap":
        assert all(PROCESSED_KEYWORD in flags for _raw, flags in mailbox.messages_with_flags())
    else:
        assert mailbox.messages() == []


@pytest.mark.parametrize(
    ("protocol", "processed_folder"), [("imap", ""), ("imap", "Processed"), ("pop3", "")]
)
def test_a_process_killed_mid_mailbox_loses_nothing_and_counts_nothing_twice(
    mailbox: Mailbox, tmp_path: Path, protocol: str, processed_folder: str
) -> None:
    read_killed_then_rerun(mailbox, tmp_path / "taken.db", protocol, processed_folder)


def test_a_process_killed_between_copy_and_expunge_loses_nothing_and_leaves_no_duplicate(
    server_without_move: Dovecot, tmp_path: Path
) -> None:
    read_killed_then_rerun(server_without_move.new_mailbox(), tmp_path / "taken.db", "imap", "Processed")


# Trouble: one clear error each, and nothing handed or marked.


def assert_untouched(mailbox: Mailbox, messages: list[bytes]) -> None:
    assert [(raw, PROCESSED_KEYWORD in flags) for raw, flags in mailbox.messages_with_flags()] == [
        (raw, False) for raw in messages
    ]


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_wrong_password_is_a_login_error(mailbox: Mailbox, protocol: str) -> None:
    mailbox.append(bounce(1))

    with pytest.raises(MailboxLoginFailed) as refused:
        read(mailbox.settings(protocol, password="not the password"))

    message = str(refused.value)
    assert f"refused the login of '{mailbox.username}'" in message
    assert "check [bounces] username and password" in message
    assert "not the password" not in message and mailbox.password not in message
    assert refused.value.exit_code == 1
    assert_untouched(mailbox, [bounce(1)])


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_port_where_nothing_listens_is_a_refused_connection(mailbox: Mailbox, protocol: str) -> None:
    from newsletter.devsmtp import free_port

    port = free_port()
    with pytest.raises(MailboxUnreachable, match=rf"127\.0\.0\.1:{port} refused the connection"):
        read(mailbox.settings(protocol, port=port))


def test_the_port_of_the_other_protocol_is_named_as_the_wrong_one(
    mail_server: Dovecot, mailbox: Mailbox
) -> None:
    pop3 = mail_server.ports.pop3
    with pytest.raises(
        MailboxUnreachable, match=rf"did not answer as an IMAP server: is {pop3} its IMAP port"
    ):
        read(mailbox.settings("imap", "none", port=pop3))
    imap = mail_server.ports.imap
    with pytest.raises(
        MailboxUnreachable, match=rf"did not answer as a POP3 server .*: is {imap} its POP3 port"
    ):
        read(mailbox.settings("pop3", "none", port=imap))


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_tls_on_a_port_that_does_not_speak_it_is_a_tls_error(
    mail_server: Dovecot, mailbox: Mailbox, protocol: str
) -> None:
    plain = mail_server.port(protocol, "none")
    with pytest.raises(
        MailboxTlsError, match=rf'TLS failed while connecting .*is {plain} a port for security = "tls"'
    ):
        read(mailbox.settings(protocol, "tls", port=plain))


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_tls_port_read_in_clear_is_a_server_that_does_not_answer(
    mail_server: Dovecot, mailbox: Mailbox, protocol: str
) -> None:
    tls = mail_server.port(protocol, "tls")  # it waits for a TLS handshake, and the reader for a greeting

    with pytest.raises(MailboxUnreachable) as silent:
        read(mailbox.settings(protocol, "none", port=tls), timeout=1)

    assert str(silent.value).startswith(
        f"the {protocol.upper()} server 127.0.0.1:{tls} did not answer within 1 s"
    )
    assert f'is {tls} a port for security = "none"?' in str(silent.value)


@pytest.mark.parametrize(("protocol", "security"), [way for way in WAYS if way[1] != "none"])
def test_a_certificate_not_signed_by_a_trusted_ca_is_refused(
    mailbox: Mailbox, protocol: str, security: str
) -> None:
    mailbox.append(bounce(1))

    with pytest.raises(MailboxTlsError) as refused:  # the system's CAs only: the server's is self-signed
        read(mailbox.settings(protocol, security, ca_file=""))

    assert "its certificate is not trusted (self-signed certificate)" in str(refused.value)
    assert "set [bounces] ca_file" in str(refused.value)
    assert_untouched(mailbox, [bounce(1)])


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_starttls_refuses_to_go_on_in_clear_where_the_server_does_not_offer_it(protocol: str) -> None:
    require_dovecot()
    with dovecot(tls=False) as server:
        mailbox = server.new_mailbox()
        mailbox.append(bounce(1))
        logins = server.log.count(f"Login: user=<{mailbox.username}>")

        with pytest.raises(MailboxTlsError, match="does not offer STARTTLS: not logging in without TLS"):
            read(mailbox.settings(protocol, "starttls", port=server.port(protocol, "none")))

        assert server.log.count(f"Login: user=<{mailbox.username}>") == logins  # the password never sent
        assert_untouched(mailbox, [bounce(1)])


def test_a_missing_folder_is_named(mailbox: Mailbox) -> None:
    mailbox.append(bounce(1))

    with pytest.raises(MailboxFolderMissing, match="has no folder 'Bounces' to read"):
        read(mailbox.settings(folder="Bounces"))

    assert_untouched(mailbox, [bounce(1)])


def test_a_folder_given_to_pop3_is_refused_before_connecting(mailbox: Mailbox) -> None:
    with pytest.raises(MailboxUnusable, match="POP3 reads only the inbox") as refused:
        read(mailbox.settings("pop3", folder="Bounces"))
    assert refused.value.exit_code == USAGE


@pytest.mark.parametrize("host", ["192.0.2.10", "mail.example.org"])
def test_no_tls_is_refused_for_a_server_not_on_this_machine(mailbox: Mailbox, host: str) -> None:
    with pytest.raises(
        MailboxUnusable, match=rf'security = "none" would send the password in clear to {host}'
    ):
        read(mailbox.settings("imap", "none", host=host))


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_no_tls_is_allowed_on_loopback(mailbox: Mailbox, host: str) -> None:
    mailbox.append(bounce(1))
    assert read(mailbox.settings("imap", "none", host=host))[1] == [bounce(1)]


def test_settings_that_cannot_work_are_usage_errors_before_any_connection(
    mailbox: Mailbox, tmp_path: Path
) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    cases = {
        "[bounces] host is not set": mailbox.settings(host=""),
        "does not exist": mailbox.settings(ca_file=str(tmp_path / "missing.pem")),
        "holds no PEM certificate": mailbox.settings(ca_file=str(not_pem)),
        "processed_folder must differ from folder": mailbox.settings(processed_folder="INBOX"),
    }
    for expected, settings in cases.items():
        with pytest.raises(MailboxUnusable, match=re.escape(expected)) as refused:
            read(settings)
        assert isinstance(refused.value, MailboxError) and refused.value.exit_code == USAGE
