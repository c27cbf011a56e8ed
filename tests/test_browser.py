"""A reader's whole journey in real headless chromium, and screenshots of the main pages."""

from __future__ import annotations

import email
import email.policy
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from newsletter.compose import build_edition
from newsletter.db import open_database
from newsletter.devsmtp import free_port
from newsletter.fetch import Fetcher
from newsletter.ingest import run_ingest
from newsletter.outbox import send_edition
from newsletter.samples import sample_sources
from newsletter.settings import DigestSettings
from newsletter.subscribers import find_subscriber
from newsletter.web import create_app
from tests.support.browser import Browser, screenshot_dir
from tests.support.smtpserver import ScriptedSMTPServer
from tests.support.webserver import RunningApp
from tests.test_signup import ADMIN_PASSWORD, web_settings

PASSWORD = ADMIN_PASSWORD
PHONE, DESKTOP = {"width": 375, "height": 812}, {"width": 1280, "height": 900}


@pytest.fixture
def world(tmp_path, request):
    smtp = ScriptedSMTPServer(tmp_path / "maildir")
    port = free_port()
    settings = web_settings(tmp_path, smtp.port, port)
    db = open_database(settings.database)
    with Fetcher() as fetcher:
        run_ingest(db, sample_sources(), fetcher, now=datetime.now(UTC) - timedelta(hours=1))
    db.close()
    app = RunningApp(create_app(settings), port=port)
    shots = screenshot_dir(Path(request.config.rootpath))
    yield settings, smtp, app, shots
    app.stop()
    smtp.stop()


def plain_text(server, address: str, subject: str) -> str:
    """The text of the one message to ``address`` whose subject contains ``subject`` (sign-up emails
    come from a queue: waited for, up to a minute)."""
    deadline = time.monotonic() + 60
    while True:
        messages = [
            email.message_from_bytes(m.as_bytes(), policy=email.policy.default)
            for m in server.messages(address)
        ]
        found = [m for m in messages if subject in m["Subject"]]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    [message] = found
    return message.get_body(("plain",)).get_content()


def link_in(text: str, kind: str) -> str:
    [link] = re.findall(rf"https?://\S+/{kind}/\S+", text)
    return link


def no_horizontal_scroll(page) -> bool:  # type: ignore[no-untyped-def]
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_subscribe_confirm_choose_topics_receive_and_unsubscribe(world):
    settings, smtp, app, shots = world
    address = "journey@example.org"
    with Browser() as chromium:
        phone = chromium.new_page(viewport=PHONE)
        phone.goto(f"{app.url}/subscribe")
        assert no_horizontal_scroll(phone)
        phone.screenshot(path=str(shots / "subscribe-phone.png"), full_page=True)
        phone.fill("input[name=email]", address)
        phone.fill("input[name=name]", "Jo Journey")
        phone.check("input[name=categories][value='cs.LG']")
        phone.click("button:has-text('Subscribe')")
        phone.wait_for_selector("text=Check your inbox")
        phone.screenshot(path=str(shots / "check-inbox-phone.png"))

        confirm_link = link_in(plain_text(smtp, address, "Confirm your subscription"), "confirm")
        phone.goto(confirm_link)
        assert no_horizontal_scroll(phone)
        phone.click("button:has-text('Confirm my subscription')")
        phone.wait_for_selector("text=You are subscribed")
        phone.click("text=Choose your topics")
        phone.wait_for_selector("h1:has-text('Your preferences')")
        assert phone.is_checked("input[name=categories][value='cs.LG']")
        phone.uncheck("input[name=categories][value='cs.LG']")
        phone.check("input[name=categories][value='cs.RO']")
        phone.fill("input[name=keywords]", "parkour")
        phone.click("button:has-text('Save')")
        phone.wait_for_selector("text=Saved.")
        assert no_horizontal_scroll(phone)
        phone.screenshot(path=str(shots / "preferences-phone.png"), full_page=True)
        desktop = chromium.new_page(viewport=DESKTOP)
        desktop.goto(phone.url)
        desktop.screenshot(path=str(shots / "preferences-desktop.png"), full_page=True)

        db = open_database(settings.database)
        reader = find_subscriber(db, address)
        assert reader.status == "active" and reader.name == "Jo Journey"
        assert reader.preferences.categories == ("cs.RO",) and reader.preferences.keywords == ("parkour",)
        edition = build_edition(db, DigestSettings(), now=datetime.now(UTC))
        db.close()
        report = send_edition(settings, edition.id)
        assert report.counts == {"sent": 1}
        digest = plain_text(smtp, address, "new papers")
        robots = [p for s in edition.sections for p in s.papers if "cs.RO" in p.categories]
        others = [p for s in edition.sections for p in s.papers if "cs.RO" not in p.categories]
        flat = " ".join(digest.split())
        missing = [p.title for p in robots if p.title not in flat]
        assert robots and not missing, (missing, flat[:3000])
        assert not any(p.title in flat for p in others)
        assert "Hello Jo Journey," in digest

        phone.goto(link_in(digest, "unsubscribe"))
        phone.click("button:has-text('Unsubscribe')")
        phone.wait_for_selector("text=will receive nothing more")
        phone.screenshot(path=str(shots / "unsubscribed-phone.png"))

    db = open_database(settings.database)
    assert find_subscriber(db, address).status == "unsubscribed"
    later = build_edition(
        db, DigestSettings(), since=datetime.now(UTC) - timedelta(days=1), now=datetime.now(UTC)
    )
    db.close()
    before = len(smtp.messages(address))
    assert send_edition(settings, later.id).counts == {}  # nobody left to send to
    assert len(smtp.messages(address)) == before


def test_admin_pages_in_the_browser(world):
    settings, _, app, shots = world
    db = open_database(settings.database)
    from newsletter.subscribers import import_rows

    import_rows(db, "\n".join(f"member{n:02d}@example.org,Member {n}" for n in range(30)))
    build_edition(db, DigestSettings(), now=datetime.now(UTC))
    db.close()
    with Browser() as chromium:
        for name, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
            page = chromium.new_page(viewport=viewport)
            page.goto(f"{app.url}/admin/subscribers")
            page.wait_for_selector("input[name=password]")  # sent to the login page first
            page.screenshot(path=str(shots / f"admin-login-{name}.png"))
            page.fill("input[name=password]", PASSWORD)
            page.click("button:has-text('Log in')")
            page.wait_for_selector("h1:has-text('Subscribers')")
            assert page.locator("text=30 subscribers").count() == 1
            assert no_horizontal_scroll(page)  # wide tables scroll inside their box, not the page
            page.screenshot(path=str(shots / f"admin-subscribers-{name}.png"), full_page=True)
            page.fill("input[name=q]", "member07")
            page.click("button:has-text('Filter')")
            page.wait_for_selector("text=1 subscriber ")
            page.goto(f"{app.url}/admin/editions")
            page.screenshot(path=str(shots / f"admin-editions-{name}.png"), full_page=True)
            page.click("a[href='/admin/editions/1']")  # built, not sent: a preview for admins only
            page.wait_for_selector("text=Preview for admins")
            assert page.locator("article.paper").count() > 0
            assert no_horizontal_scroll(page)
            page.screenshot(path=str(shots / f"edition-{name}.png"))
