"""The library and feedback commands, run as the installed program in subprocesses, against a real database
and the arXiv API on the local feed server."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from tests.support.arxivapi import FakeArxiv
from tests.support.feedserver import file_reply
from tests.support.topics import TOPICS, paper
from tests.test_cli import run

ADA = "ada@example.org"


@pytest.fixture
def arxiv(feed_server) -> FakeArxiv:
    api = FakeArxiv(feed_server)
    api.papers = {
        "2401.00001": ("Tactile Sensing for Robot Grasping", "Robots grasp with touch.", "cs.RO"),
        "2401.00002": ("Dense Retrieval for Scientific Search", "Retrieval of papers.", "cs.IR"),
        "1706.03762": ("Attention Is All You Need", "The transformer.", "cs.CL"),
    }
    return api


@pytest.fixture
def home(tmp_path: Path, arxiv: FakeArxiv, feed_server, fixtures) -> Path:
    feed = feed_server.route("/rss", file_reply(fixtures / "arxiv_rss_small.xml"))
    (tmp_path / "newsletter.toml").write_text(
        '[newsletter]\ndatabase = "news.db"\n'
        "[fetch]\ntimeout = 2\nattempts = 1\n"
        f'[library]\narxiv_api = "{arxiv.url}"\nmin_interval = 0\n'
        f'[[sources]]\nname = "arxiv"\nkind = "arxiv_rss"\nurl = "{feed}"\n'
    )
    assert run("init", cwd=tmp_path).returncode == 0
    assert run("subscribers", "add", ADA, cwd=tmp_path).returncode == 0
    return tmp_path


def errors(result) -> list[str]:
    return [line.removeprefix("error: ") for line in result.stderr.splitlines() if line.startswith("error: ")]


def listed(home: Path, email: str = ADA) -> dict:
    result = run("library", "list", email, "--json", cwd=home)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_library_add_fetches_finds_keeps_pending_and_says_each_problem(home, arxiv):
    (home / "refs.bib").write_text(
        "@article{attention, title={Attention Is All You Need}, eprint={1706.03762}, archivePrefix={arXiv}}\n"
        "@article{broken, title={Never closed,\n"
        "@article{journal, title={A Journal Paper}, doi={10.1000/journal.5}}\n"
    )
    result = run(
        "library",
        "add",
        ADA,
        "https://arxiv.org/pdf/2401.00001v3",
        "refs.bib",
        "2401.09999",
        "nonsense",
        cwd=home,
    )
    assert result.returncode == 1, result.stderr
    assert arxiv.asked == [["2401.00001", "1706.03762", "2401.09999"]]
    assert errors(result)[0].startswith("refs.bib line 2: broken entry '@article{broken' skipped: ")
    assert errors(result)[1:] == [
        "'nonsense' is not an arXiv id or URL, a DOI, or a .bib, .ris, .csv or .txt file",
        "2401.09999: arXiv has no paper 2401.09999",
    ]
    assert f"{ADA}: 2 papers in the library from this add (2 fetched from arXiv), 1 pending" in result.stdout
    assert "added arxiv:2401.00001  Tactile Sensing for Robot Grasping" in result.stdout
    assert "pending refs.bib line 3 (journal): not stored yet" in result.stdout

    library = listed(home)
    assert [(p["id"], p["kind"]) for p in library["papers"]] == [
        ("arxiv:1706.03762", "library"),
        ("arxiv:2401.00001", "library"),
    ]
    assert [p["key"] for p in library["pending"]] == ["doi:10.1000/journal.5"]
    assert (library["reader"], library["follow_authors"], library["exclude_keywords"]) == (ADA, [], [])
    table = run("library", "list", ADA, cwd=home)
    assert f"{ADA}: 2 library, 0 liked, 0 hidden, 1 pending" in table.stdout

    removed = run("library", "remove", ADA, "1706.03762", "10.1000/JOURNAL.5", "arxiv:2409.00001", cwd=home)
    assert removed.returncode == 1 and errors(removed) == [f"arxiv:2409.00001 is not in {ADA}'s library"]
    assert "removed 2 from" in removed.stdout
    assert [p["id"] for p in listed(home)["papers"]] == ["arxiv:2401.00001"] and listed(home)["pending"] == []
    nothing = run("library", "remove", ADA, "arxiv:2409.00001", "junk", cwd=home)
    assert nothing.returncode == 2 and len(errors(nothing)) == 2


def test_nothing_to_add_is_a_usage_error(home, arxiv):
    result = run("library", "add", ADA, "nonsense", "missing.ris", cwd=home)
    assert result.returncode == 2 and arxiv.requests == []
    assert errors(result) == [
        "'nonsense' is not an arXiv id or URL, a DOI, or a .bib, .ris, .csv or .txt file",
        "missing.ris: no such file",
        f"nothing to add to {ADA}'s library",
    ]
    assert run("library", "add", ADA, cwd=home).returncode == 2  # no ITEM at all: click's usage error
    stranger = run("library", "add", "nobody@example.org", "2401.00001", cwd=home)
    assert stranger.returncode == 2 and errors(stranger) == ["nobody@example.org is not on the list"]


def test_a_50_mb_file_and_an_id_list_of_100000_lines(home, arxiv):
    with (home / "huge.bib").open("wb") as file:
        file.truncate(50_000_000)
    refused = run("library", "add", ADA, "huge.bib", cwd=home)
    assert refused.returncode == 2
    assert errors(refused)[0] == "huge.bib: 50.0 MB is more than a library file may have (10 MB): split it"

    arxiv.papers = {f"2402.{n:05d}": (f"Paper {n} of many", "An abstract.", "cs.LG") for n in range(1, 1001)}
    (home / "many.txt").write_text("\n".join(f"2402.{n:05d}" for n in range(1, 100_001)) + "\n")
    result = run("library", "add", ADA, "many.txt", cwd=home)
    assert result.returncode == 1
    assert errors(result) == [
        "many.txt line 1001: an add takes at most 1,000 items; this one and the rest were not read (add them "
        "in another run)"
    ]
    assert [len(ids) for ids in arxiv.asked] == [100] * 10
    assert (
        f"{ADA}: 1000 papers in the library from this add (1000 fetched from arXiv), 0 pending"
        in result.stdout
    )
    assert "... and 980 more" in result.stdout


def test_feedback_on_a_paper_of_an_edition_and_its_refusals(home):
    assert run("fetch", cwd=home).returncode == 0
    built = run("digest", "build", "--json", "-", cwd=home)
    edition = json.loads(built.stdout)
    paper = edition["clusters"][0]["papers"][0]["id"]
    up = run("feedback", ADA, paper, "up", cwd=home)
    assert up.returncode == 0 and f"{ADA}: more like {paper}" in up.stdout
    down = run("feedback", ADA, paper.removeprefix("arxiv:"), "down", cwd=home)
    assert down.returncode == 0 and f"{ADA}: less like {paper}" in down.stdout
    when = listed(home)["papers"][0]["created_at"]
    again = run("feedback", ADA, paper, "down", cwd=home)
    assert (
        again.returncode == 0 and f"{ADA}: less like {paper} (already noted: nothing changed)" in again.stdout
    )
    assert listed(home)["papers"][0]["created_at"] == when
    assert [(p["id"], p["kind"]) for p in listed(home)["papers"]] == [(paper, "dislike")]

    pruned = run("feedback", ADA, "arxiv:2401.99999", "up", cwd=home)
    assert pruned.returncode == 2
    assert errors(pruned) == [
        "no stored paper is arxiv:2401.99999 (it may have been pruned since it was shown)"
    ]
    bogus = run("feedback", ADA, "bogus", "up", cwd=home)
    assert bogus.returncode == 2 and "is not a paper id" in bogus.stderr
    assert run("feedback", ADA, paper, "sideways", cwd=home).returncode == 2
    stranger = run("feedback", "nobody@example.org", paper, "up", cwd=home)
    assert stranger.returncode == 2 and errors(stranger) == ["nobody@example.org is not on the list"]
    assert [(p["id"], p["kind"]) for p in listed(home)["papers"]] == [(paper, "dislike")]


def test_follows_and_exclusions(home):
    followed = run("library", "follow", ADA, "José Pérez", "Li Wei", cwd=home)
    assert followed.returncode == 0
    assert f"{ADA} follows authors: José Pérez, Li Wei; excludes keywords: none" in followed.stdout
    assert run("library", "exclude", ADA, "Quantum", "LLM", cwd=home).returncode == 0
    unfollowed = run("library", "unfollow", ADA, "jose perez", "Nobody Here", cwd=home)
    assert unfollowed.returncode == 1 and errors(unfollowed) == [
        f"'Nobody Here' is not a followed author of {ADA}"
    ]
    assert run("library", "include", ADA, "quantum", cwd=home).returncode == 0
    library = listed(home)
    assert (library["follow_authors"], library["exclude_keywords"]) == (["Li Wei"], ["llm"])
    too_many = run("library", "follow", ADA, *[f"Author {n}" for n in range(60)], cwd=home)
    assert too_many.returncode == 2 and errors(too_many) == ["follow at most 50 authors"]


def test_export_holds_what_readers_taught_reimports_and_remove_forgets_it(home):
    assert run("library", "add", ADA, "2401.00001", "10.1000/waits.1", cwd=home).returncode == 0
    assert run("library", "follow", ADA, "Ada Lovelace", cwd=home).returncode == 0
    assert run("subscribers", "add", "bo@example.org", cwd=home).returncode == 0
    exported = run("subscribers", "export", "out.csv", "--library", "taught.jsonl", cwd=home)
    assert exported.returncode == 0, exported.stderr
    assert "exported what 1 of them taught to taught.jsonl" in exported.stderr
    rows = list(csv.DictReader(io.StringIO((home / "out.csv").read_text())))
    assert [(r["email"], r["follow_authors"]) for r in rows] == [
        (ADA, '["Ada Lovelace"]'),
        ("bo@example.org", "[]"),
    ]
    [line] = (home / "taught.jsonl").read_text().splitlines()
    taught = json.loads(line)
    assert taught["email"] == ADA and [p["id"] for p in taught["papers"]] == ["arxiv:2401.00001"]
    assert [p["key"] for p in taught["pending"]] == ["doi:10.1000/waits.1"]
    reimported = run("--db", "copy.db", "subscribers", "import", "out.csv", cwd=home)
    assert reimported.returncode == 0 and "imported 2 new subscribers" in reimported.stdout
    missing_dir = run("subscribers", "export", "--library", "nowhere/taught.jsonl", cwd=home)
    assert missing_dir.returncode == 2 and "--library nowhere/taught.jsonl" in missing_dir.stderr

    assert run("subscribers", "remove", ADA, cwd=home).returncode == 0
    with sqlite3.connect(home / "news.db") as conn:
        assert conn.execute("SELECT count(*) FROM reader_signals").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM library_pending").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM papers").fetchone()[0] == 1  # the paper stays, unused


def test_library_commands_need_a_database(tmp_path):
    result = run("library", "list", ADA, cwd=tmp_path)
    assert result.returncode == 2 and "run `newsletter init` first" in result.stderr
    assert not (tmp_path / "data").exists()


def topical_feed(per_topic: int = 4, authors: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """An arXiv RSS feed of papers on the ranker tests' ten topics, and each arXiv id's topic. Every
    paper is by "A. Author", unless ``authors`` names others (by arXiv id)."""
    items, topics = [], {}
    for t, topic in enumerate(TOPICS):
        for number in range(per_topic):
            text = paper(topic, number)
            arxiv_id = f"2502.{t + 1:02d}{number + 1:03d}"
            topics[f"arxiv:{arxiv_id}"] = topic
            items.append(
                f"<item><title>{escape(text.title)}</title><link>https://arxiv.org/abs/{arxiv_id}</link>"
                f"<description>arXiv:{arxiv_id}v1 Announce Type: new\nAbstract: {escape(text.abstract)}"
                f'</description><guid isPermaLink="false">oai:arXiv.org:{arxiv_id}v1</guid>'
                "<category>cs.LG</category><pubDate>Mon, 03 Feb 2025 00:00:00 -0500</pubDate>"
                "<arxiv:announce_type>new</arxiv:announce_type>"
                f"<dc:creator>{escape((authors or {}).get(arxiv_id, 'A. Author'))}</dc:creator></item>"
            )
    feed = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss xmlns:arxiv="http://arxiv.org/schemas/atom" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" version="2.0"><channel><title>cs.LG updates</title>'
        f"<link>http://rss.arxiv.org/rss/cs.LG</link><description>d</description>{''.join(items)}</channel></rss>"
    )
    return feed, topics


def configure_topical_source(tmp_path, feed_server, feed: str) -> None:
    """The configuration of a newsletter whose one source is ``feed``, served by the local feed server."""
    (tmp_path / "topics.xml").write_text(feed, encoding="utf-8")
    url = feed_server.route("/topics", file_reply(tmp_path / "topics.xml"))
    (tmp_path / "newsletter.toml").write_text(
        '[newsletter]\ndatabase = "news.db"\n[fetch]\ntimeout = 2\nattempts = 1\n'
        f'[[sources]]\nname = "arxiv"\nkind = "arxiv_rss"\nurl = "{url}"\n'
    )


def test_digest_for_ranks_the_edition_for_a_reader_and_proposes_only_what_is_close(tmp_path, feed_server):
    feed, topics = topical_feed()
    configure_topical_source(tmp_path, feed_server, feed)
    for command in (
        ("init",),
        ("subscribers", "add", ADA),
        ("subscribers", "add", "cold@example.org"),
        ("fetch",),
    ):
        assert run(*command, cwd=tmp_path).returncode == 0
    built = json.loads(run("digest", "build", "--json", "-", cwd=tmp_path).stdout)
    order = [p["id"] for cluster in built["clusters"] for p in cluster["papers"]]
    assert sorted(order) == sorted(topics)
    robot = next(i for i in order if topics[i] == "robot")
    astro = next(i for i in order if topics[i] == "astro")
    for liked in (robot, astro):
        assert run("feedback", ADA, liked, "up", cwd=tmp_path).returncode == 0

    result = run("digest", "for", str(built["edition"]), ADA, "--json", "-", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert view["edition"] == built["edition"] and view["reader"] == ADA
    assert sorted(p["id"] for p in view["ranked"]) == sorted(order)
    scores = [p["score"] for p in view["ranked"]]
    assert scores == sorted(scores, reverse=True)
    picked = {topics[p["id"]] for p in view["for_you"]}
    assert picked == {"robot", "astro"}, view["for_you"]  # both interests, nothing else
    assert {robot, astro}.isdisjoint(
        p["id"] for p in view["for_you"]
    )  # what they liked is not proposed again
    assert all(p["why"].startswith("Close to “") and p["title"] for p in view["for_you"])
    assert {topics[p["id"]] for p in view["ranked"][:6]} <= {"robot", "astro"}

    shown = run("digest", "for", str(built["edition"]), ADA, cwd=tmp_path)
    assert shown.returncode == 0 and "for you" in shown.stdout and "ranked" in shown.stdout

    cold = json.loads(
        run("digest", "for", str(built["edition"]), "cold@example.org", "--json", "-", cwd=tmp_path).stdout
    )
    assert cold["for_you"] == [] and [p["id"] for p in cold["ranked"]] == order

    stranger = run("digest", "for", str(built["edition"]), "nobody@example.org", cwd=tmp_path)
    assert stranger.returncode == 2 and errors(stranger) == ["nobody@example.org is not on the list"]
    missing = run("digest", "for", "999", ADA, cwd=tmp_path)
    assert missing.returncode == 2 and errors(missing)


def test_digest_for_puts_followed_authors_first_and_excluded_papers_last(tmp_path, feed_server):
    texts = {
        f"arxiv:2502.{t + 1:02d}{n + 1:03d}": paper(topic, n)
        for t, topic in enumerate(TOPICS)
        for n in range(4)
    }

    def mentioning(word: str) -> set[str]:
        pattern = re.compile(rf"(?<!\w){word}(?!\w)", re.IGNORECASE)
        return {i for i, text in texts.items() if pattern.search(f"{text.title}\n{text.abstract}")}

    astro = {i for i, text in texts.items() if text.id.startswith("astro")}
    # A word of astronomy that some of its papers use and some do not: the reader excludes it.
    word = next(w for w in TOPICS["astro"].split() if 0 < len(mentioning(w) & astro) < len(astro) - 1)
    excluded = mentioning(word)
    jane = "2502.06002"  # a paper on economics, nowhere near the reader's astronomy
    assert texts[f"arxiv:{jane}"].id.startswith("econ") and f"arxiv:{jane}" not in excluded
    feed, topics = topical_feed(authors={jane: "Jane Doe, A. Author"})
    configure_topical_source(tmp_path, feed_server, feed)
    for command in (
        ("init",),
        ("subscribers", "add", ADA),
        ("subscribers", "add", "bo@example.org"),
        ("fetch",),
        ("library", "follow", ADA, "jane doe"),
        ("library", "exclude", ADA, word.upper()),
        ("library", "follow", "bo@example.org", "Jane Doe"),
    ):
        assert run(*command, cwd=tmp_path).returncode == 0, command
    built = json.loads(run("digest", "build", "--json", "-", cwd=tmp_path).stdout)
    order = [p["id"] for cluster in built["clusters"] for p in cluster["papers"]]
    liked = min(astro - excluded)
    assert run("feedback", ADA, liked, "up", cwd=tmp_path).returncode == 0

    result = run("digest", "for", str(built["edition"]), ADA, "--json", "-", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    first, *learned = view["for_you"]
    assert (first["id"], first["why"]) == (f"arxiv:{jane}", "By Jane Doe, whom you follow")
    assert learned and {topics[p["id"]] for p in learned} == {"astro"}
    assert excluded.isdisjoint(p["id"] for p in view["for_you"])
    assert {p["id"] for p in view["ranked"][-len(excluded) :]} == excluded == set(view["excluded"])
    assert sorted(p["id"] for p in view["ranked"]) == sorted(order)  # every paper, the excluded ones last
    shown = run("digest", "for", str(built["edition"]), ADA, cwd=tmp_path)
    assert f"{len(excluded)} excluded by their keywords" in shown.stdout
    assert "By Jane Doe, whom you follow" in shown.stdout

    cold = json.loads(
        run("digest", "for", str(built["edition"]), "bo@example.org", "--json", "-", cwd=tmp_path).stdout
    )
    assert [(p["id"], p["why"]) for p in cold["for_you"]] == [
        (f"arxiv:{jane}", "By Jane Doe, whom you follow")
    ]
    assert [p["id"] for p in cold["ranked"]] == order and cold["excluded"] == []
