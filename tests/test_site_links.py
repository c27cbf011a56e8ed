"""Links between the site's own pages keep working wherever the site is reached, over real HTTP."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import httpx

from newsletter.config import load_settings
from newsletter.db import open_database
from newsletter.devsmtp import free_port
from newsletter.outbox import send_edition
from newsletter.subscribers import add_subscriber
from newsletter.tokens import Tokens
from newsletter.web import create_app
from tests.support.webserver import RunningApp
from tests.test_deliver import edition_with_sample_papers, make_settings


def test_links_between_pages_work_when_served_on_another_port_than_base_url(tmp_path, smtp_server):
    """base_url names one port, the site answers on another (a reverse proxy, `serve --port`): following
    the site's own links must stay on the site that served the page."""
    make_settings(tmp_path, smtp_server.port)
    config = tmp_path / "newsletter.toml"
    config.write_text(
        config.read_text().replace("https://news.example.org", f"http://127.0.0.1:{free_port()}")
    )
    settings = load_settings(config, environ={})
    send_edition(settings, edition_with_sample_papers(settings))
    db = open_database(settings.database)
    reader = add_subscriber(db, "new.reader@example.org", status="pending").subscriber
    db.close()
    app = RunningApp(create_app(settings))
    served = urlsplit(app.url).netloc
    assert served != urlsplit(settings.web.base_url).netloc

    def follow(page: httpx.Response, text: str) -> httpx.Response:
        [href] = re.findall(rf'<a[^>]*href="([^"]+)"[^>]*>{text}</a>', page.text)
        target = urljoin(str(page.url), href)  # as a browser resolves it
        assert urlsplit(target).netloc == served, (text, href)
        answer = client.get(target)
        assert answer.status_code == 200, (text, target)
        return answer

    try:
        with httpx.Client() as client:
            token = Tokens(settings.web.secret_key).make("confirm", reader.id, reader.email)
            page = client.get(f"{app.url}/confirm/{token}")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
            confirmed = client.post(f"{app.url}/confirm/{token}", data={"csrf": csrf})
            assert "You are subscribed" in confirmed.text
            preferences = follow(confirmed, "Choose your topics")
            assert "Your preferences" in preferences.text
            assert "Stop sending" in follow(preferences, "Unsubscribe").text
            archive = follow(preferences, "Archive")
            edition = follow(archive, r"Edition \d+: [^<]+")
            assert 'class="paper"' in edition.text
            follow(edition, "Archive")
            follow(archive, "Atom feed")
    finally:
        app.stop()
