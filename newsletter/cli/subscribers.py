"""The ``subscribers`` commands: add, import, export, confirm, unsubscribe, remove and list."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import click
import sqlite_utils
from rich.markup import escape

import newsletter.cli.show as show
from newsletter import trouble
from newsletter.cli.app import AppContext, check_frequency, check_output, fail
from newsletter.cli.show import console, err_console
from newsletter.erasure import forget_subscriber
from newsletter.errors import FAILURE, USAGE
from newsletter.library import export_jsonl
from newsletter.preferences import FREQUENCIES, Preferences, parse_list
from newsletter.subscribers import (
    STATUSES,
    Subscriber,
    add_subscriber,
    confirm,
    count_subscribers,
    export_csv,
    find_subscriber,
    import_csv,
    lift_suppression,
    list_subscribers,
    set_status,
)


@click.group()
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
    check_frequency(app.settings, frequency)
    with app.database() as db:
        preferences = Preferences.create(parse_list(categories), parse_list(keywords), frequency)
        result = add_subscriber(db, email, name, source="cli", preferences=preferences)
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
    with app.database() as db:
        before = count_subscribers(db)
        try:
            report = import_csv(db, csv_path)
        except (sqlite3.Error, OSError) as exc:
            # Rows are written in batches, each committed on its own: say how far it got. Importing the same
            # file again skips the addresses already imported, so a re-run finishes the job.
            explained = trouble.explain(exc, database=app.settings.database)
            if explained is None:
                raise
            committed = count_subscribers(db) - before
            remedy = explained.remedy or "fix that and run the command again"
            fail(
                f"the import stopped: {explained.cause}; {committed} new subscribers were committed and are "
                f"kept, the rest of {csv_path} was not imported: {remedy} (the same import again skips the "
                "addresses already imported)",
                code=explained.code,
            )
    show.import_report(report)
    if report.rejected:
        raise SystemExit(FAILURE)


@subscribers.command("export")
@click.argument(
    "out_path", metavar="[FILE.csv]", default="-", type=click.Path(dir_okay=False, allow_dash=True)
)
@click.option("--status", type=click.Choice(STATUSES), help="Only this status.")
@click.option(
    "--library",
    "library_path",
    metavar="FILE.jsonl",
    type=click.Path(dir_okay=False),
    help="Also write what each of them taught (liked, hidden and library papers, pending items), one JSON "
    "line per reader.",
)
@click.pass_obj
def subscribers_export(app: AppContext, out_path: str, status: str | None, library_path: str | None) -> None:
    """Write subscribers as CSV (status, preferences, followed authors, excluded keywords and timestamps
    included) to FILE.csv, or to standard output when it is '-' or left out."""
    if out_path != "-":
        check_output(out_path, "FILE.csv")
    if library_path:
        check_output(library_path, "--library")
    with app.database(create=False) as db:
        if out_path == "-":
            count = export_csv(db, sys.stdout, status=status)
        else:
            with open(out_path, "w", encoding="utf-8", newline="") as out:
                count = export_csv(db, out, status=status)
        if library_path:
            with open(library_path, "w", encoding="utf-8") as out:
                readers = export_jsonl(db, out, status=status)
    err_console.print(f"exported {count} subscribers")
    if library_path:
        err_console.print(f"exported what {readers} of them taught to {escape(library_path)}")


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


@subscribers.command("unsuppress")
@click.argument("email")
@click.pass_obj
def subscribers_unsuppress(app: AppContext, email: str) -> None:
    """Mail an address again after a bounce or complaint suppressed it: a bounced reader becomes active,
    an unsubscribed one may sign up again."""
    with app.database() as db:
        reason = lift_suppression(db, email)
        subscriber = find_subscriber(db, email)
    if reason is None:
        fail(f"{email} is not suppressed", code=USAGE)
    status = f"; {subscriber.status}" if subscriber else ""
    console.print(f"{escape(email)}: no longer suppressed (was: {escape(reason)}){status}")


@subscribers.command("remove")
@click.argument("email")
@click.pass_obj
def subscribers_remove(app: AppContext, email: str) -> None:
    """Delete a subscriber, their delivery records and everything they taught (a deletion request)."""
    with app.database() as db:
        subscriber = _listed(db, email)
        forget_subscriber(db, subscriber.id)
    console.print(f"removed {escape(subscriber.email)}")


Change = Callable[[sqlite_utils.Database, Subscriber], Subscriber | None]


def _change_status(app: AppContext, email: str, change: Change) -> None:
    with app.database() as db:
        updated = change(db, _listed(db, email))
    assert updated is not None  # None only if another process removed it since it was found
    console.print(f"{escape(updated.email)}: {updated.status}")


def _listed(db: sqlite_utils.Database, email: str) -> Subscriber:
    subscriber = find_subscriber(db, email)
    if subscriber is None:
        fail(f"{email} is not on the list", code=USAGE)
    return subscriber


@subscribers.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only this status.")
@click.option("--search", metavar="TEXT", help="Only addresses or names containing TEXT.")
@click.pass_obj
def subscribers_list(app: AppContext, status: str | None, search: str | None) -> None:
    """List subscribers."""
    with app.database(create=False) as db:
        found = list(list_subscribers(db, status=status, search=search))
    show.subscriber_list(found)
