"""The ``newsletter`` command line: a thin shell over the package's services and table owners.

- ``__init__``: the command group, its global options, and the one handler that turns ordinary trouble
  into an ``error:`` line and its exit code (README, "Exit codes");
- ``app``: ``AppContext`` (settings loaded once, the database opened and closed for a command) and ``fail``;
- ``pipeline``: init, fetch, digest build, demo;
- ``sending``: digest preview, digest send, resume, send;
- ``subscribers``: the subscribers commands;
- ``library``: the library commands (a reader's papers, pending items and follows) and feedback;
- ``bounces``: reading the bounce mailbox, and the bounces taken;
- ``operate``: serve, run, jobs, status, doctor, backup, admin-password, dkim keygen, dev-smtp;
- ``show``: the consoles and everything the commands print (tables, progress, reports).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from newsletter import __version__, logs, trouble
from newsletter.cli import bounces, library, operate, pipeline, sending, subscribers
from newsletter.cli.app import AppContext, fail
from newsletter.cli.show import err_console
from newsletter.config import DEFAULT_CONFIG_NAME
from newsletter.errors import INTERRUPTED, MailboxError, ServeError, UsageError


class _Commands(click.Group):
    """Ordinary trouble in any command ends as one line and its exit code: what ``newsletter.trouble``
    explains (the database, the disk, a port), a request that cannot be done as asked (``UsageError``,
    exit 2), a web app that cannot start (``ServeError``) and a bounce mailbox that cannot be read
    (``MailboxError``). Anything else is a bug and keeps its
    traceback."""

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
            if explained is not None:
                fail(explained.message, code=explained.code)
            if isinstance(exc, UsageError | ServeError | MailboxError):
                fail(str(exc), code=exc.exit_code)
            raise


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


for command in (
    pipeline.init,
    pipeline.fetch,
    pipeline.digest,
    pipeline.demo,
    sending.resume,
    sending.send_one_off,
    subscribers.subscribers,
    library.library,
    library.feedback,
    bounces.bounces,
    operate.serve,
    operate.run_command,
    operate.jobs,
    operate.status_command,
    operate.doctor_command,
    operate.backup_command,
    operate.admin_password,
    operate.dkim,
    operate.dev_smtp,
):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="newsletter", standalone_mode=True)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(INTERRUPTED)
