from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from newsletter.config import DEFAULT_CONFIG, ConfigError, load_settings, write_default_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "newsletter.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_follow_three_arxiv_categories_and_hugging_face(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(tmp_path / "missing.toml", environ={})
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
    with pytest.raises(ConfigError, match="NEWSLETTER_FETCH_TIMEOUT='soon' is not a number"):
        load_settings(path, environ={"NEWSLETTER_FETCH_TIMEOUT": "soon"})


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ('[[sources]]\nname = "x"\nkind = "rss"\nurl = "https://e.org"', "unknown kind 'rss'"),
        ('[[sources]]\nname = "x"\nkind = "feed"', "a feed source needs a url"),
        ('[[sources]]\nname = "x"\nkind = "arxiv_rss"', "needs categories or a url"),
        ('[[sources]]\nname = "x"\nkind = "arxiv_api"', "needs a query or an id_list"),
        ('[[sources]]\nname = "bad name!"\nkind = "feed"\nurl = "https://e.org"', "name must be"),
        ('[[sources]]\nname = "x"\nkind = "feed"\nurl = "javascript:alert(1)"', "url must be http(s)://"),
        (
            '[[sources]]\nname = "x"\nkind = "feed"\nurl = "https://e.org"\ncolour = "red"',
            "unknown setting(s) colour",
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
