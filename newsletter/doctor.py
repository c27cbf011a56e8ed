"""The configuration doctor: checks the configuration, the database, the SMTP server (EHLO, STARTTLS,
AUTH), the DKIM key, what DNS publishes for the sending domains (SPF, DKIM, DMARC), the links in emails,
the templates and the jobs, and says what passed, what failed and what deserves attention."""

from __future__ import annotations

import smtplib
import sqlite3
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from newsletter.config import DEFAULT_CONFIG_NAME
from newsletter.db import journal_mode, open_database, prove_writable, schema_version
from newsletter.dkim_sign import Signer
from newsletter.dns_checks import (
    DnsUnreachable,
    Lookups,
    check_dkim_record,
    check_dmarc,
    check_spf,
    resolver,
)
from newsletter.editions import Edition, EditionPaper, Section
from newsletter.errors import DatabaseMissing, DkimKeyError, JobError, MailboxError
from newsletter.jobs import load_jobs
from newsletter.mailbox import read_mailbox
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


# Names reserved for examples and tests (RFC 2606, RFC 6761): no public DNS holds records for them.
RESERVED_DOMAINS = ("example", "test", "invalid", "localhost", "localdomain", "example.com", "example.net",
                    "example.org", "local")  # fmt: skip


def doctor(settings: Settings, *, dns_server: str | None = None) -> Diagnosis:
    """``dns_server``: ask this DNS server ("HOST:PORT") instead of the system's resolver."""
    diagnosis = Diagnosis()
    _check_configuration(settings, diagnosis)
    _check_database(settings, diagnosis)
    _check_smtp(settings, diagnosis)
    _check_bounce_mailbox(settings, diagnosis)
    diagnosis.checks += sending_domains(settings, dns_server=dns_server).checks
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


def _check_bounce_mailbox(settings: Settings, diagnosis: Diagnosis) -> None:
    """Log in and count what waits, touching nothing (no message is read or marked)."""
    bounces = settings.bounces
    if not bounces.host:
        if bounces.address:
            detail = f"bounces go to {bounces.address}, but no mailbox is read ([bounces] host): they pile up unread"
            diagnosis.add("bounce mailbox", True, detail, warning=True)
        return
    where = f"{bounces.protocol} {bounces.host}:{bounces.port} ({bounces.security})"
    try:
        run = read_mailbox(bounces, lambda _raw: None, limit=0, timeout=10)
    except MailboxError as exc:
        diagnosis.add("bounce mailbox", False, str(exc))
        return
    waiting = f"{run.found} message{'s' if run.found != 1 else ''} waiting"
    diagnosis.add(
        "bounce mailbox", True, f"{where}: logged in as {bounces.username}, {bounces.folder}: {waiting}"
    )


def sending_domains(settings: Settings, *, dns_server: str | None = None) -> Diagnosis:
    """The DKIM key, then what DNS publishes for the domains mail is sent as: SPF, DKIM, DMARC."""
    diagnosis = Diagnosis()
    signer = _check_dkim_key(settings, diagnosis)
    _check_dns(settings, diagnosis, signer, dns_server)
    return diagnosis


def _check_dkim_key(settings: Settings, diagnosis: Diagnosis) -> Signer | None:
    dkim = settings.dkim
    if dkim.domain is None:
        if not settings.smtp.embedded:
            diagnosis.add(
                "dkim",
                True,
                "messages are not signed: `newsletter dkim keygen`, then [dkim] domain and private_key_file",
                warning=True,
            )
        return None
    try:
        signer = Signer.from_settings(dkim)
    except DkimKeyError as exc:
        diagnosis.add("dkim", False, str(exc))
        return None
    assert signer is not None
    diagnosis.add(
        "dkim",
        True,
        f"signing as d={dkim.domain} s={dkim.selector} ({signer.key.algorithm}, {dkim.private_key_file})",
    )
    return signer


def envelope_domain(settings: Settings) -> str:
    """The domain of the envelope sender, which SPF is about: the bounce address's, else the From's."""
    address = settings.bounces.address or settings.sender.envelope_from
    return address.rsplit("@", 1)[-1].lower()


def _reserved(domain: str) -> bool:
    return any(domain == name or domain.endswith(f".{name}") for name in RESERVED_DOMAINS)


def _check_dns(
    settings: Settings, diagnosis: Diagnosis, signer: Signer | None, dns_server: str | None
) -> None:
    """SPF of the envelope domain, the DKIM record, DMARC of the From domain: each one line."""
    from_domain = settings.sender.domain.lower()
    envelope = envelope_domain(settings)
    if dns_server is None:
        # Without a server named, the system's resolver is asked: about real domains of a real sender only.
        if settings.smtp.embedded:
            diagnosis.add("dns", True, "not checked: the embedded server delivers nowhere", warning=True)
            return
        reserved = sorted({domain for domain in (from_domain, envelope) if _reserved(domain)})
        if reserved:
            diagnosis.add(
                "dns",
                True,
                f"not checked: {', '.join(reserved)} is reserved for examples and has no public records",
                warning=True,
            )
            return
    try:
        lookups = Lookups(resolver(dns_server))
    except ValueError as exc:
        diagnosis.add("dns", False, str(exc))
        return
    try:
        spf = check_spf(lookups, envelope, settings.smtp.host)
        findings = [spf]
        if signer is not None:
            findings.append(check_dkim_record(lookups, signer.selector, signer.domain, signer.key))
        spf_passes = None if spf.warning else spf.ok
        findings.append(check_dmarc(lookups, from_domain, settings.dkim.domain, envelope, spf_passes))
    except DnsUnreachable as exc:
        diagnosis.add("dns", False, f"{exc}: SPF, DKIM and DMARC records not checked")
        return
    for finding in findings:
        diagnosis.add(finding.name, finding.ok, finding.detail, warning=finding.warning)


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
