"""Every email and every page readable in both color schemes: WCAG AA contrast measured in chromium on
each text and control (tests/support/contrast.py), light and dark, at 390 and 1200 px, with
screenshots; the category codes of the topic lists never break inside; no icon or stylesheet 404s."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from newsletter.compose import build_edition
from newsletter.db import open_database
from newsletter.devsmtp import free_port
from newsletter.fetch import Fetcher
from newsletter.ingest import run_ingest
from newsletter.library import record_signal
from newsletter.outbox import create_one_off, send_edition, send_signup_email
from newsletter.preferences import Preferences
from newsletter.samples import sample_sources
from newsletter.settings import DigestSettings, SourceConfig
from newsletter.subscribers import add_subscriber
from newsletter.web import create_app
from tests.support.browser import Browser, screenshot_dir
from tests.support.contrast import BROKEN_CODES, audit
from tests.support.feedserver import FeedServer, Reply
from tests.support.smtpserver import ScriptedSMTPServer
from tests.support.topics import TOPICS, arxiv_id, topic_feed
from tests.support.webserver import RunningApp
from tests.test_signup import ADMIN_PASSWORD, web_settings

PASSWORD = ADMIN_PASSWORD
FAN, VOID, PLAIN, PENDING = "fan@example.org", "void@example.org", "plain@example.org", "new@example.org"
ONE_OFF = """# Maintenance on Friday

The archive is **offline** for an hour; [the feed](https://example.org/feed) keeps working.

- Digests go out as usual
- Preferences stay as they are

> Quoted: nothing else changes. `code` too.
"""


def message(server: ScriptedSMTPServer, address: str, subject: str) -> email.message.EmailMessage:
    found = [
        parsed
        for stored in server.messages(address)
        if subject
        in (parsed := email.message_from_bytes(stored.as_bytes(), policy=email.policy.default))["Subject"]
    ]
    assert len(found) == 1, [m["Subject"] for m in found]
    return found[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory, request):
    """A sent digest (a reader with "For you", one with nothing in their topics, one who follows
    everything), a one-off message, a confirmation email, and the web app serving the same database."""
    tmp_path = tmp_path_factory.mktemp("contrast")
    smtp = ScriptedSMTPServer(tmp_path / "maildir")
    port = free_port()
    settings = web_settings(tmp_path, smtp.port, port)
    now = datetime.now(UTC)
    # The offline samples (Hugging Face papers with upvotes and code, arXiv listings, a journal) and a
    # listing of papers in a few clear topics, so that a reader who liked two astronomy papers gets a
    # "For you" section.
    feeds = FeedServer()
    feed = topic_feed(list(TOPICS), 6, now - timedelta(hours=3))
    url = feeds.route("/topics.xml", Reply(body=feed.encode(), content_type="application/xml"))
    db = open_database(settings.database)
    try:
        with Fetcher() as fetcher:
            sources = [*sample_sources(), SourceConfig(name="topics", kind="arxiv_rss", url=url)]
            run_ingest(db, sources, fetcher, now=now - timedelta(hours=1))
    finally:
        feeds.close()
    edition = build_edition(db, DigestSettings(), now=now)
    fan = add_subscriber(db, FAN, "Fan Reader").subscriber
    add_subscriber(db, VOID, preferences=Preferences.create(["q-bio.NC"]))
    add_subscriber(db, PLAIN, "Plain Reader")
    pending = add_subscriber(db, PENDING, status="pending", source="web").subscriber
    for number in (0, 1):
        record_signal(db, fan.id, f"arxiv:{arxiv_id('astro', number)}", "like", now=now)
    db.close()
    assert send_edition(settings, edition.id).complete
    assert send_edition(settings, create_one_off(settings, "Maintenance on Friday", ONE_OFF)).complete
    send_signup_email(settings, pending, "confirm")

    emails = {
        "email-digest-for-you": message(smtp, FAN, "new papers"),
        "email-digest-empty": message(smtp, VOID, "nothing new"),
        "email-one-off": message(smtp, PLAIN, "Maintenance"),
        "email-confirmation": message(smtp, PENDING, "Confirm your subscription"),
    }
    files = {}
    for name, parsed in emails.items():
        files[name] = tmp_path / f"{name}.html"
        files[name].write_text(parsed.get_body(("html",)).get_content())
    fan_html = files["email-digest-for-you"].read_text()
    fan_text = emails["email-digest-for-you"].get_body(("plain",)).get_content()
    confirmation = emails["email-confirmation"].get_body(("plain",)).get_content()

    def link(kind: str, text: str) -> str:
        return re.findall(rf"https?://\S+/{kind}/\S+", text)[0]

    app = RunningApp(create_app(settings), port=port)
    shots = screenshot_dir(Path(request.config.rootpath))
    yield {
        "settings": settings,
        "emails": emails,
        "files": files,
        "app": app,
        "shots": shots,
        "edition": edition.id,
        "for_you_html": fan_html,
        "links": {
            "confirm": link("confirm", confirmation),
            "preferences": link("preferences", fan_text),
            "unsubscribe": link("unsubscribe", fan_text),
            "feedback": re.findall(r'href="(http://127\.0\.0\.1:\d+/feedback/[^"]+)"', fan_html)[0],
        },
    }
    app.stop()
    smtp.stop()


@pytest.fixture(scope="module")
def chromium():
    with Browser() as browser:
        yield browser


EMAILS = ("email-digest-for-you", "email-digest-empty", "email-one-off", "email-confirmation")


@pytest.mark.parametrize("name", EMAILS)
def test_every_email_is_readable_in_light_and_dark(world, chromium, name):
    html = world["files"][name].read_text()
    assert '<html lang="en"' in html
    if name == "email-digest-for-you":
        assert 'id="for-you"' in html and 'class="nl-why"' in html  # the why-lines are checked too
    failures, _ = audit(chromium, world["files"][name].as_uri(), name, world["shots"])
    assert not failures, "\n".join(failures)


def login(page) -> None:  # type: ignore[no-untyped-def]
    page.fill("input[name=password]", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_selector("h1:has-text('Subscribers')")


def pages(world) -> dict[str, tuple[str, object]]:
    """Each page: its address, and what to do there first (None: nothing)."""
    links, edition = world["links"], world["edition"]

    def click(selector: str, then: str):  # type: ignore[no-untyped-def]
        def act(page) -> None:  # type: ignore[no-untyped-def]
            page.click(selector)
            page.wait_for_selector(then)

        return act

    def wrong_password(page) -> None:  # type: ignore[no-untyped-def]
        page.fill("input[name=password]", "not the password")
        page.click("button:has-text('Log in')")
        page.wait_for_selector(".error")

    def confirmed(page) -> None:  # type: ignore[no-untyped-def]
        # The first press confirms; once active, the link itself shows the confirmed page.
        if page.locator("button:has-text('Confirm my subscription')").count():
            page.click("button:has-text('Confirm my subscription')")
        page.wait_for_selector("a.button")

    def bad_address(page) -> None:  # type: ignore[no-untyped-def]
        page.fill("input[name=email]", "reader@localhost")  # the browser's check lets it through
        page.click("button:has-text('Subscribe')")
        page.wait_for_selector(".error")

    return {
        "home": ("/", None),
        "subscribe": ("/subscribe", None),
        "subscribe-error": ("/subscribe", bad_address),
        "confirm": (links["confirm"], None),
        "confirmed": (links["confirm"], confirmed),
        "preferences": (links["preferences"], None),
        "preferences-saved": (links["preferences"], click("button:has-text('Save')", "text=Saved.")),
        "papers": (links["preferences"] + "/papers", None),
        "feedback": (links["feedback"], None),
        "unsubscribe": (links["unsubscribe"], None),
        "invalid-link": ("/unsubscribe/not-a-token", None),
        "archive": ("/editions", None),
        "edition": (f"/editions/{edition}", None),
        "edition-message": (f"/editions/{edition + 1}", None),
        "admin-login": ("/admin/login", None),
        "admin-login-error": ("/admin/login", wrong_password),
        "admin-subscribers": ("/admin/subscribers", None),
        "admin-editions": ("/admin/editions", None),
        "admin-edition": (f"/admin/editions/{edition}", None),
        "admin-send": ("/admin/send", None),
        "admin-import": ("/admin/import", None),
    }


PAGES = (
    "home",
    "subscribe",
    "subscribe-error",
    "confirm",
    "confirmed",
    "preferences",
    "preferences-saved",
    "papers",
    "feedback",
    "unsubscribe",
    "invalid-link",
    "archive",
    "edition",
    "edition-message",
    "admin-login",
    "admin-login-error",
    "admin-subscribers",
    "admin-editions",
    "admin-edition",
    "admin-send",
    "admin-import",
)


@pytest.fixture(scope="module")
def admin_state(world, chromium):
    context = chromium.new_context()
    page = context.new_page()
    page.goto(f"{world['app'].url}/admin/login")
    login(page)
    state = context.storage_state()
    context.close()
    return state


@pytest.mark.parametrize("name", PAGES)
def test_every_page_is_readable_in_light_and_dark(world, chromium, admin_state, name):
    path, then = pages(world)[name]
    url = path if path.startswith("http") else f"{world['app'].url}{path}"
    state = admin_state if name.startswith("admin-") and "login" not in name else None
    failures, missing = audit(chromium, url, name, world["shots"], storage_state=state, then=then)  # type: ignore[arg-type]
    assert not failures, "\n".join(failures)
    assert not missing, missing


@pytest.mark.parametrize("path", ["/subscribe", "preferences"])
def test_category_codes_never_break_inside(world, chromium, path):
    url = world["links"]["preferences"] if path == "preferences" else f"{world['app'].url}{path}"
    for width in (390, 1200):
        page = chromium.new_page(viewport={"width": width, "height": 900})
        page.goto(url)
        codes = page.locator(".choices .muted")
        assert codes.count() > 5
        assert page.evaluate(BROKEN_CODES) == [], width
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.close()


def test_every_page_has_an_icon_and_a_language(world):
    base = world["app"].url
    with httpx.Client(timeout=10) as client:
        icon = client.get(f"{base}/favicon.ico")
        assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
        assert icon.content.startswith(b"\x00\x00\x01\x00")  # an ICO file
        svg = client.get(f"{base}/static/favicon.svg")
        assert svg.status_code == 200 and svg.text.startswith("<svg")
        page = client.get(f"{base}/subscribe").text
    assert '<html lang="en">' in page
    assert '<link rel="icon" href="/static/favicon.svg"' in page
