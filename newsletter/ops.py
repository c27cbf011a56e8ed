"""Operations: retention, online backups, the status overview and the configuration doctor."""

from __future__ import annotations

import smtplib
import sqlite3
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlite_utils

from newsletter.config import DEFAULT_CONFIG_NAME
from newsletter.dates import iso
from newsletter.db import open_database, schema_version, write_transaction
from newsletter.errors import DatabaseMissing
from newsletter.ledger import delivery_summaries
from newsletter.settings import RetentionSettings, Settings
from newsletter.subscribers import delete_stale_signups

# --- retention --------------------------------------------------------------------------------------------------


def prune(
    db: sqlite_utils.Database, retention: RetentionSettings, *, now: datetime | None = None
) -> dict[str, int]:
    """Delete what is old and no longer needed; editions themselves are always kept.

    Papers never placed in an edition and not seen for ``papers_days`` go, with their keys. Delivery rows
    of editions finished more than ``deliveries_days`` ago go, and the edition is marked so that it can
    never be sent again (without its ledger, a second send could reach readers twice). Fetch and job run
    records older than ``runs_days`` go, and so do web sign-ups never confirmed while their link was valid.
    """
    moment = now or datetime.now(UTC)
    papers_before = iso(moment - timedelta(days=retention.papers_days))
    deliveries_before = iso(moment - timedelta(days=retention.deliveries_days))
    runs_before = iso(moment - timedelta(days=retention.runs_days))
    with write_transaction(db):
        old_papers = """
            SELECT id FROM papers WHERE last_seen_at < ?
            AND NOT EXISTS (SELECT 1 FROM edition_papers ep WHERE ep.paper_id = papers.id)
        """
        db.conn.execute(f"DELETE FROM paper_keys WHERE paper_id IN ({old_papers})", [papers_before])
        papers = db.conn.execute(f"DELETE FROM papers WHERE id IN ({old_papers})", [papers_before]).rowcount
        finished = """
            SELECT id FROM editions WHERE status = 'sent' AND created_at < ?
            AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.edition_id = editions.id AND d.updated_at >= ?)
        """
        db.conn.execute(
            f"UPDATE editions SET ledger_pruned = 1 WHERE id IN ({finished}) "
            "AND EXISTS (SELECT 1 FROM deliveries d WHERE d.edition_id = editions.id)",
            [deliveries_before, deliveries_before],
        )
        deliveries = db.conn.execute(
            "DELETE FROM deliveries WHERE edition_id IN (SELECT id FROM editions WHERE ledger_pruned = 1)"
        ).rowcount
        db.conn.execute(
            "DELETE FROM delivery_variants WHERE edition_id IN (SELECT id FROM editions WHERE ledger_pruned = 1)"
        )
        fetch_runs = db.conn.execute("DELETE FROM fetch_runs WHERE started_at < ?", [runs_before]).rowcount
        job_runs = db.conn.execute(
            "DELETE FROM job_runs WHERE started_at < ? AND status != 'running'", [runs_before]
        ).rowcount
        pending = delete_stale_signups(db, now=moment)
    return {
        "papers": papers,
        "deliveries": deliveries,
        "fetch_runs": fetch_runs,
        "job_runs": job_runs,
        "pending_signups": pending,
    }


# --- backup -----------------------------------------------------------------------------------------------------


def backup(database: Path, target: Path) -> int:
    """A consistent copy of the live database (SQLite's online backup: the app may keep writing), as it
    is: not migrated. A missing database raises DatabaseMissing, and nothing is created, not even it."""
    source = open_database(database, create=False, migrate=False)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            raise FileExistsError(f"{target} already exists")
        destination = sqlite3.connect(target)
        try:
            source.conn.backup(destination, pages=1024)
            pages = destination.execute("PRAGMA page_count").fetchone()[0]
        finally:
            destination.close()
    finally:
        source.close()
    return int(pages)


# --- status ---------------------------------------------------------------------------------------------------


def status(db: sqlite_utils.Database) -> dict[str, Any]:
    """Everything an operator looks at first, as plain data for the command line to print."""
    editions = [
        dict(zip(("id", "kind", "status", "created_at", "papers", "subject", "period"), row, strict=True))
        for row in db.execute(
            "SELECT id, kind, status, created_at, paper_count, subject, period FROM editions "
            "ORDER BY id DESC LIMIT 5"
        )
    ]
    return {
        "sources": [
            dict(zip(("name", "status", "last_success_at", "last_attempt_at", "error"), row, strict=True))
            for row in db.execute(
                "SELECT name, last_status, last_success_at, last_attempt_at, last_error FROM sources ORDER BY name"
            )
        ],
        "papers": db.execute("SELECT count(*) FROM papers").fetchone()[0],
        "editions": editions,
        "deliveries": delivery_summaries(db, [edition["id"] for edition in editions]),
        "subscribers": dict(
            db.execute("SELECT status, count(*) FROM subscribers GROUP BY status").fetchall()
        ),
        "runs": latest_job_runs(db),
    }


def latest_job_runs(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """The last run of each job: job, status, started_at, error."""
    return [
        dict(zip(("job", "status", "started_at", "error"), row, strict=True))
        for row in db.execute(
            "SELECT job, status, started_at, error FROM job_runs WHERE id IN "
            "(SELECT max(id) FROM job_runs GROUP BY job) ORDER BY job"
        )
    ]


# --- doctor ---------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    warning: bool = False  # passed, but something deserves attention


@dataclass(slots=True)
class Diagnosis:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def add(self, name: str, ok: bool, detail: str, *, warning: bool = False) -> None:
        self.checks.append(Check(name, ok, detail, warning))


def doctor(settings: Settings) -> Diagnosis:
    diagnosis = Diagnosis()
    _check_configuration(settings, diagnosis)
    _check_database(settings, diagnosis)
    _check_smtp(settings, diagnosis)
    _check_links(settings, diagnosis)
    _check_templates(settings, diagnosis)
    _check_jobs(settings, diagnosis)
    return diagnosis


def _check_configuration(settings: Settings, diagnosis: Diagnosis) -> None:
    variables = (
        f", with {', '.join(settings.environment)} from the environment" if settings.environment else ""
    )
    if settings.config_path is None:
        detail = f"the built-in defaults (no {DEFAULT_CONFIG_NAME} here){variables}"
        diagnosis.add("configuration", True, detail, warning=True)
    else:
        diagnosis.add("configuration", True, f"{settings.config_path.resolve()}{variables}")


def _check_database(settings: Settings, diagnosis: Diagnosis) -> None:
    try:
        db = open_database(settings.database, create=False)  # a check never creates what it checks
        try:
            with write_transaction(db):
                db.conn.execute("CREATE TABLE doctor_probe (x)")
                db.conn.execute("DROP TABLE doctor_probe")
            version = schema_version(db)
            mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            db.close()
    except DatabaseMissing:
        diagnosis.add(
            "database", False, f"there is no database at {settings.database}: run `newsletter init`"
        )
        return
    except (sqlite3.Error, OSError, RuntimeError) as exc:
        diagnosis.add("database", False, f"{settings.database}: {exc}")
        return
    diagnosis.add("database", True, f"{settings.database} is writable (schema {version}, {mode} journal)")


def _check_smtp(settings: Settings, diagnosis: Diagnosis) -> None:
    from newsletter.outbox import smtp_target

    smtp_settings = settings.smtp
    where = "the embedded server" if smtp_settings.embedded else f"{smtp_settings.host}:{smtp_settings.port}"
    steps: list[str] = []
    try:
        with smtp_target(settings) as target:
            context = ssl.create_default_context(cafile=target.ca_file or None)
            connection: smtplib.SMTP
            if target.tls:
                connection = smtplib.SMTP_SSL(
                    target.host, target.port, timeout=target.timeout, context=context
                )
                steps.append("TLS")
            else:
                connection = smtplib.SMTP(target.host, target.port, timeout=target.timeout)
            try:
                code, banner = connection.ehlo()
                if code != 250:
                    raise smtplib.SMTPResponseException(code, banner)
                steps.append("EHLO")
                if target.starttls:
                    connection.starttls(context=context)
                    connection.ehlo()
                    steps.append("STARTTLS")
                elif not target.tls and not smtp_settings.embedded and connection.has_extn("starttls"):
                    diagnosis.add(
                        "smtp-tls", True, "the server offers STARTTLS but starttls = false", warning=True
                    )
                if target.username:
                    connection.login(target.username, target.password)
                    steps.append(f"AUTH as {target.username}")
                size = connection.esmtp_features.get("size")
            finally:
                connection.close()
    except smtplib.SMTPAuthenticationError as exc:
        diagnosis.add("smtp", False, f"{where}: {' → '.join(steps)} then login refused ({exc.smtp_code})")
        return
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        done = " → ".join(steps) or "connect"
        diagnosis.add("smtp", False, f"{where}: failed after {done}: {exc}")
        return
    detail = f"{where}: {' → '.join(steps)} ok"
    if size:
        detail += f" (messages up to {int(size) / 1e6:.0f} MB)"
    diagnosis.add("smtp", True, detail)


def _check_links(settings: Settings, diagnosis: Diagnosis) -> None:
    url = settings.web.base_url
    host = urlsplit(url).hostname or ""
    local = host in ("localhost", "127.0.0.1", "::1") or host.endswith(".localhost")
    if local:
        diagnosis.add(
            "links",
            True,
            f"base_url {url} only works on this machine: set [web] base_url to the public address",
            warning=True,
        )
    elif url.startswith("http://"):
        diagnosis.add(
            "links", True, f"base_url {url} is not HTTPS: links carry tokens in clear", warning=True
        )
    else:
        diagnosis.add("links", True, f"links in emails point to {url}")
    if not settings.web.admin_password_hash:
        diagnosis.add(
            "admin", True, "no admin password: /admin is closed (newsletter admin-password)", warning=True
        )


def _check_templates(settings: Settings, diagnosis: Diagnosis) -> None:
    from newsletter.editions import Edition, EditionPaper, Section
    from newsletter.message import MessageTemplate
    from newsletter.outbox import renderer

    now = datetime.now(UTC)
    paper = EditionPaper(
        0, "arxiv:0000.00000", "A <sample> & paper", 1.0, "A summary.", ["A. Author"], "https://example.org"
    )
    edition = Edition(
        0, "digest", "built", now, now - timedelta(days=7), now, [Section("Sample", ["x"], [paper])], "tfidf"
    )
    try:
        render = renderer(settings)
        for rendered in (
            render.digest(edition),
            render.one_off("Sample", "Some *text*."),
            render.confirmation(name="Sample", confirm_url="https://example.org/c", expires_in="7 days"),
        ):
            MessageTemplate(rendered, settings.sender)
    except Exception as exc:
        diagnosis.add("templates", False, f"{type(exc).__name__}: {exc}")
        return
    diagnosis.add("templates", True, "digest, one-off and confirmation emails compile")


def _check_jobs(settings: Settings, diagnosis: Diagnosis) -> None:
    from newsletter.errors import JobError
    from newsletter.jobs import load_jobs

    try:
        jobs = load_jobs(settings.jobs_dir, settings.timezone)
    except JobError as exc:
        diagnosis.add("jobs", False, str(exc))
        return
    enabled = [job.name for job in jobs if job.enabled]
    diagnosis.add("jobs", True, f"{len(enabled)} scheduled jobs in {settings.jobs_dir}: {', '.join(enabled)}")
