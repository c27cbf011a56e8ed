"""The configuration doctor: checks the configuration, the database, the SMTP server (EHLO, STARTTLS,
AUTH), the links in emails, the templates and the jobs, and says what passed, what failed and what
deserves attention."""

from __future__ import annotations

import smtplib
import sqlite3
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from newsletter.config import DEFAULT_CONFIG_NAME
from newsletter.db import journal_mode, open_database, prove_writable, schema_version
from newsletter.editions import Edition, EditionPaper, Section
from newsletter.errors import DatabaseMissing, JobError
from newsletter.jobs import load_jobs
from newsletter.message import DigestTemplate, MessageTemplate
from newsletter.outbox import renderer, smtp_target
from newsletter.settings import Settings
from newsletter.smtp import connect, start_tls, tls_context


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
            prove_writable(db)
            version = schema_version(db)
            mode = journal_mode(db)
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
    smtp_settings = settings.smtp
    where = "the embedded server" if smtp_settings.embedded else f"{smtp_settings.host}:{smtp_settings.port}"
    steps: list[str] = []
    try:
        with smtp_target(settings) as target:
            context = tls_context(target)
            connection = connect(target, context)
            if target.tls:
                steps.append("TLS")
            try:
                code, banner = connection.ehlo()
                if code != 250:
                    raise smtplib.SMTPResponseException(code, banner)
                steps.append("EHLO")
                if target.starttls:
                    start_tls(connection, context)
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
    now = datetime.now(UTC)
    paper = EditionPaper(
        0, "arxiv:0000.00000", "A <sample> & paper", 1.0, "A summary.", ["A. Author"], "https://example.org"
    )
    edition = Edition(
        0, "digest", "built", now, now - timedelta(days=7), now, [Section("Sample", ["x"], [paper])], "tfidf"
    )
    try:
        render = renderer(settings)
        DigestTemplate(
            render.digest(edition, for_you=settings.digest.for_you), settings.sender, "https://example.org/"
        )
        for rendered in (
            render.one_off("Sample", "Some *text*."),
            render.confirmation(name="Sample", confirm_url="https://example.org/c", expires_in="7 days"),
        ):
            MessageTemplate(rendered, settings.sender)
    except Exception as exc:
        diagnosis.add("templates", False, f"{type(exc).__name__}: {exc}")
        return
    diagnosis.add("templates", True, "digest, one-off and confirmation emails compile")


def _check_jobs(settings: Settings, diagnosis: Diagnosis) -> None:
    try:
        jobs = load_jobs(settings.scheduler.jobs_dir, settings.timezone)
    except JobError as exc:
        diagnosis.add("jobs", False, str(exc))
        return
    enabled = [job.name for job in jobs if job.enabled]
    diagnosis.add(
        "jobs", True, f"{len(enabled)} scheduled jobs in {settings.scheduler.jobs_dir}: {', '.join(enabled)}"
    )
