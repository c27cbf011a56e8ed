"""The web pages behind the links in every email, through a real uvicorn server and a real browser."""

from __future__ import annotations

import email
import email.policy
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from newsletter.db import open_database
from newsletter.fetch import Fetcher
from newsletter.ingest import run_ingest
from newsletter.outbox import preview_html, send_edition
from newsletter.settings import SourceConfig
from newsletter.tokens import Tokens
from newsletter.web import create_app
from tests.support.browser import Browser, screenshot_dir
from tests.support.feedserver import file_reply
from tests.support.webserver import RunningApp
from tests.test_deliver import MONDAY, edition_with_sample_papers, make_settings, subscribe


@pytest.fixture
def sent(tmp_path, smtp_server):
    """An edition sent to three readers; the web app running on the same database."""
    settings = make_settings(tmp_path, smtp_server.port)
    edition_id = edition_with_sample_papers(settings)
    addresses = subscribe(settings, 3)
    send_edition(settings, edition_id)
    app = RunningApp(create_app(settings))
    yield settings, edition_id, addresses, app
    app.stop()


def unsubscribe_link(smtp_server, address: str) -> str:
    [stored] = smtp_server.messages(address)
    message = email.message_from_bytes(stored.as_bytes(), policy=email.policy.default)
    header = str(message["List-Unsubscribe"]).strip()
    return header[1 : header.index(">")]


def status_of(settings, address: str) -> str:
    db = open_database(settings.database)
    try:
        return db.execute("SELECT status FROM subscribers WHERE email = ?", [address]).fetchone()[0]
    finally:
        db.close()


def local(url: str, app: RunningApp) -> str:
    return url.replace("https://news.example.org", app.url)


def test_one_click_unsubscribe_from_the_list_unsubscribe_header(sent, smtp_server):
    settings, _, addresses, app = sent
    link = local(unsubscribe_link(smtp_server, addresses[0]), app)
    page = httpx.get(link)
    assert page.status_code == 200
    assert "Stop sending Research Digest to" in page.text and "re•••••@example.org" in page.text
    assert status_of(settings, addresses[0]) == "active"  # looking is not unsubscribing

    # RFC 8058: the mail program POSTs "List-Unsubscribe=One-Click"; no login, no redirect.
    done = httpx.post(link, data={"List-Unsubscribe": "One-Click"}, follow_redirects=False)
    assert done.status_code == 200
    assert "will receive nothing more" in done.text
    assert status_of(settings, addresses[0]) == "unsubscribed"
    assert httpx.post(link).status_code == 200  # twice is harmless
    assert status_of(settings, addresses[1]) == "active"


def test_forged_or_altered_tokens_change_nothing(sent, smtp_server):
    settings, _, addresses, app = sent
    link = local(unsubscribe_link(smtp_server, addresses[1]), app)
    token = link.rsplit("/", 1)[1]
    payload, signature = token.rsplit(".", 1)
    other_id = Tokens("some-other-secret-key-123456").make("unsubscribe", 3, addresses[1]).rsplit(".", 1)[0]
    forgeries = [
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),  # altered signature
        payload + "." + signature[::-1],
        other_id + "." + signature,  # someone else's id with this signature
        Tokens("some-other-secret-key-123456").make("unsubscribe", 2, addresses[1]),  # wrong secret
        Tokens(settings.web.secret_key).make("preferences", 2, addresses[1]),  # a token for another purpose
        Tokens(settings.web.secret_key).make("unsubscribe", 2, "someone-else@example.org"),  # wrong address
        "not-a-token",
    ]
    for forged in forgeries:
        url = f"{app.url}/unsubscribe/{forged}"
        assert httpx.get(url).status_code == 400, forged
        response = httpx.post(url, data={"List-Unsubscribe": "One-Click"})
        assert response.status_code == 400 and "not valid" in response.text
    assert [status_of(settings, a) for a in addresses] == ["active"] * 3


def test_pages_carry_security_headers(sent):
    _, edition_id, _, app = sent
    response = httpx.get(f"{app.url}/editions/{edition_id}")
    assert response.status_code == 200
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert "Tree-Structured Speculative Decoding" in response.text
    assert httpx.get(f"{app.url}/editions/9999").status_code == 404


def test_unsubscribed_between_two_editions_gets_only_the_first(tmp_path, sent, smtp_server):
    settings, _, addresses, app = sent
    httpx.post(local(unsubscribe_link(smtp_server, addresses[2]), app))
    db = open_database(settings.database)
    from datetime import timedelta

    from newsletter.compose import build_edition
    from newsletter.settings import DigestSettings

    second = build_edition(
        db, DigestSettings(), since=MONDAY - timedelta(hours=1), until=MONDAY + timedelta(hours=1)
    )
    db.close()
    report = send_edition(settings, second.id)
    assert report.counts == {"sent": 2}
    counts = smtp_server.counts()
    assert counts[addresses[0]] == 2 and counts[addresses[1]] == 2 and counts[addresses[2]] == 1


# --- hostile text and the real browser ------------------------------------------------------------------


class _Inspector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts = 0
        self.handlers: list[str] = []
        self.javascript_urls: list[str] = []
        self.images = 0

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        if tag == "script":
            self.scripts += 1
        if tag == "img":
            self.images += 1
        for name, value in attrs:
            if name.startswith("on"):
                self.handlers.append(name)
            if value and value.strip().lower().startswith("javascript:"):
                self.javascript_urls.append(value)


HOSTILE_FEED = """<?xml version='1.0' encoding='UTF-8'?>
<rss xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns:dc="http://purl.org/dc/elements/1.1/" version="2.0"><channel><title>t</title>
{items}
</channel></rss>"""
HOSTILE_ITEM = """<item><title>{title}</title><link>javascript:window.__pwned=1</link>
<description>arXiv:2501.0070{n}v1 Announce Type: new
Abstract: {abstract}</description><guid>oai:arXiv.org:2501.0070{n}v1</guid><category>cs.CR</category>
<arxiv:announce_type>new</arxiv:announce_type><dc:creator>{author}</dc:creator></item>"""


def test_hostile_paper_text_is_inert_in_the_email_and_the_archive(tmp_path, smtp_server, feed_server):
    titles = [
        "&lt;script&gt;window.__pwned=1&lt;/script&gt; Attacks on Script Loaders",
        "&quot;&gt;&lt;img src=x onerror=window.__pwned=1&gt; Breaking Out of Attributes",
        "Plain &amp;lt;b&amp;gt;escaped twice&amp;lt;/b&amp;gt; markup and a &lt; b",
    ]
    items = "\n".join(
        HOSTILE_ITEM.format(
            n=n,
            title=title,
            abstract="Links &lt;a href=&quot;javascript:window.__pwned=1&quot;&gt;click&lt;/a&gt; and "
            "&lt;iframe src=javascript:window.__pwned=1&gt;&lt;/iframe&gt; must stay text.",
            author="Eve &lt;img src=x onerror=window.__pwned=1&gt;",
        )
        for n, title in enumerate(titles)
    )
    (tmp_path / "hostile.xml").write_text(HOSTILE_FEED.format(items=items))
    settings = make_settings(tmp_path, smtp_server.port)
    db = open_database(settings.database)
    with Fetcher() as fetcher:
        url = feed_server.route("/hostile", file_reply(tmp_path / "hostile.xml"))
        run_ingest(db, [SourceConfig(name="hostile", kind="arxiv_rss", url=url)], fetcher, now=MONDAY)
    from datetime import timedelta

    from newsletter.compose import build_edition
    from newsletter.settings import DigestSettings

    # Ingest already strips markup; text that reached the database some other way must be escaped too.
    db.execute(
        "UPDATE papers SET title = ?, abstract = ? WHERE arxiv_id = '2501.00700'",
        [
            "<script>window.__pwned=1</script> Raw Title",
            'Raw markup is a core problem. We show that "><img src=x onerror=window.__pwned=1> raw abstract stays text.',
        ],
    )
    edition = build_edition(db, DigestSettings(), now=MONDAY + timedelta(hours=1))
    db.close()
    subscribe(settings, 1)
    send_edition(settings, edition.id)
    [stored] = smtp_server.messages("reader0@example.org")
    message = email.message_from_bytes(stored.as_bytes(), policy=email.policy.default)
    html = message.get_body(("html",)).get_content()
    inspector = _Inspector()
    inspector.feed(html)
    assert (inspector.scripts, inspector.handlers, inspector.javascript_urls, inspector.images) == (
        0,
        [],
        [],
        0,
    )
    assert "Breaking Out of Attributes" in html and "Plain" in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt; Raw Title" in html  # shown as text, not run
    assert (
        "&#34;&gt;&lt;img src=x onerror=window.__pwned=1&gt; raw abstract stays text." in html
    )  # the summary

    app = RunningApp(create_app(settings))
    try:
        archive = httpx.get(f"{app.url}/editions/{edition.id}").text
    finally:
        app.stop()
    inspector = _Inspector()
    inspector.feed(archive)
    assert (inspector.scripts, inspector.handlers, inspector.javascript_urls, inspector.images) == (
        0,
        [],
        [],
        0,
    )

    page = tmp_path / "email.html"
    page.write_text(html)
    with Browser() as chromium:
        tab = chromium.new_page()
        tab.goto(page.as_uri())
        tab.wait_for_timeout(200)
        assert tab.evaluate("window.__pwned") is None


@pytest.mark.parametrize("width", [375, 800])
def test_digest_fits_phone_and_desktop_widths_without_horizontal_scroll(
    tmp_path, smtp_server, width, request
):
    settings = make_settings(tmp_path, smtp_server.port)
    edition_id = edition_with_sample_papers(settings)
    subscribe(settings, 1)
    page = tmp_path / "digest.html"
    page.write_text(preview_html(settings, edition_id))
    shots = screenshot_dir(Path(request.config.rootpath))
    with Browser() as chromium:
        for scheme in ("light", "dark"):
            tab = chromium.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)
            tab.goto(page.as_uri())
            assert tab.evaluate("document.documentElement.scrollWidth") <= width
            assert tab.evaluate("document.body.scrollWidth") <= width
            tab.screenshot(path=str(shots / f"digest-{width}px-{scheme}.png"), full_page=True)
            titles = tab.locator("a.nl-title")
            assert titles.count() == 38
            box = titles.first.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
