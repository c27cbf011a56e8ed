"""The pipeline's commands: ``init``, ``fetch``, ``digest build`` and ``demo``, which runs them all once and
sends the result (the sending commands are in ``cli/sending.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import click
from rich.markup import escape

import newsletter.cli.show as show
from newsletter import outbox, samples, trouble
from newsletter.cli.app import AppContext, check_frequency, check_output, fail, parse_when, write_json
from newsletter.cli.library import digest_for
from newsletter.cli.sending import digest_preview, digest_send, exit_unless_complete, send_and_report
from newsletter.cli.show import console
from newsletter.compose import build_edition
from newsletter.default_config import write_default_config
from newsletter.editions import Edition
from newsletter.errors import USAGE
from newsletter.fetch import Fetcher
from newsletter.ingest import SourceReport, run_ingest
from newsletter.preferences import FREQUENCIES
from newsletter.settings import Settings, SourceConfig
from newsletter.store import common_categories, paper_count
from newsletter.subscribers import add_subscriber, count_subscribers

# How many of the commonest categories the demo names after fetching.
SUMMARY_CATEGORIES = 8


@click.command()
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
    with app.database():
        pass  # opening it creates it, with the current schema
    console.print(f"database [bold]{escape(str(settings.database))}[/] is ready")
    return settings


@click.command()
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
    # dict.fromkeys: a source named twice is fetched once, in the order first given
    sources = [settings.source_named(name) for name in dict.fromkeys(names)] if names else _enabled(settings)
    if not sources:
        fail("no enabled sources in the configuration", code=USAGE)
    reports = _fetch(app, sources)
    show.fetch_reports(reports)
    failed = [r for r in reports if r.failed]
    if failed:
        fail(f"{len(failed)} of {len(reports)} sources failed: " + ", ".join(r.name for r in failed))


def _enabled(settings: Settings) -> list[SourceConfig]:
    return [source for source in settings.sources if source.enabled]


def _fetch(app: AppContext, sources: Sequence[SourceConfig]) -> list[SourceReport]:
    settings = app.settings
    with app.database() as db, Fetcher(settings.fetch) as fetcher, show.FetchProgress() as progress:
        return run_ingest(db, sources, fetcher, workers=settings.fetch.workers, progress=progress)


# --- digests --------------------------------------------------------------------------------------------------


@click.group()
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
    check_frequency(app.settings, frequency)
    if json_path and json_path != "-":
        check_output(json_path, "--json")
    request = DigestRequest(
        since=parse_when(since, "--since"),
        until=parse_when(until, "--until"),
        topics=topics,
        frequency=frequency,
    )
    edition = _build(app, request)
    if json_path:
        try:
            write_json(edition.to_json(), json_path)
        except OSError as exc:
            explained = trouble.explain(exc)
            reason = explained.message if explained else str(exc)
            fail(f"edition {edition.id} is stored, but {json_path} could not be written: {reason}")
        if json_path == "-":
            return
    show.edition(edition, papers_per_section=1)
    if json_path:
        console.print(f"wrote {escape(json_path)}")


digest.add_command(digest_preview)
digest.add_command(digest_send)
digest.add_command(digest_for)


@dataclass(frozen=True, slots=True)
class DigestRequest:
    since: datetime | None = None
    until: datetime | None = None
    topics: int | None = None
    frequency: str = "weekly"


def _build(app: AppContext, request: DigestRequest) -> Edition:
    digest_settings = app.settings.digest
    if request.topics:
        digest_settings = replace(digest_settings, topics=request.topics)
    with app.database() as db:
        try:
            with show.clustering():
                return build_edition(
                    db, digest_settings, since=request.since, until=request.until, frequency=request.frequency
                )
        except ValueError as exc:  # a window that ends before it starts, an unknown frequency
            fail(str(exc), code=USAGE)


# --- the demo -------------------------------------------------------------------------------------------------


@click.command()
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
        reports = _fetch(app, live) if live else []
        show.fetch_reports(reports)
    if not any(not r.failed for r in reports):
        if offline:
            why = "--offline"
        elif all(r.unreachable for r in reports):
            why = "no live source could be reached"
        else:
            why = "no live source could be fetched"
        console.print(f"[yellow]{why}: using the sample feed bundled with the project (fictional papers)[/]")
        sample_reports = _fetch(app, samples.sample_sources())
        show.fetch_reports(sample_reports)
        reports += sample_reports
    with app.database() as db:
        total, categories = paper_count(db), common_categories(db, limit=SUMMARY_CATEGORIES)
    show.stored_papers(settings.database, total, reports, categories)
    edition = _build(app, DigestRequest())
    show.edition(edition, papers_per_section=2)
    if not edition.sections:
        console.print("nothing new to send.")
        return
    _demo_subscribers(app)
    report = send_and_report(settings, edition.id)
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


def _demo_subscribers(app: AppContext) -> None:
    with app.database() as db:
        if count_subscribers(db):
            return
        for email, name in DEMO_READERS:
            add_subscriber(db, email, name, source="demo")
    console.print(f"added {len(DEMO_READERS)} sample subscribers (example.org addresses)")
