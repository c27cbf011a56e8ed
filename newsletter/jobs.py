"""Scheduled jobs: their definitions (``jobs/*.toml``), their actions, and a record of every run.

A job file holds one job::

    name = "weekly-digest"        # default: the file's name
    cron = "0 7 * * mon"          # minute hour day-of-month month day-of-week
    timezone = "Europe/Paris"     # default: [newsletter] timezone
    action = "digest"             # fetch | digest | retry | cleanup | bounces
    [options]
    frequency = "weekly"

Actions: ``fetch`` (sources, optionally only ``sources = [...]``), ``digest`` (build the edition of the
period the run stands for and send it; ``frequency``), ``retry`` (resume every edition with deliveries
still to do: deferred retries, interrupted sends), ``cleanup`` (retention), ``bounces`` (read the bounce
mailbox; scheduled only when ``[bounces] host`` names one).

Every run is recorded in ``job_runs`` and holds a lock for its job, so one instance runs at a time even
with two schedulers. The digest job is idempotent: its edition is keyed by period (ISO week or day in the
job's time zone), so a second run for the same period resumes that edition's send instead of building
another, and the ledger sends each reader at most one copy.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from newsletter import locks, outbox
from newsletter.bounce_fetch import fetch_bounces
from newsletter.compose import build_edition
from newsletter.db import open_database
from newsletter.editions import digest_for_period, edition_status
from newsletter.errors import DkimKeyError, JobError, SendInProgress
from newsletter.fetch import Fetcher
from newsletter.ingest import run_ingest
from newsletter.ledger import editions_with_pending
from newsletter.locks import LockHeld
from newsletter.retention import prune
from newsletter.runs import finish_run, start_run
from newsletter.settings import Settings

log = logging.getLogger(__name__)

ACTIONS = ("fetch", "digest", "retry", "cleanup", "bounces")


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    cron: str
    timezone: ZoneInfo
    action: str
    options: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    source: Path | None = None

    def trigger(self) -> CronTrigger:
        return CronTrigger.from_crontab(self.cron, timezone=self.timezone)

    def next_run(self, after: datetime) -> datetime | None:
        return self.trigger().get_next_fire_time(None, after)

    def fire_times(self, start: datetime, end: datetime) -> list[datetime]:
        """Every scheduled time in ``(start, end]``, in the job's time zone."""
        trigger = self.trigger()
        times: list[datetime] = []
        previous: datetime | None = None
        # Step in UTC: wall-clock arithmetic on a repeated hour (the autumn clock change) goes backwards.
        moment = start.astimezone(UTC) + timedelta(microseconds=1)
        while True:
            fire = trigger.get_next_fire_time(previous, moment)
            if fire is None or fire > end:
                return times
            times.append(fire)
            previous, moment = fire, fire.astimezone(UTC) + timedelta(seconds=1)


def load_jobs(directory: Path, default_timezone: str) -> list[Job]:
    """Every ``*.toml`` job in ``directory``, validated; sorted by name."""
    if not directory.is_dir():
        raise JobError(f"{directory}: the jobs directory does not exist")
    jobs = [load_job(path, default_timezone) for path in sorted(directory.glob("*.toml"))]
    names = [job.name for job in jobs]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise JobError(f"{directory}: two jobs are named {', '.join(sorted(duplicates))}")
    return sorted(jobs, key=lambda job: job.name)


def load_job(path: Path, default_timezone: str) -> Job:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise JobError(f"{path}: {exc}") from None
    unknown = set(raw) - {"name", "cron", "timezone", "action", "options", "enabled"}
    if unknown:
        raise JobError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
    name = str(raw.get("name") or path.stem)
    action = raw.get("action")
    if action not in ACTIONS:
        raise JobError(f"{path}: action must be one of {', '.join(ACTIONS)}, not {action!r}")
    try:
        zone = ZoneInfo(str(raw.get("timezone") or default_timezone))
    except (ZoneInfoNotFoundError, ValueError):
        raise JobError(f"{path}: unknown time zone {raw.get('timezone') or default_timezone!r}") from None
    options = raw.get("options", {})
    if not isinstance(options, dict):
        raise JobError(f"{path}: [options] must be a table")
    job = Job(name, str(raw.get("cron", "")), zone, action, options, bool(raw.get("enabled", True)), path)
    try:
        job.trigger()
    except ValueError as exc:
        raise JobError(f"{path}: cron {job.cron!r} is not valid: {exc}") from None
    if action == "digest" and options.get("frequency", "weekly") not in ("weekly", "daily"):
        raise JobError(f"{path}: frequency must be weekly or daily")
    return job


def period_of(frequency: str, moment: datetime) -> str:
    """The period a digest run stands for, in the job's time zone: an ISO week or a day."""
    if frequency == "daily":
        return moment.date().isoformat()
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


# --- runs -----------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class JobRun:
    job: str
    status: str
    counts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


class JobRunner:
    """Runs jobs and records them; ``interrupt`` (SIGTERM) makes a running send stop cleanly."""

    def __init__(self, settings: Settings, interrupt: threading.Event | None = None) -> None:
        self.settings = settings
        self.interrupt = interrupt or threading.Event()
        self._actions: dict[str, Callable[[Any, Job, datetime], JobRun]] = {
            "fetch": self._fetch,
            "digest": self._digest,
            "retry": self._retry,
            "cleanup": self._cleanup,
            "bounces": self._bounces,
        }

    def run(self, job: Job, scheduled_for: datetime | None = None) -> JobRun:
        started = time.perf_counter()
        moment = (scheduled_for or datetime.now(UTC)).astimezone(job.timezone)
        db = open_database(self.settings.database)
        try:
            try:
                lock = locks.acquire(db, "job_locks", job.name)
            except LockHeld as exc:
                run = JobRun(job.name, "skipped", error=f"already running in {exc.holder}")
                self._finish(db, self._start(db, job, scheduled_for), run)
                log.warning("job %s skipped: %s", job.name, run.error)
                return run
            try:
                run = self._run_holding(db, job, scheduled_for, moment, started)
            finally:
                locks.release(db, lock)
            return run
        finally:
            db.close()

    def _run_holding(
        self, db: Any, job: Job, scheduled_for: datetime | None, moment: datetime, started: float
    ) -> JobRun:
        run_id = self._start(db, job, scheduled_for)
        log.info("job %s started (%s)", job.name, job.action)
        try:
            run = self._actions[job.action](db, job, moment)
        except Exception as exc:
            log.exception("job %s failed", job.name)
            run = JobRun(job.name, "failed", error=f"{type(exc).__name__}: {exc}")
        run.seconds = time.perf_counter() - started
        self._finish(db, run_id, run)
        log.info(
            "job %s %s in %.1fs: %s%s",
            job.name,
            run.status,
            run.seconds,
            describe_counts(job.action, run.counts),
            f": {run.error}" if run.error else "",
        )
        return run

    # --- the actions ----------------------------------------------------------------------------------------

    def _fetch(self, db: Any, job: Job, moment: datetime) -> JobRun:
        wanted = job.options.get("sources")
        sources = [s for s in self.settings.sources if (s.name in wanted if wanted else s.enabled)]
        with Fetcher(self.settings.fetch) as fetcher:
            reports = run_ingest(db, sources, fetcher, workers=self.settings.fetch.workers)
        failed = [r for r in reports if r.failed]
        counts = {
            "sources": len(reports),
            "new": sum(r.new for r in reports),
            "updated": sum(r.updated for r in reports),
            "revisions": sum(r.revisions for r in reports),
            "failed": len(failed),
        }
        error = "; ".join(f"{r.name}: {r.error}" for r in failed) or None
        status = "ok" if not failed else ("partial" if len(failed) < len(reports) else "failed")
        return JobRun(job.name, status, counts, error)

    def _digest(self, db: Any, job: Job, moment: datetime) -> JobRun:
        frequency = str(job.options.get("frequency", "weekly"))
        period = period_of(frequency, moment)
        edition_id = digest_for_period(db, frequency, period)
        if edition_id is None:
            try:
                edition_id = build_edition(db, self.settings.digest, frequency=frequency, period=period).id
            except sqlite3.IntegrityError:  # another scheduler built it meanwhile: use theirs
                edition_id = digest_for_period(db, frequency, period)
                assert edition_id is not None
        status = edition_status(db, edition_id)
        counts: dict[str, Any] = {"edition": edition_id, "period": period}
        if status == "sent" or job.options.get("send", True) is False:
            return JobRun(
                job.name, "ok", counts | {"note": "already sent" if status == "sent" else "built only"}
            )
        try:
            report = outbox.send_edition(self.settings, edition_id, interrupt=self.interrupt)
        except SendInProgress as exc:  # that run sends this period's edition: nothing to add to it
            return JobRun(job.name, "skipped", counts, str(exc))
        except DkimKeyError as exc:  # the operator's to fix: one line, nothing sent unsigned
            return JobRun(job.name, "failed", counts, str(exc))
        counts |= {"sent": report.sent_now, **report.counts}
        if report.stopped:
            state = "interrupted" if report.stopped == "interrupted" else "failed"
            return JobRun(job.name, state, counts, report.stopped)
        return JobRun(job.name, "ok", counts)

    def _retry(self, db: Any, job: Job, moment: datetime) -> JobRun:
        editions = editions_with_pending(db)
        sent, problems, skipped = 0, [], []
        for edition_id in editions:
            if self.interrupt.is_set():
                break
            try:
                report = outbox.send_edition(self.settings, edition_id, interrupt=self.interrupt)
            except SendInProgress as exc:  # the run sending it finishes it; resuming beside it would not help
                skipped.append(f"{exc}: skipped")
                continue
            except Exception as exc:
                problems.append(f"edition {edition_id}: {exc}")
                continue
            sent += report.sent_now
            if report.stopped:
                problems.append(f"edition {edition_id}: {report.stopped}")
        counts: dict[str, Any] = {"editions": len(editions), "sent": sent}
        if skipped:
            counts["note"] = "; ".join(skipped)
        return JobRun(job.name, "ok" if not problems else "partial", counts, "; ".join(problems) or None)

    def _cleanup(self, db: Any, job: Job, moment: datetime) -> JobRun:
        return JobRun(job.name, "ok", prune(db, self.settings.retention))

    def _bounces(self, db: Any, job: Job, moment: datetime) -> JobRun:
        fetched = fetch_bounces(self.settings)
        status = "ok" if not fetched.mailbox.failed else "partial"
        error = "; ".join(f"{f.message}: {f.reason}" for f in fetched.mailbox.failures) or None
        return JobRun(job.name, status, fetched.counts(), error)

    # --- the record of runs ---------------------------------------------------------------------------------

    def _start(self, db: Any, job: Job, scheduled_for: datetime | None) -> int:
        return start_run(db, job.name, job.action, scheduled_for)

    def _finish(self, db: Any, run_id: int, run: JobRun) -> None:
        finish_run(db, run_id, run.status, run.counts, run.error)


def idle_reason(job: Job, settings: Settings) -> str | None:
    """Why an enabled job is not scheduled with these settings (None: it is)."""
    if job.action == "bounces" and not settings.bounces.host:
        return "no bounce mailbox ([bounces] host)"
    return None


def missed_run(job: Job, last: datetime | None, now: datetime, grace: float) -> datetime | None:
    """After downtime: the latest scheduled time within ``grace`` seconds before ``now`` that has no run
    yet. Several missed times coalesce into this one; older ones are past their grace and dropped."""
    start = now - timedelta(seconds=grace)
    if last is not None and last > start:
        start = last
    times = job.fire_times(start, now)
    return times[-1] if times else None


_CLEANUP_WORDS = {
    "papers": "papers",
    "deliveries": "delivery records",
    "fetch_runs": "fetch records",
    "job_runs": "job run records",
    "bounces": "bounces and complaints",
    "pending_signups": "unconfirmed sign-ups",
}


def describe_counts(action: str, counts: dict[str, Any]) -> str:
    """What a run did, in words for people (``job_runs.counts`` keeps the numbers as JSON)."""
    if action == "cleanup":
        deleted = [f"{counts.get(key, 0)} {words}" for key, words in _CLEANUP_WORDS.items()]
        return "deleted " + ", ".join(deleted[:-1]) + f" and {deleted[-1]}"
    parts = []
    for key, value in counts.items():
        label = key.replace("_", " ")
        if key == "note":
            parts.append(str(value))
        elif key in ("edition", "period"):
            parts.append(f"{label} {value}")
        else:
            parts.append(f"{value} {label}")
    return ", ".join(parts) or "nothing to do"
