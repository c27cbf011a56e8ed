"""One send of an edition at a time, even inside one process, and a relay slower than ``[smtp] timeout``
stops the send instead of turning the whole list into ``unknown``; a database locked mid-send stops it
with a line that says so. Real aiosmtpd, real SQLite, real threads and the real ``newsletter`` program in
subprocesses."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from newsletter import locks
from newsletter.db import open_database
from newsletter.errors import LockLost, SendInProgress
from newsletter.jobs import Job, JobRunner
from newsletter.ledger import recover
from newsletter.locks import LockHeld
from newsletter.outbox import send_edition
from tests.support.smtpserver import ScriptedSMTPServer
from tests.test_cli import run
from tests.test_deliver import edition_with_sample_papers, ledger, make_settings, subscribe
from tests.test_scheduler import runs, wait_for

MONDAY = datetime(2026, 11, 23, 7, 0, tzinfo=ZoneInfo("Europe/Paris"))


def stall_after_first_message(server: ScriptedSMTPServer) -> threading.Event:
    """The server stores one message, then stalls (every connection) until the returned event is set."""
    release = threading.Event()

    def hold(_recipient: str) -> None:
        server.handler.on_message = None
        release.wait(60)  # blocks aiosmtpd's event loop: nothing is answered meanwhile

    server.handler.on_message = hold
    return release


def edition_status(settings, edition_id: int) -> str:
    db = open_database(settings.database)
    try:
        return str(db.execute("SELECT status FROM editions WHERE id = ?", [edition_id]).fetchone()[0])
    finally:
        db.close()


# --- item: one send of an edition at a time, even in one process ------------------------------------------------


def send_in_background(config: str, edition_id: int, cwd: Path) -> subprocess.Popen[str]:
    """``newsletter digest send EDITION`` in a process of its own, output captured, none of this
    environment's NEWSLETTER_* variables."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--config", config, "digest", "send", str(edition_id)],
        cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_lock_belongs_to_one_acquisition_not_to_a_process(tmp_path):
    db = open_database(tmp_path / "news.db")
    try:
        first = locks.acquire(db, "job_locks", "digest")
        with pytest.raises(LockHeld) as refused:
            locks.acquire(db, "job_locks", "digest")  # same process, another run
        assert refused.value.this_process and "this process (another run)" in str(refused.value)
        locks.release(db, first)
        locks.release(db, locks.acquire(db, "job_locks", "digest"))  # free again once released

        # Left behind by a process that died on this host: taken over.
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        db.conn.execute(
            "INSERT INTO job_locks (job, host, pid, owner, acquired_at) VALUES ('digest', ?, ?, 'gone', '')",
            [socket.gethostname(), dead.pid],
        )
        locks.release(db, locks.acquire(db, "job_locks", "digest"))
        # Left behind by an earlier process that had this very id (a restarted container's process 1).
        db.conn.execute(
            "INSERT INTO job_locks (job, host, pid, owner, acquired_at) VALUES ('digest', ?, ?, 'earlier', '')",
            [socket.gethostname(), os.getpid()],
        )
        locks.release(db, locks.acquire(db, "job_locks", "digest"))
        # A live process elsewhere on this host keeps it.
        with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
            try:
                db.conn.execute(
                    "INSERT INTO job_locks (job, host, pid, owner, acquired_at) VALUES ('digest', ?, ?, 'x', '')",
                    [socket.gethostname(), other.pid],
                )
                with pytest.raises(LockHeld, match=f"process {other.pid} on"):
                    locks.acquire(db, "job_locks", "digest")
            finally:
                other.kill()
    finally:
        db.close()


def test_recovering_an_edition_needs_its_send_lock(tmp_path):
    db = open_database(tmp_path / "news.db")
    try:
        db.conn.execute(
            "INSERT INTO editions (id, kind, status, created_at, window_start, window_end, paper_count, "
            "topic_count, engine) VALUES (7, 'one-off', 'sending', '', '', '', 0, 0, '')"
        )
        lock = locks.acquire(db, "send_locks", 7)
        locks.release(db, lock)
        taken = locks.acquire(db, "send_locks", 7)  # another run holds it now
        with pytest.raises(LockLost):
            recover(db, 7, lock)
        assert recover(db, 7, taken) == []
        locks.release(db, taken)
    finally:
        db.close()


def test_a_second_send_of_an_edition_in_the_same_process_is_refused(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port, concurrency=2)
    edition_id = edition_with_sample_papers(settings)
    addresses = subscribe(settings, 20)
    release = stall_after_first_message(smtp_server)
    first: dict[str, object] = {}
    sender = threading.Thread(target=lambda: first.update(report=send_edition(settings, edition_id)))
    sender.start()
    try:
        wait_for(lambda: smtp_server.handler.received >= 1)
        # Both connections of the first send now wait for the server, with rows in flight.
        with pytest.raises(SendInProgress, match=rf"edition {edition_id} is being sent by this process"):
            send_edition(settings, edition_id)
    finally:
        release.set()
        sender.join(120)
    report = first["report"]
    assert report.complete and report.counts == {"sent": 20}  # type: ignore[attr-defined]
    assert smtp_server.counts() == {address: 1 for address in addresses}
    _, rows = ledger(settings, edition_id)
    assert all(state == "sent" and reply.startswith("250") for state, _, reply, _ in rows.values())
    assert edition_status(settings, edition_id) == "sent"
    again = send_edition(settings, edition_id)  # the lock was released: a later send runs (nothing to do)
    assert again.sent_now == 0 and again.counts == {"sent": 20}


def test_the_retry_job_skips_an_edition_the_digest_job_is_sending_in_the_same_process(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port, concurrency=2)
    edition_with_sample_papers(settings)
    addresses = subscribe(settings, 20)
    runner = JobRunner(settings)  # one runner, as in `newsletter run`
    digest = Job("weekly-digest", "0 7 * * mon", MONDAY.tzinfo, "digest", {"frequency": "weekly"})  # type: ignore[arg-type]
    retry = Job("retry-deliveries", "30 6 * * *", ZoneInfo("UTC"), "retry")
    release = stall_after_first_message(smtp_server)
    results: dict[str, object] = {}
    sender = threading.Thread(target=lambda: results.update(digest=runner.run(digest, MONDAY)))
    sender.start()
    try:
        wait_for(lambda: smtp_server.handler.received >= 1)
        retried = runner.run(retry, datetime.now(UTC))
        again = runner.run(digest, MONDAY)  # the same job started again (a manual run) meanwhile
    finally:
        release.set()
        sender.join(120)
    sent = results["digest"]
    edition_id = sent.counts["edition"]  # type: ignore[attr-defined]
    assert sent.status == "ok" and sent.counts["sent"] == 20  # type: ignore[attr-defined]
    assert retried.status == "ok" and retried.counts["sent"] == 0
    assert (
        retried.counts["note"] == f"edition {edition_id} is being sent by this process (another run): skipped"
    )
    assert again.status == "skipped" and again.error == "already running in this process (another run)"
    assert smtp_server.counts() == {address: 1 for address in addresses}
    counts, rows = ledger(settings, edition_id)
    assert counts == {"sent": 20}
    assert all(state == "sent" and attempts == 1 for state, attempts, _, _ in rows.values())
    recorded = {(job, status) for job, status, *_ in runs(settings)}
    assert recorded == {("weekly-digest", "ok"), ("retry-deliveries", "ok"), ("weekly-digest", "skipped")}
    assert any(
        "being sent by this process" in counts
        for job, _, counts, *_ in runs(settings)
        if job == "retry-deliveries"
    )


# --- item: a relay that answers the final "." later than the timeout ---------------------------------------------


def test_a_relay_slower_than_the_timeout_stops_the_send_and_resume_finishes_it(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port, concurrency=2, timeout=1)
    edition_id = edition_with_sample_papers(settings)
    addresses = subscribe(settings, 12)
    smtp_server.handler.delay = 4  # answers the final "." after 4 s; the sender waits 1 s
    config = str(tmp_path / "newsletter.toml")

    stopped = run("--config", config, "digest", "send", str(edition_id), cwd=tmp_path)

    assert stopped.returncode == 1, stopped.stdout + stopped.stderr
    out = " ".join(stopped.stdout.split())
    assert 'did not answer within [smtp] timeout (1 s) after the final "." of 3 messages in a row' in out
    assert "raise [smtp] timeout" in out and f"`newsletter resume {edition_id}`" in out
    assert "--resend-unknown" in out and "Traceback" not in stopped.stderr
    counts, rows = ledger(settings, edition_id)
    unknown = {address for address, row in rows.items() if row[0] == "unknown"}
    assert 3 <= len(unknown) <= 4  # the third, and what the other connection had in flight then
    assert counts == {"unknown": len(unknown), "queued": 12 - len(unknown)}
    assert edition_status(settings, edition_id) == "sending"
    status = run("--config", config, "status", cwd=tmp_path)
    assert re.search(rf"\b{edition_id}\b.*\bsending\b", status.stdout), status.stdout

    # The daily retry job picks the edition up; while the relay is still slow it stops the same way.
    retried = JobRunner(settings).run(Job("retry-deliveries", "30 6 * * *", ZoneInfo("UTC"), "retry"))
    assert retried.status == "partial" and "did not answer within [smtp] timeout" in retried.error
    counts, rows = ledger(settings, edition_id)
    unknown = {address for address, row in rows.items() if row[0] == "unknown"}
    assert 6 <= len(unknown) <= 8 and counts == {"unknown": len(unknown), "queued": 12 - len(unknown)}
    assert edition_status(settings, edition_id) == "sending"

    smtp_server.handler.delay = 0  # the operator raised the timeout, or the relay recovered
    resumed = run("--config", config, "resume", str(edition_id), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    counts, _ = ledger(settings, edition_id)
    assert counts == {"sent": 12 - len(unknown), "unknown": len(unknown)}
    assert edition_status(settings, edition_id) == "sent"
    # aiosmtpd drops a message whose client hung up before the answer: the unknown ones never arrived.
    assert smtp_server.counts() == {address: 1 for address in addresses if address not in unknown}

    forced = run("--config", config, "resume", str(edition_id), "--resend-unknown", cwd=tmp_path)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert smtp_server.counts() == {address: 1 for address in addresses}
    assert ledger(settings, edition_id)[0] == {"sent": 12}


# --- the database locked by another process mid-send -------------------------------------------------------------


@pytest.mark.slow
def test_a_database_locked_mid_send_stops_the_send_in_words_and_resume_finishes_it(tmp_path, smtp_server):
    """Another connection takes the write lock mid-send and keeps it until the send has given up (each
    write waits the 10 s busy timeout): ordinary trouble, so lines that say so and exit status 1, never a
    traceback; then a resume delivers the rest, nobody twice."""
    settings = make_settings(tmp_path, smtp_server.port, concurrency=2)
    edition_id = edition_with_sample_papers(settings)
    addresses = subscribe(settings, 30)
    smtp_server.handler.delay = 0.2  # the send is still going when the lock is taken
    config = str(tmp_path / "newsletter.toml")
    sender = send_in_background(config, edition_id, tmp_path)
    holder = sqlite3.connect(settings.database, isolation_level=None)
    try:
        wait_for(lambda: smtp_server.handler.received >= 3)
        holder.execute("BEGIN EXCLUSIVE")
        stdout, stderr = sender.communicate(timeout=300)
    finally:
        holder.close()
        sender.kill()

    assert sender.returncode == 1, stdout + stderr
    assert "Traceback" not in stderr and "Traceback" not in stdout, stderr
    assert f"the database {settings.database} is locked" in " ".join((stdout + stderr).split())
    assert "internal error" not in stdout + stderr

    smtp_server.handler.delay = 0
    resumed = run("--config", config, "resume", str(edition_id), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    counts, rows = ledger(settings, edition_id)
    unknown = {address for address, row in rows.items() if row[0] == "unknown"}
    assert counts == {"sent": 30 - len(unknown)} | ({"unknown": len(unknown)} if unknown else {})
    received = smtp_server.counts()
    assert all(received.get(address) == 1 for address in addresses if address not in unknown)
    assert all(received.get(address, 0) <= 1 for address in addresses)


# --- Ctrl-C during a send -----------------------------------------------------------------------------------------


def test_ctrl_c_during_a_send_exits_130_and_resume_sends_the_rest(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port, concurrency=1)
    edition_id = edition_with_sample_papers(settings)
    addresses = subscribe(settings, 40)
    smtp_server.handler.delay = 0.2
    config = str(tmp_path / "newsletter.toml")
    sending = send_in_background(config, edition_id, tmp_path)
    try:
        wait_for(lambda: smtp_server.handler.received >= 3)
        sending.send_signal(signal.SIGINT)
        stdout, stderr = sending.communicate(timeout=60)
    finally:
        sending.kill()
    assert "Traceback" not in stderr, stderr
    assert sending.returncode == 130, (sending.returncode, stdout, stderr)
    assert f"`newsletter resume {edition_id}`" in " ".join(stdout.split())
    counts, _ = ledger(settings, edition_id)
    assert set(counts) == {"sent", "queued"} and 3 <= counts["sent"] < 40, (counts, stdout, stderr)
    assert edition_status(settings, edition_id) == "sending"

    smtp_server.handler.delay = 0
    resumed = run("--config", config, "resume", str(edition_id), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert smtp_server.counts() == {address: 1 for address in addresses}
