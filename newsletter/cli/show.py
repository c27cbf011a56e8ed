"""What the command line prints: the consoles, every table, progress display and report of a command.

Commands decide and call the package; this module turns what they got back into lines. Every value that
comes from a feed, a reader or the configuration is escaped before Rich reads the line as markup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.status import Status
from rich.table import Table

from newsletter.bounce_fetch import BounceFetch
from newsletter.bounces import BounceRow
from newsletter.dkim_sign import DkimKey, record_name, zone_entry
from newsletter.doctor import Diagnosis
from newsletter.editions import Edition, EditionPaper
from newsletter.ingest import SourceReport
from newsletter.jobs import Job, JobRun, describe_counts
from newsletter.library import PendingItem, ReaderSignal, pending_json, signal_json
from newsletter.library_import import AddReport
from newsletter.models import BOUNCE_KINDS
from newsletter.preferences import Follows
from newsletter.reader_view import ReaderEdition
from newsletter.settings import SourceConfig
from newsletter.subscribers import STATUSES, ImportReport, Subscriber

if TYPE_CHECKING:
    from newsletter.deliver import DeliveryReport

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
if not console.is_terminal:  # logs and CI: do not squeeze tables into 80 columns
    console.width = max(console.width, 120)

# How many lines of a long list are printed before "... and N more".
PROBLEMS_SHOWN = 10
FAILURES_SHOWN = 10
REJECTED_SHOWN = 50


def error(message: str) -> None:
    """The one line of ordinary trouble, on stderr."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def _minute(stamp: str) -> str:
    """A stored ISO timestamp to the minute, as a table shows it."""
    return stamp[:16].replace("T", " ")


# --- fetching -------------------------------------------------------------------------------------------------


class FetchProgress:
    """Live per-source status lines while sources are fetched (only on a terminal)."""

    def __init__(self) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[source]}[/]"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err_console,
            disable=not err_console.is_terminal,
            transient=True,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> FetchProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def started(self, source: SourceConfig) -> None:
        self._tasks[source.name] = self._progress.add_task("waiting", source=source.name, total=None)

    def step(self, source: SourceConfig, message: str) -> None:
        self._progress.update(self._tasks[source.name], description=message)

    def finished(self, source: SourceConfig, report: SourceReport) -> None:
        status = "failed" if report.failed else f"{report.new} new"
        self._progress.update(self._tasks[source.name], description=status, total=1, completed=1)


def fetch_reports(reports: Sequence[SourceReport]) -> None:
    """One row per source, then each failure and the first problems of each source."""
    if not reports:
        return
    table = Table(title=None, show_edge=False, pad_edge=False)
    table.add_column("source", no_wrap=True)
    table.add_column("status")
    for column in ("fetched", "new", "updated", "revisions", "duplicates", "errors"):
        table.add_column(column, justify="right")
    table.add_column("time", justify="right")
    for report in reports:
        status = {"ok": "[green]ok[/]", "not_modified": "unchanged", "failed": "[red]failed[/]"}[
            report.status
        ]
        table.add_row(
            report.name,
            status,
            str(report.fetched),
            str(report.new),
            str(report.updated),
            str(report.revisions),
            str(report.duplicates),
            f"[red]{report.errors}[/]" if report.errors else "0",
            f"{report.seconds:.1f}s",
        )
    console.print(table)
    for report in reports:
        if report.failed:
            console.print(f"[red]{report.name} failed:[/] {escape(report.error or '')}", soft_wrap=True)
        for problem in report.problems[:PROBLEMS_SHOWN]:
            console.print(f"[yellow]{report.name}:[/] {escape(problem)}", soft_wrap=True)
        if len(report.problems) > PROBLEMS_SHOWN:
            console.print(
                f"[yellow]{report.name}:[/] ... and {len(report.problems) - PROBLEMS_SHOWN} more problems"
            )


def stored_papers(
    database: Path, total: int, reports: Sequence[SourceReport], categories: Sequence[tuple[str, int]]
) -> None:
    """How many papers the database holds, how many this run added, and the commonest categories."""
    new_total = sum(r.new for r in reports)
    console.print(
        f"\n[bold]{total}[/] papers stored in [bold]{escape(str(database))}[/]; {new_total} new in this run."
    )
    if categories:
        console.print("categories: " + escape(", ".join(f"{cat} {n}" for cat, n in categories)))


# --- editions -------------------------------------------------------------------------------------------------


def clustering() -> Status:
    """A spinner while an edition's papers are clustered (only on a terminal)."""
    return err_console.status("clustering papers into topics", spinner="dots")


def edition(edition: Edition, *, papers_per_section: int) -> None:
    """An edition's window and its sections, with the first paper(s) of each."""
    window = f"{edition.window_start:%Y-%m-%d %H:%M} → {edition.window_end:%Y-%m-%d %H:%M} UTC"
    if not edition.sections:
        console.print(f"\nedition {edition.id} ({window}): nothing new in this window.")
        return
    console.print(
        f"\nedition {edition.id} ({window}): {edition.paper_count} papers in {len(edition.sections)} topics "
        f"[dim]({edition.engine}, {edition.seconds:.1f}s)[/]"
    )
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("topic")
    table.add_column("papers", justify="right")
    table.add_column("first papers" if papers_per_section > 1 else "first paper")
    for number, section in enumerate(edition.sections, start=1):
        firsts = "\n".join(_paper_line(p) for p in section.papers[:papers_per_section])
        table.add_row(str(number), escape(section.label), str(len(section.papers)), firsts)
    console.print(table)


def _paper_line(paper: EditionPaper) -> str:
    votes = f" ▲{paper.upvotes}" if paper.upvotes else ""
    return escape(f"{paper.title}{votes}")


# --- sending --------------------------------------------------------------------------------------------------


def _bars(label: str) -> Progress:
    """Progress bars with a count and the time taken, on stderr, only on a terminal, gone when done."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=not err_console.is_terminal,
        transient=True,
    )


class SendProgress:
    """A bar of messages settled while an edition is sent (only on a terminal), and one of readers' copies
    laid out (a digest's "For you" and order), which runs ahead of it; each outcome counts one."""

    def __init__(self, edition_id: int) -> None:
        self._progress = _bars("{task.description} edition {task.fields[edition]}")
        self._edition_id = edition_id

    def __enter__(self) -> Callable[[object], None]:
        self._progress.start()
        tasks: dict[bool, TaskID] = {}

        def advance(outcome: object) -> None:
            planning = outcome == "planned"
            if planning not in tasks:
                description = "laying out readers' copies of" if planning else "sending"
                tasks[planning] = self._progress.add_task(description, edition=self._edition_id, total=None)
            self._progress.advance(tasks[planning])

        return advance

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()


def delivery(report: DeliveryReport) -> None:
    """What a send did: the ledger's counts, failures, messages of unknown fate and what is left."""
    counts = report.counts
    total = sum(counts.values())
    parts = [
        f"{counts.get(state, 0)} {state}"
        for state in ("sent", "failed", "suppressed", "unknown")
        if counts.get(state)
    ]
    console.print(
        f"edition {report.edition_id}: {total} recipients; "
        + (", ".join(parts) or "nothing sent")
        + f" [dim]({report.sent_now} sent in this run, {report.seconds:.1f}s"
        + (f", {report.rate:.0f} msg/s" if report.sent_now > 20 else "")
        + ")[/]"
    )
    for address, reply in report.failures[:FAILURES_SHOWN]:
        console.print(f"[red]failed[/] {escape(address)}: {escape(reply)}", soft_wrap=True)
    if len(report.failures) > FAILURES_SHOWN:
        console.print(f"[red]... and {len(report.failures) - FAILURES_SHOWN} more failures[/]")
    if report.unknown:
        console.print(
            f"[yellow]{len(report.unknown)} message(s) were in flight when a send stopped or lost its "
            "connection; the server may or may not have accepted them, so they were not sent again:[/] "
            + escape(", ".join(report.unknown)),
            soft_wrap=True,
        )
    resume = f"`newsletter resume {report.edition_id}`"
    if report.pending:
        when = f" (next retry due {report.next_retry_at:%Y-%m-%d %H:%M} UTC)" if report.next_retry_at else ""
        reason = f"{report.stopped}; " if report.stopped else ""
        hint = "" if resume in reason else f": run {resume} to send them"  # said once is enough
        console.print(
            f"[red]{escape(reason)}{report.pending} message(s) not sent yet{when}{hint}[/]", soft_wrap=True
        )
    elif report.stopped:
        console.print(f"[red]{escape(report.stopped)}[/]", soft_wrap=True)


# --- subscribers ----------------------------------------------------------------------------------------------


def subscriber_list(subscribers: Iterable[Subscriber]) -> None:
    """The subscribers as a table, then how many there are."""
    table = Table(show_edge=False, pad_edge=False)
    for column in ("id", "email", "name", "status", "since"):
        table.add_column(column)
    count = 0
    for subscriber in subscribers:
        count += 1
        table.add_row(
            str(subscriber.id),
            escape(subscriber.email),
            escape(subscriber.name),
            subscriber.status,
            subscriber.created_at[:10],
        )
    console.print(table)
    console.print(f"{count} subscriber{'s' if count != 1 else ''}")


def bounce_list(rows: Sequence[BounceRow], *, limit: int) -> None:
    """Bounces newest first: when, kind, whom, what it did, and why."""
    table = Table(show_edge=False, pad_edge=False)
    for column in ("received", "kind", "email", "action", "edition", "source", "status / detail"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            _minute(row.received_at), row.kind, escape(row.email or "(nobody on the list)"), row.action,
            str(row.edition_id or ""), f"{row.source} {row.attributed_by}".strip(),
            escape(" ".join(part for part in (row.status, row.detail) if part)),
        )  # fmt: skip
    console.print(table)
    more = " (the newest; --limit shows more)" if len(rows) == limit else ""
    console.print(f"{len(rows)} report{'s' if len(rows) != 1 else ''}{more}")


class MailboxProgress:
    """A bar while the bounce mailbox is read (only on a terminal)."""

    def __init__(self) -> None:
        self._progress = _bars("bounce mailbox")
        self._task: TaskID | None = None

    def __enter__(self) -> MailboxProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def update(self, done: int, total: int) -> None:
        if self._task is None:
            self._task = self._progress.add_task("reading", total=total)
        self._progress.update(self._task, completed=done, total=total)


def bounce_fetch(fetched: BounceFetch) -> None:
    """What one read of the bounce mailbox found and did, then each message it could not read."""
    run = fetched.mailbox
    kinds = ", ".join(
        f"{fetched.kinds[kind]} {kind.replace('_', '-')}" for kind in BOUNCE_KINDS if fetched.kinds[kind]
    )
    line = f"bounce mailbox: {run.found} message{'s' if run.found != 1 else ''} waiting, {fetched.taken} new"
    line += f" ({kinds})" if kinds else ""
    if fetched.repeated:
        line += f", {fetched.repeated} taken before (marked now)"
    if run.left:
        line += f", {run.left} left for the next read"
    console.print(escape(line), soft_wrap=True)
    done = [f"{fetched.actions[action]} {action}" for action in ("suppressed", "unsubscribed", "counted")]
    unmatched = fetched.actions["unmatched"]
    console.print(
        "readers: " + ", ".join(done) + (f"; {unmatched} about nobody on the list" if unmatched else ""),
        soft_wrap=True,
    )
    for failure in run.failures:
        console.print(
            f"[red]not read: {escape(failure.message)}: {escape(failure.reason)}[/]", soft_wrap=True
        )
    if run.stopped:
        console.print(f"[red]stopped: {escape(run.stopped)}[/]", soft_wrap=True)


def import_report(report: ImportReport) -> None:
    """What an import added and kept, and the first rejected lines with their reasons."""
    console.print(
        f"imported {report.added} new subscribers; {report.existing} already known; {report.rejected} rows rejected"
    )
    for line, reason in report.errors[:REJECTED_SHOWN]:
        console.print(f"[yellow]line {line}:[/] {escape(reason)}", soft_wrap=True)
    if report.rejected > REJECTED_SHOWN:
        console.print(f"[yellow]... and {report.rejected - REJECTED_SHOWN} more rejected lines[/]")


# --- a reader's library --------------------------------------------------------------------------------------

ADDED_SHOWN = 20
KIND_SHOWN = {"like": "liked", "dislike": "hidden", "library": "library"}


def problems(lines: Sequence[str], count: int) -> None:
    """One ``error:`` line per problem, the first ones, then how many more there were."""
    for line in lines[:REJECTED_SHOWN]:
        error(line)
    if count > REJECTED_SHOWN:
        error(f"... and {count - REJECTED_SHOWN} more problems")


def library_added(email: str, report: AddReport) -> None:
    """What an add put in the reader's library and what it keeps pending, with why."""
    fetched = f" ({report.fetched} fetched from arXiv)" if report.fetched else ""
    console.print(
        f"{escape(email)}: {len(report.added)} papers in the library from this add{fetched}, "
        f"{len(report.pending)} pending"
    )
    for key, title in report.added[:ADDED_SHOWN]:
        console.print(f"  added {escape(key)}  {escape(title)}", soft_wrap=True)
    if len(report.added) > ADDED_SHOWN:
        console.print(f"  ... and {len(report.added) - ADDED_SHOWN} more")
    for item in report.pending[:REJECTED_SHOWN]:
        console.print(f"  [yellow]pending[/] {escape(item.item)}: {escape(item.reason)}", soft_wrap=True)
    if len(report.pending) > REJECTED_SHOWN:
        console.print(f"  ... and {len(report.pending) - REJECTED_SHOWN} more pending")


def library_json(reader: Subscriber, signals: Sequence[ReaderSignal], pending: Sequence[PendingItem]) -> Any:
    """What ``library list --json`` writes."""
    return {
        "reader": reader.email,
        "papers": [signal_json(signal) for signal in signals],
        "pending": [pending_json(item) for item in pending],
        "follow_authors": list(reader.follows.authors),
        "exclude_keywords": list(reader.follows.exclude_keywords),
    }


def library_listing(
    reader: Subscriber, signals: Sequence[ReaderSignal], pending: Sequence[PendingItem]
) -> None:
    """The reader's papers (newest first), pending items and follows."""
    counts = {kind: sum(signal.kind == kind for signal in signals) for kind in KIND_SHOWN}
    console.print(
        f"{escape(reader.email)}: {counts['library']} library, {counts['like']} liked, "
        f"{counts['dislike']} hidden, {len(pending)} pending"
    )
    if signals:
        table = Table(show_edge=False, pad_edge=False)
        for column in ("kind", "paper", "title", "since"):
            table.add_column(column)
        for signal in reversed(signals):
            table.add_row(
                KIND_SHOWN[signal.kind],
                escape(signal.id),
                escape(signal.title),
                f"{signal.created_at:%Y-%m-%d}",
            )
        console.print(table)
    if pending:
        table = Table(show_edge=False, pad_edge=False)
        for column in ("pending", "why", "since"):
            table.add_column(column)
        for item in pending:
            since = f"{item.created_at:%Y-%m-%d}" if item.created_at else ""
            table.add_row(escape(item.item), escape(item.reason), since)
        console.print(table)
    follows(reader.email, reader.follows, quiet=True)


def reader_edition(view: ReaderEdition, *, ranked_shown: int = 10) -> None:
    """``digest for``: the For-you papers with why, then the best of the edition for this reader."""
    titles = {paper.key: paper.title for section in view.edition.sections for paper in section.papers}
    taught = len(view.signals)
    excluded = f", {len(view.excluded)} excluded by their keywords" if view.excluded else ""
    console.print(
        f"edition {view.edition.id} for {escape(view.reader.email)} "
        f"({taught} paper{'s' if taught != 1 else ''} taught): {len(view.view.for_you)} for you{excluded}"
    )
    if view.view.for_you:
        table = Table(title="for you", show_edge=False, pad_edge=False, title_justify="left")
        for column in ("score", "paper", "title", "why"):
            table.add_column(column)
        for pick in view.view.for_you:
            table.add_row(
                f"{pick.score:.2f}", escape(pick.id), escape(titles[pick.id]), escape(pick.why.text)
            )
        console.print(table)
    table = Table(title="ranked", show_edge=False, pad_edge=False, title_justify="left")
    for column in ("#", "score", "paper", "title"):
        table.add_column(column)
    ranked = view.view.ranked_scores()
    for place, (paper_id, score) in enumerate(ranked[:ranked_shown], start=1):
        table.add_row(str(place), f"{score:.2f}", escape(paper_id), escape(titles[paper_id]))
    console.print(table)
    if len(ranked) > ranked_shown:
        console.print(f"[dim]and {len(ranked) - ranked_shown} more (--json - writes them all)[/]")


def follows(email: str, chosen: Follows, *, quiet: bool = False) -> None:
    """The authors the reader follows and the keywords they exclude."""
    if quiet and chosen.empty:
        return
    authors = ", ".join(chosen.authors) or "none"
    keywords = ", ".join(chosen.exclude_keywords) or "none"
    console.print(
        f"{escape(email)} follows authors: {escape(authors)}; excludes keywords: {escape(keywords)}"
    )


# --- operations -----------------------------------------------------------------------------------------------


def schedule(
    defined: Sequence[Job],
    runs: list[dict[str, Any]],
    *,
    title: str | None = None,
    source: Path | None = None,
    idle: dict[str, str] | None = None,
) -> None:
    """Each job with its schedule, next run and last run (``runs``: the last run of each job), then the
    directory the jobs were read from when given; ``idle``: why jobs that are not scheduled wait."""
    last = {run["job"]: run for run in runs}
    table = Table(title=title, show_edge=False, pad_edge=False, title_justify="left")
    for column in ("job", "action", "schedule", "time zone", "next run", "last run"):
        table.add_column(column)
    now = datetime.now(UTC)
    for job in defined:
        upcoming = job.next_run(now) if job.enabled else None
        run = last.get(job.name)
        previous = "never"
        if run:
            previous = f"{run['status']} at {_minute(run['started_at'])} UTC"
            previous += f": {escape(run['error'])}" if run["error"] else ""
        table.add_row(
            job.name,
            job.action,
            job.cron,
            str(job.timezone),
            escape(
                (idle or {}).get(job.name) or (f"{upcoming:%Y-%m-%d %H:%M %Z}" if upcoming else "disabled")
            ),
            previous,
        )
    console.print(table)
    if source is not None:
        console.print(f"[dim]from {escape(str(source))}[/]")


def job_run(name: str, action: str, run: JobRun) -> None:
    console.print(
        f"job {escape(name)}: {run.status} in {run.seconds:.1f}s: "
        + escape(describe_counts(action, run.counts))
        + (f"\n{escape(run.error)}" if run.error else ""),
        soft_wrap=True,
    )


def status(name: str, database: Path, data: dict[str, Any]) -> None:
    """Sources, the last editions with their deliveries, and the subscribers by status (``status.collect``)."""
    console.print(f"[bold]{escape(name)}[/] · database {escape(str(database))} · {data['papers']} papers")
    table = Table(title="sources", show_edge=False, pad_edge=False, title_justify="left")
    for column in ("source", "status", "last success", "error"):
        table.add_column(column)
    for source in data["sources"]:
        table.add_row(
            source["name"], source["status"] or "", _minute(source["last_success_at"] or "never"),
            escape(source["error"] or ""),
        )  # fmt: skip
    console.print(table)
    table = Table(title="editions", show_edge=False, pad_edge=False, title_justify="left")
    for column in ("#", "kind", "status", "created", "papers", "sent", "failed", "pending", "not sent"):
        table.add_column(column)
    for edition in data["editions"]:
        counts = data["deliveries"][edition.id]
        table.add_row(
            str(edition.id), edition.kind, edition.status, _minute(edition.created_at), str(edition.paper_count), *(str(counts[heading]) for heading in ("sent", "failed", "pending", "not_sent")),
        )  # fmt: skip
    console.print(table)
    subscribers_by_status = ", ".join(f"{data['subscribers'].get(s, 0)} {s}" for s in STATUSES)
    console.print(f"subscribers: {subscribers_by_status}")
    console.print(_bounces_line(data["bounces"]), soft_wrap=True)


def _bounces_line(bounces: dict[str, Any]) -> str:
    """The last read of the bounce mailbox and what came back in the last days."""
    counts = bounces["counts"]
    taken = ", ".join(f"{counts[kind]} {kind.replace('_', '-')}" for kind in BOUNCE_KINDS if kind in counts)
    taken = taken or "none"
    line = f"bounces in the last {bounces['days']} days: {taken}"
    run = bounces["last_run"]
    if run is None:
        return line + " · the bounce mailbox was never read"
    if run["finished_at"] is None:
        outcome = "did not finish"
    else:
        outcome = f"{run['found']} found, {run['taken']} new, {run['repeated']} taken before, {run['failed']} failed"
    error = f": {escape(run['error'])}" if run["error"] else ""
    return f"{line} · mailbox last read {_minute(run['started_at'])} ({outcome}){error}"


def jobs_unreadable(problem: str) -> None:
    console.print(f"[red]jobs: {escape(problem)}[/]")


def dkim_record(key: DkimKey, path: Path, selector: str, domain: str, *, configured: bool) -> None:
    """Where ``dkim keygen`` wrote the key, and the record to publish, for a zone file and for a web form."""
    name = record_name(selector, domain)
    err_console.print(
        f"wrote the {key.kind} private key to {escape(str(path))} (readable by its owner only)",
        soft_wrap=True,
    )
    if not configured:
        err_console.print(
            escape(f'then set [dkim] domain = "{domain}", selector = "{selector}", private_key_file = ')
            + escape(f'"{path.resolve()}" in newsletter.toml'),
            soft_wrap=True,
        )
    err_console.print(f"publish this TXT record at {escape(name)}, in a zone file:", soft_wrap=True)
    click.echo(zone_entry(selector, domain, key.record()))
    err_console.print("or, in a DNS provider's web form (name, then value):", soft_wrap=True)
    click.echo(name)
    click.echo(key.record())


def diagnosis(diagnosis: Diagnosis) -> None:
    """Each check of ``doctor``: ok, warning or FAILED, with what it found."""
    for check in diagnosis.checks:
        mark = (
            "[green]ok[/]"
            if check.ok and not check.warning
            else "[yellow]warning[/]"
            if check.ok
            else "[red]FAILED[/]"
        )
        console.print(f"{mark:>20} {check.name}: {escape(check.detail)}", soft_wrap=True)
