"""Fetch + parse + store through a real local HTTP server into a real SQLite file."""

from __future__ import annotations

import itertools
import json
import re
from datetime import UTC, datetime

import pytest

from newsletter.dates import iso
from newsletter.fetch import Fetcher
from newsletter.ingest import run_ingest
from newsletter.settings import FetchSettings, SourceConfig
from newsletter.sources import arxiv_rss as arxiv_rss_module
from tests.support.feedserver import Reply, file_reply

MONDAY = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)
TUESDAY = datetime(2025, 1, 7, 8, 0, tzinfo=UTC)


def source(name, kind, url, **options):
    return SourceConfig(name=name, kind=kind, url=url, **options)


def paper_row(db, arxiv_id):
    row = db.execute("SELECT * FROM papers WHERE arxiv_id = ?", [arxiv_id]).fetchone()
    assert row is not None, f"{arxiv_id} not stored"
    columns = [c[0] for c in db.execute("SELECT * FROM papers LIMIT 0").description]
    record = dict(zip(columns, row, strict=True))
    for column in ("authors", "categories", "keywords", "sources"):
        record[column] = json.loads(record[column])
    return record


def aliases(db, paper_id):
    return {key for (key,) in db.execute("SELECT key FROM paper_keys WHERE paper_id = ?", [paper_id])}


# --- the same paper from categories, sources, versions and journals is one row ------------------------------


def test_dedupe_across_categories_sources_versions_and_journals(db, feed_server, fetcher, fixtures):
    rss_lg = source(
        "arxiv-lg", "arxiv_rss", feed_server.route("/rss/cs.LG", file_reply(fixtures / "arxiv_rss_small.xml"))
    )
    rss_cl = source(
        "arxiv-cl",
        "arxiv_rss",
        feed_server.route("/rss/cs.CL", file_reply(fixtures / "arxiv_rss_small_cscl.xml")),
    )
    hf = source(
        "hf",
        "hf_daily",
        feed_server.route("/hf", file_reply(fixtures / "hf_daily_small.json", "application/json")),
    )
    api = source(
        "api",
        "arxiv_api",
        feed_server.route("/api/query", file_reply(fixtures / "arxiv_api_small.xml")),
        query="all:experts",
    )
    journal = source(
        "journal", "feed", feed_server.route("/journal", file_reply(fixtures / "journal_small.xml"))
    )

    reports = {r.name: r for r in run_ingest(db, [rss_lg, rss_cl, hf, api, journal], fetcher, now=MONDAY)}

    lg = reports["arxiv-lg"]
    # two announced as new or cross; two revisions (replace, replace-cross) of papers never seen: stored, not new
    assert (lg.fetched, lg.new, lg.updated, lg.revisions, lg.duplicates, lg.errors) == (4, 2, 0, 2, 0, 0)
    cl = reports["arxiv-cl"]  # 2501.00001 again (gains cs.CL), 2501.00010 new
    assert (cl.fetched, cl.new, cl.updated, cl.duplicates) == (2, 1, 1, 0)
    hf_report = reports["hf"]  # upvotes for 2501.00001, one new paper, one entry without an id
    assert (hf_report.fetched, hf_report.new, hf_report.updated, hf_report.errors) == (2, 1, 1, 1)
    assert "entry 3 skipped: no arXiv id" in hf_report.problems[0]
    api_report = reports["api"]  # version 2 of 2501.00001 with a DOI, one paper only the search found
    assert (api_report.fetched, api_report.new, api_report.updated, api_report.duplicates) == (2, 1, 1, 0)
    journal_report = reports[
        "journal"
    ]  # the published version (by DOI), 2501.00010 by title, a journal-only paper
    assert (journal_report.fetched, journal_report.new, journal_report.updated) == (3, 1, 2)

    arxiv_ids = {r[0] for r in db.execute("SELECT arxiv_id FROM papers WHERE arxiv_id IS NOT NULL")}
    assert arxiv_ids == {
        "2501.00001",
        "2501.00002",
        "2410.09999",
        "hep-th/9901001",
        "2501.00010",
        "2501.00030",
        "2501.00020",
    }
    assert db.execute("SELECT count(*) FROM papers").fetchone()[0] == 8

    experts = paper_row(db, "2501.00001")
    assert experts["key"] == "arxiv:2501.00001"
    assert experts["version"] == 2
    assert experts["title"] == "Sparse Mixtures of Tiny Experts for Few-Shot Adaptation"  # from version 2
    assert experts["categories"] == ["cs.LG", "cs.AI", "cs.CL", "stat.ML"]
    assert experts["primary_category"] == "cs.LG"
    assert experts["upvotes"] == 42
    assert experts["ai_summary"] == "Tiny experts adapt quickly."
    assert experts["github_repo"] == "https://github.com/example/tiny-experts"
    assert experts["doi"] == "10.1234/experts.2025.001"
    assert experts["venue"] == "Journal of Small Models"
    assert experts["authors"] == ["Ana Souza", "José Pereira", "Li Wei"]
    assert experts["sources"] == ["arxiv-lg", "arxiv-cl", "hf", "api", "journal"]
    assert experts["is_new"] == 1
    assert aliases(db, experts["id"]) >= {
        "arxiv:2501.00001",
        "doi:10.1234/experts.2025.001",
        "title:sparse mixtures of tiny experts for k shot adaptation",
        "title:sparse mixtures of tiny experts for few shot adaptation",
    }
    assert paper_row(db, "2410.09999")["is_new"] == 0
    assert paper_row(db, "hep-th/9901001")["is_new"] == 0
    assert paper_row(db, "2501.00010")["venue"] == "Journal of Small Models"
    assert paper_row(db, "2501.00030")["github_repo"] is None  # javascript: URL dropped
    journal_only = db.execute("SELECT key, doi FROM papers WHERE arxiv_id IS NULL").fetchall()
    assert journal_only == [("title:a journal only study of model size", None)]

    # The next day nothing is new, whatever order the sources come in; the feeds answer 304.
    again = run_ingest(db, [journal, api, hf, rss_cl, rss_lg], fetcher, now=TUESDAY)
    assert sum(r.new for r in again) == 0
    assert {r.name: r.status for r in again} == {
        "journal": "not_modified",
        "api": "ok",  # the API is a query, not a feed: no validators, always asked again
        "hf": "not_modified",
        "arxiv-cl": "not_modified",
        "arxiv-lg": "not_modified",
    }
    assert next(r for r in again if r.name == "api").duplicates == 2
    assert db.execute("SELECT count(*) FROM papers").fetchone()[0] == 8
    assert paper_row(db, "2501.00001")["first_seen_at"] == iso(MONDAY)


def test_two_papers_sharing_a_title_stay_two_papers(db, feed_server, fetcher):
    item = """<item><title>On the Same Title Twice</title><link>https://arxiv.org/abs/{id}</link>
      <description>arXiv:{id}v1 Announce Type: new
Abstract: Text {id}.</description><guid>oai:arXiv.org:{id}v1</guid><category>cs.LG</category>
      <arxiv:announce_type>new</arxiv:announce_type><dc:creator>A. Author</dc:creator></item>"""
    body = (
        '<rss version="2.0" xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        "<channel><title>cs.LG</title>"
        + item.format(id="2501.00100")
        + item.format(id="2501.00200")
        + "</channel></rss>"
    ).encode()
    url = feed_server.route("/rss", Reply(body=body))
    [report] = run_ingest(db, [source("arxiv", "arxiv_rss", url)], fetcher, now=MONDAY)
    assert report.new == 2
    assert db.execute("SELECT count(*) FROM papers").fetchone()[0] == 2


# --- the captured corpus, served over HTTP ----------------------------------------------------------------------


def test_arxiv_feeds_are_read_as_a_stream_that_lets_go_of_each_entry(fixtures):
    from newsletter.sources.base import XmlStream

    # 2,000 items (~0.6 MB): a whole tree would hold all of them at once.
    text = (fixtures / "arxiv_rss_small.xml").read_text()
    first, last = text.index("<item>"), text.rindex("</item>") + len("</item>")
    body = (text[:first] + text[first:last] * 500 + text[last:]).encode()
    xml = XmlStream(body)
    held = []
    for item in xml.entries("item", depth=2):
        assert item.findtext("title")  # complete when handed out
        held.append(len(xml.root.find("channel").findall("item")))
    assert xml.entries_seen == 2000
    assert max(held) < 500  # only the items of the piece of input being parsed, never the whole feed
    channel = xml.root.find("channel")
    assert channel.findall("item") == [] and channel.findtext("title") == "cs.LG updates on arXiv.org"
    parsed = arxiv_rss_module.parse(body)
    assert (parsed.entries_seen, len(parsed.papers)) == (2000, 2000)


def _generic_feed(flavour: str, count: int) -> bytes:
    """A generic feed of ``count`` entries, with characters far outside ASCII in every one."""
    abstract = "Tiny experts route tokens \U0001f600 across layers, " * 12
    if flavour == "atom":
        entry = (
            "<entry><title>Study {n} of small models \u2013 part {n}</title>"
            '<link href="https://journal.example.org/a/{n}"/><id>https://journal.example.org/a/{n}</id>'
            "<updated>2025-01-10T09:00:00Z</updated><summary>" + abstract + "</summary></entry>\n"
        )
        head = '<feed xmlns="http://www.w3.org/2005/Atom"><title>Journal \u2713</title><id>urn:j</id>\n'
        tail = "</feed>\n"
    else:
        entry = (
            "<item{about}><title>Study {n} of small models \u2013 part {n}</title>"
            "<link>https://journal.example.org/a/{n}</link><description>&lt;p&gt;"
            + abstract
            + "&lt;/p&gt;</description></item>\n"
        )
        if flavour == "rdf":
            head = (
                '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/">'
                '<channel rdf:about="https://journal.example.org/"><title>Journal \u2713</title>'
                "<link>https://journal.example.org/</link><description>d</description></channel>\n"
            )
            tail = "</rdf:RDF>\n"
        else:
            head = '<rss version="2.0"><channel><title>Journal \u2713</title><link>https://journal.example.org/</link>\n'
            tail = "<textInput><title>Search</title></textInput></channel></rss>\n"
    about = ' rdf:about="https://journal.example.org/a/{n}"' if flavour == "rdf" else ""
    items = "".join(entry.replace("{about}", about).replace("{n}", str(n)) for n in range(count))
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + head + items + tail).encode()


@pytest.mark.parametrize("flavour", ["rss2", "atom", "rdf"])
def test_a_large_generic_feed_is_read_in_pieces_with_every_entry_once_in_order(flavour):
    import feedparser

    from newsletter.sources import feed as feed_module
    from newsletter.sources.pieces import PIECE_BYTES, feed_pieces

    body = _generic_feed(flavour, 3000)
    assert len(body) > 2 * PIECE_BYTES  # large enough to be cut
    pieces = list(feed_pieces(body))
    assert len(pieces) >= 2
    titles = []
    for piece in pieces:
        parsed = feedparser.parse(piece)
        assert not parsed.bozo, parsed.get("bozo_exception")
        assert parsed.feed.title == "Journal \u2713"
        titles += [entry.title for entry in parsed.entries]
    expected = [f"Study {n} of small models \u2013 part {n}" for n in range(3000)]
    assert titles == expected
    result = feed_module.parse(body)
    assert (result.entries_seen, result.problems) == (3000, [])
    assert [paper.title for paper in result.papers] == expected
    assert result.papers[0].venue == "Journal \u2713" and "\U0001f600" in result.papers[-1].abstract


def test_feeds_that_cannot_be_cut_safely_are_read_whole():
    from newsletter.sources.pieces import feed_pieces

    entry = "<item><title>t</title></item>"
    doctype = f'<!DOCTYPE rss [<!ENTITY a "x">]><rss><channel>{entry * 5}</channel></rss>'.encode()
    broken = f"<rss><channel>{entry * 5}</rss>".encode()
    scattered = f"<rss><channel>{entry * 3}</channel><channel>{entry * 3}</channel></rss>".encode()
    for body in (doctype, broken, scattered):
        assert list(feed_pieces(body, piece_bytes=10)) == [body]
    cut = list(feed_pieces(f"<rss><channel>{entry * 5}</channel></rss>".encode(), piece_bytes=10))
    assert cut == [f"<rss><channel>{entry}</channel></rss>".encode()] * 5


def test_channel_children_among_and_after_the_entries_reach_every_piece():
    import feedparser

    from newsletter.sources import feed as feed_module
    from newsletter.sources.pieces import PIECE_BYTES, feed_pieces

    item = (
        "<item><title>Study {n}</title><link>https://journal.example.org/a/{n}</link>"
        "<description>" + "Small models route tokens. " * 40 + "</description></item>\n"
    )
    items = [item.replace("{n}", str(n)) for n in range(3000)]
    # RSS does not order a channel's children: here its description stands among the items and its
    # title after them all, as a feed read whole still sees them.
    body = (
        '<?xml version="1.0"?>\n<rss version="2.0"><channel><link>https://journal.example.org/</link>\n'
        + "".join(items[:1000])
        + "<description>Issue 12</description>\n"
        + "".join(items[1000:])
        + "<title>Late Journal</title></channel></rss>\n"
    ).encode()
    assert len(body) > 2 * PIECE_BYTES
    pieces = list(feed_pieces(body))
    assert len(pieces) >= 2
    for piece in pieces:
        parsed = feedparser.parse(piece)
        assert not parsed.bozo, parsed.get("bozo_exception")
        assert (parsed.feed.title, parsed.feed.description) == ("Late Journal", "Issue 12")
    result = feed_module.parse(body)
    assert [paper.title for paper in result.papers] == [f"Study {n}" for n in range(3000)]
    assert {paper.venue for paper in result.papers} == {"Late Journal"}


def test_a_large_feed_in_an_encoding_expat_cannot_read_is_read_whole_by_feedparser():
    from newsletter.sources import feed as feed_module
    from newsletter.sources.pieces import PIECE_BYTES, feed_pieces

    item = (
        "<item><title>研究 {n}</title><link>https://journal.example.jp/a/{n}</link>"
        "<description>" + "小さなモデルの研究。" * 80 + "</description></item>\n"
    )
    items = "".join(item.replace("{n}", str(n)) for n in range(1500))
    text = f'<?xml version="1.0" encoding="Shift_JIS"?>\n<rss version="2.0"><channel><title>学術誌</title>{items}'
    body = (text + "</channel></rss>\n").encode("shift_jis")  # multi-byte: expat refuses it, feedparser not
    assert len(body) > 2 * PIECE_BYTES
    assert list(feed_pieces(body)) == [body]
    result = feed_module.parse(body)
    assert [paper.title for paper in result.papers] == [f"研究 {n}" for n in range(1500)]
    assert {paper.venue for paper in result.papers} == {"学術誌"}


def _ids_in(raw: str) -> set[str]:
    return {
        m.group(1)
        for m in re.finditer(
            r"(?:arxiv\.org/abs/|oai:arXiv\.org:|\"id\": ?\")([0-9]{4}\.[0-9]{4,5}|[a-z\-]+/[0-9]{7})", raw
        )
    }


def test_corpus_arxiv_rss_hf_and_api_dedupe_by_id(db, feed_server, fetcher, corpus_feeds):
    names = {
        "arxiv_rss": [
            "arxiv_rss2_all-archives_2024-11-28__aioarxiv.xml",
            "arxiv_rss_atom_cs.AI_2025-08-20__zotero-arxiv-daily.xml",
        ],
        "hf_daily": [
            "hf_api_daily_papers_2026-06-12__sotawhat.json",
            "hf_api_daily_papers_2026-08-03_pretty__NewsAssistant.json",
        ],
        "arxiv_api": [
            "arxiv_api_atom_2026_search_testing_start0_max10__arxiv.py.xml",
            "arxiv_api_atom_2026_search_testing_start10_max10__arxiv.py.xml",
            "arxiv_api_atom_query_transformer-cs.LG_2026-06-14__sotawhat.xml",
            "arxiv_api_atom_legacy-format_search_au-del_maestro_2016-10-09__arxiv.py.xml",
            "arxiv_api_atom_2026_id_list_0808.05394+1707.08567__arxiv.py.xml",
        ],
    }
    sources = []
    expected_ids: set[str] = set()
    for kind, files in names.items():
        for position, name in enumerate(files):
            path = corpus_feeds / name
            expected_ids |= _ids_in(path.read_text(encoding="utf-8"))
            url = feed_server.route(f"/{kind}/{position}", file_reply(path))
            options = {"query": "all:x", "max_results": 10} if kind == "arxiv_api" else {}
            sources.append(source(f"{kind}-{position}", kind, url, **options))
    # The same all-archives file once more under another name: a second category feed listing the same papers.
    sources.append(
        source(
            "arxiv-again",
            "arxiv_rss",
            feed_server.route("/again", file_reply(corpus_feeds / names["arxiv_rss"][0])),
        )
    )

    reports = run_ingest(db, sources, fetcher, now=MONDAY)
    assert not [r.error for r in reports if r.failed]
    stored = {row[0] for row in db.execute("SELECT arxiv_id FROM papers")}
    assert stored == expected_ids
    assert db.execute("SELECT count(*) FROM papers").fetchone()[0] == len(expected_ids)
    again = reports[-1]
    assert (again.fetched, again.new, again.updated, again.duplicates) == (1504, 0, 0, 1504)
    first = reports[0]
    # new and cross are new; replacements of papers not seen before are revisions, neither new nor updates
    assert (first.new, first.updated, first.revisions) == (926 + 9, 0, 569)
    new_flags = dict(
        db.execute(
            "SELECT is_new, count(*) FROM papers WHERE 'arxiv_rss-0' IN (SELECT value FROM json_each(sources)) GROUP BY is_new"
        ).fetchall()
    )
    assert new_flags == {1: 935, 0: 569}


def test_second_fetch_of_unchanged_feed_does_no_parsing(db, feed_server, fetcher, corpus_feeds, monkeypatch):
    url = feed_server.route(
        "/rss", file_reply(corpus_feeds / "arxiv_rss2_all-archives_2024-11-28__aioarxiv.xml")
    )
    feed = source("arxiv", "arxiv_rss", url)
    [first] = run_ingest(db, [feed], fetcher, now=MONDAY)
    assert (first.status, first.new, first.documents_parsed) == ("ok", 935, 1)

    def must_not_parse(*_args, **_kwargs):
        raise AssertionError("an unchanged feed was parsed")

    # A spy, not a stand-in: it only proves the parser is never reached on a 304.
    monkeypatch.setattr(arxiv_rss_module, "parse", must_not_parse)
    [second] = run_ingest(db, [feed], fetcher, now=TUESDAY)
    assert (second.status, second.fetched, second.new, second.documents_parsed) == ("not_modified", 0, 0, 0)
    assert feed_server.requests_to("/rss")[1].headers["if-none-match"].startswith('"')
    row = db.execute("SELECT last_status, etag FROM sources WHERE name = 'arxiv'").fetchone()
    assert row[0] == "not_modified" and row[1]


def test_unchanged_body_without_validators_is_not_parsed_again(db, feed_server, fetcher, fixtures):
    url = feed_server.route("/plain", Reply(body=(fixtures / "arxiv_rss_small.xml").read_bytes()))
    feed = source("plain", "arxiv_rss", url)
    [first] = run_ingest(db, [feed], fetcher, now=MONDAY)
    [second] = run_ingest(db, [feed], fetcher, now=TUESDAY)
    assert first.documents_parsed == 1 and first.new == 2
    assert (second.status, second.documents_parsed, second.new) == ("not_modified", 0, 0)


# --- failures: each source's own error, the others still run ------------------------------------------------


def test_failing_sources_are_reported_and_do_not_stop_the_others(db, feed_server, fixtures, corpus_feeds):
    good_body = (fixtures / "arxiv_rss_small.xml").read_bytes()
    routes = {
        "good": Reply(body=good_body),
        "server-error": Reply(status=500, body=b"Internal Server Error", content_type="text/plain"),
        "html-page": Reply(
            body=b"<!DOCTYPE html><html><head><title>Service Maintenance</title></head><body>back soon</body></html>",
            content_type="text/html",
        ),
        "html-as-xml": Reply(body=b"<html><head><title>Login required</title></head></html>"),
        "empty": Reply(body=b""),
        "truncated": Reply(body=good_body, truncate_to=200),
        "slow": Reply(body=good_body, delay=2.5),
        "malformed": Reply(body=good_body.replace(b"</channel>", b"")),
        "oversize": Reply(body=good_body * 20),
        "error-feed": file_reply(corpus_feeds / "arxiv_rss2_error-feed__aioarxiv.xml"),
        "not-found": Reply(status=404, body=b"no such feed", content_type="text/plain"),
    }
    sources = [
        source(name, "arxiv_rss", feed_server.route(f"/{name}", reply)) for name, reply in routes.items()
    ]
    settings = FetchSettings(timeout=1.0, attempts=2, backoff=0.05, max_bytes=len(good_body) * 5)
    with Fetcher(settings) as fetcher:
        reports = {r.name: r for r in run_ingest(db, sources, fetcher, now=MONDAY)}

    assert reports["good"].status == "ok" and reports["good"].new == 2
    expected = {
        "server-error": "HTTP 500 Internal Server Error: Internal Server Error (gave up after 2 attempts)",
        "html-page": "expected an arXiv RSS feed but got HTML page titled 'Service Maintenance' (HTTP 200)",
        "html-as-xml": "expected an arXiv RSS feed but got HTML page titled 'Login required' (HTTP 200)",
        "empty": "empty response body (HTTP 200)",
        "truncated": "connection closed before the whole response arrived",
        "slow": "timed out after 1 s",
        "malformed": "malformed XML at line",
        "oversize": "exceeds the",
        "error-feed": "arXiv feed error: Bad archive 'astroph'",
        "not-found": "HTTP 404 Not Found: no such feed",
    }
    for name, message in expected.items():
        assert reports[name].failed, name
        assert message in reports[name].error, (name, reports[name].error)
        assert reports[name].errors == 1
    stored = dict(db.execute("SELECT name, last_error FROM sources WHERE last_status = 'failed'").fetchall())
    assert set(stored) == set(expected)
    assert "Bad archive" in stored["error-feed"]
    runs = db.execute("SELECT count(*) FROM fetch_runs WHERE status = 'failed'").fetchone()[0]
    assert runs == len(expected)


def test_a_source_whose_papers_cannot_be_stored_keeps_its_old_state(db, feed_server, fetcher, fixtures):
    url = feed_server.route("/rss", file_reply(fixtures / "arxiv_rss_small.xml"))
    feed = source("arxiv", "arxiv_rss", url)
    # A real SQLite failure in the middle of storing: a trigger refuses the third paper.
    db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON papers WHEN NEW.arxiv_id = '2410.09999' "
        "BEGIN SELECT RAISE(ABORT, 'disk quota exceeded'); END"
    )
    [failed] = run_ingest(db, [feed], fetcher, now=MONDAY)
    assert failed.failed and "could not store papers: disk quota exceeded" in failed.error
    assert db.execute("SELECT count(*) FROM papers").fetchone()[0] == 0  # nothing half-stored
    assert db.execute("SELECT etag FROM sources WHERE name = 'arxiv'").fetchone()[0] is None

    db.execute("DROP TRIGGER refuse")
    [retried] = run_ingest(db, [feed], fetcher, now=TUESDAY)
    assert "if-none-match" not in feed_server.requests_to("/rss")[1].headers  # fetched in full again
    assert (retried.status, retried.new, retried.updated, retried.revisions) == ("ok", 2, 0, 2)


def test_hostile_feed_content_is_stored_as_inert_text(db, feed_server, fetcher, fixtures):
    sources = [
        source("journal", "feed", feed_server.route("/j", file_reply(fixtures / "hostile_feed.xml"))),
        source("arxiv", "arxiv_rss", feed_server.route("/a", file_reply(fixtures / "hostile_arxiv.xml"))),
    ]
    reports = run_ingest(db, sources, fetcher, now=MONDAY)
    assert [r.new for r in reports] == [2, 1]
    rows = db.execute("SELECT title, abstract, authors, url, doi FROM papers ORDER BY id").fetchall()
    everything = " ".join(str(value) for row in rows for value in row).lower()
    for marker in (
        "<script",
        "<style",
        "<img",
        "<iframe",
        "<svg",
        "javascript:",
        "onerror",
        "onclick",
        "document.cookie",
    ):
        assert marker not in everything, marker
    first, second, arxiv = rows
    assert first[0] == "Safe title with bold words"
    assert first[1].startswith("Real abstract text.") and first[1].endswith("end.")
    assert "click here" in first[1]  # a link's text stays, its target does not
    assert "double escaped" not in first[1]  # escaped twice is still a script: its content goes too
    assert first[3] is None  # the javascript: link is gone, not "fixed"
    assert json.loads(first[2]) == ["Eve Mallory"]
    assert second[0] == '"> Attribute Breakout Attempt'
    assert second[4] == "10.5555/hostile.2"
    assert arxiv[0] == "Breaking Filters for x<y"
    assert "p < 0.05" in arxiv[1] and "a<b" in arxiv[1] and "styles vanish" in arxiv[1]
    assert arxiv[3] == "https://arxiv.org/abs/2501.00666"


# --- the arXiv API: paging, politeness, errors ------------------------------------------------------------------


@pytest.mark.slow
def test_arxiv_api_pages_with_three_seconds_between_requests_and_retries_503(db, feed_server, corpus_feeds):
    pages = {
        "0": (corpus_feeds / "arxiv_api_atom_2026_search_testing_start0_max10__arxiv.py.xml").read_bytes(),
        "10": (corpus_feeds / "arxiv_api_atom_2026_search_testing_start10_max10__arxiv.py.xml").read_bytes(),
    }
    unavailable = {"sent": False}

    def api(request):
        start = request.query["start"][0]
        if start == "10" and not unavailable["sent"]:
            unavailable["sent"] = True
            return Reply(status=503, body=b"Service Unavailable", content_type="text/plain")
        return Reply(body=pages[start], content_type="application/atom+xml")

    url = feed_server.respond("/api/query", api)
    config = source(
        "search", "arxiv_api", url, query="all:testing", page_size=10, max_results=20, min_interval=3.0
    )
    with Fetcher(FetchSettings(timeout=5, attempts=3, backoff=0.1)) as fetcher:
        [report] = run_ingest(db, [config], fetcher, now=MONDAY)
    assert (report.status, report.fetched, report.new, report.documents_parsed) == ("ok", 20, 20, 2)
    requests = feed_server.requests_to("/api/query")
    assert [r.query["start"][0] for r in requests] == ["0", "10", "10"]
    assert requests[0].query["search_query"] == ["all:testing"] and requests[0].query["max_results"] == ["10"]
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(requests)]
    assert min(gaps) >= 2.95, gaps  # >= 3 s between calls, the retry after the 503 included


def test_arxiv_api_error_entry_and_http_400(db, feed_server, fetcher, corpus_feeds):
    body = (corpus_feeds / "arxiv_api_atom_2026_error_invalid_id__arxiv.py.xml").read_bytes()
    url = feed_server.route("/api/query", Reply(status=400, body=body, content_type="application/atom+xml"))
    [report] = run_ingest(db, [source("bad", "arxiv_api", url, id_list=("abc",))], fetcher, now=MONDAY)
    assert report.failed
    assert report.error == "arXiv API error: incorrect id format for abc (HTTP 400)"
    assert len(feed_server.requests_to("/api/query")) == 1  # a 400 is not retried


def test_arxiv_api_zero_results_is_not_an_error(db, feed_server, fetcher, corpus_feeds):
    path = corpus_feeds / "arxiv_api_atom_2026_empty_result_id_0000.0000__arxiv.py.xml"
    url = feed_server.route("/api/query", file_reply(path))
    [report] = run_ingest(db, [source("none", "arxiv_api", url, id_list=("0000.0000",))], fetcher, now=MONDAY)
    assert (report.status, report.fetched, report.errors) == ("ok", 0, 0)


def test_arxiv_api_empty_page_before_the_promised_total_is_reported(db, feed_server, fetcher, corpus_feeds):
    first = (corpus_feeds / "arxiv_api_atom_2026_search_testing_start0_max10__arxiv.py.xml").read_bytes()
    empty = (corpus_feeds / "arxiv_api_atom_2026_empty_result_id_0000.0000__arxiv.py.xml").read_bytes()
    empty = empty.replace(b"<opensearch:totalResults>0<", b"<opensearch:totalResults>214881<")

    def api(request):
        return Reply(body=first if request.query["start"] == ["0"] else empty)

    url = feed_server.respond("/api/query", api)
    config = source("search", "arxiv_api", url, query="all:testing", page_size=10, max_results=30)
    [report] = run_ingest(db, [config], fetcher, now=MONDAY)
    assert (report.status, report.new) == ("ok", 10)
    assert "returned empty pages at start=10" in report.problems[0]
    assert len(feed_server.requests_to("/api/query")) == 4  # the empty page was asked for three times


def test_arxiv_api_lookback_sorts_by_date_and_stops_at_older_papers(db, feed_server, fetcher, fixtures):
    url = feed_server.route("/api/query", file_reply(fixtures / "arxiv_api_small.xml"))
    config = source(
        "recent", "arxiv_api", url, query="cat:cs.LG", page_size=1, max_results=50, lookback_days=7
    )
    [report] = run_ingest(db, [config], fetcher, now=MONDAY)
    # Both fixture papers are from January 2025, long before "now": nothing recent, one request only.
    assert (report.status, report.fetched) == ("ok", 0)
    [request] = feed_server.requests_to("/api/query")
    assert request.query["sortBy"] == ["submittedDate"] and request.query["sortOrder"] == ["descending"]


def test_generic_feed_that_is_not_well_formed_keeps_what_it_can_and_says_so(
    db, feed_server, fetcher, fixtures
):
    body = (fixtures / "journal_small.xml").read_bytes().replace(b"</channel>", b"")
    bare = b"<rss><channel><item><title>x</title></item></channel></rss>"
    sources = [
        source("broken", "feed", feed_server.route("/broken", Reply(body=body))),
        source("bare", "feed", feed_server.route("/bare", Reply(body=bare))),
        source(
            "text",
            "feed",
            feed_server.route("/text", Reply(body=b"just some text", content_type="text/plain")),
        ),
    ]
    broken, bare_report, text = run_ingest(db, sources, fetcher, now=MONDAY)
    assert (broken.status, broken.new) == ("ok", 3)
    assert broken.problems == [
        "feed is not well-formed (line 31, column 2: mismatched tag); read 3 entries anyway"
    ]
    assert bare_report.new == 0
    assert "entry 1 skipped: 'x' has no link, id, DOI or title specific enough" in bare_report.problems[0]
    assert text.failed and text.error.startswith("not a readable feed: line ")
    assert text.error.endswith("syntax error")
