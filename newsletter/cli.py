"""The ``newsletter`` command line: a thin shell over the pipeline modules."""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import click
import sqlite_utils
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from newsletter import __version__, samples
from newsletter.cluster import EngineUnavailable
from newsletter.config import DEFAULT_CONFIG_NAME, ConfigError, Settings, load_settings, write_default_config
from newsletter.db import open_database
from newsletter.editions import Edition, EditionPaper, build_edition
from newsletter.fetch import Fetcher
from newsletter.ingest import SourceReport, run_ingest
from newsletter.sources import SourceConfig

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
if not console.is_terminal:  # logs and CI: do not squeeze tables into 80 columns
    console.width = max(console.width, 120)


class AppContext:
    def __init__(self, config_path: Path, database: Path | None) -> None:
        self.config_path = config_path
        self.database = database
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.config_path, database=self.database)
            except ConfigError as exc:
                fail(f"configuration error: {exc}", code=2)
        return self._settings

    def reload(self) -> Settings:
        self._settings = None
        return self.settings


def open_db(settings: Settings) -> sqlite_utils.Database:
    try:
        return open_database(settings.database)
    except (sqlite3.Error, OSError, RuntimeError) as exc:
        fail(f"cannot open the database {settings.database}: {exc}", code=2)
        raise  # unreachable: fail() exits


def fail(message: str, *, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise SystemExit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
@click.version_option(__version__, prog_name="newsletter")
@click.pass_context
def cli(ctx: click.Context, config_path: Path, database: Path | None, verbose: int) -> None:
    """A self-hosted research-paper newsletter: new papers from arXiv, Hugging Face and any feed."""
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = AppContext(config_path, database)


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

    Prints, per source: papers fetched, new, updated, duplicates and errors. Exits with status 1 when a
    source failed, naming it and the reason.
    """
    settings = app.settings
    try:
        sources = [settings.source_named(name) for name in names] if names else _enabled(settings)
    except ConfigError as exc:
        fail(str(exc), code=2)
    if not sources:
        fail("no enabled sources in the configuration", code=2)
    reports = _fetch(settings, sources)
    _print_reports(reports)
    failed = [r for r in reports if r.failed]
    if failed:
        fail(f"{len(failed)} of {len(reports)} sources failed: " + ", ".join(r.name for r in failed))


@cli.command()
@click.option("--offline", is_flag=True, help="Do not try the live sources; use the bundled sample feed.")
@click.pass_obj
def demo(app: AppContext, offline: bool) -> None:
    """Run the pipeline once on embedded defaults: init, fetch, build the digest edition.

    When no live source can be reached, says so and uses the sample feed shipped with the project, so the
    rest of the pipeline still has papers to work on.
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
    for column in ("fetched", "new", "updated", "duplicates", "errors"):
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
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write the edition as JSON ('-': stdout).",
)
@click.pass_obj
def digest_build(
    app: AppContext, since: str | None, until: str | None, topics: int | None, json_path: str | None
) -> None:
    """Create an edition from the papers first seen in the window and show its sections.

    DATE is YYYY-MM-DD (midnight UTC) or an ISO 8601 date and time. Every paper lands in exactly one
    section; small sections are gathered in a final "Other papers" section.
    """
    request = DigestRequest(
        since=_parse_when(since, "--since"), until=_parse_when(until, "--until"), topics=topics
    )
    edition = _build(app.settings, request)
    if json_path:
        text = json.dumps(edition.to_json(), ensure_ascii=False, indent=2)
        if json_path == "-":
            click.echo(text)
            return
        Path(json_path).write_text(text + "\n", encoding="utf-8")
    _print_edition(edition, papers_per_section=1)
    if json_path:
        console.print(f"wrote {escape(json_path)}")


@dataclass(frozen=True, slots=True)
class DigestRequest:
    since: datetime | None = None
    until: datetime | None = None
    topics: int | None = None


def _parse_when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{option} {value!r} is not a date (YYYY-MM-DD) or an ISO 8601 date and time", code=2)
        raise
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _build(settings: Settings, request: DigestRequest) -> Edition:
    digest_settings = settings.digest
    if request.topics:
        digest_settings = replace(digest_settings, topics=request.topics)
    db = open_db(settings)
    try:
        with err_console.status("clustering papers into topics", spinner="dots"):
            return build_edition(db, digest_settings, since=request.since, until=request.until)
    except EngineUnavailable as exc:
        fail(str(exc), code=2)
        raise
    except ValueError as exc:
        fail(str(exc), code=2)
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


def main(argv: Sequence[str] | None = None) -> None:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="newsletter", standalone_mode=True)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
