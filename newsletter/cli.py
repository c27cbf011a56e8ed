"""The ``newsletter`` command line: a thin shell over the pipeline modules."""

from __future__ import annotations

import json
import logging
import signal
import smtplib
import sqlite3
import sys
import threading
import webbrowser
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
import sqlite_utils
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
from rich.table import Table

from newsletter import __version__, logs, outbox, samples, trouble
from newsletter.config import DEFAULT_CONFIG_NAME, load_settings, write_default_config
from newsletter.db import open_database
from newsletter.deliver import DeliveryReport
from newsletter.devsmtp import EmbeddedSMTPServer, prepare_maildir
from newsletter.editions import Edition, EditionPaper, build_edition
from newsletter.errors import (
    FAILURE,
    INTERRUPTED,
    USAGE,
    ConfigError,
    DatabaseMissing,
    EngineUnavailable,
    PreferenceError,
    SendError,
    SendInProgress,
    ServerUnavailable,
    SubscriberError,
)
from newsletter.fetch import Fetcher
from newsletter.ingest import SourceReport, run_ingest
from newsletter.preferences import FREQUENCIES, Preferences, parse_list
from newsletter.settings import Settings, SourceConfig
from newsletter.subscribers import (
    STATUSES,
    add_subscriber,
    confirm,
    export_csv,
    find_subscriber,
    import_csv,
    list_subscribers,
    remove_subscriber,
    set_status,
)

if TYPE_CHECKING:
    from newsletter.jobs import Job

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
if not console.is_terminal:  # logs and CI: do not squeeze tables into 80 columns
    console.width = max(console.width, 120)


class AppContext:
    def __init__(
        self, config_path: Path, database: Path | None, verbosity: int = 0, *, config_named: bool = False
    ) -> None:
        self.config_path = config_path
        self.config_named = config_named  # by --config or NEWSLETTER_CONFIG: then it must exist
        self.database = database
        self.verbosity = verbosity
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            # Without --config, a missing ./newsletter.toml means the built-in defaults.
            path = self.config_path if self.config_named or self.config_path.exists() else None
            try:
                self._settings = load_settings(path, database=self.database)
            except ConfigError as exc:
                fail(f"configuration error: {exc}", code=USAGE)
            web, smtp = self._settings.web, self._settings.smtp
            logs.hide_secrets(smtp.password, web.secret_key, web.admin_password_hash)
        return self._settings

    def reload(self) -> Settings:
        self._settings = None
        return self.settings

    @property
    def loaded_database(self) -> Path | None:
        """The database in use, once the settings are loaded (for error messages)."""
        return self._settings.database if self._settings is not None else self.database


def open_db(settings: Settings, *, create: bool = True) -> sqlite_utils.Database:
    """The database; read-only commands pass ``create=False`` and tell the user to run init instead. What
    goes wrong is explained by _Commands, the same way whichever command (or library call) hits it."""
    return open_database(settings.database, create=create)


def fail(message: str, *, code: int = FAILURE) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise SystemExit(code)


def check_output(path: Path | str, option: str) -> None:
    """Refuse an output file that cannot be written before doing the work that would fill it."""
    problem = trouble.output_problem(Path(path))
    if problem:
        fail(f"{option} {path}: {problem}", code=USAGE)


class _Commands(click.Group):
    """Ordinary trouble in any command (newsletter.trouble) ends as one line and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise click.exceptions.Exit(INTERRUPTED) from None
        except (click.ClickException, click.exceptions.Exit):
            raise  # click's own usage errors and exits, shown the way click shows them
        except Exception as exc:
            app = ctx.find_object(AppContext)
            explained = trouble.explain(exc, database=app.loaded_database if app else None)
            if explained is None:
                raise
            fail(explained.message, code=explained.code)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_CONFIG_NAME,
    envvar="NEWSLETTER_CONFIG",
    show_default=True,
    help="Configuration file (env NEWSLETTER_CONFIG).",
)
@click.option(
    "--db",
    "database",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite database, overriding the configuration (env NEWSLETTER_DB).",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    envvar="NEWSLETTER_LOG_FORMAT",
    show_default=True,
    help="Log lines as text or as JSON objects (env NEWSLETTER_LOG_FORMAT).",
)
@click.version_option(__version__, prog_name="newsletter")
@click.pass_context
def cli(ctx: click.Context, config_path: Path, database: Path | None, verbose: int, log_format: str) -> None:
    """A self-hosted research-paper newsletter: new papers from arXiv, Hugging Face and any feed."""
    logs.setup(verbosity=verbose, json_format=log_format == "json")
    named = ctx.get_parameter_source("config_path") is not click.core.ParameterSource.DEFAULT
    ctx.obj = AppContext(config_path, database, verbose, config_named=named)


@cli.command()
@click.option("--force", is_flag=True, help="Overwrite an existing configuration file with the defaults.")
@click.pass_obj
def init(app: AppContext, force: bool) -> None:
    """Create newsletter.toml (commented defaults) and the database."""
    _init(app, force=force)


def _init(app: AppContext, *, force: bool = False) -> Settings:
    if write_default_config(app.config_path, overwrite=force):
        console.print(f"wrote configuration [bold]{escape(str(app.config_path))}[/]")
    else:
        console.print(
            f"configuration [bold]{escape(str(app.config_path))}[/] already exists (kept; --force replaces it)"
        )
    settings = app.reload()
    open_db(settings).close()
    console.print(f"database [bold]{escape(str(settings.database))}[/] is ready")
    return settings


@cli.command()
@click.option(
    "--source", "-s", "names", multiple=True, metavar="NAME", help="Fetch only this source (repeatable)."
)
@click.pass_obj
def fetch(app: AppContext, names: tuple[str, ...]) -> None:
    """Fetch all enabled sources (or the named ones) and store new papers.

    Prints, per source: papers fetched, new, updated, revisions (replacements of papers first seen now),
    duplicates and errors. Exits with status 1 when a source failed, naming it and the reason.
    """
    settings = app.settings
    try:
        # dict.fromkeys: a source named twice is fetched once, in the order first given
        sources = (
            [settings.source_named(name) for name in dict.fromkeys(names)] if names else _enabled(settings)
        )
    except ConfigError as exc:
        fail(str(exc), code=USAGE)
    if not sources:
        fail("no enabled sources in the configuration", code=USAGE)
    reports = _fetch(settings, sources)
    _print_reports(reports)
    failed = [r for r in reports if r.failed]
    if failed:
        fail(f"{len(failed)} of {len(reports)} sources failed: " + ", ".join(r.name for r in failed))


@cli.command()
@click.option("--offline", is_flag=True, help="Do not try the live sources; use the bundled sample feed.")
@click.pass_obj
def demo(app: AppContext, offline: bool) -> None:
    """Run the pipeline once on embedded defaults: init, fetch, build the digest, send it.

    When no live source can be reached, says so and uses the sample feed shipped with the project, so the
    rest of the pipeline still has papers to work on. Without subscribers, three sample readers are added;
    with the default `[smtp] host = "embedded"` the emails land in a local Maildir.
    """
    settings = _init(app) if not app.config_path.exists() else app.settings
    reports: list[SourceReport] = []
    if not offline:
        live = _enabled(settings)
        reports = _fetch(settings, live) if live else []
        _print_reports(reports)
    if not any(not r.failed for r in reports):
        if offline:
            why = "--offline"
        elif all(r.unreachable for r in reports):
            why = "no live source could be reached"
        else:
            why = "no live source could be fetched"
        console.print(f"[yellow]{why}: using the sample feed bundled with the project (fictional papers)[/]")
        sample_reports = _fetch(settings, samples.sample_sources())
        _print_reports(sample_reports)
        reports += sample_reports
    _print_summary(settings, reports)
    edition = _build(settings, DigestRequest())
    _print_edition(edition, papers_per_section=2)
    if not edition.sections:
        console.print("nothing new to send.")
        return
    _demo_subscribers(settings)
    report = _send(settings, edition.id)
    preview = settings.database.parent / f"preview-edition-{edition.id}.html"
    preview.write_text(outbox.preview_html(settings, edition.id), encoding="utf-8")
    console.print(f"preview of the email: [bold]{escape(str(preview))}[/]")
    if settings.smtp.embedded:
        console.print(
            f"the embedded SMTP server stored the messages in [bold]{escape(str(settings.smtp.maildir))}[/] "
            "(a Maildir: one file per message under new/)"
        )
    console.print(
        f"links in the emails work while [bold]newsletter serve[/] runs ({escape(settings.web.base_url)})"
    )
    exit_unless_complete(report)


DEMO_READERS = [
    ("ada.reader@example.org", "Ada Reader"),
    ("grace.reader@example.org", "Grace Reader"),
    ("alan.reader@example.org", "Alan Reader"),
]


def _demo_subscribers(settings: Settings) -> None:
    db = open_db(settings)
    try:
        if db.execute("SELECT count(*) FROM subscribers").fetchone()[0]:
            return
        for email, name in DEMO_READERS:
            add_subscriber(db, email, name, source="demo")
        console.print(f"added {len(DEMO_READERS)} sample subscribers (example.org addresses)")
    finally:
        db.close()


def _enabled(settings: Settings) -> list[SourceConfig]:
    return [source for source in settings.sources if source.enabled]


def _fetch(settings: Settings, sources: Sequence[SourceConfig]) -> list[SourceReport]:
    db = open_db(settings)
    try:
        with Fetcher(settings.fetch) as fetcher, _RichProgress() as progress:
            return run_ingest(db, sources, fetcher, workers=settings.workers, progress=progress)
    finally:
        db.close()


class _RichProgress:
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

    def __enter__(self) -> _RichProgress:
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


def _print_reports(reports: Sequence[SourceReport]) -> None:
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
        for problem in report.problems[:10]:
            console.print(f"[yellow]{report.name}:[/] {escape(problem)}", soft_wrap=True)
        if len(report.problems) > 10:
            console.print(f"[yellow]{report.name}:[/] ... and {len(report.problems) - 10} more problems")


def _print_summary(settings: Settings, reports: Sequence[SourceReport]) -> None:
    db = open_db(settings)
    try:
        total = db.execute("SELECT count(*) FROM papers").fetchone()[0]
        new_total = sum(r.new for r in reports)
        console.print(
            f"\n[bold]{total}[/] papers stored in [bold]{escape(str(settings.database))}[/]; {new_total} new in this run."
        )
        top = db.execute(
            """
            SELECT primary_category, count(*) FROM papers
            WHERE primary_category IS NOT NULL GROUP BY primary_category ORDER BY count(*) DESC LIMIT 8
            """
        ).fetchall()
        if top:
            console.print("categories: " + escape(", ".join(f"{cat} {n}" for cat, n in top)))
    finally:
        db.close()


@cli.group()
def digest() -> None:
    """Build digest editions: the new papers of a window, grouped into labelled topic sections."""


@digest.command("build")
@click.option(
    "--since", type=click.UNPROCESSED, metavar="DATE", help="Window start (default: end of the last digest)."
)
@click.option("--until", type=click.UNPROCESSED, metavar="DATE", help="Window end (default: now).")
@click.option(
    "--topics",
    type=click.IntRange(1, 500),
    help="Number of topic sections (default: chosen from the papers).",
)
@click.option(
    "--frequency",
    type=click.Choice(FREQUENCIES),
    default="weekly",
    show_default=True,
    help="Whose edition: weekly or daily readers.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write the edition as JSON ('-': stdout).",
)
@click.pass_obj
def digest_build(
    app: AppContext,
    since: str | None,
    until: str | None,
    topics: int | None,
    frequency: str,
    json_path: str | None,
) -> None:
    """Create an edition from the papers first seen in the window and show its sections.

    DATE is YYYY-MM-DD (midnight UTC) or an ISO 8601 date and time. Every paper lands in exactly one
    section; small sections are gathered in a final "Other papers" section.
    """
    _check_frequency(app.settings, frequency)
    if json_path and json_path != "-":
        check_output(json_path, "--json")
    request = DigestRequest(
        since=_parse_when(since, "--since"),
        until=_parse_when(until, "--until"),
        topics=topics,
        frequency=frequency,
    )
    edition = _build(app.settings, request)
    if json_path:
        text = json.dumps(edition.to_json(), ensure_ascii=False, indent=2)
        if json_path == "-":
            click.echo(text)
            return
        try:
            Path(json_path).write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            explained = trouble.explain(exc)
            reason = explained.message if explained else str(exc)
            fail(f"edition {edition.id} is stored, but {json_path} could not be written: {reason}")
    _print_edition(edition, papers_per_section=1)
    if json_path:
        console.print(f"wrote {escape(json_path)}")


@dataclass(frozen=True, slots=True)
class DigestRequest:
    since: datetime | None = None
    until: datetime | None = None
    topics: int | None = None
    frequency: str = "weekly"


def _parse_when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{option} {value!r} is not a date (YYYY-MM-DD) or an ISO 8601 date and time", code=USAGE)
        raise
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _build(settings: Settings, request: DigestRequest) -> Edition:
    digest_settings = settings.digest
    if request.topics:
        digest_settings = replace(digest_settings, topics=request.topics)
    db = open_db(settings)
    try:
        with err_console.status("clustering papers into topics", spinner="dots"):
            return build_edition(
                db, digest_settings, since=request.since, until=request.until, frequency=request.frequency
            )
    except EngineUnavailable as exc:
        fail(str(exc), code=USAGE)
        raise
    except ValueError as exc:
        fail(str(exc), code=USAGE)
        raise
    finally:
        db.close()


def _print_edition(edition: Edition, *, papers_per_section: int) -> None:
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


# --- sending ------------------------------------------------------------------------------------------------


@digest.command("preview")
@click.argument("edition_id", metavar="EDITION", type=int)
@click.option(
    "--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the HTML here."
)
@click.option(
    "--as", "address", metavar="EMAIL", help="Personalise for this subscriber (default: the first one)."
)
@click.option("--open", "open_browser", is_flag=True, help="Open the preview in a browser.")
@click.pass_obj
def digest_preview(
    app: AppContext, edition_id: int, out_path: Path | None, address: str | None, open_browser: bool
) -> None:
    """Write the HTML of EDITION exactly as a subscriber receives it."""
    if out_path:
        check_output(out_path, "--out")
    try:
        html = outbox.preview_html(app.settings, edition_id, address)
    except SendError as exc:
        fail(str(exc), code=USAGE)
    out = out_path or app.settings.database.parent / f"preview-edition-{edition_id}.html"
    out.write_text(html, encoding="utf-8")
    size = len(html.encode())
    console.print(f"wrote {escape(str(out))} ({size / 1000:.1f} KB of HTML; Gmail clips above 102 KB)")
    if open_browser:
        webbrowser.open(out.resolve().as_uri())


@digest.command("send")
@click.argument("edition_id", metavar="EDITION", type=int)
@click.option(
    "--to", "address", metavar="EMAIL", help="Send one test copy to this address, outside the ledger."
)
@click.pass_obj
def digest_send(app: AppContext, edition_id: int, address: str | None) -> None:
    """Send EDITION to every active subscriber (a re-run sends only what is not done yet)."""
    if address:
        try:
            reply = outbox.send_test_copy(app.settings, edition_id, address)
        except SendError as exc:  # not an address, no such edition: what was asked cannot be done
            fail(f"the test copy was not sent: {exc}", code=USAGE)
        except (ServerUnavailable, smtplib.SMTPException, OSError) as exc:
            if trouble.explain(exc) is not None:  # the database or the disk, not the SMTP server
                raise
            fail(f"the test copy was not sent: {exc}")
        console.print(f"test copy of edition {edition_id} sent to {escape(address)}: {escape(reply)}")
        return
    report = _send(app.settings, edition_id)
    exit_unless_complete(report)


@cli.command("resume")
@click.argument("edition_id", metavar="EDITION", type=int)
@click.option(
    "--resend-unknown",
    is_flag=True,
    help="Also send the messages that were in flight at a crash (some readers may get two copies).",
)
@click.pass_obj
def resume(app: AppContext, edition_id: int, resend_unknown: bool) -> None:
    """Finish an interrupted send of EDITION: only what was not delivered goes out."""
    report = _send(app.settings, edition_id, resend_unknown=resend_unknown)
    exit_unless_complete(report)


@cli.command("send")
@click.option("--subject", required=True, help="Subject of the message.")
@click.option(
    "--body",
    "body_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Markdown file with the message.",
)
@click.option(
    "--to",
    "segment",
    default="all",
    show_default=True,
    metavar="SEGMENT",
    help="'all' active subscribers, or one subscriber's address.",
)
@click.pass_obj
def send_one_off(app: AppContext, subject: str, body_path: Path, segment: str) -> None:
    """Send a one-off message (Markdown body) to subscribers, through the same ledger as digests."""
    try:
        edition_id = outbox.create_one_off(
            app.settings, subject, body_path.read_text(encoding="utf-8"), segment
        )
    except (SendError, UnicodeDecodeError) as exc:
        fail(str(exc), code=USAGE)
    console.print(f"message stored as edition {edition_id}")
    report = _send(app.settings, edition_id)
    exit_unless_complete(report)


def exit_unless_complete(report: DeliveryReport) -> None:
    """A send that left work to do exits 1, or 130 when Ctrl-C stopped it (the rest stays queued)."""
    if report.stopped == "interrupted":
        raise SystemExit(INTERRUPTED)
    if not report.complete:
        raise SystemExit(FAILURE)


def _send(settings: Settings, edition_id: int, *, resend_unknown: bool = False) -> DeliveryReport:
    with Progress(
        TextColumn("sending edition {task.fields[edition]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=not err_console.is_terminal,
        transient=True,
    ) as bar:
        task = bar.add_task("send", edition=edition_id, total=None)
        try:
            report = outbox.send_edition(
                settings,
                edition_id,
                progress=lambda _outcome: bar.advance(task),
                resend_unknown=resend_unknown,
            )
        except SendError as exc:
            fail(str(exc), code=USAGE)
        except SendInProgress as exc:
            fail(f"{exc}; wait for it to finish", code=FAILURE)
    _print_delivery(report, settings)
    return report


def _print_delivery(report: DeliveryReport, settings: Settings) -> None:
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
    for address, reply in report.failures[:10]:
        console.print(f"[red]failed[/] {escape(address)}: {escape(reply)}", soft_wrap=True)
    if len(report.failures) > 10:
        console.print(f"[red]... and {len(report.failures) - 10} more failures[/]")
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


@cli.group()
def subscribers() -> None:
    """Manage subscribers."""


@subscribers.command("add")
@click.argument("email")
@click.option("--name", default="", help="Display name.")
@click.option(
    "--categories", default="", metavar="LIST", help="arXiv categories to follow, e.g. cs.LG,cs.CL."
)
@click.option("--keywords", default="", metavar="LIST", help="Keywords to follow, comma-separated.")
@click.option("--frequency", type=click.Choice(FREQUENCIES), default="weekly", show_default=True)
@click.pass_obj
def subscribers_add(
    app: AppContext, email: str, name: str, categories: str, keywords: str, frequency: str
) -> None:
    """Add a confirmed (active) subscriber; following nothing means receiving everything."""
    _check_frequency(app.settings, frequency)
    db = open_db(app.settings)
    try:
        preferences = Preferences.create(parse_list(categories), parse_list(keywords), frequency)
        result = add_subscriber(db, email, name, source="cli", preferences=preferences)
    except (SubscriberError, PreferenceError) as exc:
        fail(str(exc), code=USAGE)
    finally:
        db.close()
    if result.created:
        console.print(f"added {escape(result.subscriber.email)} (id {result.subscriber.id}, active)")
    else:
        console.print(f"{escape(result.subscriber.email)}: {escape(result.note)}")


@subscribers.command("import")
@click.argument("csv_path", metavar="FILE.csv", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def subscribers_import(app: AppContext, csv_path: Path) -> None:
    """Import active subscribers from CSV: listmonk's email,name,attributes (attributes as JSON, header
    line required) or plain email[,name]. Bad rows are listed with their line numbers; good rows are
    imported; importing the same file again adds nothing."""
    db = open_db(app.settings)
    before = _subscriber_count(db)
    try:
        report = import_csv(db, csv_path)
    except SubscriberError as exc:
        fail(str(exc), code=USAGE)
    except (sqlite3.Error, OSError) as exc:
        # Rows are written in batches, each committed on its own: say how far it got. Importing the same
        # file again skips the addresses already imported, so a re-run finishes the job.
        explained = trouble.explain(exc, database=app.settings.database)
        if explained is None:
            raise
        committed = _subscriber_count(db) - before
        remedy = explained.remedy or "fix that and run the command again"
        fail(
            f"the import stopped: {explained.cause}; {committed} new subscribers were committed and are "
            f"kept, the rest of {csv_path} was not imported: {remedy} (the same import again skips the "
            "addresses already imported)",
            code=explained.code,
        )
    finally:
        db.close()
    console.print(
        f"imported {report.added} new subscribers; {report.existing} already known; {report.rejected} rows rejected"
    )
    for line, reason in report.errors[:50]:
        console.print(f"[yellow]line {line}:[/] {escape(reason)}", soft_wrap=True)
    if report.rejected > 50:
        console.print(f"[yellow]... and {report.rejected - 50} more rejected lines[/]")
    if report.rejected:
        raise SystemExit(FAILURE)


def _subscriber_count(db: sqlite_utils.Database) -> int:
    return int(db.execute("SELECT count(*) FROM subscribers").fetchone()[0])


@subscribers.command("export")
@click.argument(
    "out_path", metavar="[FILE.csv]", default="-", type=click.Path(dir_okay=False, allow_dash=True)
)
@click.option("--status", type=click.Choice(STATUSES), help="Only this status.")
@click.pass_obj
def subscribers_export(app: AppContext, out_path: str, status: str | None) -> None:
    """Write subscribers as CSV (status, preferences and timestamps included) to FILE.csv, or to standard
    output when it is '-' or left out."""
    if out_path != "-":
        check_output(out_path, "FILE.csv")
    db = open_db(app.settings, create=False)
    try:
        if out_path == "-":
            count = export_csv(db, sys.stdout, status=status)
        else:
            with open(out_path, "w", encoding="utf-8", newline="") as out:
                count = export_csv(db, out, status=status)
    finally:
        db.close()
    err_console.print(f"exported {count} subscribers")


@subscribers.command("confirm")
@click.argument("email")
@click.pass_obj
def subscribers_confirm(app: AppContext, email: str) -> None:
    """Confirm a pending subscriber by hand (they will receive editions)."""
    _change_status(app, email, lambda db, subscriber: confirm(db, subscriber.id))


@subscribers.command("unsubscribe")
@click.argument("email")
@click.pass_obj
def subscribers_unsubscribe(app: AppContext, email: str) -> None:
    """Unsubscribe an address (it stays on the list as unsubscribed)."""
    _change_status(app, email, lambda db, subscriber: set_status(db, subscriber.id, "unsubscribed"))


@subscribers.command("remove")
@click.argument("email")
@click.pass_obj
def subscribers_remove(app: AppContext, email: str) -> None:
    """Delete a subscriber and their delivery records (a deletion request)."""
    db = open_db(app.settings)
    try:
        subscriber = find_subscriber(db, email)
        if subscriber is None:
            fail(f"{email} is not on the list", code=USAGE)
        remove_subscriber(db, subscriber.id)
    except SubscriberError as exc:
        fail(str(exc), code=USAGE)
    finally:
        db.close()
    console.print(f"removed {escape(subscriber.email)}")


def _change_status(app: AppContext, email: str, change) -> None:  # type: ignore[no-untyped-def]
    db = open_db(app.settings)
    try:
        subscriber = find_subscriber(db, email)
        if subscriber is None:
            fail(f"{email} is not on the list", code=USAGE)
        updated = change(db, subscriber)
    except SubscriberError as exc:
        fail(str(exc), code=USAGE)
    finally:
        db.close()
    console.print(f"{escape(updated.email)}: {updated.status}")


def _check_frequency(settings: Settings, frequency: str) -> None:
    if frequency == "daily" and not settings.digest.daily:
        fail("daily digests are not enabled ([digest] daily = true)", code=USAGE)


@subscribers.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only this status.")
@click.option("--search", metavar="TEXT", help="Only addresses or names containing TEXT.")
@click.pass_obj
def subscribers_list(app: AppContext, status: str | None, search: str | None) -> None:
    """List subscribers."""
    db = open_db(app.settings, create=False)
    try:
        table = Table(show_edge=False, pad_edge=False)
        for column in ("id", "email", "name", "status", "since"):
            table.add_column(column)
        count = 0
        for subscriber in list_subscribers(db, status=status, search=search):
            count += 1
            table.add_row(
                str(subscriber.id),
                escape(subscriber.email),
                escape(subscriber.name),
                subscriber.status,
                subscriber.created_at[:10],
            )
    finally:
        db.close()
    console.print(table)
    console.print(f"{count} subscriber{'s' if count != 1 else ''}")


# --- servers --------------------------------------------------------------------------------------------------


@cli.command()
@click.option("--host", help="Interface to listen on (default: [web] host).")
@click.option("--port", type=int, help="Port (default: [web] port).")
@click.pass_obj
def serve(app: AppContext, host: str | None, port: int | None) -> None:
    """Run the web app: unsubscribe pages and the archive of editions."""
    from newsletter.web import ServeError
    from newsletter.web import serve as serve_web

    _check_port(port)
    settings = app.settings
    _log_events(app)
    try:
        serve_web(settings, host=host, port=port)
    except ServeError as exc:
        fail(str(exc), code=exc.exit_code)


def _check_port(port: int | None) -> None:
    if port is not None and not 1 <= port <= 65535:
        fail(f"--port must be a number from 1 to 65535, not {port}", code=USAGE)


def _log_events(app: AppContext) -> None:
    """Long-running commands log every event (INFO) unless asked for more."""
    if app.verbosity == 0:
        logging.getLogger().setLevel(logging.INFO)


@cli.command("run")
@click.option("--no-web", is_flag=True, help="Only the scheduler, without the web app.")
@click.option("--host", help="Web app interface (default: [web] host).")
@click.option("--port", type=int, help="Web app port (default: [web] port).")
@click.pass_obj
def run_command(app: AppContext, no_web: bool, host: str | None, port: int | None) -> None:
    """Run the scheduled jobs of jobs/ (and the web app): fetch, digests, retries, cleanup.

    Stops cleanly on SIGTERM or Ctrl-C: a send in progress finishes the message in hand and the rest
    is sent by the next run.
    """
    from newsletter.errors import JobError
    from newsletter.scheduler import run_forever
    from newsletter.web import ServeError

    _check_port(port)
    settings = app.settings
    _log_events(app)
    try:
        run_forever(settings, web=not no_web, host=host, port=port)
    except JobError as exc:
        fail(str(exc), code=USAGE)
    except ServeError as exc:
        fail(str(exc), code=exc.exit_code)


@cli.group()
def jobs() -> None:
    """The scheduled jobs defined in jobs/."""


@jobs.command("list")
@click.pass_obj
def jobs_list(app: AppContext) -> None:
    """Each job with its schedule, next run and last run."""
    from newsletter.errors import JobError
    from newsletter.jobs import load_jobs
    from newsletter.runs import latest_job_runs

    settings = app.settings
    try:
        defined = load_jobs(settings.jobs_dir, settings.timezone)
    except JobError as exc:
        fail(str(exc), code=USAGE)
    db = open_db(settings, create=False)
    try:
        runs = latest_job_runs(db)
    finally:
        db.close()
    console.print(schedule_table(defined, runs))
    console.print(f"[dim]from {escape(str(settings.jobs_dir))}[/]")


def schedule_table(defined: Sequence[Job], runs: list[dict[str, Any]], title: str | None = None) -> Table:
    """Each job with its schedule, next run and last run (``runs``: the last run of each job)."""
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
            previous = f"{run['status']} at {run['started_at'][:16].replace('T', ' ')} UTC"
            previous += f": {escape(run['error'])}" if run["error"] else ""
        table.add_row(
            job.name,
            job.action,
            job.cron,
            str(job.timezone),
            f"{upcoming:%Y-%m-%d %H:%M %Z}" if upcoming else "disabled",
            previous,
        )
    return table


@jobs.command("run")
@click.argument("name")
@click.pass_obj
def jobs_run(app: AppContext, name: str) -> None:
    """Run one job now (recorded like a scheduled run; one instance at a time)."""
    from newsletter.errors import JobError
    from newsletter.jobs import JobRunner, describe_counts, load_jobs

    settings = app.settings
    try:
        defined = {job.name: job for job in load_jobs(settings.jobs_dir, settings.timezone)}
    except JobError as exc:
        fail(str(exc), code=USAGE)
    if name not in defined:
        fail(f"no job named {name!r} (defined: {', '.join(defined)})", code=USAGE)
    interrupt = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: interrupt.set())
    try:
        run = JobRunner(settings, interrupt).run(defined[name])
    finally:
        signal.signal(signal.SIGTERM, previous)
    console.print(
        f"job {escape(name)}: {run.status} in {run.seconds:.1f}s: "
        + escape(describe_counts(defined[name].action, run.counts))
        + (f"\n{escape(run.error)}" if run.error else ""),
        soft_wrap=True,
    )
    if run.status not in ("ok", "skipped"):
        raise SystemExit(FAILURE)


# --- operations ---------------------------------------------------------------------------------------------


@cli.command("status")
@click.pass_obj
def status_command(app: AppContext) -> None:
    """Sources, editions, deliveries, subscribers and the job schedule at a glance."""
    from newsletter.errors import JobError
    from newsletter.jobs import load_jobs
    from newsletter.status import collect

    settings = app.settings
    db = open_db(settings, create=False)
    try:
        data = collect(db)
    finally:
        db.close()
    console.print(
        f"[bold]{escape(settings.name)}[/] · database {escape(str(settings.database))} · {data['papers']} papers"
    )
    table = Table(title="sources", show_edge=False, pad_edge=False, title_justify="left")
    for column in ("source", "status", "last success", "error"):
        table.add_column(column)
    for source in data["sources"]:
        table.add_row(
            source["name"], source["status"] or "", (source["last_success_at"] or "never")[:16].replace("T", " "),
            escape(source["error"] or ""),
        )  # fmt: skip
    console.print(table)
    table = Table(title="editions", show_edge=False, pad_edge=False, title_justify="left")
    for column in ("#", "kind", "status", "created", "papers", "sent", "failed", "pending", "not sent"):
        table.add_column(column)
    for edition in data["editions"]:
        counts = data["deliveries"][edition["id"]]
        table.add_row(
            str(edition["id"]), edition["kind"], edition["status"], edition["created_at"][:16].replace("T", " "),
            str(edition["papers"]), *(str(counts[heading]) for heading in ("sent", "failed", "pending", "not_sent")),
        )  # fmt: skip
    console.print(table)
    subscribers_by_status = ", ".join(f"{data['subscribers'].get(s, 0)} {s}" for s in STATUSES)
    console.print(f"subscribers: {subscribers_by_status}")
    try:
        defined = load_jobs(settings.jobs_dir, settings.timezone)
    except JobError as exc:
        console.print(f"[red]jobs: {escape(str(exc))}[/]")
        return
    console.print(schedule_table(defined, data["runs"], title="schedule"))


@cli.command("doctor")
@click.pass_obj
def doctor_command(app: AppContext) -> None:
    """Check the configuration: database, SMTP (EHLO, STARTTLS, AUTH), links, templates, jobs."""
    from newsletter.doctor import doctor

    diagnosis = doctor(app.settings)
    for check in diagnosis.checks:
        mark = (
            "[green]ok[/]"
            if check.ok and not check.warning
            else "[yellow]warning[/]"
            if check.ok
            else "[red]FAILED[/]"
        )
        console.print(f"{mark:>20} {check.name}: {escape(check.detail)}", soft_wrap=True)
    if not diagnosis.ok:
        fail("some checks failed")


@cli.command("backup")
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def backup_command(app: AppContext, target: Path) -> None:
    """Copy the live database to TARGET (consistent while the scheduler and web app keep running)."""
    from newsletter.retention import backup

    try:
        pages = backup(app.settings.database, target)
    except DatabaseMissing:
        raise  # said as by every command that only reads
    except (FileExistsError, sqlite3.Error, OSError) as exc:
        fail(f"backup failed: {exc}", code=FAILURE)
    console.print(f"backed up {escape(str(app.settings.database))} to {escape(str(target))} ({pages} pages)")


@cli.command("admin-password")
def admin_password() -> None:
    """Ask for an admin password and print its hash for [web] admin_password_hash."""
    from newsletter.web.security import hash_password

    password = click.prompt("admin password", hide_input=True, confirmation_prompt=True)
    if len(password) < 10:
        fail("use at least 10 characters", code=USAGE)
    hashed = hash_password(password)
    err_console.print(escape("put this in newsletter.toml under [web], or in the environment:"))
    click.echo(f'admin_password_hash = "{hashed}"')
    click.echo(f"NEWSLETTER_WEB_ADMIN_PASSWORD_HASH='{hashed}'")


@cli.command("dev-smtp")
@click.option("--port", type=click.IntRange(1, 65535), default=2525, show_default=True)
@click.option(
    "--maildir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to store messages (default: [smtp] maildir).",
)
@click.pass_obj
def dev_smtp(app: AppContext, port: int, maildir: Path | None) -> None:
    """Run the embedded SMTP server on 127.0.0.1, storing what it receives in a Maildir."""
    target = maildir or app.settings.smtp.maildir
    prepare_maildir(target)  # now, so that a path that cannot hold a Maildir is said at start
    server = EmbeddedSMTPServer(target, port=port).start()
    console.print(
        f"SMTP on 127.0.0.1:{server.port}, storing messages in {escape(str(target))}; Ctrl-C stops it"
    )
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> None:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="newsletter", standalone_mode=True)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(INTERRUPTED)
