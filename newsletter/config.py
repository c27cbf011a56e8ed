"""Settings: ``newsletter.toml`` (written by ``newsletter init``), overridden by the environment.

Secrets never need to live in the file: any scalar setting ``key`` of table ``[section]`` can be set with
the environment variable ``NEWSLETTER_<SECTION>_<KEY>`` (``NEWSLETTER_SMTP_PASSWORD``...), and
``NEWSLETTER_DB`` points at another database. Without a config file the built-in defaults apply (the
file ``newsletter init`` writes, see ``newsletter.default_config``), so every command works on a fresh
checkout; a config file that is named but missing is an error.

Nothing is guessed: a section, key or ``NEWSLETTER_*`` variable that is not a setting is refused with its
file and line (or the variable's name) and a "did you mean", and a value of the wrong type or out of its
limits is refused, never rounded or converted.

Adding a setting: declare it on the settings field it fills, in ``newsletter.settings``, with
``setting(...)``: its default, its limits or choices and the comment ``newsletter init`` writes above it.
That alone makes it known in the file and as ``NEWSLETTER_<SECTION>_<KEY>``, type- and range-checked, and
written by ``init``. What its value means beyond that (a path relative to the file, a check against another
key) is worked out here, where its section is built. A [[sources]] key is a field of ``SourceConfig``;
each source kind completes and checks its own entry (``newsletter.sources``).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from newsletter import sources
from newsletter.config_keys import Key, SettingError, closest, keys_of
from newsletter.default_config import DEFAULT_CONFIG
from newsletter.errors import ConfigError
from newsletter.settings import (
    SECTIONS,
    BouncesSettings,
    DigestSettings,
    DkimSettings,
    FetchSettings,
    LibrarySettings,
    RetentionSettings,
    SchedulerSettings,
    Settings,
    SmtpSettings,
    SourceConfig,
    WebhooksSettings,
    WebSettings,
    default_jobs_dir,
)
from newsletter.toml_lines import key_lines

DEFAULT_CONFIG_NAME = "newsletter.toml"
ENV_PREFIX = "NEWSLETTER_"
# NEWSLETTER_* variables that are not settings (NEWSLETTER_<SECTION>_<KEY>) and are still allowed.
OTHER_VARIABLES = {
    "NEWSLETTER_CONFIG": "the configuration file (--config)",
    "NEWSLETTER_DB": "the database, overriding [newsletter] database (--db)",
    "NEWSLETTER_LOG_FORMAT": "text or json log lines (--log-format)",
    "NEWSLETTER_CORPUS": "the captured feeds the tests and benchmarks read",
    "NEWSLETTER_VENV": "the virtual environment run.py creates",
}

SCHEMA: dict[str, dict[str, Key]] = {section: keys_of(cls) for section, cls in SECTIONS.items()}
SOURCE_KEYS: dict[str, Key] = keys_of(SourceConfig)
SOURCES = "sources"
_VARIABLES = {
    f"{ENV_PREFIX}{section}_{key}".upper(): (section, key) for section, keys in SCHEMA.items() for key in keys
}


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
    keys: Mapping[str, Key]
    values: dict[str, Any]
    fallback: str  # where a default is said to come from
    origins: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.origins.get(key, self.fallback)}: {message}")

    def given(self) -> dict[str, Any]:
        """The values set in the file or the environment, without the defaults."""
        return {key: self.values[key] for key in self.origins}


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
    table = _Table(label, keys, {name: key.default for name, key in keys.items()}, fallback=located.at(*path))
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
    """``cls`` with the value of every key of ``table`` in the field it declares, then the ``derived`` values."""
    return cls(**({table.keys[name].field_name: value for name, value in table.values.items()} | derived))


def _build(
    tables: dict[str, _Table],
    entries: list[_Table],
    config_path: Path | None,
    base_dir: Path,
    database: Path | None,
    environ: Mapping[str, str],
    variables: tuple[str, ...],
) -> Settings:
    general = tables["newsletter"]
    if database is None and environ.get("NEWSLETTER_DB"):
        database = Path(environ["NEWSLETTER_DB"])
    if database is None:
        database = base_dir / general["database"]
    # Checked in this order, so that of two mistakes the same one is always reported.
    configured = _sources(entries)
    fetch = _fetch(tables["fetch"])
    digest = _digest(tables["digest"])
    library = _library(tables["library"])
    web = _web(tables["web"])
    smtp = _smtp(tables["smtp"], base_dir)
    bounces = _bounces(tables["bounces"])
    dkim = _dkim(tables["dkim"], base_dir)
    webhooks = _webhooks(tables["webhooks"], base_dir)
    timezone = _timezone(general)
    scheduler = _scheduler(tables["scheduler"], base_dir)
    return Settings(
        config_path=config_path,
        name=general["name"],
        database=database,
        timezone=timezone,
        scheduler=scheduler,
        retention=_fill(RetentionSettings, tables["retention"]),
        fetch=fetch,
        digest=digest,
        library=library,
        web=web,
        smtp=smtp,
        sources=configured,
        bounces=bounces,
        dkim=dkim,
        webhooks=webhooks,
        environment=variables,
    )


def _sources(entries: list[_Table]) -> tuple[SourceConfig, ...]:
    configured = []
    for entry in entries:
        try:
            configured.append(sources.configure(entry.given()))
        except SettingError as exc:
            raise entry.error(exc.key, f"{entry.label}: {exc}") from None
    seen: set[str] = set()
    for source, entry in zip(configured, entries, strict=True):
        if source.name in seen:
            raise entry.error("name", f"two sources are named {source.name!r}; names must be unique")
        seen.add(source.name)
    return tuple(configured)


def _fetch(table: _Table) -> FetchSettings:
    user_agent = table["user_agent"] or table.keys["user_agent"].default  # an empty one: the default
    contact = table["contact"] or None
    if contact:
        user_agent = f"{user_agent} mailto:{contact}"
    return _fill(FetchSettings, table, user_agent=user_agent, contact=contact)


def _timezone(general: _Table) -> str:
    name = general["timezone"]
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise general.error(
            "timezone", f"[newsletter] timezone {name!r} is not a time zone name such as Europe/Paris"
        ) from None
    return name


def _scheduler(table: _Table, base_dir: Path) -> SchedulerSettings:
    jobs_dir = base_dir / table["jobs"]
    if not jobs_dir.is_dir():
        jobs_dir = default_jobs_dir()
    return _fill(SchedulerSettings, table, jobs_dir=jobs_dir)


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
    from_address = table["from"]
    if "@" not in parseaddr(from_address)[1] or "\n" in from_address or "\r" in from_address:
        raise table.error(
            "from",
            f'[smtp] from must be an address such as "Digest <digest@example.org>", not {from_address!r}',
        )
    optional = {name: table[name] or None for name in ("list_id", "unsubscribe_mailto", "reply_to")}
    for name, value in optional.items():
        if value and ("\n" in value or "\r" in value):
            raise table.error(name, f"[smtp] {name} cannot contain line breaks")
    return _fill(SmtpSettings, table, host=host, port=port, maildir=base_dir / table["maildir"], **optional)


def _bounces(table: _Table) -> BouncesSettings:
    address = (table["address"] or "").strip() or None
    if address is not None and (
        parseaddr(address)[1] != address or address.count("@") != 1 or "+" in address.split("@")[0]
    ):
        raise table.error(
            "address",
            f'[bounces] address must be a bare address without "+", such as "bounces@example.org", not {address!r}',
        )
    host = table["host"].strip()
    port = table["port"]
    if port == 0:
        secure = table["security"] == "tls"
        port = {("imap", True): 993, ("imap", False): 143, ("pop3", True): 995, ("pop3", False): 110}[
            (table["protocol"], secure)
        ]
    if table["processed_folder"] and table["protocol"] != "imap":
        raise table.error("processed_folder", '[bounces] processed_folder needs protocol = "imap"')
    return _fill(BouncesSettings, table, address=address, host=host, port=port)


def _dkim(table: _Table, base_dir: Path) -> DkimSettings:
    domain = (table["domain"] or "").strip().lower() or None
    key_file = table["private_key_file"]
    if domain is not None and key_file is None:
        raise table.error("domain", "[dkim] domain is set but private_key_file is not")
    if key_file is not None and domain is None:
        raise table.error("private_key_file", "[dkim] private_key_file is set but domain is not")
    if domain is not None and not re.fullmatch(
        r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+", domain
    ):
        raise table.error(
            "domain", f"[dkim] domain must be a domain name such as example.org, not {domain!r}"
        )
    selector = table["selector"].strip()
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", selector):
        raise table.error(
            "selector", f"[dkim] selector must be letters, digits, dots and hyphens, not {selector!r}"
        )
    return _fill(
        DkimSettings,
        table,
        domain=domain,
        selector=selector,
        private_key_file=None if key_file is None else base_dir / key_file,
    )


_TOPIC_ARN = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?")
_HOST = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?")


def _webhooks(table: _Table, base_dir: Path) -> WebhooksSettings:
    for arn in table["ses_topic_arns"]:
        if not _TOPIC_ARN.fullmatch(arn):
            raise table.error(
                "ses_topic_arns",
                f"[webhooks] ses_topic_arns: {arn!r} is not an SNS topic ARN such as "
                '"arn:aws:sns:us-east-1:123456789012:bounces"',
            )
    hosts = tuple(host.lower() for host in table["ses_certificate_hosts"])
    for host in hosts:
        if not _HOST.fullmatch(host):
            raise table.error(
                "ses_certificate_hosts",
                f"[webhooks] ses_certificate_hosts: {host!r} is not a host name or host:port (no https://, no path)",
            )
    ca_file = table["ses_ca_file"].strip()
    if table["postmark_username"] and not table["postmark_password"]:
        raise table.error(
            "postmark_username",
            "[webhooks] postmark_username is set but postmark_password is not (NEWSLETTER_WEBHOOKS_POSTMARK_PASSWORD)",
        )
    if table["postmark_password"] and not table["postmark_username"]:
        raise table.error(
            "postmark_password", "[webhooks] postmark_password is set but postmark_username is not"
        )
    if ":" in table["postmark_username"]:
        raise table.error("postmark_username", "[webhooks] postmark_username cannot contain a colon")
    public_key = table["sendgrid_public_key"].strip()
    if public_key and (public_key := _sendgrid_key(public_key)) is None:
        raise table.error(
            "sendgrid_public_key",
            "[webhooks] sendgrid_public_key must be the verification key SendGrid shows for the signed event "
            "webhook (a base64 ECDSA P-256 public key)",
        )
    return _fill(
        WebhooksSettings,
        table,
        ses_certificate_hosts=hosts,
        ses_ca_file=str(base_dir / ca_file) if ca_file else "",
        sendgrid_public_key=public_key,
    )


def _sendgrid_key(text: str) -> str | None:
    """SendGrid's verification key as bare base64 (PEM's armour lines and line breaks dropped), or None when
    it is not an ECDSA P-256 public key."""
    body = "".join(re.sub(r"-----(BEGIN|END) PUBLIC KEY-----", "", text).split())
    try:
        key = load_der_public_key(base64.b64decode(body, validate=True))
    except (ValueError, binascii.Error, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        return None
    return body


def _library(table: _Table) -> LibrarySettings:
    # The arXiv API as a source of its own: the same checks, the same spacing rule for arxiv.org.
    entry = {
        "name": "library",
        "kind": "arxiv_api",
        "url": table["arxiv_api"],
        "id_list": ("0",),
        "min_interval": table["min_interval"],
    }
    try:
        sources.configure(entry)
    except SettingError as exc:
        key = "arxiv_api" if exc.key == "url" else exc.key
        raise table.error(key, f"[library] {key}: {exc}") from None
    return _fill(LibrarySettings, table)


def _digest(table: _Table) -> DigestSettings:
    if table["min_topics"] > table["max_topics"]:
        raise table.error(
            "min_topics",
            f"[digest] min_topics ({table['min_topics']}) is above max_topics ({table['max_topics']})",
        )
    return _fill(DigestSettings, table, topics=table["topics"] or None)
