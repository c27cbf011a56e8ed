"""Adding items to a reader's library against a real database and the arXiv API on the local feed server:
stored papers are found, unknown arXiv ids fetched by id in polite batches, the rest kept pending."""

from __future__ import annotations

import itertools
import socket
from datetime import UTC, datetime, timedelta

import pytest

from newsletter.config import load_settings
from newsletter.db import write_transaction
from newsletter.default_config import write_default_config
from newsletter.errors import ConfigError
from newsletter.fetch import Fetcher
from newsletter.ingest import run_ingest
from newsletter.library import LIBRARY, PendingItem, keep_pending, pending_items, reader_signals
from newsletter.library_import import BATCH, TITLE_ONLY, WAITING_FOR_A_SOURCE, add_to_library, arxiv_source
from newsletter.library_items import parse_arguments, parse_upload
from newsletter.models import Paper
from newsletter.settings import FetchSettings, LibrarySettings, SourceConfig
from newsletter.store import READER_ADDED, new_papers_between, store_papers
from newsletter.subscribers import add_subscriber
from tests.support.arxivapi import FakeArxiv
from tests.support.feedserver import Reply, file_reply

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
USER_AGENT = "newsletter-test/1.0 mailto:ops@example.org"


@pytest.fixture
def arxiv(feed_server) -> FakeArxiv:
    return FakeArxiv(feed_server)


@pytest.fixture
def polite_fetcher():
    with Fetcher(FetchSettings(timeout=2, attempts=2, backoff=0.05, user_agent=USER_AGENT)) as fetcher:
        yield fetcher


def source(arxiv: FakeArxiv, interval: float = 0.3):
    return arxiv_source(LibrarySettings(arxiv_api=arxiv.url, min_interval=interval))


def ada(db) -> int:
    return add_subscriber(db, "ada@example.org").subscriber.id


def test_unknown_arxiv_ids_are_fetched_by_id_in_batches_with_the_sources_politeness(
    db, arxiv, polite_fetcher
):
    ids = [f"2401.{n:05d}" for n in range(1, 2 * BATCH + 51)]
    arxiv.papers = {i: (f"Paper {i} on robot grasping", "An abstract.", "cs.RO") for i in ids[:-10]}
    parsed = parse_upload("ids.txt", "\n".join(ids).encode())
    report = add_to_library(db, ada(db), parsed.items, polite_fetcher, source(arxiv), now=NOW)

    assert [len(asked) for asked in arxiv.asked] == [BATCH, BATCH, 50]
    assert list(itertools.chain(*arxiv.asked)) == ids
    assert {request.headers["user-agent"] for request in arxiv.requests} == {USER_AGENT}
    times = [request.at for request in arxiv.requests]
    assert all(later - earlier >= 0.29 for earlier, later in itertools.pairwise(times))

    assert (len(report.added), report.fetched, report.pending) == (len(ids) - 10, len(ids) - 10, [])
    assert (
        report.problems
        == [f"ids.txt line {n} ({i}): arXiv has no paper {i}" for n, i in enumerate(ids, 1)][-10:]
    )
    signals = reader_signals(db, 1)
    assert {s.kind for s in signals} == {LIBRARY} and len(signals) == len(ids) - 10
    assert signals[0].title == "Paper 2401.00001 on robot grasping"
    assert signals[0].authors == ("Ada Lovelace", "Alan Turing")
    # Stored as papers a reader added: in no digest.
    assert db.execute("SELECT DISTINCT sources, is_new FROM papers").fetchall() == [
        (f'["{READER_ADDED}"]', 0)
    ]
    assert new_papers_between(db, NOW - timedelta(days=1), NOW + timedelta(days=1)) == []

    again = add_to_library(db, 1, parsed.items[:5], polite_fetcher, source(arxiv), now=NOW)
    assert len(arxiv.requests) == 3 and (len(again.added), again.fetched) == (5, 0)  # stored: not asked again


def test_stored_papers_are_found_by_doi_and_title_and_the_rest_waits(db, arxiv, polite_fetcher):
    with write_transaction(db):
        store_papers(
            db,
            [
                Paper(title="Stored Paper With a Journal DOI", arxiv_id="2402.00001", doi="10.1000/stored.1"),
                Paper(title="A Workshop Paper Known By Its Title", extra_keys=["url:https://w.example/1"]),
            ],
            source="arxiv",
            now=NOW,
        )
    bibtex = b"""@article{a, title={Whatever}, doi={10.1000/STORED.1}}
@article{b, title={A workshop paper known by its title}}
@article{c, title={An Unpublished Manuscript Nobody Has}}
@article{d, doi={10.1000/elsewhere.9}, title={In Another Journal}}
"""
    subscriber = ada(db)
    report = add_to_library(
        db, subscriber, parse_upload("refs.bib", bibtex).items, polite_fetcher, source(arxiv)
    )
    assert arxiv.requests == []  # nothing to fetch by arXiv id
    assert sorted(title for _, title in report.added) == [
        "A Workshop Paper Known By Its Title",
        "Stored Paper With a Journal DOI",
    ]
    waiting = {(item.key, item.item, item.reason) for item in pending_items(db, subscriber)}
    assert waiting == {
        ("title:an unpublished manuscript nobody has", "refs.bib line 3 (c)", TITLE_ONLY),
        ("doi:10.1000/elsewhere.9", "refs.bib line 4 (d)", WAITING_FOR_A_SOURCE),
    }
    # A source brings one of them; the reader's next add finds it.
    with write_transaction(db):
        store_papers(
            db, [Paper(title="In Another Journal", doi="10.1000/elsewhere.9")], source="journal", now=NOW
        )
    add_to_library(db, subscriber, parse_arguments(["10.1000/stored.1"]).items, polite_fetcher, source(arxiv))
    assert [item.key for item in pending_items(db, subscriber)] == [
        "title:an unpublished manuscript nobody has"
    ]
    assert len(reader_signals(db, subscriber)) == 3


def test_an_unreachable_api_keeps_the_ids_pending_and_asks_once(db, polite_fetcher):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = arxiv_source(LibrarySettings(arxiv_api=f"http://127.0.0.1:{port}/api/query", min_interval=0))
    items = parse_upload(
        "ids.txt", "\n".join(f"2401.{n:05d}" for n in range(1, 2 * BATCH + 1)).encode()
    ).items
    subscriber = ada(db)
    report = add_to_library(db, subscriber, items, polite_fetcher, closed)
    assert report.unreachable and report.added == []
    [problem] = report.problems
    assert problem.startswith(
        f"{2 * BATCH} arXiv ids not fetched: the arXiv API could not be asked (could not connect"
    )
    assert problem.endswith("; add it again later")
    pending = pending_items(db, subscriber)
    assert len(pending) == 2 * BATCH and pending[0].reason == problem.split(": ", 1)[1]


def test_a_failing_api_keeps_its_batch_pending_and_adding_again_retries(db, arxiv, polite_fetcher):
    arxiv.papers = {"2401.00001": ("Back Again", "An abstract.", "cs.IR")}
    arxiv.down = True
    subscriber = ada(db)
    items = parse_arguments(["2401.00001"]).items
    report = add_to_library(db, subscriber, items, polite_fetcher, source(arxiv, 0))
    assert not report.unreachable and len(arxiv.requests) == 2  # retried once, as [fetch] attempts says
    assert report.problems == [
        "1 arXiv ids not fetched: the arXiv API could not be asked (HTTP 503 Service Unavailable: HTML page "
        "titled 'Service Unavailable' (gave up after 2 attempts)); add it again later"
    ]
    assert [item.key for item in pending_items(db, subscriber)] == ["arxiv:2401.00001"]
    arxiv.down = False
    again = add_to_library(db, subscriber, items, polite_fetcher, source(arxiv, 0))
    assert again.added == [("arxiv:2401.00001", "Back Again")] and pending_items(db, subscriber) == []


def test_an_api_error_answer_is_said_and_keeps_its_batch(db, feed_server, polite_fetcher, corpus_feeds):
    error = (corpus_feeds / "arxiv_api_atom_2026_error_invalid_id__arxiv.py.xml").read_bytes()
    url = feed_server.route("/api/query", Reply(body=error, content_type="application/atom+xml"))
    report = add_to_library(
        db,
        ada(db),
        parse_arguments(["2401.00001"]).items,
        polite_fetcher,
        arxiv_source(LibrarySettings(arxiv_api=url, min_interval=0)),
    )
    assert report.problems == [
        "1 arXiv ids not fetched: the arXiv API could not be asked (arXiv API error: incorrect id format for "
        "abc); add it again later"
    ]


def test_the_library_settings_keep_the_arxiv_spacing_rule(tmp_path):
    path = tmp_path / "newsletter.toml"
    path.write_text("[library]\nmin_interval = 1\n")
    with pytest.raises(ConfigError, match=r"\[library\] min_interval: arXiv asks for at least 3 seconds"):
        load_settings(path, environ={})
    path.write_text('[library]\narxiv_api = "ftp://example.org/api"\n')
    with pytest.raises(ConfigError, match=r"\[library\] arxiv_api: url must be http\(s\):// or file://"):
        load_settings(path, environ={})
    path.write_text('[library]\narxiv_api = "http://127.0.0.1:9/api"\nmin_interval = 0\n')
    assert load_settings(path, environ={}).library == LibrarySettings("http://127.0.0.1:9/api", 0.0)
    written = tmp_path / "written.toml"
    write_default_config(written)
    assert (
        "[library]" in written.read_text() and load_settings(written, environ={}).library == LibrarySettings()
    )
    assert arxiv_source(LibrarySettings()).min_interval == 3.0


def test_a_fetch_that_stores_a_pending_paper_puts_it_in_the_library(db, feed_server, fixtures):
    subscriber = ada(db)
    with write_transaction(db):
        keep_pending(
            db, subscriber, [PendingItem(key="arxiv:2501.00001", item="2501.00001", reason="API down")]
        )
    url = feed_server.route("/rss", file_reply(fixtures / "arxiv_rss_small.xml"))
    with Fetcher(FetchSettings(timeout=2, attempts=1)) as fetcher:
        [report] = run_ingest(db, [SourceConfig(name="arxiv", kind="arxiv_rss", url=url)], fetcher)
    assert report.status == "ok" and pending_items(db, subscriber) == []
    assert [(s.id, s.kind) for s in reader_signals(db, subscriber)] == [("arxiv:2501.00001", LIBRARY)]
