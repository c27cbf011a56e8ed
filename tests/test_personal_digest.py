"""Each reader's own digest, end to end: an edition of topic papers ingested from the local feed server,
readers who taught it something, the send to a real aiosmtpd server, and what each reader received."""

from __future__ import annotations

import email
import email.policy
import json
import re
from contextlib import contextmanager
from datetime import timedelta
from html import unescape
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from newsletter.compose import build_edition
from newsletter.db import open_database
from newsletter.devsmtp import free_port
from newsletter.editions import Edition, EditionPaper, Section, load_edition
from newsletter.fetch import Fetcher
from newsletter.ingest import run_ingest
from newsletter.library import reader_signals, record_signal
from newsletter.message import COLD, DigestTemplate, ReaderLayout, Recipient
from newsletter.outbox import message_template, reader_digests, send_edition
from newsletter.preferences import Follows
from newsletter.render import CLIP_LIMIT, Renderer, RenderSettings
from newsletter.settings import DigestSettings, Sender, SourceConfig
from newsletter.subscribers import add_subscriber, change_follows, find_subscriber
from newsletter.tokens import Tokens
from newsletter.web import create_app
from tests.support.browser import Browser, screenshot_dir
from tests.support.feedserver import Reply
from tests.support.topics import TOPICS, arxiv_id, paper, topic_feed
from tests.support.webserver import RunningApp
from tests.test_cli import run
from tests.test_deliver import MONDAY, make_settings
from tests.test_signup import web_settings

ASTRO = "astro@example.org"
COLD_READER = "cold@example.org"
SECRET = "test-secret-key-0123456789"


def edition_of_topics(settings, feed_server, *, hostile_title: str | None = None) -> int:
    """An edition of 6 papers in each topic, from an arXiv listing served by the local feed server."""
    feed = topic_feed(list(TOPICS), 6, MONDAY - timedelta(hours=2))
    if hostile_title:
        feed = feed.replace(f"<title>{paper('astro', 0).title}</title>", f"<title>{hostile_title}</title>", 1)
    url = feed_server.route("/topics.xml", Reply(body=feed.encode(), content_type="application/xml"))
    db = open_database(settings.database)
    try:
        with Fetcher() as fetcher:
            run_ingest(db, [SourceConfig(name="topics", kind="arxiv_rss", url=url)], fetcher, now=MONDAY)
        return build_edition(db, DigestSettings(), now=MONDAY + timedelta(hours=1)).id
    finally:
        db.close()


def readers(settings, liked: list[str]) -> dict[str, int]:
    db = open_database(settings.database)
    try:
        ids = {
            ASTRO: add_subscriber(db, ASTRO, "Astro Reader").subscriber.id,
            COLD_READER: add_subscriber(db, COLD_READER, "Cold Reader").subscriber.id,
        }
        for key in liked:
            record_signal(db, ids[ASTRO], key, "like", now=MONDAY)
        return ids
    finally:
        db.close()


def received(server, address):
    [stored] = server.messages(address)
    message = email.message_from_bytes(stored.as_bytes(), policy=email.policy.default)
    return message.get_body(("html",)).get_content(), message.get_body(("plain",)).get_content()


def why_lines(html: str) -> list[str]:
    return [unescape(why).strip() for why in re.findall(r'<div class="nl-why">([^<]*)</div>', html)]


def astro_titles() -> set[str]:
    return {paper("astro", n).title for n in range(6)}


def feedback_links(html: str) -> list[str]:
    return re.findall(r'href="(https://news\.example\.org/feedback/[^"]+)"', html)


@pytest.fixture
def sent(tmp_path, smtp_server, feed_server):
    settings = make_settings(tmp_path, smtp_server.port)
    edition_id = edition_of_topics(settings, feed_server)
    ids = readers(settings, [f"arxiv:{arxiv_id('astro', 0)}", f"arxiv:{arxiv_id('astro', 1)}"])
    report = send_edition(settings, edition_id)
    assert report.complete and report.counts == {"sent": 2}
    return settings, edition_id, ids


def test_a_reader_who_taught_gets_for_you_first_and_their_papers_first(sent, smtp_server):
    _settings, _edition_id, _ids = sent
    html, text = received(smtp_server, ASTRO)
    cold_html, cold_text = received(smtp_server, COLD_READER)

    assert 'id="for-you"' in html and "== For you ==" in text
    assert 'id="for-you"' not in cold_html and "For you" not in cold_text
    for_you = html.split('id="for-you"')[1].split('class="nl-toc"')[0]
    picked = re.findall(r'class="nl-title"\s+href="[^"]+">([^<]+)</a>', for_you)
    liked = {paper("astro", 0).title, paper("astro", 1).title}
    assert picked and set(picked) <= astro_titles() - liked  # the neighbours, not what was already liked
    whys = why_lines(for_you)
    assert len(whys) == len(picked) and all(why.startswith("Close to “") for why in whys)
    assert all(any(title in why for title in liked) for why in whys)
    # The text part says the same.
    text_for_you = text.split("== For you ==")[1].split("\n1. ")[0]
    assert all(title in " ".join(text_for_you.split()) for title in picked)

    # In the topic that holds the astronomy papers, the reader's come first; the cold reader's edition
    # order is today's digest.
    def first_titles(page: str) -> list[str]:
        topics = page.split('class="nl-toc"')[1]
        return re.findall(r'class="nl-title"\s+href="[^"]+">([^<]+)</a>', topics)

    assert set(first_titles(html)) >= set(picked)
    assert html.count('class="nl-paper"') == len(picked) + cold_html.count('class="nl-paper"')
    assert len(html.encode()) < CLIP_LIMIT and len(cold_html.encode()) < CLIP_LIMIT


def test_every_card_carries_the_readers_own_feedback_links(sent, smtp_server):
    _settings, edition_id, ids = sent
    tokens = Tokens(SECRET)
    for address in (ASTRO, COLD_READER):
        html, text = received(smtp_server, address)
        links = feedback_links(html)
        assert len(links) == 2 * html.count('class="nl-paper"')
        for link in links:
            token, _choice, key = re.match(
                r"https://news\.example\.org/feedback/([^/]+)/(more|less)/(.+)", link
            ).groups()
            subject = tokens.read("feedback", token)
            assert (subject.subscriber_id, subject.edition_id) == (ids[address], edition_id)
            assert subject.matches(address)
            assert unquote(key).startswith("arxiv:2511.")
        text_links = re.findall(r"https://news\.example\.org/feedback/\S+", text)
        assert len(text_links) == html.count('class="nl-paper"')  # one per card: the page offers both
        assert {link.split("/")[4] for link in text_links} == {links[0].split("/")[4]}
    assert (
        feedback_links(received(smtp_server, ASTRO)[0])[0]
        != feedback_links(received(smtp_server, COLD_READER)[0])[0]
    )


def test_the_layout_is_planned_before_the_send_and_kept_for_a_resume(tmp_path, smtp_server, feed_server):
    settings = make_settings(tmp_path, free_port())  # nobody listens: the send plans, then stops
    edition_id = edition_of_topics(settings, feed_server)
    ids = readers(settings, [f"arxiv:{arxiv_id('robot', 0)}"])
    report = send_edition(settings, edition_id)
    assert report.stopped and report.counts == {"queued": 2}
    db = open_database(settings.database)
    layouts = dict(
        db.execute(
            "SELECT subscriber_id, layout FROM deliveries WHERE edition_id = ?", [edition_id]
        ).fetchall()
    )
    assert layouts[ids[COLD_READER]] == ""  # the edition's order
    kit = message_template(settings, load_edition(db, edition_id)).kit
    assert ReaderLayout.decode(layouts[ids[ASTRO]], kit).for_you
    # What the reader teaches now counts from the next edition: the planned copy is what a resume sends.
    record_signal(db, ids[ASTRO], f"arxiv:{arxiv_id('crypto', 0)}", "like", now=MONDAY)
    db.close()

    settings = make_settings(tmp_path, smtp_server.port)
    report = send_edition(settings, edition_id)
    assert report.complete and report.counts == {"sent": 2}
    html, _ = received(smtp_server, ASTRO)
    for_you = html.split('id="for-you"')[1].split('class="nl-toc"')[0]
    picked = re.findall(r'class="nl-title"\s+href="[^"]+">([^<]+)</a>', for_you)
    assert picked and set(picked) <= {paper("robot", n).title for n in range(6)}
    db = open_database(settings.database)
    try:  # sent: the message holds the layout, the ledger no longer needs it
        assert db.execute("SELECT count(*) FROM deliveries WHERE layout IS NOT NULL").fetchone()[0] == 0
    finally:
        db.close()


def test_preview_as_a_reader_shows_their_copy(sent, tmp_path):
    _settings, edition_id, _ids = sent

    def preview(address: str) -> str:
        out = tmp_path / f"{address}.html"
        config = str(tmp_path / "newsletter.toml")
        result = run("--config", config, "digest", "preview", str(edition_id), "--as", address, "--out", str(out), cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr
        return out.read_text()

    astro = preview(ASTRO)
    assert 'id="for-you"' in astro and "Hello Astro Reader," in astro
    assert 'id="for-you"' not in preview(COLD_READER)


def test_a_liked_papers_title_stays_text_in_the_why_line(tmp_path, smtp_server, feed_server):
    hostile = "Galaxy &lt;b&gt;bold&lt;/b&gt; {{ unsubscribe_url }} XNLXSLOT00GREETINGHTML &amp; halo quasar"
    settings = make_settings(tmp_path, smtp_server.port)
    edition_id = edition_of_topics(settings, feed_server, hostile_title=hostile)
    readers(settings, [f"arxiv:{arxiv_id('astro', 0)}"])
    assert send_edition(settings, edition_id).complete
    html, text = received(smtp_server, ASTRO)
    whys = why_lines(html)
    assert whys and all("{{ unsubscribe_url }} XNLXSLOT00GREETINGHTML & halo quasar" in why for why in whys)
    assert "<b>" not in html  # the feed's markup never becomes the email's
    assert "{{ unsubscribe_url }} XNLXSLOT00GREETINGHTML" in " ".join(text.split())


def for_you_of(html: str) -> tuple[list[str], list[str]]:
    """The titles and why-lines of the "For you" section of a digest's HTML."""
    section = html.split('id="for-you"')[1].split('class="nl-toc"')[0]
    return re.findall(r'class="nl-title"\s+href="[^"]+">([^<]+)</a>', section), why_lines(section)


def test_followed_authors_lead_for_you_and_excluded_papers_are_nowhere(tmp_path, smtp_server, feed_server):
    settings = make_settings(tmp_path, smtp_server.port)
    edition_id = edition_of_topics(settings, feed_server)
    ids = readers(settings, [f"arxiv:{arxiv_id('astro', 0)}", f"arxiv:{arxiv_id('astro', 1)}"])
    papers = [paper(topic, n) for topic in TOPICS for n in range(6)]

    def mentioning(word: str) -> set[str]:
        found = re.compile(rf"(?<!\w){word}(?!\w)", re.IGNORECASE)
        return {p.title for p in papers if found.search(f"{p.title}\n{p.abstract}")}

    # A word of astronomy some of the papers the reader would be proposed use and some do not.
    neighbours = astro_titles() - {paper("astro", 0).title, paper("astro", 1).title}
    word = next(
        w for w in TOPICS["astro"].split() if 0 < len(mentioning(w) & neighbours) < len(neighbours) - 1
    )
    db = open_database(settings.database)
    change_follows(db, ids[ASTRO], lambda _: Follows.create(["econ author 3"], [word]))
    change_follows(db, ids[COLD_READER], lambda _: Follows.create(["Crypto Author 2"]))
    db.close()
    assert send_edition(settings, edition_id).counts == {"sent": 2}

    html, text = received(smtp_server, ASTRO)
    titles, whys = for_you_of(html)
    assert (titles[0], whys[0]) == (paper("econ", 3).title, "By Econ Author 3, whom you follow")
    assert titles[1:] and set(titles[1:]) <= neighbours - mentioning(word)
    assert all(why.startswith("Close to “") for why in whys[1:])
    cards = re.findall(r'class="nl-title"\s+href="[^"]+">([^<]+)</a>', html)
    assert cards and mentioning(word).isdisjoint(cards)  # no card, in "For you" or in a topic
    flat = " ".join(text.split())
    liked = {paper("astro", 0).title, paper("astro", 1).title}  # a why-line may name them
    assert not any(title in flat for title in mentioning(word) - liked)
    assert f"{len(papers) - len(mentioning(word))} new papers" in flat

    cold_html, _ = received(smtp_server, COLD_READER)
    assert for_you_of(cold_html) == ([paper("crypto", 2).title], ["By Crypto Author 2, whom you follow"])


# --- the message assembled from pieces, without a database -----------------------------------------------

SENDER = Sender(
    from_address="Research Digest <digest@example.org>", list_id="Research Digest <digest.example.org>"
)


def small_edition(url_length: int = 40) -> Edition:
    papers = [
        EditionPaper(
            n,
            f"arxiv:2511.{n:05d}",
            f"Paper {n} on galaxies",
            1.0,
            ".Starts with a dot, as a line of SMTP DATA must not."
            if n == 2
            else f"Summary {n} of Zoë's work.",
            ["A. Author"],
            "https://example.org/" + "a" * url_length + str(n),
        )
        for n in range(1, 7)
    ]
    return Edition(
        1,
        "digest",
        "built",
        MONDAY,
        MONDAY - timedelta(days=7),
        MONDAY,
        [Section("Galaxies", ["galaxy"], papers[:3]), Section("Halos", ["halo"], papers[3:])],
        "tfidf",
    )


@pytest.mark.parametrize("url_length", [40, 1500], ids=["7bit", "quoted-printable"])
def test_a_readers_message_is_assembled_from_pieces_in_either_encoding(url_length):
    kit = Renderer(RenderSettings("Research Digest", "https://news.example.org")).digest(
        small_edition(url_length), for_you=8
    )
    template = DigestTemplate(kit, SENDER, "https://news.example.org/feedback/")
    recipient = Recipient(
        "zoe@example.org",
        "Zoë",
        "https://news.example.org/p/T",
        "https://news.example.org/u/T",
        "<1@example.org>",
        "TOKEN.abc",
    )
    layout = ReaderLayout(((4, "Close to “Halo mass”, you liked: halo, mass"),), [[2, 1, 0], [5, 4, 3]])
    message = template.render(recipient, layout=layout)
    wire = template.wire(recipient, layout=layout)
    assert wire.replace(b"\r\n..", b"\r\n.") == message  # dot-stuffed for DATA, and only that
    assert b"\r\n.Starts" not in wire and not re.search(rb"(?<!\r)\n", message)
    parsed = email.message_from_bytes(message, policy=email.policy.SMTP)
    html = parsed.get_body(("html",)).get_content()
    text = parsed.get_body(("plain",)).get_content()
    assert parsed.get_body(("html",))["Content-Transfer-Encoding"] == (
        "7bit" if url_length == 40 else "quoted-printable"
    )
    assert all(len(line) <= 998 for line in message.split(b"\r\n"))
    titles = re.findall(r'class="nl-title"\s+href="([^"]+)">([^<]+)</a>', html)
    assert [" ".join(title.split()) for _, title in titles] == [
        "Paper 5 on galaxies",
        "Paper 3 on galaxies",
        "Paper 2 on galaxies",
        "Paper 1 on galaxies",
        "Paper 6 on galaxies",
        "Paper 5 on galaxies",
        "Paper 4 on galaxies",
    ]
    assert titles[0][0] == "https://example.org/" + "a" * url_length + "5"
    assert "Close to “Halo mass”, you liked: halo, mass" in unescape(html) and "Hello Zoë," in unescape(html)
    links = feedback_links(html)
    assert links[:2] == [
        "https://news.example.org/feedback/TOKEN.abc/more/arxiv:2511.00005",
        "https://news.example.org/feedback/TOKEN.abc/less/arxiv:2511.00005",
    ]
    assert len(links) == 14
    assert "https://news.example.org/feedback/TOKEN.abc/more/arxiv:2511.00003" in text
    assert "Close to “Halo mass”, you liked: halo, mass" in " ".join(text.split())
    assert ".Starts with a dot" in html and ".Starts with a dot" in text and "Zoë's work" in unescape(html)
    # A reader the digest knows nothing about: the edition's order, no "For you".
    cold = email.message_from_bytes(template.render(recipient, layout=COLD), policy=email.policy.SMTP)
    cold_html = cold.get_body(("html",)).get_content()
    assert "For you" not in cold_html
    assert [
        " ".join(t.split())
        for _, t in re.findall(r'class="nl-title"\s+href="([^"]+)">([^<]+)</a>', cold_html)
    ][:3] == [
        "Paper 1 on galaxies",
        "Paper 2 on galaxies",
        "Paper 3 on galaxies",
    ]


def test_a_stored_layout_that_does_not_fit_the_digest_is_the_editions_order():
    kit = Renderer(RenderSettings("Research Digest", "https://news.example.org")).digest(
        small_edition(), for_you=8
    )
    layout = ReaderLayout(((4, "why"),), [[2, 1, 0], [5, 4, 3]])
    assert ReaderLayout.decode(layout.encode(), kit) == ReaderLayout(((4, "why"),), [[2, 1, 0], [5, 4, 3]])
    for broken in (
        '{"for_you": [[99, "why"]], "sections": [[0], [3]]}',
        '{"for_you": [], "sections": [[0]]}',
        "not json",
        '{"x": 1}',
    ):
        assert ReaderLayout.decode(broken, kit) is COLD
    assert ReaderLayout.decode("", kit) is COLD and ReaderLayout.decode(None, kit) is COLD


def test_the_same_reader_gets_the_same_copy_whoever_else_is_in_the_send(tmp_path, smtp_server, feed_server):
    settings = make_settings(tmp_path, smtp_server.port)
    edition_id = edition_of_topics(settings, feed_server)
    ids = readers(settings, [f"arxiv:{arxiv_id('astro', 0)}", f"arxiv:{arxiv_id('nlp', 2)}"])
    db = open_database(settings.database)
    try:
        edition = load_edition(db, edition_id)
        kit = message_template(settings, edition).kit
        alone = reader_digests(settings, edition, now=MONDAY).layouts(db, [(ids[ASTRO], kit)])
        others = reader_digests(settings, edition, now=MONDAY).layouts(
            db, [(ids[COLD_READER], kit), (ids[ASTRO], kit)]
        )
    finally:
        db.close()
    assert alone[ids[ASTRO]] == others[ids[ASTRO]] and ids[COLD_READER] not in others
    assert {paper_topic for paper_topic in ("astro", "nlp")} == {
        key
        for key in TOPICS
        if any(
            kit.cards.keys[p] == f"arxiv:{arxiv_id(key, n)}"
            for p, _ in alone[ids[ASTRO]].for_you
            for n in range(6)
        )
    }


# --- the whole loop: a link in a received email, the page, the button, the next edition -----------------------


def test_more_like_this_from_a_received_email_shapes_the_next_edition(
    tmp_path, smtp_server, feed_server, request
):
    port = free_port()
    settings = web_settings(tmp_path, smtp_server.port, port)
    first = edition_of_topics(settings, feed_server)
    ids = readers(settings, [])
    assert send_edition(settings, first).complete
    html, text = received(smtp_server, ASTRO)
    assert 'id="for-you"' not in html  # nothing taught yet: the edition's order

    app = RunningApp(create_app(settings), port=port)
    try:
        # A mail scanner opens every link of the email first, with GET and HEAD: nothing may change.
        in_text = {link.rstrip(".,)") for link in re.findall(r"https?://\S+", text)}
        links = set(re.findall(r'href="([^"]+)"', html)) | in_text
        ours = sorted(link for link in links if link.startswith(app.url))
        assert any("/feedback/" in link for link in ours) and any("/unsubscribe/" in link for link in ours)
        with httpx.Client(follow_redirects=True, timeout=10) as scanner:
            for link in ours:
                assert scanner.get(link).status_code < 500
                scanner.head(link)
        assert signals_of(settings, ids[ASTRO]) == []
        with database_at(settings) as db:
            assert find_subscriber(db, ASTRO).status == "active"

        # The reader clicks "More like this" under an astronomy paper and presses the page's button.
        astro_key = f"arxiv:{arxiv_id('astro', 2)}"
        [link] = [link for link in ours if link.endswith(f"/more/{astro_key}")]
        with Browser() as chromium:
            page = chromium.new_page()
            page.goto(link)
            page.wait_for_selector("h1:has-text('More like this?')")
            assert signals_of(settings, ids[ASTRO]) == []
            page.click("button:has-text('More like this')")
            page.wait_for_selector("h1:has-text('Noted: more like this')")
        assert signals_of(settings, ids[ASTRO]) == [(astro_key, "like")]
    finally:
        app.stop()

    # The next edition: new papers of every topic. The reader's copy now opens with astronomy.
    feed = topic_feed(list(TOPICS), 6, MONDAY + timedelta(days=7), first=6)
    url = feed_server.route("/next.xml", Reply(body=feed.encode(), content_type="application/xml"))
    db = open_database(settings.database)
    try:
        with Fetcher() as fetcher:
            run_ingest(
                db,
                [SourceConfig(name="next", kind="arxiv_rss", url=url)],
                fetcher,
                now=MONDAY + timedelta(days=7),
            )
        second = build_edition(db, DigestSettings(), now=MONDAY + timedelta(days=7, hours=1)).id
    finally:
        db.close()
    assert send_edition(settings, second).complete

    def of_edition(address: str, edition_id: int) -> str:
        """The HTML of the copy of ``edition_id`` that ``address`` received (the Maildir keeps no order)."""
        copies = []
        for stored in smtp_server.messages(address):
            message = email.message_from_bytes(stored.as_bytes(), policy=email.policy.default)
            copies.append(message.get_body(("html",)).get_content())
        [copy] = [copy for copy in copies if f"/editions/{edition_id}" in copy]
        return copy

    html = of_edition(ASTRO, second)
    for_you = html.split('id="for-you"')[1].split('class="nl-toc"')[0]
    picked = {
        " ".join(t.split()) for t in re.findall(r'class="nl-title"\s+href="[^"]+">([^<]+)</a>', for_you)
    }
    assert picked and picked <= {paper("astro", n).title for n in range(6, 12)}
    assert 'id="for-you"' not in of_edition(COLD_READER, second)
    shots = screenshot_dir(Path(request.config.rootpath))
    (tmp_path / "for-you.html").write_text(html)
    with Browser() as chromium:
        for name, viewport in (
            ("phone", {"width": 390, "height": 844}),
            ("desktop", {"width": 1200, "height": 900}),
        ):
            page = chromium.new_page(viewport=viewport)
            page.goto((tmp_path / "for-you.html").as_uri())
            assert page.is_visible("#for-you") and page.is_visible(".nl-why")
            page.screenshot(path=str(shots / f"digest-for-you-{name}.png"), full_page=True)


def signals_of(settings, subscriber_id: int) -> list[tuple[str, str]]:
    with database_at(settings) as db:
        return [(signal.id, signal.kind) for signal in reader_signals(db, subscriber_id)]


@contextmanager
def database_at(settings):
    db = open_database(settings.database)
    try:
        yield db
    finally:
        db.close()


def test_digest_for_shows_what_the_readers_email_holds(sent, smtp_server, tmp_path):
    _settings, edition_id, _ids = sent
    html, _ = received(smtp_server, ASTRO)
    for_you = html.split('id="for-you"')[1].split('class="nl-toc"')[0]
    emailed = [
        " ".join(t.split()) for t in re.findall(r'class="nl-title"\s+href="[^"]+">([^<]+)</a>', for_you)
    ]
    result = run(
        "--config", str(tmp_path / "newsletter.toml"), "digest", "for", str(edition_id), ASTRO, "--json", "-",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert [pick["title"] for pick in shown["for_you"]] == emailed
    assert [unescape(why) for why in why_lines(for_you)] == [pick["why"] for pick in shown["for_you"]]
