from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from dataclasses import fields, replace
from pathlib import Path

import pytest

from newsletter.config import OTHER_VARIABLES, SCHEMA, SOURCE_KEYS, load_settings
from newsletter.default_config import DEFAULT_CONFIG, write_default_config
from newsletter.errors import ConfigError
from newsletter.settings import (
    SECTIONS,
    DigestSettings,
    FetchSettings,
    RetentionSettings,
    SchedulerSettings,
    Settings,
    SmtpSettings,
    WebSettings,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "newsletter.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_follow_three_arxiv_categories_and_hugging_face(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, environ={})
    assert [(s.name, s.kind, s.url) for s in settings.sources] == [
        ("arxiv", "arxiv_rss", "https://rss.arxiv.org/rss/cs.LG+cs.CL+cs.CV"),
        ("huggingface", "hf_daily", "https://huggingface.co/api/daily_papers"),
    ]
    assert settings.database == tmp_path / "data" / "newsletter.db"
    assert settings.fetch.user_agent.startswith("newsletter/")


def test_written_config_is_commented_and_equals_the_defaults(tmp_path):
    path = tmp_path / "conf" / "newsletter.toml"
    assert write_default_config(path)
    assert not write_default_config(path)  # never overwritten silently
    text = path.read_text()
    assert text.count("\n#") > 20
    assert tomllib.loads(text) == tomllib.loads(DEFAULT_CONFIG)
    settings = load_settings(path, environ={})
    assert settings.config_path == path
    assert settings.database == path.parent.resolve() / "data" / "newsletter.db"


def test_environment_overrides_settings_and_database(tmp_path):
    path = write(tmp_path, DEFAULT_CONFIG)
    settings = load_settings(
        path,
        environ={
            "NEWSLETTER_FETCH_TIMEOUT": "7.5",
            "NEWSLETTER_FETCH_ATTEMPTS": "5",
            "NEWSLETTER_FETCH_CONTACT": "ops@example.org",
            "NEWSLETTER_NEWSLETTER_NAME": "Weekly ML",
            "NEWSLETTER_DB": str(tmp_path / "other.db"),
            "UNRELATED": "x",
        },
    )
    assert settings.fetch.timeout == 7.5
    assert settings.fetch.attempts == 5
    assert settings.fetch.user_agent.endswith("mailto:ops@example.org")
    assert settings.name == "Weekly ML"
    assert settings.database == tmp_path / "other.db"
    explicit = load_settings(path, database=tmp_path / "cli.db", environ={"NEWSLETTER_DB": "env.db"})
    assert explicit.database == tmp_path / "cli.db"


def test_environment_values_are_checked(tmp_path):
    path = write(tmp_path, DEFAULT_CONFIG)
    with pytest.raises(
        ConfigError, match="NEWSLETTER_FETCH_TIMEOUT: \\[fetch\\] timeout must be a number, not 'soon'"
    ):
        load_settings(path, environ={"NEWSLETTER_FETCH_TIMEOUT": "soon"})


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        (
            '[[sources]]\nname = "x"\nkind = "rss"\nurl = "https://e.org"',
            "unknown kind 'rss' (expected one of arxiv_rss, arxiv_api, hf_daily, feed)",
        ),
        ('[[sources]]\nname = "x"\nkind = "feed"', "a feed source needs a url"),
        ('[[sources]]\nname = "x"\nkind = "arxiv_rss"', "needs categories or a url"),
        ('[[sources]]\nname = "x"\nkind = "arxiv_api"', "needs a query or an id_list"),
        ('[[sources]]\nname = "bad name!"\nkind = "feed"\nurl = "https://e.org"', "name must be"),
        ('[[sources]]\nname = "x"\nkind = "feed"\nurl = "javascript:alert(1)"', "url must be http(s)://"),
        (
            '[[sources]]\nname = "x"\nkind = "feed"\nurl = "https://e.org"\ncolour = "red"',
            "unknown key 'colour' in [[sources]] entry 1 ('x')",
        ),
        (
            '[[sources]]\nname = "x"\nkind = "arxiv_api"\nquery = "all:x"\nmin_interval = 1',
            "at least 3 seconds between requests",
        ),
        (
            '[[sources]]\nname = "x"\nkind = "feed"\nurl = "https://a.org"\n[[sources]]\nname = "x"\nkind = "feed"\nurl = "https://b.org"',
            "two sources are named 'x'",
        ),
        ('[fetch]\ntimeout = "long"', "timeout must be a number"),
        ("[fetch]\nattempts = 0", "attempts must be at least 1"),
    ],
)
def test_invalid_configuration_is_named_precisely(tmp_path, sources, message):
    path = write(tmp_path, sources)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_broken_toml_says_where(tmp_path):
    path = write(tmp_path, "[fetch\ntimeout = 3")
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line 1"):
        load_settings(path, environ={})


def test_arxiv_api_defaults_and_atom_flavour(tmp_path):
    path = write(
        tmp_path,
        '[[sources]]\nname = "api"\nkind = "arxiv_api"\nquery = "cat:cs.CL"\n'
        '[[sources]]\nname = "atom"\nkind = "arxiv_rss"\ncategories = ["cs.AI"]\nformat = "atom"\nenabled = false\n',
    )
    api, atom = load_settings(path, environ={}).sources
    assert (api.url, api.min_interval, api.page_size) == ("https://export.arxiv.org/api/query", 3.0, 100)
    assert (atom.url, atom.enabled) == ("https://rss.arxiv.org/atom/cs.AI", False)


def test_digest_settings(tmp_path):
    settings = load_settings(write(tmp_path, "[digest]\ntopics = 8\nengine = 'embeddings'\n"), environ={})
    assert (settings.digest.topics, settings.digest.engine, settings.digest.max_topics) == (
        8,
        "embeddings",
        15,
    )
    assert load_settings(write(tmp_path, "[digest]\ntopics = 0\n"), environ={}).digest.topics is None
    with pytest.raises(ConfigError, match="min_topics \\(9\\) is above max_topics \\(5\\)"):
        load_settings(write(tmp_path, "[digest]\nmin_topics = 9\nmax_topics = 5\n"), environ={})
    with pytest.raises(ConfigError, match="engine must be one of tfidf, embeddings, not 'bertopic'"):
        load_settings(write(tmp_path, "[digest]\nengine = 'bertopic'\n"), environ={})


def refusal(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=environ or {})
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[smpt]\nhost = "relay.example.org"\n', ":1: unknown section [smpt]; did you mean [smtp]?"),
        (
            '[smtp]\nhost = "relay.example.org"\nstarttsl = true\n',
            ":3: unknown key 'starttsl' in [smtp]; did you mean starttls?",
        ),
        (
            "[web]\nport = 8000\n\n[smtp]\nconcurency = 8\n",
            ":5: unknown key 'concurency' in [smtp]; did you mean concurrency?",
        ),
        ("[fetch]\nconcurrency = 8\n", ":2: unknown key 'concurrency' in [fetch]; it belongs in [smtp]"),
        (
            'name = "Weekly"\n[smtp]\n',
            ":1: 'name' is outside any section; did you mean it under [newsletter]?",
        ),
        ('[[source]]\nname = "x"\n', ":1: unknown section [source]; did you mean [[sources]]?"),
        ('[smtp]\nhost = "relay.example.org"\nsmtp.starttsl = true\n', ":3: unknown key 'smtp' in [smtp]"),
        ("smtp.starttsl = true\n", ":1: unknown key 'starttsl' in [smtp]; did you mean starttls?"),
        (
            '[[sources]]\nname = "a"\nkind = "feed"\nurl = "https://a.org"\n\n'
            '[[sources]]\nname = "b"\nkind = "arxiv_rss"\ncategories = [\n  "cs.LG",\n  "[cs.CL]",\n]\n'
            "categoris = []\n",
            ":13: unknown key 'categoris' in [[sources]] entry 2 ('b'); did you mean categories?",
        ),
        (
            '[newsletter]\ndescription = """\n[smpt]\nx = 1\n"""\n',
            ":2: unknown key 'description' in [newsletter]",
        ),
        ("[digest]\ntopics = 2.7\n", ":2: [digest] topics must be a whole number, not 2.7"),
        ('[digest]\ntopics = "3"\n', ":2: [digest] topics must be a whole number, not '3'"),
        ("[fetch]\nworkers = true\n", ":2: [fetch] workers must be a whole number, not true"),
        ("[web]\nport = 99999\n", ":2: [web] port must be between 1 and 65535, not 99999"),
        ("[web]\nport = 0\n", ":2: [web] port must be between 1 and 65535, not 0"),
        ("[smtp]\nport = 99999\n", ":2: [smtp] port must be between 0 and 65535, not 99999"),
        ("[smtp]\ntimeout = 0\n", ":2: [smtp] timeout must be at least 1, not 0"),
        ("[fetch]\ntimeout = nan\n", ":2: [fetch] timeout must be a number, not nan"),
        (
            '[newsletter]\nname = ["a", "b"]\n',
            ":2: [newsletter] name must be a string (in quotes), not a list",
        ),
        ("[smtp]\npassword = 123456\n", ":2: [smtp] password must be a string (in quotes), not a number"),
        ('[digest]\ndaily = "yes"\n', ":2: [digest] daily must be true or false, not 'yes'"),
        ("[smtp]\ntls = true\nstarttls = true\n", ":2: [smtp] choose starttls or tls, not both"),
        (
            '[[sources]]\nname = "x"\nkind = "feed"\nurl = "https://e.org"\npage_size = 1.5\n',
            ":5: [[sources]] entry 1 ('x') page_size must be a whole number, not 1.5",
        ),
    ],
)
def test_unknown_names_and_wrong_types_are_refused_at_their_line(tmp_path, text, message):
    expected = f"{tmp_path / 'newsletter.toml'}{message}"
    refused = refusal(tmp_path, text)
    assert refused == expected or refused.startswith(f"{expected} (known: ")


def test_unknown_key_without_a_close_name_lists_the_known_ones(tmp_path):
    refused = refusal(tmp_path, "[scheduler]\nwhatever = 1\n")
    assert (
        refused
        == f"{tmp_path / 'newsletter.toml'}:2: unknown key 'whatever' in [scheduler] (known: jobs, misfire_grace_time)"
    )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"NEWSLETTER_SMTP_PROT": "587"},
            "environment variable NEWSLETTER_SMTP_PROT is not a setting; did you mean NEWSLETTER_SMTP_PORT?",
        ),
        (
            {"NEWSLETTER_SMTP_STARTTSL": "true"},
            "environment variable NEWSLETTER_SMTP_STARTTSL is not a setting; did you mean NEWSLETTER_SMTP_STARTTLS?",
        ),
        ({"NEWSLETTER_CONFG": "x.toml"}, "is not a setting; did you mean NEWSLETTER_CONFIG?"),
        ({"NEWSLETTER_XYZZY": "1"}, "is not a setting (settings are NEWSLETTER_<SECTION>_<KEY>"),
        (
            {"NEWSLETTER_SMTP_PORT": "2.5"},
            "environment variable NEWSLETTER_SMTP_PORT: [smtp] port must be a whole number, not '2.5'",
        ),
        (
            {"NEWSLETTER_DIGEST_TOPICS": "2.7"},
            "environment variable NEWSLETTER_DIGEST_TOPICS: [digest] topics must be a whole number, not '2.7'",
        ),
        (
            {"NEWSLETTER_WEB_PORT": "99999"},
            "environment variable NEWSLETTER_WEB_PORT: [web] port must be between 1 and 65535, not 99999",
        ),
        (
            {"NEWSLETTER_SMTP_STARTTLS": "maybe"},
            "environment variable NEWSLETTER_SMTP_STARTTLS: [smtp] starttls must be true or false",
        ),
        (
            {"NEWSLETTER_SMTP_TLS": "yes", "NEWSLETTER_SMTP_STARTTLS": "on"},
            "environment variable NEWSLETTER_SMTP_TLS: [smtp] choose starttls or tls, not both",
        ),
    ],
)
def test_unknown_and_malformed_environment_variables_are_refused_by_name(tmp_path, environ, message):
    refused = refusal(tmp_path, '[smtp]\nhost = "relay.example.org"\n', environ)
    assert refused.startswith("environment variable ") and message in refused


def test_environment_values_get_the_setting_type_without_rounding(tmp_path):
    allowed = {name: "x" for name in OTHER_VARIABLES} | {"NEWSLETTER_DB": str(tmp_path / "x.db")}
    settings = load_settings(
        write(tmp_path, '[smtp]\nhost = "relay.example.org"\ntls = true\n'),
        environ=allowed
        | {
            "NEWSLETTER_FETCH_TIMEOUT": "5",
            "NEWSLETTER_DIGEST_DAILY": "yes",
            "NEWSLETTER_SMTP_RATE": "2.5",
            "NEWSLETTER_WEB_SECRET_KEY": "0123456789abcdef",
        },
    )
    assert settings.fetch.timeout == 5.0 and isinstance(settings.fetch.timeout, float)
    assert settings.digest.daily is True
    assert settings.smtp.rate == 2.5
    assert settings.smtp.port == 465  # [smtp] port 0: the default for the TLS mode
    assert settings.web.secret_key == "0123456789abcdef"
    assert settings.environment == (
        "NEWSLETTER_DIGEST_DAILY",
        "NEWSLETTER_FETCH_TIMEOUT",
        "NEWSLETTER_SMTP_RATE",
        "NEWSLETTER_WEB_SECRET_KEY",
    )


def test_a_named_configuration_file_must_exist(tmp_path):
    with pytest.raises(ConfigError, match=r"missing.toml: no such configuration file"):
        load_settings(tmp_path / "missing.toml", environ={})


def test_default_config_names_exactly_the_known_keys_with_their_defaults():
    settings_part, sources_part = DEFAULT_CONFIG.split("# Each [[sources]] entry is one feed")
    parsed = tomllib.loads(settings_part)
    assert list(parsed) == list(SCHEMA)
    for section, keys in SCHEMA.items():
        region = settings_part.split(f"\n[{section}]\n", 1)[1].split("\n[", 1)[0]
        written = set(re.findall(r"^([a-z_]+) = ", region, re.MULTILINE))
        commented = set(re.findall(r"^# ([a-z_]+) = ", region, re.MULTILINE))
        assert written == {name for name, key in keys.items() if not key.optional}, section
        assert commented == {name for name, key in keys.items() if key.optional}, section
        for name in written:
            assert parsed[section][name] == keys[name].default, f"[{section}] {name}"
            assert keys[name].check(parsed[section][name]) == keys[name].default
    for name in SOURCE_KEYS:
        assert re.search(rf"\b{name}\b", sources_part), name


def newsletter(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        cwd=cwd,
        env=environment | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_missing_config_file_is_an_error_unless_init_creates_it(tmp_path):
    for result in (
        newsletter("--config", "missing.toml", "status", cwd=tmp_path),
        newsletter("status", cwd=tmp_path, env={"NEWSLETTER_CONFIG": "missing.toml"}),
        newsletter("--config", "missing.toml", "fetch", cwd=tmp_path),
    ):
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.strip().splitlines() == [
            "error: configuration error: missing.toml: no such configuration file "
            "(`newsletter --config missing.toml init` writes one)"
        ]
        assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no database was made on the defaults

    created = newsletter("--config", "conf/new.toml", "init", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert "wrote configuration conf/new.toml" in created.stdout
    assert (tmp_path / "conf" / "new.toml").read_text() == DEFAULT_CONFIG
    assert (tmp_path / "conf" / "data" / "newsletter.db").exists()


def test_without_config_option_a_missing_default_file_means_the_defaults(tmp_path):
    result = newsletter("fetch", "--source", "nope", cwd=tmp_path)
    assert result.returncode == 2
    assert "no source named 'nope' (configured: arxiv, huggingface)" in result.stderr


def test_the_cli_refuses_a_misspelled_section_in_one_line(tmp_path):
    write(tmp_path, '[newsletter]\ndatabase = "news.db"\n\n[smpt]\nhost = "relay.example.org"\n')
    result = newsletter("--config", "newsletter.toml", "status", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: configuration error: newsletter.toml:4: unknown section [smpt]; did you mean [smtp]?"
    ]
    assert not (tmp_path / "news.db").exists()


def test_doctor_names_the_configuration_file_and_the_variables_it_used(tmp_path, monkeypatch):
    from newsletter.doctor import doctor

    monkeypatch.chdir(tmp_path)  # the built-in defaults put the embedded server's maildir here

    path = write(tmp_path, '[newsletter]\ndatabase = "news.db"\n')
    settings = load_settings(path, environ={"NEWSLETTER_WEB_SECRET_KEY": "0123456789abcdef"})
    check = doctor(settings).checks[0]
    assert (check.name, check.ok, check.warning) == ("configuration", True, False)
    assert check.detail == f"{path.resolve()}, with NEWSLETTER_WEB_SECRET_KEY from the environment"

    defaults = doctor(load_settings(None, database=tmp_path / "news.db", environ={})).checks[0]
    assert (defaults.name, defaults.ok, defaults.warning) == ("configuration", True, True)
    assert defaults.detail.startswith("the built-in defaults")


def test_every_key_reaches_its_settings_field():
    """A key whose field were missing would be silently dropped by config._fill."""
    for section, cls in SECTIONS.items():
        missing = {key.field_name for key in SCHEMA[section].values()} - {f.name for f in fields(cls)}
        assert not missing, f"[{section}] keys without a {cls.__name__} field: {missing}"


def test_the_written_file_gives_the_declared_defaults(tmp_path):
    """What `newsletter init` writes and the defaults of the settings types are one declaration."""
    path = tmp_path / "newsletter.toml"
    write_default_config(path)
    settings = load_settings(path, environ={})
    assert settings.fetch == FetchSettings()
    assert settings.digest == DigestSettings()
    assert settings.web == WebSettings()
    assert settings.retention == RetentionSettings()
    assert replace(settings.smtp, maildir=SmtpSettings().maildir) == SmtpSettings()
    assert settings.smtp.maildir == tmp_path / "data" / "maildir"
    assert settings.scheduler.misfire_grace_time == SchedulerSettings().misfire_grace_time
    defaults = {f.name: f.default for f in fields(Settings)}
    assert (settings.name, settings.timezone) == (defaults["name"], defaults["timezone"])
    assert settings.database == tmp_path / defaults["database"]
    assert settings.sender.list_id == "<digest.localhost.localdomain>"
    written = {
        (section, name)
        for section, keys in tomllib.loads(DEFAULT_CONFIG).items()
        if section != "sources"
        for name in keys
    }
    commented = set(re.findall(r"^# ([a-z_]+) = ", DEFAULT_CONFIG.split("[[sources]]")[0], re.MULTILINE))
    for section, keys in SCHEMA.items():
        for name, key in keys.items():
            assert (section, name) in written or (key.optional and name in commented), f"[{section}] {name}"
