"""The settings, as frozen values: what ``newsletter.config`` reads from the file and the environment.

A leaf module: it imports nothing of the package but the errors, so that anything may take its settings
without loading what uses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path

from newsletter import __version__
from newsletter.errors import ConfigError

DEFAULT_USER_AGENT = f"newsletter/{__version__} (self-hosted research-paper digest)"


@dataclass(frozen=True, slots=True)
class FetchSettings:
    timeout: float = 30.0  # seconds for each connect / read / write
    deadline: float = 120.0  # seconds for a whole request, however slowly the bytes trickle in
    attempts: int = 3  # tries per request, the first included
    backoff: float = 2.0  # seconds before the first retry, doubled for each further one
    max_backoff: float = 120.0
    max_bytes: int = 50_000_000
    user_agent: str = DEFAULT_USER_AGENT


@dataclass(frozen=True, slots=True)
class SourceConfig:
    name: str
    kind: str
    url: str
    categories: tuple[str, ...] = ()
    query: str | None = None
    id_list: tuple[str, ...] = ()
    page_size: int = 100
    max_results: int = 1000
    lookback_days: float | None = None
    min_interval: float = 0.0
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class DigestSettings:
    topics: int | None = None  # None: chosen from the data
    min_topics: int = 4
    max_topics: int = 15
    min_topic_size: int = 3
    engine: str = "tfidf"
    window_days: float = 7.0
    summary_chars: int = 300
    daily: bool = False  # readers may choose daily digests


@dataclass(frozen=True, slots=True)
class WebSettings:
    base_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = 8000
    secret_key: str | None = None
    admin_password_hash: str | None = None
    trusted_proxies: str = "127.0.0.1"
    header_timeout: float = 10.0  # seconds for a request's headers to arrive
    body_timeout: float = 60.0  # seconds for its body
    max_connections: int = 1000
    max_connections_per_client: int = 50


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str = "embedded"  # "embedded": the built-in server, storing into ``maildir``
    port: int = 0
    starttls: bool = False
    tls: bool = False  # implicit TLS (port 465)
    username: str = ""
    password: str = ""
    timeout: float = 30.0
    concurrency: int = 4
    rate: float = 0.0  # messages per second for the whole run; 0 = as fast as the server takes them
    max_attempts: int = 5
    retry_backoff: float = 60.0  # seconds before the first retry of a 4xx, doubled for each further one
    max_inline_wait: float = 900.0  # wait in-run for retries due within this; later ones stay deferred
    connect_attempts: int = 3
    ca_file: str = ""  # trust this CA bundle (a private relay's own CA) instead of the system's
    maildir: Path = Path("data/maildir")

    @property
    def embedded(self) -> bool:
        return self.host == "embedded"


@dataclass(frozen=True, slots=True)
class Sender:
    from_address: str  # "Name <addr@example.org>"
    list_id: str  # "<research-digest.example.org>" or a bare id
    unsubscribe_mailto: str | None = None  # "unsubscribe@example.org" for List-Unsubscribe's mailto
    reply_to: str | None = None

    @property
    def domain(self) -> str:
        address = parseaddr(self.from_address)[1]
        return address.rsplit("@", 1)[-1] if "@" in address else "localhost"

    @property
    def envelope_from(self) -> str:
        return parseaddr(self.from_address)[1]


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    papers_days: float = 180
    deliveries_days: float = 400
    runs_days: float = 90


@dataclass(frozen=True, slots=True)
class Settings:
    config_path: Path | None  # None: the built-in defaults
    database: Path
    name: str
    fetch: FetchSettings
    workers: int
    sources: tuple[SourceConfig, ...]
    digest: DigestSettings
    web: WebSettings
    smtp: SmtpSettings
    sender: Sender
    timezone: str
    jobs_dir: Path
    misfire_grace_time: float
    retention: RetentionSettings
    environment: tuple[str, ...] = ()  # the NEWSLETTER_* variables that set a setting

    def source_named(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources) or "none"
        raise ConfigError(f"no source named {name!r} (configured: {known})")
