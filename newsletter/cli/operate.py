"""Running and looking after an installation: ``serve``, ``run``, ``jobs``, ``status``, ``doctor``,
``backup``, ``admin-password``, ``dkim keygen`` and ``dev-smtp``."""

from __future__ import annotations

import logging
import signal
import sqlite3
import threading
from pathlib import Path

import click
from rich.markup import escape

import newsletter.cli.show as show
from newsletter.cli.app import AppContext, fail
from newsletter.cli.show import console, err_console
from newsletter.devsmtp import EmbeddedSMTPServer, prepare_maildir
from newsletter.dkim_sign import KINDS, generate_key, write_key
from newsletter.doctor import doctor
from newsletter.errors import FAILURE, USAGE, DatabaseMissing, JobError
from newsletter.jobs import Job, JobRunner, idle_reason, load_jobs
from newsletter.retention import backup
from newsletter.runs import latest_job_runs
from newsletter.scheduler import Scheduler
from newsletter.settings import Settings
from newsletter.status import collect
from newsletter.web import listen_for
from newsletter.web import serve as serve_web
from newsletter.web.security import hash_password

# What an admin password must at least be.
MIN_PASSWORD_LENGTH = 10


@click.command()
@click.option("--host", help="Interface to listen on (default: [web] host).")
@click.option("--port", type=int, help="Port (default: [web] port).")
@click.pass_obj
def serve(app: AppContext, host: str | None, port: int | None) -> None:
    """Run the web app: unsubscribe pages and the archive of editions."""
    _check_port(port)
    settings = app.settings
    _log_events(app)
    serve_web(settings, host=host, port=port)


def _check_port(port: int | None) -> None:
    if port is not None and not 1 <= port <= 65535:
        fail(f"--port must be a number from 1 to 65535, not {port}", code=USAGE)


def _log_events(app: AppContext) -> None:
    """Long-running commands log every event (INFO) unless asked for more."""
    if app.verbosity == 0:
        logging.getLogger().setLevel(logging.INFO)


@click.command("run")
@click.option("--no-web", is_flag=True, help="Only the scheduler, without the web app.")
@click.option("--host", help="Web app interface (default: [web] host).")
@click.option("--port", type=int, help="Web app port (default: [web] port).")
@click.pass_obj
def run_command(app: AppContext, no_web: bool, host: str | None, port: int | None) -> None:
    """Run the scheduled jobs of jobs/ (and the web app): fetch, digests, retries, cleanup.

    Stops cleanly on SIGTERM or Ctrl-C: a send in progress finishes the message in hand and the rest
    is sent by the next run.
    """
    _check_port(port)
    settings = app.settings
    _log_events(app)
    _run_scheduler(settings, web=not no_web, host=host, port=port)


def _run_scheduler(settings: Settings, *, web: bool, host: str | None, port: int | None) -> None:
    """The long-running process: the scheduler, and the web app unless ``web`` is False. The web app's
    address is bound before any job starts, so a taken port stops here with ServeError."""
    listener = listen_for(settings, host=host, port=port) if web else None
    try:
        scheduler = Scheduler(settings)
        scheduler.start()
    except BaseException:
        if listener is not None:
            listener.close()
        raise
    try:
        if listener is not None:
            serve_web(settings, listener=listener)  # returns once SIGTERM or Ctrl-C has shut it down
        else:
            scheduler.wait_for_signal()
    finally:
        scheduler.stop()


# --- jobs -----------------------------------------------------------------------------------------------------


@click.group()
def jobs() -> None:
    """The scheduled jobs defined in jobs/."""


@jobs.command("list")
@click.pass_obj
def jobs_list(app: AppContext) -> None:
    """Each job with its schedule, next run and last run."""
    settings = app.settings
    defined = load_jobs(settings.scheduler.jobs_dir, settings.timezone)
    with app.database(create=False) as db:
        runs = latest_job_runs(db)
    show.schedule(defined, runs, source=settings.scheduler.jobs_dir, idle=_idle(defined, settings))


@jobs.command("run")
@click.argument("name")
@click.pass_obj
def jobs_run(app: AppContext, name: str) -> None:
    """Run one job now (recorded like a scheduled run; one instance at a time)."""
    settings = app.settings
    defined = {job.name: job for job in load_jobs(settings.scheduler.jobs_dir, settings.timezone)}
    if name not in defined:
        fail(f"no job named {name!r} (defined: {', '.join(defined)})", code=USAGE)
    interrupt = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: interrupt.set())
    try:
        run = JobRunner(settings, interrupt).run(defined[name])
    finally:
        signal.signal(signal.SIGTERM, previous)
    show.job_run(name, defined[name].action, run)
    if run.status not in ("ok", "skipped"):
        raise SystemExit(FAILURE)


# --- looking after it -----------------------------------------------------------------------------------------


@click.command("status")
@click.pass_obj
def status_command(app: AppContext) -> None:
    """Sources, editions, deliveries, subscribers and the job schedule at a glance."""
    settings = app.settings
    with app.database(create=False) as db:
        data = collect(db)
    show.status(settings.name, settings.database, data)
    try:
        defined = load_jobs(settings.scheduler.jobs_dir, settings.timezone)
    except JobError as exc:
        show.jobs_unreadable(str(exc))
        return
    show.schedule(defined, data["runs"], title="schedule", idle=_idle(defined, settings))


def _idle(defined: list[Job], settings: Settings) -> dict[str, str]:
    return {job.name: reason for job in defined if job.enabled and (reason := idle_reason(job, settings))}


@click.command("doctor")
@click.option("--dns-server", metavar="HOST:PORT",
              help="Ask this DNS server (split-horizon, or the domain's authoritative one) instead of the system's.")  # fmt: skip
@click.pass_obj
def doctor_command(app: AppContext, dns_server: str | None) -> None:
    """Check the configuration: database, SMTP (EHLO, STARTTLS, AUTH), DKIM, DNS (SPF, DKIM, DMARC), links,
    templates, jobs."""
    diagnosis = doctor(app.settings, dns_server=dns_server)
    show.diagnosis(diagnosis)
    if not diagnosis.ok:
        fail("some checks failed")


@click.command("backup")
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def backup_command(app: AppContext, target: Path) -> None:
    """Copy the live database to TARGET (consistent while the scheduler and web app keep running)."""
    try:
        pages = backup(app.settings.database, target)
    except DatabaseMissing:
        raise  # said as by every command that only reads
    except (FileExistsError, sqlite3.Error, OSError) as exc:
        fail(f"backup failed: {exc}", code=FAILURE)
    console.print(f"backed up {escape(str(app.settings.database))} to {escape(str(target))} ({pages} pages)")


@click.command("admin-password")
def admin_password() -> None:
    """Ask for an admin password and print its hash for [web] admin_password_hash."""
    password = click.prompt("admin password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD_LENGTH:
        fail(f"use at least {MIN_PASSWORD_LENGTH} characters", code=USAGE)
    hashed = hash_password(password)
    err_console.print(escape("put this in newsletter.toml under [web], or in the environment:"))
    click.echo(f'admin_password_hash = "{hashed}"')
    click.echo(f"NEWSLETTER_WEB_ADMIN_PASSWORD_HASH='{hashed}'")


@click.group("dkim")
def dkim() -> None:
    """DKIM signing of every message ([dkim])."""


@dkim.command("keygen")
@click.option("--kind", type=click.Choice(KINDS), default="rsa", show_default=True,
              help="rsa (2048 bits, verified everywhere) or ed25519 (RFC 8463).")  # fmt: skip
@click.option("--selector", help="The record's selector (default: [dkim] selector).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the private key (default: [dkim] private_key_file).")  # fmt: skip
@click.option("--force", is_flag=True, help="Replace an existing key file.")
@click.pass_obj
def dkim_keygen(app: AppContext, kind: str, selector: str | None, out: Path | None, force: bool) -> None:
    """Write a new private key (readable by its owner only) and print the DNS record to publish."""
    settings = app.settings.dkim
    target = out or settings.private_key_file
    if target is None:
        fail("where should the key go? set [dkim] private_key_file, or give --out", code=USAGE)
    key = generate_key(kind)
    write_key(key, target, force=force)
    show.dkim_record(
        key,
        target,
        selector or settings.selector,
        settings.domain or app.settings.sender.domain,
        configured=settings.domain is not None and (selector is None or selector == settings.selector),
    )


@click.command("dev-smtp")
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
