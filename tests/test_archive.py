"""The public archive: only what went to the whole list, over real HTTP."""

from __future__ import annotations

import re
from datetime import timedelta

import feedparser
import httpx
import pytest

from newsletter.compose import build_edition
from newsletter.db import open_database
from newsletter.outbox import create_one_off, send_edition, send_test_copy
from newsletter.settings import DigestSettings
from newsletter.web import create_app
from tests.support.webserver import RunningApp
from tests.test_deliver import MONDAY, edition_with_sample_papers, make_settings, subscribe

PRIVATE_SUBJECT = "A private word for reader0 only"
PUBLIC_SUBJECT = "Holiday schedule for everyone"


@pytest.fixture
def archive(tmp_path, smtp_server):
    """Two readers; a sent digest, a digest built (and test-copied) but never sent, a one-off to one
    reader, a one-off to all, each really sent through the test SMTP server; the web app on top."""
    settings = make_settings(tmp_path, smtp_server.port)
    sent_digest = edition_with_sample_papers(settings)
    readers = subscribe(settings, 2)
    send_edition(settings, sent_digest)
    db = open_database(settings.database)
    unsent_digest = build_edition(
        db, DigestSettings(), since=MONDAY - timedelta(days=7), until=MONDAY + timedelta(hours=1)
    ).id
    db.close()
    send_test_copy(settings, unsent_digest, "editor@example.org")
    to_one = create_one_off(settings, PRIVATE_SUBJECT, "Your **account** notes.", readers[0])
    send_edition(settings, to_one)
    to_all = create_one_off(settings, PUBLIC_SUBJECT, "We pause for two weeks.", "all")
    send_edition(settings, to_all)
    assert smtp_server.counts() == {readers[0]: 3, readers[1]: 2, "editor@example.org": 1}
    app = RunningApp(create_app(settings))
    yield app, {"sent": sent_digest, "unsent": unsent_digest, "to one": to_one, "to all": to_all}
    app.stop()


def test_only_editions_sent_to_the_whole_list_are_public(archive):
    app, editions = archive
    missing = httpx.get(f"{app.url}/editions/424242")
    assert missing.status_code == 404
    for hidden in ("unsent", "to one"):
        page = httpx.get(f"{app.url}/editions/{editions[hidden]}")
        # The same answer as for an edition that does not exist: nothing tells them apart.
        assert (page.status_code, page.text) == (404, missing.text), hidden
    digest = httpx.get(f"{app.url}/editions/{editions['sent']}")
    assert digest.status_code == 200 and digest.text.count('class="paper"') == 38
    message = httpx.get(f"{app.url}/editions/{editions['to all']}")
    assert message.status_code == 200 and PUBLIC_SUBJECT in message.text

    listing = httpx.get(f"{app.url}/editions").text
    linked = {int(n) for n in re.findall(r'href="/editions/(\d+)"', listing)}
    assert linked == {editions["sent"], editions["to all"]}
    assert PUBLIC_SUBJECT in listing and PRIVATE_SUBJECT not in listing

    raw = httpx.get(f"{app.url}/editions.atom").content
    feed = feedparser.parse(raw)
    assert feed.bozo == 0
    assert [entry.link for entry in feed.entries] == [
        f"https://news.example.org/editions/{editions['to all']}",
        f"https://news.example.org/editions/{editions['sent']}",
    ]
    assert PUBLIC_SUBJECT in feed.entries[0].title and "two weeks" in feed.entries[0].summary
    assert "38 papers" in feed.entries[1].title and "diffusion" in feed.entries[1].summary.lower()
    assert PRIVATE_SUBJECT.encode() not in raw


def test_archive_edition_page_and_feed_write_dates_one_way_and_cards_name_the_paper(archive):
    app, editions = archive
    day = r"\d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4}"
    listing = httpx.get(f"{app.url}/editions").text
    assert f"Edition {editions['sent']}: 16–23 Nov 2026</a>" in listing
    assert re.search(rf"message of {day}</span>", listing)
    page = httpx.get(f"{app.url}/editions/{editions['sent']}").text
    assert '<p class="muted">16–23 Nov 2026 · 38 papers</p>' in page
    cards = re.findall(r'<article class="paper">(.*?)</article>', page, re.S)
    assert len(cards) == 38
    arxiv = [card for card in cards if 'href="https://arxiv.org/abs/' in card]
    assert arxiv and all(
        ">PDF</a>" in card and re.search(r">arXiv:\d{4}\.\d{4,5}</a>", card) for card in arxiv
    )
    assert all(re.search(day, card) for card in cards)  # the day each paper was announced
    message = httpx.get(f"{app.url}/editions/{editions['to all']}").text
    assert re.search(rf'<p class="muted">Sent {day}</p>', message)
    feed = feedparser.parse(httpx.get(f"{app.url}/editions.atom").content)
    assert feed.entries[1].title == "Research Digest: 38 papers, 16–23 Nov 2026"
    assert all(entry.updated_parsed for entry in feed.entries)  # machine dates stay RFC 3339
    for text in (listing, page, feed.entries[1].title):
        assert not re.search(r"\d{4}-\d{2}-\d{2}", text)


def test_the_feed_reads_all_its_editions_in_one_query(tmp_path):
    from newsletter.editions import published_editions

    settings = make_settings(tmp_path, 25)
    edition_with_sample_papers(settings)
    db = open_database(settings.database)
    try:
        for day in range(60, 0, -1):
            build_edition(
                db,
                DigestSettings(),
                since=MONDAY - timedelta(days=day + 1),
                until=MONDAY - timedelta(days=day),
            )
        build_edition(
            db, DigestSettings(), since=MONDAY - timedelta(days=1), until=MONDAY + timedelta(hours=1)
        )
        db.execute("UPDATE editions SET status = 'sent'")
        statements: list[str] = []
        db.conn.set_trace_callback(statements.append)
        editions = published_editions(db, limit=50)
        db.conn.set_trace_callback(None)
    finally:
        db.close()
    assert len(editions) == 50 and len(statements) == 1
    with_papers = [e for e in editions if e.paper_count]
    assert with_papers and all(sum(size for _, size in e.sections) == e.paper_count for e in with_papers)
