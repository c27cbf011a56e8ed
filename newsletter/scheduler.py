"""The scheduler: the jobs of ``jobs/`` on their cron schedules (APScheduler 3), which ``newsletter run``
runs beside the web app.

Each job runs at most one instance at a time, coalesces missed runs into one and still runs when it is
at most ``misfire_grace_time`` late. Runs missed while the scheduler was not running at all are caught
up at start, coalesced the same way (from ``job_runs``). SIGTERM or SIGINT stops cleanly: no new job
starts, a running send finishes the message in hand on every connection and leaves the rest queued for
the next run.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime, timedelta

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from newsletter.db import check_writable, open_database
from newsletter.jobs import Job, JobRunner, idle_reason, load_jobs, missed_run
from newsletter.runs import last_scheduled_run
from newsletter.settings import Settings

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, settings: Settings, *, interrupt: threading.Event | None = None) -> None:
        self.settings = settings
        self.interrupt = interrupt or threading.Event()
        self.jobs = [
            job
            for job in load_jobs(settings.scheduler.jobs_dir, settings.timezone)
            if job.enabled and idle_reason(job, settings) is None
        ]
        self.runner = JobRunner(settings, self.interrupt)
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=max(2, len(self.jobs)))},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": int(settings.scheduler.misfire_grace_time),
            },
            timezone=settings.timezone,
        )
        self._scheduler.add_listener(self._missed, EVENT_JOB_MISSED)

    def start(self, *, now: datetime | None = None) -> None:
        # The database is read before anything starts: one that cannot be used stops `run` right here.
        missed = self._missed_runs(now or datetime.now(UTC))
        for job in self.jobs:
            self._scheduler.add_job(
                self._run_scheduled,
                job.trigger(),
                args=[job],
                id=job.name,
                name=job.name,
            )
        self._scheduler.start()
        for job, when in missed:
            log.info("job %s missed its run at %s: running it now", job.name, when)
            self._scheduler.add_job(
                self._run_scheduled, args=[job, when], id=f"{job.name}-catch-up", name=job.name
            )
        for job in self.jobs:
            log.info(
                "job %s (%s, %s %s) next at %s",
                job.name,
                job.action,
                job.cron,
                job.timezone,
                self.next_run(job),
            )

    def next_run(self, job: Job) -> datetime | None:
        scheduled = self._scheduler.get_job(job.name)
        return scheduled.next_run_time if scheduled else None

    def wait_for_signal(self) -> None:
        """Return once SIGTERM or SIGINT (Ctrl-C) arrives; from then on no job starts. For a process that
        runs the scheduler alone (the web server otherwise handles these signals)."""
        stopping = threading.Event()

        def stop(signum: int, _frame: object) -> None:
            log.info("received %s: stopping", signal.Signals(signum).name)
            self.interrupt.set()
            stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        while not stopping.wait(1.0):
            pass

    def stop(self) -> None:
        """Stop taking jobs, let the running ones finish (a send stops after the message in hand)."""
        self.interrupt.set()
        self._scheduler.shutdown(wait=True)
        log.info("scheduler stopped")

    def _run_scheduled(self, job: Job, scheduled_for: datetime | None = None) -> None:
        if self.interrupt.is_set():
            return
        if scheduled_for is None:
            # APScheduler does not say which fire time a run is for: the latest one due, even when late.
            now = datetime.now(UTC)
            due = job.fire_times(now - timedelta(seconds=self.settings.scheduler.misfire_grace_time), now)
            scheduled_for = due[-1] if due else now
        self.runner.run(job, scheduled_for)

    def _missed_runs(self, now: datetime) -> list[tuple[Job, datetime]]:
        check_writable(self.settings.database)
        db = open_database(self.settings.database)
        try:
            last = {job.name: last_scheduled_run(db, job.name) for job in self.jobs}
        finally:
            db.close()
        grace = self.settings.scheduler.misfire_grace_time
        missed = [(job, missed_run(job, last[job.name], now, grace)) for job in self.jobs]
        return [(job, when) for job, when in missed if when is not None]

    def _missed(self, event: JobExecutionEvent) -> None:
        log.warning(
            "job %s missed its run at %s (more than the grace time late)",
            event.job_id,
            event.scheduled_run_time,
        )
