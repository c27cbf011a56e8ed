"""Delivery against a real aiosmtpd server on 127.0.0.1: ledger, headers, retries, bounces, crashes."""

from __future__ import annotations

import email
import email.policy
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from newsletter.compose import build_edition
from newsletter.config import load_settings
from newsletter.db import open_database
from newsletter.errors import SubscriberError
from newsletter.fetch import Fetcher
from newsletter.ingest import run_ingest
from newsletter.ledger import ledger_counts
from newsletter.outbox import create_one_off, send_edition, send_test_copy
from newsletter.samples import sample_sources
from newsletter.settings import DigestSettings
from newsletter.subscribers import add_subscriber, import_csv, set_status
from tests.support.smtpserver import ScriptedSMTPServer

MONDAY = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


@pytest.fixture(params=[False, True], ids=["one-command-at-a-time", "pipelining"])
def smtp_server(tmp_path, request):
    server = ScriptedSMTPServer(tmp_path / "maildir", pipelining=request.param)
    yield server
    server.stop()


def make_settings(tmp_path: Path, port: int, **smtp: object):
    options = {
        "host": "127.0.0.1",
        "port": port,
        "concurrency": 3,
        "retry_backoff": 0.05,
        "max_inline_wait": 5,
        "max_attempts": 4,
        "unsubscribe_mailto": "unsubscribe@example.org",
        "from": "Research Digest <digest@example.org>",
        "list_id": "Research Digest <digest.example.org>",
    } | smtp
    lines = [
        "[newsletter]",
        'name = "Research Digest"',
        'database = "news.db"',
        "[web]",
        'base_url = "https://news.example.org"',
        'secret_key = "test-secret-key-0123456789"',
        "[smtp]",
    ]
    for key, value in options.items():
        lines.append(
            f"{key} = {value!r}".replace("'", '"')
            if isinstance(value, str)
            else f"{key} = {str(value).lower() if isinstance(value, bool) else value}"
        )
    path = tmp_path / "newsletter.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_settings(path, environ={})


def edition_with_sample_papers(settings) -> int:
    db = open_database(settings.database)
    try:
        with Fetcher() as fetcher:
            run_ingest(db, sample_sources(), fetcher, now=MONDAY)
        return build_edition(db, DigestSettings(), now=MONDAY + timedelta(hours=1)).id
    finally:
        db.close()


def subscribe(settings, count: int, prefix: str = "reader") -> list[str]:
    db = open_database(settings.database)
    try:
        addresses = [f"{prefix}{n}@example.org" for n in range(count)]
        for n, address in enumerate(addresses):
            add_subscriber(db, address, f"Reader {n}")
        return addresses
    finally:
        db.close()


def ledger(settings, edition_id):
    db = open_database(settings.database)
    try:
        return ledger_counts(db, edition_id), {
            row[0]: row[1:]
            for row in db.execute(
                "SELECT email, state, attempts, last_reply, message_id FROM deliveries WHERE edition_id = ?",
                [edition_id],
            )
        }
    finally:
        db.close()


# --- delivery and the message itself --------------------------------------------------------------------


def test_every_subscriber_gets_the_edition_exactly_once(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port)
    edition_id = edition_with_sample_papers(settings)
    addresses = subscribe(settings, 40)
    report = send_edition(settings, edition_id)
    assert report.complete and report.counts == {"sent": 40} and report.sent_now == 40
    assert smtp_server.counts() == {address: 1 for address in addresses}

    again = send_edition(settings, edition_id)  # a re-run sends nothing twice
    assert again.sent_now == 0 and again.counts == {"sent": 40}
    assert smtp_server.counts() == {address: 1 for address in addresses}
    _counts, rows = ledger(settings, edition_id)
    assert all(
        state == "sent" and attempts == 1 and reply.startswith("250")
        for state, attempts, reply, _ in rows.values()
    )


def test_headers_and_both_parts(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port)
    edition_id = edition_with_sample_papers(settings)
    db = open_database(settings.database)
    add_subscriber(db, "jose@example.org", "José Müller, Jr.")
    db.close()
    send_edition(settings, edition_id)
    [stored] = smtp_server.messages("jose@example.org")
    raw = stored.as_bytes(policy=email.policy.SMTP)
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only, no bare LF
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["From"] == "Research Digest <digest@example.org>"
    assert message["To"].addresses[0].display_name == "José Müller, Jr."
    assert message["To"].addresses[0].addr_spec == "jose@example.org"
    assert message["Subject"] == "Research Digest: 38 new papers, 16–23 Nov 2026"
    assert message["Date"].datetime.tzinfo is not None
    assert message["List-Id"] == "Research Digest <digest.example.org>"
    unsubscribe = message["List-Unsubscribe"]
    assert unsubscribe.startswith("<https://news.example.org/unsubscribe/")
    assert unsubscribe.endswith(", <mailto:unsubscribe@example.org?subject=unsubscribe>")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    _, rows = ledger(settings, edition_id)
    assert message["Message-ID"] == rows["jose@example.org"][3]

    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Hello José Müller, Jr.," in text and "Hello Jos&#233; M&#252;ller, Jr.," in html
    assert "Tree-Structured Speculative Decoding with a Shared Draft Head" in text
    link = unsubscribe[1 : unsubscribe.index(">")]
    assert link in text and link in html
    assert "https://news.example.org/preferences/" in text
    assert "XNLXSLOT" not in text and "XNLXSLOT" not in html  # every slot filled
    assert len(html.encode()) < 102_000


# --- trouble at the server ------------------------------------------------------------------------------------


def test_temporary_failures_are_retried_and_hard_bounces_suppressed(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port)
    edition_id = edition_with_sample_papers(settings)
    addresses = subscribe(settings, 8)
    smtp_server.handler.script(addresses[0], "451 4.3.0 Try again later", "451 4.3.0 Try again later")
    smtp_server.handler.script(addresses[1], "550 5.1.1 No such user here")
    smtp_server.handler.script(addresses[2], "550 5.7.1 Rejected by policy")
    smtp_server.handler.script(addresses[3], "drop-rcpt")
    smtp_server.handler.script(addresses[4], "data:452 4.3.1 Insufficient storage")
    smtp_server.handler.script(addresses[5], *["451 4.3.0 Busy"] * 10)

    report = send_edition(settings, edition_id)

    assert report.complete
    assert report.counts == {"sent": 5, "failed": 3}
    counts = smtp_server.counts()
    assert counts == {addresses[i]: 1 for i in (0, 3, 4, 6, 7)}
    _, rows = ledger(settings, edition_id)
    assert rows[addresses[0]][:2] == ("sent", 3)  # two 451s, then accepted
    assert rows[addresses[3]][:2] == ("sent", 2)  # connection dropped at RCPT: safe to send again
    assert rows[addresses[4]][:2] == ("sent", 2)
    assert rows[addresses[1]][0] == "failed" and "550 5.1.1 No such user here" in rows[addresses[1]][2]
    assert rows[addresses[2]][0] == "failed" and "5.7.1" in rows[addresses[2]][2]
    assert rows[addresses[5]][0] == "failed" and "gave up after 4 attempts" in rows[addresses[5]][2]
    db = open_database(settings.database)
    suppressed = {row[0] for row in db.execute("SELECT email FROM suppressions")}
    statuses = dict(db.execute("SELECT email, status FROM subscribers").fetchall())
    db.close()
    assert suppressed == {addresses[1]}  # only the 5.1.x hard bounce
    assert statuses[addresses[1]] == "bounced" and statuses[addresses[2]] == "active"
    assert dict(report.failures).keys() == {addresses[1], addresses[2], addresses[5]}

    # The next edition skips the suppressed address altogether.
    db = open_database(settings.database)
    second = build_edition(
        db, DigestSettings(), since=MONDAY - timedelta(hours=1), until=MONDAY + timedelta(hours=1)
    )
    db.close()
    smtp_server.handler.scripts.clear()
    report = send_edition(settings, second.id)
    assert addresses[1] not in {address for address, _ in report.failures}
    _, rows = ledger(settings, second.id)
    assert addresses[1] not in rows  # bounced subscribers are not recipients any more


def test_a_connection_lost_after_the_whole_message_is_not_sent_twice(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port)
    edition_id = edition_with_sample_papers(settings)
    addresses = subscribe(settings, 4)
    smtp_server.handler.script(addresses[2], "drop-data")
    report = send_edition(settings, edition_id)
    assert report.counts == {"sent": 3, "unknown": 1}
    assert report.unknown == [addresses[2]]
    assert report.complete
    assert addresses[2] not in smtp_server.counts()
    resumed = send_edition(settings, edition_id)
    assert resumed.sent_now == 0 and resumed.unknown == [addresses[2]]
    # The operator knows the server hung up before storing it, and chooses to send it again.
    forced = send_edition(settings, edition_id, resend_unknown=True)
    assert forced.sent_now == 1 and forced.counts == {"sent": 4} and forced.unknown == []
    assert smtp_server.counts() == {address: 1 for address in addresses}


def test_server_down_stops_the_send_and_resume_finishes_it(tmp_path, smtp_server):
    from newsletter.devsmtp import free_port

    settings = make_settings(tmp_path, free_port(), connect_attempts=2)
    edition_id = edition_with_sample_papers(settings)
    addresses = subscribe(settings, 12)
    report = send_edition(settings, edition_id)
    assert not report.complete and report.sent_now == 0
    assert "cannot reach the SMTP server 127.0.0.1:" in report.stopped
    assert "Connection refused" in report.stopped or "refused" in report.stopped.lower()
    assert report.counts == {"queued": 12}

    later = make_settings(tmp_path, smtp_server.port)
    resumed = send_edition(later, edition_id)
    assert resumed.complete and resumed.counts == {"sent": 12}
    assert smtp_server.counts() == {address: 1 for address in addresses}


def test_unsubscribing_takes_effect_before_the_next_message_leaves(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port, concurrency=1)
    edition_id = edition_with_sample_papers(settings)
    addresses = subscribe(settings, 30)
    database = settings.database

    def leave_when_first_arrives(recipient: str) -> None:
        if recipient == addresses[0]:
            with sqlite3.connect(database, timeout=10) as conn:
                conn.execute(
                    "UPDATE subscribers SET status = 'unsubscribed' WHERE email = ?", [addresses[-1]]
                )

    smtp_server.handler.on_message = leave_when_first_arrives
    report = send_edition(settings, edition_id)
    assert report.counts == {"sent": 29, "suppressed": 1}
    assert addresses[-1] not in smtp_server.counts()
    _, rows = ledger(settings, edition_id)
    assert rows[addresses[-1]][0] == "suppressed" and "unsubscribed" in rows[addresses[-1]][2]


def test_rate_limit_spaces_messages(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port, rate=10)
    edition_id = edition_with_sample_papers(settings)
    subscribe(settings, 8)
    send_edition(settings, edition_id)
    times = sorted(at for at, _ in smtp_server.handler.arrivals)
    assert len(times) == 8
    # 10 messages per second: 8 arrivals span at least 0.7 s; the margin absorbs a late first arrival
    # on a loaded machine (arrival times are taken at the server).
    assert (times[-1] - times[0]) >= 7 * 0.1 * 0.7


def test_ledger_marks_each_message_before_its_final_dot_and_never_more_than_one_per_connection(
    tmp_path, smtp_server
):
    settings = make_settings(tmp_path, smtp_server.port, concurrency=2)
    edition_id = edition_with_sample_papers(settings)
    subscribe(settings, 30)
    seen: list[tuple[str, int]] = []

    def look_at_the_ledger(recipient: str) -> None:
        # Runs when the server has the whole message: what would a crash at this instant leave behind?
        with sqlite3.connect(settings.database, timeout=10) as conn:
            state = conn.execute(
                "SELECT state FROM deliveries WHERE edition_id = ? AND email = ?", [edition_id, recipient]
            ).fetchone()[0]
            in_doubt = conn.execute(
                "SELECT count(*) FROM deliveries WHERE edition_id = ? AND state = 'committing'", [edition_id]
            ).fetchone()[0]
        seen.append((state, in_doubt))

    smtp_server.handler.on_message = look_at_the_ledger
    report = send_edition(settings, edition_id)
    assert report.counts == {"sent": 30}
    assert len(seen) == 30
    assert all(state == "committing" for state, _ in seen)
    assert max(in_doubt for _, in_doubt in seen) <= 2
    db = open_database(settings.database)
    try:
        rows = db.execute(
            "SELECT last_reply, sent_at FROM deliveries WHERE edition_id = ?", [edition_id]
        ).fetchall()
    finally:
        db.close()
    assert all(reply.startswith("250") and sent_at for reply, sent_at in rows)


def test_crash_mid_send_then_resume_delivers_each_message_exactly_once(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port, concurrency=4)
    edition_id = edition_with_sample_papers(settings)
    addresses = subscribe(settings, 300)
    smtp_server.handler.delay = 0.01  # long enough to kill the sender in the middle
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    config = str(tmp_path / "newsletter.toml")
    sender = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--config", config, "digest", "send", str(edition_id)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while smtp_server.handler.received < 80 and time.monotonic() < deadline and sender.poll() is None:
        time.sleep(0.01)
    sender.send_signal(signal.SIGKILL)
    sender.wait(timeout=30)
    delivered_before = sum(smtp_server.counts().values())
    assert 0 < delivered_before < 300, "the sender should have been killed in the middle"

    smtp_server.handler.delay = 0
    resumed = subprocess.run(
        [sys.executable, "-m", "newsletter", "--config", config, "resume", str(edition_id)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    counts, rows = ledger(settings, edition_id)
    unknown = {address for address, row in rows.items() if row[0] == "unknown"}
    assert len(unknown) <= 4  # at most one in flight per connection
    assert set(counts) <= {"sent", "unknown"} and counts.get("sent", 0) + len(unknown) == 300
    received = smtp_server.counts()
    for address in addresses:
        expected = {0, 1} if address in unknown else {1}
        assert received.get(address, 0) in expected, address
    assert all(count == 1 for count in received.values())  # nobody got it twice
    if unknown:
        assert "were in flight when a send stopped" in resumed.stdout


# --- test copies, one-off messages, subscribers -----------------------------------------------------------------


def test_test_copy_does_not_touch_the_ledger(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port)
    edition_id = edition_with_sample_papers(settings)
    subscribe(settings, 3)
    reply = send_test_copy(settings, edition_id, "editor@example.org")
    assert reply.startswith("250")
    assert smtp_server.counts() == {"editor@example.org": 1}
    counts, _ = ledger(settings, edition_id)
    assert counts == {}


def test_one_off_message_in_markdown(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port)
    addresses = subscribe(settings, 3)
    body = "# Maintenance\n\nThe digest moves to **Tuesdays**. <script>alert(1)</script>\n\n- one\n- two\n"
    edition_id = create_one_off(settings, "Schedule change", body)
    report = send_edition(settings, edition_id)
    assert report.counts == {"sent": 3}
    [message] = smtp_server.messages(addresses[0])
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "Schedule change"
    html = parsed.get_body(("html",)).get_content()
    assert "<strong>Tuesdays</strong>" in html and "<li>one</li>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html  # raw HTML in the Markdown stays text
    single = create_one_off(settings, "Just you", "Hi", segment=addresses[1])
    assert send_edition(settings, single).counts == {"sent": 1}


def test_names_with_line_breaks_never_become_headers(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port)
    db = open_database(settings.database)
    with pytest.raises(SubscriberError, match="cannot contain line breaks"):
        add_subscriber(db, "eve@example.org", "Eve\r\nBcc: victim@example.org")
    with pytest.raises(SubscriberError, match="not a valid email address"):
        add_subscriber(db, "eve@example.org\r\nBcc: victim@example.org")
    # A name that got into the database some other way is refused at sending, never written as a header.
    add_subscriber(db, "mallory@example.org", "Mallory")
    db.execute(
        "UPDATE subscribers SET name = 'Mallory\r\nBcc: victim@example.org' WHERE email = 'mallory@example.org'"
    )
    db.close()
    edition_id = edition_with_sample_papers(settings)
    report = send_edition(settings, edition_id)
    assert report.counts == {"failed": 1}
    assert "line breaks" in report.failures[0][1]
    assert smtp_server.counts() == {}


def test_csv_import_reports_bad_rows_and_is_idempotent(tmp_path, db):
    path = tmp_path / "people.csv"
    path.write_text(
        "email,name\nalice@example.org,Alice\nbad-address,Bob\nALICE@example.org,Alice again\n"
        'carol@example.org,"Carol, PhD"\n\ndave@example.org\n'
    )
    report = import_csv(db, path)
    assert (report.added, report.existing) == (3, 1)
    assert report.errors == [
        (3, "'bad-address' is not a valid email address: An email address must have an @-sign.")
    ]
    again = import_csv(db, path)
    assert (again.added, again.existing, len(again.errors)) == (0, 4, 1)
    names = dict(db.execute("SELECT email, name FROM subscribers").fetchall())
    assert names == {"alice@example.org": "Alice", "carol@example.org": "Carol, PhD", "dave@example.org": ""}


def test_an_unsubscribed_reader_is_not_reactivated_by_an_admin_add(db):
    result = add_subscriber(db, "frank@example.org", "Frank")
    set_status(db, result.subscriber.id, "unsubscribed")
    again = add_subscriber(db, "Frank@Example.org", "Frank")
    assert not again.created and again.subscriber.status == "unsubscribed"
    assert "not re-activated" in again.note


def test_large_edition_stays_under_the_clipping_limit(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port)
    db = open_database(settings.database)
    stamp = (MONDAY - timedelta(hours=1)).isoformat(timespec="microseconds")
    words = itertools.cycle(
        [
            "graph",
            "diffusion",
            "language",
            "robot",
            "quantum",
            "protein",
            "galaxy",
            "speech",
            "token",
            "privacy",
        ]
    )
    rows = []
    for n in range(5000):
        topic = [next(words) for _ in range(3)]
        title = f"A study of {topic[0]} {topic[1]} methods number {n} with a rather long descriptive title"
        abstract = " ".join(f"{topic[n % 3]} {next(words)} analysis" for _ in range(40)) + "."
        rows.append(
            (
                f"arxiv:2611.{n:05d}",
                f"2611.{n:05d}",
                title,
                abstract,
                '["A. Author", "B. Author", "C. Author", "D. Author"]',
                '["cs.LG"]',
                "cs.LG",
                f"https://arxiv.org/abs/2611.{n:05d}",
                stamp,
                stamp,
                stamp,
            )
        )
    db.conn.executemany(
        """INSERT INTO papers (key, arxiv_id, title, abstract, authors, categories, primary_category, url, is_new,
                               first_seen_at, last_seen_at, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)""",
        rows,
    )
    edition = build_edition(db, DigestSettings(), now=MONDAY)
    db.close()
    assert edition.paper_count == 5000
    subscribe(settings, 1)
    report = send_edition(settings, edition.id)
    assert report.counts == {"sent": 1}
    [message] = smtp_server.messages("reader0@example.org")
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    html = parsed.get_body(("html",)).get_content()
    assert len(html.encode()) < 102_000
    assert "more in this topic" in html and "https://news.example.org/editions/" in html
    assert html.count('class="nl-paper"') >= len(edition.sections)


def test_starttls_and_login(tmp_path):
    """A relay that requires STARTTLS and AUTH: aiosmtpd with a certificate made for the test."""
    from newsletter.devsmtp import EmbeddedSMTPServer, messages_by_recipient
    from tests.support.tls import server_certificate

    cert, context = server_certificate(tmp_path)
    logins: list[tuple[str, str]] = []

    def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        from aiosmtpd.smtp import AuthResult

        logins.append((auth_data.login.decode(), auth_data.password.decode()))
        ok = auth_data.login == b"digest" and auth_data.password == b"s3cret pass"
        return AuthResult(success=ok, handled=False)

    server = EmbeddedSMTPServer(
        tmp_path / "maildir",
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=True,
    ).start()
    try:
        settings = make_settings(
            tmp_path, server.port, starttls=True, username="digest", password="s3cret pass", ca_file=str(cert)
        )
        edition_id = edition_with_sample_papers(settings)
        addresses = subscribe(settings, 3)
        report = send_edition(settings, edition_id)
        assert report.counts == {"sent": 3}
        assert sorted(messages_by_recipient(tmp_path / "maildir")) == sorted(addresses)
        assert set(logins) == {("digest", "s3cret pass")}

        wrong = make_settings(
            tmp_path, server.port, starttls=True, username="digest", password="nope", ca_file=str(cert)
        )
        db = open_database(wrong.database)
        second = build_edition(
            db, DigestSettings(), since=MONDAY - timedelta(hours=1), until=MONDAY + timedelta(hours=1)
        )
        db.close()
        refused = send_edition(wrong, second.id)
        assert "the SMTP server refused the login" in refused.stopped
        assert refused.counts == {"queued": 3}

        untrusted = make_settings(
            tmp_path, server.port, starttls=True, username="digest", password="s3cret pass"
        )
        failed = send_edition(untrusted, second.id)
        assert "CERTIFICATE_VERIFY_FAILED" in failed.stopped  # never sends over an unverified connection
    finally:
        server.stop()
