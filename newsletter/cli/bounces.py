"""The ``bounces`` commands: read the bounce mailbox, and list what bounced or complained."""

from __future__ import annotations

import click

import newsletter.cli.show as show
from newsletter.bounce_fetch import fetch_bounces
from newsletter.bounces import list_bounces
from newsletter.cli.app import AppContext, parse_when
from newsletter.errors import FAILURE
from newsletter.models import BOUNCE_KINDS


@click.group()
def bounces() -> None:
    """Bounces and complaints that came back after a send."""


@bounces.command("list")
@click.option("--since", metavar="WHEN", help="Only those received since: a date, or a time ago (7d, 12h).")
@click.option("--kind", type=click.Choice(BOUNCE_KINDS), help="Only this kind.")
@click.option("--email", metavar="ADDRESS", help="Only those about this address.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.pass_obj
def bounces_list(app: AppContext, since: str | None, kind: str | None, email: str | None, limit: int) -> None:
    """Bounces, complaints and auto-replies taken, newest first, with what each one did."""
    moment = parse_when(since, "--since")
    with app.database(create=False) as db:
        found = list_bounces(db, since=moment, kind=kind, email=email, limit=limit)
    show.bounce_list(found, limit=limit)


@bounces.command("fetch")
@click.option("--limit", type=click.IntRange(min=1), help="Read at most this many messages.")
@click.pass_obj
def bounces_fetch(app: AppContext, limit: int | None) -> None:
    """Read the bounce mailbox ([bounces] host) once: each message taken as a hard or soft bounce, a
    complaint, an auto-reply or unknown, the policy applied, then the message marked on the server. The
    scheduler does the same every 15 minutes (jobs/bounces.toml)."""
    settings = app.settings
    with show.MailboxProgress() as progress:
        fetched = fetch_bounces(settings, limit=limit, progress=progress.update)
    show.bounce_fetch(fetched)
    if fetched.mailbox.failed:
        raise SystemExit(FAILURE)
