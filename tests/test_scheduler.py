"""Scheduled jobs: definitions, cron times across DST, coalescing, one instance, idempotent digests,
clean shutdown on SIGTERM, status, doctor, retention, backups and logs."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from newsletter.config import load_settings
from newsletter.db import open_database
from newsletter.errors import JobError
from newsletter.jobs import Job, JobRunner, load_job, load_jobs, missed_run, period_of
from newsletter.scheduler import Scheduler
from newsletter.settings import default_jobs_dir
from tests.test_deliver import edition_with_sample_papers, make_settings, subscribe

PARIS = ZoneInfo("Europe/Paris")


def job(cron: str, action: str = "fetch", zone: ZoneInfo = PARIS, **options: object) -> Job:
    return Job("test", cron, zone, action, dict(options))


# --- definitions and times ---------------------------------------------------------------------------------


def test_shipped_jobs():
    jobs = {j.name: j for j in load_jobs(default_jobs_dir(), "Europe/Paris")}
    assert set(jobs) == {"fetch", "weekly-digest", "daily-digest", "retry-deliveries", "cleanup", "bounces"}
    weekly = jobs["weekly-digest"]
    assert (weekly.action, weekly.cron, weekly.options, str(weekly.timezone)) == (
        "digest", "0 7 * * mon", {"frequency": "weekly"}, "Europe/Paris"
    )  # fmt: skip
    start = datetime(2026, 11, 24, tzinfo=PARIS)
    fetch_times = jobs["fetch"].fire_times(start, start + timedelta(days=1))
    assert len(fetch_times) == 8 and {t.hour for t in fetch_times} == {0, 3, 6, 9, 12, 15, 18, 21}
    retry_times = jobs["retry-deliveries"].fire_times(start, start + timedelta(days=7))
    assert len(retry_times) == 7  # daily
    assert not jobs["daily-digest"].enabled
    bounce_times = jobs["bounces"].fire_times(start, start + timedelta(hours=1))
    assert jobs["bounces"].action == "bounces" and len(bounce_times) == 4  # every 15 minutes


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('cron = "0 7 * * mon"\naction = "explode"', "action must be one of"),
        ('cron = "61 7 * * mon"\naction = "fetch"', "is not valid"),
        ('cron = "0 7 * * mon"\naction = "fetch"\ntimezone = "Mars/Olympus"', "unknown time zone"),
        ('cron = "0 7 * * mon"\naction = "digest"\n[options]\nfrequency = "hourly"', "weekly or daily"),
        ('cron = "0 7 * * mon"\naction = "fetch"\ncolour = "red"', "unknown setting(s) colour"),
    ],
)
def test_bad_job_files_are_named_precisely(tmp_path, content, message):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(JobError) as caught:
        load_job(path, "UTC")
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_weekly_digest_stays_at_seven_local_across_daylight_saving_changes():
    weekly = job("0 7 * * mon", "digest")
    autumn = weekly.fire_times(datetime(2026, 10, 12, tzinfo=PARIS), datetime(2026, 11, 3, tzinfo=PARIS))
    spring = weekly.fire_times(datetime(2027, 3, 15, tzinfo=PARIS), datetime(2027, 4, 6, tzinfo=PARIS))
    assert [t.strftime("%m-%d %H:%M") for t in autumn] == [
        "10-12 07:00",
        "10-19 07:00",
        "10-26 07:00",
        "11-02 07:00",
    ]
    assert [t.astimezone(UTC).hour for t in autumn] == [5, 5, 6, 6]  # summer time ends on 25 October
    assert [t.astimezone(UTC).hour for t in spring] == [6, 6, 5, 5]  # and starts on 28 March


def test_a_time_skipped_or_repeated_by_the_clock_change():
    nightly = job("30 2 * * *")
    spring = nightly.fire_times(
        datetime(2027, 3, 27, 12, tzinfo=PARIS), datetime(2027, 3, 29, 12, tzinfo=PARIS)
    )
    assert len(spring) == 2  # 02:30 does not exist on 28 March: that day's run happens an hour later, once
    assert spring[0].astimezone(UTC).astimezone(PARIS).strftime("%d %H:%M") == "28 03:30"
    assert spring[1].astimezone(PARIS).strftime("%d %H:%M") == "29 02:30"
    autumn = nightly.fire_times(
        datetime(2026, 10, 24, 12, tzinfo=PARIS), datetime(2026, 10, 25, 12, tzinfo=PARIS)
    )
    # 02:30 happens twice on 25 October: both fire; every action is safe to repeat (a digest resumes its
    # period's edition, a fetch finds nothing new).
    assert [t.utcoffset() for t in autumn] == [timedelta(hours=2), timedelta(hours=1)]
    assert period_of("daily", autumn[0]) == period_of("daily", autumn[1])


def test_missed_runs_coalesce_into_one_within_the_grace_time():
    fetch = job("0 */3 * * *", zone=ZoneInfo("UTC"))
    now = datetime(2026, 11, 24, 9, 40, tzinfo=UTC)
    last = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)  # two days of runs missed while the machine was off
    assert missed_run(fetch, last, now, grace=3600) == datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    assert missed_run(fetch, last, now, grace=600) is None  # the 09:00 run is more than 10 minutes late
    assert missed_run(fetch, datetime(2026, 11, 24, 9, 0, tzinfo=UTC), now, grace=3600) is None  # it ran


def test_periods():
    assert period_of("weekly", datetime(2026, 11, 23, 7, tzinfo=PARIS)) == "2026-W48"
    assert period_of("weekly", datetime(2026, 11, 29, 23, tzinfo=PARIS)) == "2026-W48"
    assert period_of("weekly", datetime(2027, 1, 1, tzinfo=PARIS)) == "2026-W53"
    assert period_of("daily", datetime(2026, 11, 24, 7, tzinfo=PARIS)) == "2026-11-24"


# --- runs -------------------------------------------------------------------------------------------------------


def jobs_dir(tmp_path: Path, **files: str) -> Path:
    directory = tmp_path / "jobs"
    directory.mkdir(exist_ok=True)
    for name, content in files.items():
        (directory / f"{name}.toml").write_text(content)
    return directory


def runs(settings) -> list[tuple]:
    db = open_database(settings.database)
    try:
        return db.execute(
            "SELECT job, status, counts, error, scheduled_for FROM job_runs ORDER BY id"
        ).fetchall()
    finally:
        db.close()


def test_the_weekly_digest_job_is_idempotent(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port)
    edition_with_sample_papers(settings)  # papers of the week; the job builds its own edition
    addresses = subscribe(settings, 5)
    weekly = job("0 7 * * mon", "digest", frequency="weekly")
    monday = datetime(2026, 11, 23, 7, 0, tzinfo=PARIS)
    runner = JobRunner(settings)
    first = runner.run(weekly, monday)
    second = runner.run(weekly, monday)  # a restart, a manual run
    third = runner.run(weekly, monday + timedelta(days=2))  # later the same week
    assert first.status == "ok" and first.counts["sent"] == 5
    assert second.status == third.status == "ok"
    assert second.counts["note"] == third.counts["note"] == "already sent"
    assert first.counts["edition"] == second.counts["edition"] == third.counts["edition"]
    assert smtp_server.counts() == {address: 1 for address in addresses}
    assert [row[1] for row in runs(settings)] == ["ok", "ok", "ok"]
    next_week = runner.run(weekly, monday + timedelta(days=7))
    assert next_week.counts["edition"] != first.counts["edition"]


def cli(tmp_path: Path, *args: str, **kwargs):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--config", str(tmp_path / "newsletter.toml"), *args],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,
    )  # fmt: skip


def configure_jobs(tmp_path: Path, **files: str) -> None:
    config = tmp_path / "newsletter.toml"
    directory = jobs_dir(tmp_path, **files)
    config.write_text(
        config.read_text() + f'\n[scheduler]\njobs = "{directory.name}"\nmisfire_grace_time = 600\n'
    )


def wait_for(condition, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_one_instance_of_a_job_even_from_two_processes(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port, concurrency=1)
    edition_with_sample_papers(settings)
    subscribe(settings, 40)
    configure_jobs(tmp_path, digest='cron = "0 7 * * mon"\naction = "digest"\n')
    smtp_server.handler.delay = 0.05
    first = cli(tmp_path, "jobs", "run", "digest")
    wait_for(lambda: smtp_server.handler.received >= 2)
    second = cli(tmp_path, "jobs", "run", "digest")
    out, _ = second.communicate(timeout=60)
    assert second.returncode == 0 and "skipped" in out and "already running in process" in out
    first.communicate(timeout=120)
    assert first.returncode == 0
    assert sum(smtp_server.counts().values()) == 40 and set(smtp_server.counts().values()) == {1}
    assert [row[1] for row in runs(settings)] == ["ok", "skipped"]  # the first run, then the refused one


def test_sigterm_during_a_send_then_run_again_loses_and_doubles_nothing(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port, concurrency=3)
    edition_with_sample_papers(settings)
    addresses = subscribe(settings, 120)
    # Due every minute: the scheduler catches up the latest missed minute at start, so it sends at once.
    configure_jobs(tmp_path, digest='cron = "* * * * *"\naction = "digest"\ntimezone = "UTC"\n')
    smtp_server.handler.delay = 0.02
    scheduler = cli(tmp_path, "run", "--no-web")
    wait_for(lambda: smtp_server.handler.received >= 30)
    scheduler.send_signal(signal.SIGTERM)
    _, log = scheduler.communicate(timeout=60)
    assert scheduler.returncode == 0, log
    assert "received SIGTERM: stopping" in log and "scheduler stopped" in log
    delivered = sum(smtp_server.counts().values())
    assert 30 <= delivered < 120
    # A minute boundary during the send fires the job again: that run finds the job running and is
    # recorded as skipped, which is all it may do.
    [(name, status, _, error, _)] = [run for run in runs(settings) if run[1] != "skipped"]
    assert (name, status, error) == ("digest", "interrupted", "interrupted")
    db = open_database(settings.database)
    states = dict(db.execute("SELECT state, count(*) FROM deliveries GROUP BY state").fetchall())
    db.close()
    assert states == {"sent": delivered, "queued": 120 - delivered}  # nothing in flight, nothing unknown

    smtp_server.handler.delay = 0
    again = cli(tmp_path, "run", "--no-web")

    # The server has every message a moment before the run records its end: wait for the record.
    def statuses() -> list[str]:
        return [row[1] for row in runs(settings) if row[1] != "skipped"]

    # The next run may be a minute away: a minute boundary during the first send was that minute's run.
    wait_for(lambda: statuses()[1:] not in ([], ["running"]), timeout=150)
    again.send_signal(signal.SIGTERM)
    again.communicate(timeout=60)
    assert smtp_server.counts() == {address: 1 for address in addresses}
    assert statuses()[:2] == ["interrupted", "ok"]


def test_scheduler_catches_up_a_missed_run_once(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port)
    configure_jobs(tmp_path, fetch='cron = "0 */3 * * *"\naction = "fetch"\ntimezone = "UTC"\n')
    settings = load_settings(tmp_path / "newsletter.toml", environ={})
    now = datetime.now(UTC)
    latest = job("0 */3 * * *", zone=ZoneInfo("UTC")).fire_times(now - timedelta(hours=3), now)[-1]
    grace_covers_it = (now - latest).total_seconds() <= settings.scheduler.misfire_grace_time
    scheduler = Scheduler(settings)
    scheduler.start(now=now)
    try:
        wait_for(lambda: len(runs(settings)) >= (1 if grace_covers_it else 0), timeout=20)
        time.sleep(0.3)
    finally:
        scheduler.stop()
    recorded = runs(settings)
    if grace_covers_it:
        assert len(recorded) == 1 and recorded[0][0] == "fetch"
        assert datetime.fromisoformat(recorded[0][4]) == latest
    else:
        assert recorded == []
    assert scheduler.next_run(scheduler.jobs[0]) is None  # shut down


# --- operations ---------------------------------------------------------------------------------------------


def test_status_and_jobs_list(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port)
    edition_id = edition_with_sample_papers(settings)
    subscribe(settings, 2)
    from newsletter.outbox import send_edition

    send_edition(settings, edition_id)
    listed = cli(tmp_path, "jobs", "list")
    out, _ = listed.communicate(timeout=60)
    assert "weekly-digest" in out and "0 7 * * mon" in out and "never" in out
    status = cli(tmp_path, "status")
    out, err = status.communicate(timeout=60)
    assert status.returncode == 0, err
    assert "sample-arxiv" in out and "2 active" in out and "weekly-digest" in out
    assert f"{edition_id} " in out


def test_doctor_against_a_real_server_with_and_without_auth(tmp_path):
    from aiosmtpd.smtp import AuthResult

    from newsletter.devsmtp import EmbeddedSMTPServer
    from newsletter.doctor import doctor
    from tests.support.tls import server_certificate

    cert, context = server_certificate(tmp_path)

    def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        return AuthResult(success=auth_data.password == b"right", handled=False)

    plain = EmbeddedSMTPServer(tmp_path / "m1").start()
    secured = EmbeddedSMTPServer(
        tmp_path / "m2", tls_context=context, require_starttls=True, authenticator=authenticator,
        auth_required=True, auth_require_tls=True,
    ).start()  # fmt: skip
    try:
        settings = make_settings(tmp_path, plain.port)
        open_database(settings.database).close()  # doctor checks the database; it never creates one
        result = {c.name: c for c in doctor(settings).checks}
        assert result["smtp"].ok and "EHLO ok" in result["smtp"].detail
        assert result["database"].ok and "writable" in result["database"].detail
        assert result["templates"].ok and result["jobs"].ok
        assert result["links"].ok and not result["links"].warning  # https://news.example.org
        assert result["admin"].warning

        settings = make_settings(
            tmp_path, secured.port, starttls=True, username="digest", password="right", ca_file=str(cert)
        )
        checks = {c.name: c for c in doctor(settings).checks}
        assert checks["smtp"].ok and "EHLO → STARTTLS → AUTH as digest ok" in checks["smtp"].detail

        settings = make_settings(
            tmp_path, secured.port, starttls=True, username="digest", password="wrong", ca_file=str(cert)
        )
        diagnosis = doctor(settings)
        smtp = next(c for c in diagnosis.checks if c.name == "smtp")
        assert not diagnosis.ok and "login refused (535)" in smtp.detail

        from newsletter.devsmtp import free_port

        closed = make_settings(tmp_path, free_port())
        smtp = next(c for c in doctor(closed).checks if c.name == "smtp")
        assert not smtp.ok and "refused" in smtp.detail.lower()
    finally:
        plain.stop()
        secured.stop()

    doctor_cli = cli(tmp_path, "doctor")
    out, err = doctor_cli.communicate(timeout=60)
    assert doctor_cli.returncode == 1 and "FAILED" in out and "some checks failed" in err


def test_retention_prunes_old_things_and_keeps_editions(tmp_path, smtp_server):
    from newsletter.errors import SendError
    from newsletter.outbox import send_edition
    from newsletter.retention import prune
    from newsletter.settings import RetentionSettings

    settings = make_settings(tmp_path, smtp_server.port)
    edition_id = edition_with_sample_papers(settings)
    subscribe(settings, 3)
    send_edition(settings, edition_id)
    db = open_database(settings.database)
    db.execute(
        "INSERT INTO papers (key, title, first_seen_at, last_seen_at, is_new) VALUES "
        "('title:an old paper nobody read', 'An old paper nobody read', '2020-01-01T00:00:00+00:00', "
        "'2020-01-01T00:00:00+00:00', 1)"
    )
    later = datetime.now(UTC) + timedelta(days=500)
    counts = prune(db, RetentionSettings(papers_days=180, deliveries_days=400, runs_days=90), now=later)
    assert counts["deliveries"] == 3 and counts["papers"] >= 1
    assert (
        db.execute("SELECT count(*) FROM papers WHERE key = 'title:an old paper nobody read'").fetchone()[0]
        == 0
    )
    assert db.execute("SELECT count(*) FROM editions WHERE id = ?", [edition_id]).fetchone()[0] == 1
    in_edition = db.execute(
        "SELECT count(*) FROM edition_papers WHERE edition_id = ?", [edition_id]
    ).fetchone()[0]
    assert in_edition == 38  # papers of editions are kept
    db.close()
    with pytest.raises(SendError, match="pruned"):
        send_edition(settings, edition_id)  # without its ledger it could reach readers twice


def test_online_backup_while_writing(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port)
    edition_with_sample_papers(settings)
    (tmp_path / "many.csv").write_text("\n".join(f"b{n}@example.org" for n in range(30_000)))
    writer = cli(tmp_path, "subscribers", "import", str(tmp_path / "many.csv"))
    time.sleep(0.5)  # the import is writing
    backup = cli(tmp_path, "backup", str(tmp_path / "copy" / "backup.db"))
    _, err = backup.communicate(timeout=60)
    writer.communicate(timeout=120)
    assert backup.returncode == 0, err
    copy = sqlite3.connect(tmp_path / "copy" / "backup.db")
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert copy.execute("SELECT count(*) FROM papers").fetchone()[0] == 40
    copy.close()
    again = cli(tmp_path, "backup", str(tmp_path / "copy" / "backup.db"))
    _, err = again.communicate(timeout=60)
    assert again.returncode == 1 and "already exists" in err


def test_logs_are_json_on_request_and_never_show_secrets(tmp_path, smtp_server):
    make_settings(tmp_path, smtp_server.port, username="digest", password="hunter2-very-secret")
    configure_jobs(tmp_path, fetch='cron = "0 0 1 1 *"\naction = "fetch"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    result = subprocess.run(
        [sys.executable, "-m", "newsletter", "--config", str(tmp_path / "newsletter.toml"), "--log-format", "json",
         "-v", "jobs", "run", "fetch"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert any(line["message"].startswith("job fetch started") for line in lines)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)

    import logging

    from newsletter import logs

    logs.hide_secrets("hunter2-very-secret")
    record = logging.LogRecord(
        "x",
        logging.INFO,
        "",
        0,
        "login with %s then GET %s",
        ("hunter2-very-secret", "/unsubscribe/WzEs.abc-def"),
        None,
    )
    logs.REDACTOR.filter(record)
    assert record.getMessage() == "login with [secret] then GET /unsubscribe/[token]"
