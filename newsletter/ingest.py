"""Fetch every configured source and store what it yields: the first stage of the pipeline.

Sources are collected in worker threads (network and parsing), and stored one at a time on the calling
thread, each in its own transaction together with its conditional-GET state. So a failing source never
stops the others, and a source whose papers could not be stored keeps its old ETag and is fetched again.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import sqlite_utils

from newsletter.db import write_transaction
from newsletter.errors import SourceError
from newsletter.fetch import Fetcher
from newsletter.fetched import FetchError
from newsletter.library import promote_pending
from newsletter.settings import SourceConfig
from newsletter.source_log import FetchOutcome, last_validators, record_failure, record_run, record_success
from newsletter.sources import KINDS
from newsletter.sources.base import Collected, SourceState
from newsletter.store import store_papers

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SourceReport:
    name: str
    kind: str
    status: str = "ok"  # ok | not_modified | failed
    fetched: int = 0
    new: int = 0
    updated: int = 0
    duplicates: int = 0
    revisions: int = 0  # replace announcements of papers never seen before: stored, not new
    problems: list[str] = field(default_factory=list)
    error: str | None = None
    unreachable: bool = False  # the failure was the network itself (no connection, DNS, timeout)
    requests: int = 0
    documents_parsed: int = 0
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def errors(self) -> int:
        return int(self.failed) + len(self.problems)


class IngestProgress(Protocol):
    def started(self, source: SourceConfig) -> None: ...
    def step(self, source: SourceConfig, message: str) -> None: ...
    def finished(self, source: SourceConfig, report: SourceReport) -> None: ...


class SilentProgress:
    def started(self, source: SourceConfig) -> None:
        pass

    def step(self, source: SourceConfig, message: str) -> None:
        pass

    def finished(self, source: SourceConfig, report: SourceReport) -> None:
        pass


def run_ingest(
    db: sqlite_utils.Database,
    sources: Sequence[SourceConfig],
    fetcher: Fetcher,
    *,
    workers: int = 4,
    progress: IngestProgress | None = None,
    now: datetime | None = None,
) -> list[SourceReport]:
    """Fetch and store ``sources``; one report per source, in the order given."""
    progress = progress or SilentProgress()
    states = {source.name: load_state(db, source) for source in sources}
    reports: dict[str, SourceReport] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(sources) or 1))) as pool:
        futures: deque[tuple[Future[tuple[Collected, float]], SourceConfig]] = deque()
        for source in sources:
            progress.started(source)
            futures.append((pool.submit(_collect, source, fetcher, states[source.name], progress), source))
        # Stored in configuration order, whatever finishes first, so counts do not depend on timing; each
        # source's papers are let go of once stored, not kept until the last source is done.
        while futures:
            future, source = futures.popleft()
            report = _store(db, source, future, now or datetime.now(UTC), progress)
            reports[source.name] = report
            progress.finished(source, report)
    return [reports[source.name] for source in sources]


def _collect(
    source: SourceConfig, fetcher: Fetcher, state: SourceState, progress: IngestProgress
) -> tuple[Collected, float]:
    started = time.perf_counter()
    collected = KINDS[source.kind].collect(
        source, fetcher, state, lambda message: progress.step(source, message)
    )
    return collected, time.perf_counter() - started


def _store(
    db: sqlite_utils.Database,
    source: SourceConfig,
    future: Future[tuple[Collected, float]],
    now: datetime,
    progress: IngestProgress,
) -> SourceReport:
    report = SourceReport(name=source.name, kind=source.kind)
    started = time.perf_counter()
    try:
        collected, report.seconds = future.result()
    except (FetchError, SourceError) as error:
        report.status = "failed"
        report.error = str(error)
        report.unreachable = isinstance(error, FetchError) and error.unreachable
        _record_failure(db, source, report, now)
        return report
    except Exception as error:  # a bug in a parser must not cost the other sources their run
        log.exception("source %s failed unexpectedly", source.name)
        report.status = "failed"
        report.error = f"unexpected {type(error).__name__}: {error}"
        _record_failure(db, source, report, now)
        return report

    report.requests = collected.requests
    report.documents_parsed = collected.documents_parsed
    report.problems = list(collected.problems)
    if collected.not_modified:
        report.status = "not_modified"
    progress.step(source, f"storing {len(collected.papers)} papers")
    try:
        with write_transaction(db):
            counts = store_papers(db, collected.papers, source=source.name, now=now)
            promote_pending(db)  # readers waiting for one of these papers get it in their library
            report.fetched, report.new, report.updated, report.duplicates, report.revisions = (
                counts.fetched,
                counts.new,
                counts.updated,
                counts.duplicates,
                counts.revisions,
            )
            _record_success(db, source, collected.state, report, now)
    except Exception as error:
        log.exception("storing source %s failed", source.name)
        report.status = "failed"
        report.error = f"could not store papers: {error}"
        report.fetched = report.new = report.updated = report.duplicates = report.revisions = 0
        _record_failure(db, source, report, now)
    report.seconds += time.perf_counter() - started
    return report


def load_state(db: sqlite_utils.Database, source: SourceConfig) -> SourceState:
    saved = last_validators(db, source.name)
    if saved is None or saved.url != source.url:
        return SourceState()  # a changed URL is a different feed: no conditional GET against the old one
    return SourceState(
        etag=saved.etag,
        last_modified=saved.last_modified,
        body_sha256=saved.body_sha256,
        last_success_at=saved.last_success_at,
    )


def _outcome(report: SourceReport) -> FetchOutcome:
    return FetchOutcome(
        status=report.status,
        fetched=report.fetched,
        new=report.new,
        updated=report.updated,
        duplicates=report.duplicates,
        revisions=report.revisions,
        errors=report.errors,
        error=report.error,
        problems=tuple(report.problems),
    )


def _record_success(
    db: sqlite_utils.Database, source: SourceConfig, state: SourceState, report: SourceReport, now: datetime
) -> None:
    outcome = _outcome(report)
    record_success(
        db,
        source,
        etag=state.etag,
        last_modified=state.last_modified,
        body_sha256=state.body_sha256,
        outcome=outcome,
        now=now,
    )
    record_run(db, source.name, outcome, started_at=now)


def _record_failure(
    db: sqlite_utils.Database, source: SourceConfig, report: SourceReport, now: datetime
) -> None:
    outcome = _outcome(report)
    with write_transaction(db):
        record_failure(db, source, outcome, now)
        record_run(db, source.name, outcome, started_at=now)
