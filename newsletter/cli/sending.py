"""The commands that send: ``digest preview`` and ``digest send`` (added to the ``digest`` group by
``cli/pipeline.py``), ``resume`` and the one-off ``send``. Every send goes through the outbox's ledger."""

from __future__ import annotations

import smtplib
import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape

import newsletter.cli.show as show
from newsletter import outbox, trouble
from newsletter.cli.app import AppContext, check_output, fail
from newsletter.cli.show import console
from newsletter.errors import FAILURE, INTERRUPTED, USAGE, SendError, SendInProgress, ServerUnavailable
from newsletter.settings import Settings

if TYPE_CHECKING:
    from newsletter.deliver import DeliveryReport


@click.command("preview")
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
    html = outbox.preview_html(app.settings, edition_id, address)
    out = out_path or app.settings.database.parent / f"preview-edition-{edition_id}.html"
    out.write_text(html, encoding="utf-8")
    size = len(html.encode())
    console.print(f"wrote {escape(str(out))} ({size / 1000:.1f} KB of HTML; Gmail clips above 102 KB)")
    if open_browser:
        webbrowser.open(out.resolve().as_uri())


@click.command("send")
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
    report = send_and_report(app.settings, edition_id)
    exit_unless_complete(report)


@click.command("resume")
@click.argument("edition_id", metavar="EDITION", type=int)
@click.option(
    "--resend-unknown",
    is_flag=True,
    help="Also send the messages that were in flight at a crash (some readers may get two copies).",
)
@click.pass_obj
def resume(app: AppContext, edition_id: int, resend_unknown: bool) -> None:
    """Finish an interrupted send of EDITION: only what was not delivered goes out."""
    report = send_and_report(app.settings, edition_id, resend_unknown=resend_unknown)
    exit_unless_complete(report)


@click.command("send")
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
        body = body_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        fail(str(exc), code=USAGE)
    edition_id = outbox.create_one_off(app.settings, subject, body, segment)
    console.print(f"message stored as edition {edition_id}")
    report = send_and_report(app.settings, edition_id)
    exit_unless_complete(report)


def send_and_report(settings: Settings, edition_id: int, *, resend_unknown: bool = False) -> DeliveryReport:
    """Send (or go on sending) an edition through the ledger, with a progress bar, and say what it did."""
    with show.SendProgress(edition_id) as advance:
        try:
            report = outbox.send_edition(
                settings, edition_id, progress=advance, resend_unknown=resend_unknown
            )
        except SendInProgress as exc:
            fail(f"{exc}; wait for it to finish", code=FAILURE)
    show.delivery(report)
    return report


def exit_unless_complete(report: DeliveryReport) -> None:
    """A send that left work to do exits 1, or 130 when Ctrl-C stopped it (the rest stays queued)."""
    if report.stopped == "interrupted":
        raise SystemExit(INTERRUPTED)
    if not report.complete:
        raise SystemExit(FAILURE)
