"""Admin sessions, the subscriber list's pages and the login page, over real HTTP (uvicorn + httpx)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from newsletter.config import load_settings
from newsletter.db import open_database
from newsletter.devsmtp import free_port
from newsletter.settings import Settings
from newsletter.subscribers import add_subscriber, import_rows
from newsletter.tokens import Tokens
from newsletter.web import create_app, sessions
from newsletter.web.security import hash_password
from tests.support.webserver import RunningApp
from tests.test_deliver import edition_with_sample_papers, make_settings
from tests.test_signup import csrf_of

PASSWORD = "correct horse battery"
COOKIE = "newsletter_session"


def settings_with(tmp_path: Path, smtp_port: int, password_hash: str | None) -> Settings:
    """Plain http on 127.0.0.1 (a cookie for https would not come back over http)."""
    make_settings(tmp_path, smtp_port)
    config = tmp_path / "newsletter.toml"
    text = config.read_text().replace("https://news.example.org", f"http://127.0.0.1:{free_port()}")
    if password_hash:
        text = text.replace("[web]", f'[web]\nadmin_password_hash = "{password_hash}"')
    config.write_text(text)
    return load_settings(config, environ={})


@contextmanager
def serving(settings: Settings) -> Iterator[RunningApp]:
    app = RunningApp(create_app(settings), port=urlsplit(settings.web.base_url).port)
    try:
        yield app
    finally:
        app.stop()


@contextmanager
def log_in(app: RunningApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=app.url) as client:
        page = client.get("/admin/login")
        answer = client.post("/admin/login", data={"csrf": csrf_of(page.text), "password": PASSWORD})
        assert answer.status_code == 303 and answer.headers["location"] == "/admin/subscribers"
        yield client


def with_cookie(app: RunningApp, cookie: str) -> httpx.Client:
    """Someone else's client carrying a copy of the admin's session cookie."""
    return httpx.Client(base_url=app.url, cookies={COOKIE: cookie})


def preferences_link(settings: Settings) -> str:
    db = open_database(settings.database)
    try:
        reader = add_subscriber(db, "reader@example.org").subscriber
    finally:
        db.close()
    return f"/preferences/{Tokens(settings.web.secret_key).make('preferences', reader.id, reader.email)}"


def test_a_copied_session_cookie_stops_working_at_logout(tmp_path, smtp_server):
    settings = settings_with(tmp_path, smtp_server.port, hash_password(PASSWORD))
    link = preferences_link(settings)
    with serving(settings) as app:
        with log_in(app) as admin, with_cookie(app, admin.cookies[COOKIE]) as thief:
            copied = admin.cookies[COOKIE]
            assert thief.get("/admin/subscribers").status_code == 200  # the copy works while logged in
            page = admin.get("/admin/subscribers")
            assert admin.post("/admin/logout", data={"csrf": csrf_of(page.text)}).status_code == 303
            refused = thief.get("/admin/subscribers")
            assert refused.status_code == 303 and refused.headers["location"] == "/admin/login"
            assert thief.post("/admin/subscribers/add", data={"email": "x@example.org"}).status_code == 303
        with with_cookie(app, copied) as again:
            assert again.get("/admin/editions").status_code == 303
        # A second login is a new session; the old cookie stays dead.
        with log_in(app) as fresh, with_cookie(app, copied) as thief:
            assert fresh.get("/admin/subscribers").status_code == 200
            assert thief.get("/admin/subscribers").status_code == 303
        # Readers' links are signed with another secret, which logging out leaves alone.
        assert httpx.get(app.url + link).status_code == 200


def test_changing_the_admin_password_ends_the_sessions_opened_under_the_old_one(tmp_path, smtp_server):
    settings = settings_with(tmp_path, smtp_server.port, hash_password(PASSWORD))
    link = preferences_link(settings)
    with serving(settings) as app, log_in(app) as admin:
        copied = admin.cookies[COOKIE]
    # Restarted with the same password hash: the session lives on (it is in the database, not the process).
    with serving(settings) as app, with_cookie(app, copied) as client:
        assert client.get("/admin/subscribers").status_code == 200
    changed = settings_with(tmp_path, smtp_server.port, hash_password("a new password, changed"))
    with serving(changed) as app:
        with with_cookie(app, copied) as client:
            refused = client.get("/admin/subscribers")
            assert refused.status_code == 303 and refused.headers["location"] == "/admin/login"
        assert httpx.get(app.url + link).status_code == 200  # readers' links still work
    db = open_database(settings.database)
    try:
        stored = db.execute("SELECT id_hash, password_fingerprint FROM admin_sessions").fetchall()
    finally:
        db.close()
    # Neither the session id nor the password hash is stored as such.
    assert stored and all(copied not in row[0] and "scrypt" not in row[1] for row in stored)


@pytest.mark.parametrize(
    ("page", "shown"),
    [
        ("99999999999999999999999", 3),  # past the end: the last page
        ("9" * 5000, 3),  # longer than Python's int() takes from a string
        ("0003", 3),
        ("3", 3),
        ("2", 2),
        ("-2", 1),
        ("0", 1),
        ("²", 1),  # a digit to str.isdigit(), not to int()
        ("abc", 1),
        ("", 1),
    ],
)
def test_any_page_number_shows_a_page_of_subscribers(tmp_path, smtp_server, page, shown):
    settings = settings_with(tmp_path, smtp_server.port, hash_password(PASSWORD))
    db = open_database(settings.database)
    import_rows(db, "\n".join(f"member{n:03d}@example.org,Member {n}" for n in range(120)))
    db.close()
    with serving(settings) as app, log_in(app) as admin:
        answer = admin.get("/admin/subscribers", params={"page": page})
    assert answer.status_code == 200
    assert f"page {shown} of 3" in answer.text
    assert answer.text.count("@example.org</td>") == (20 if shown == 3 else 50)


def test_the_login_page_says_at_once_when_no_password_is_configured(tmp_path, smtp_server):
    settings = settings_with(tmp_path, smtp_server.port, None)
    with serving(settings) as app, httpx.Client(base_url=app.url) as client:
        page = client.get("/admin/login")
        assert page.status_code == 200
        assert "No admin password is configured" in page.text and "newsletter admin-password" in page.text
        assert 'type="password"' not in page.text  # no form that could never succeed
        token = csrf_of(client.get("/subscribe").text)  # the login page has no form to take it from
        tried = client.post("/admin/login", data={"csrf": token, "password": "anything"})
        assert tried.status_code == 403 and "No admin password is configured" in tried.text
        assert client.get("/admin/subscribers").status_code == 303


def test_too_many_login_attempts_get_429_with_retry_after(tmp_path, smtp_server):
    settings = settings_with(tmp_path, smtp_server.port, hash_password(PASSWORD))
    with serving(settings) as app, httpx.Client(base_url=app.url) as client:
        token = csrf_of(client.get("/admin/login").text)
        codes = [
            client.post("/admin/login", data={"csrf": token, "password": "wrong guess"}).status_code
            for _ in range(10)
        ]
        assert codes == [401] * 10
        refused = client.post("/admin/login", data={"csrf": token, "password": PASSWORD})
        assert refused.status_code == 429 and "Too many attempts" in refused.text
        assert 0 < int(refused.headers["retry-after"]) <= 600


def test_a_test_send_to_a_stalling_smtp_server_leaves_the_site_answering(tmp_path, smtp_server):
    settings = settings_with(tmp_path, smtp_server.port, hash_password(PASSWORD))
    edition_id = edition_with_sample_papers(settings)
    smtp_server.handler.delay = 12  # seconds before the server answers the end of the message
    with serving(settings) as app, log_in(app) as admin:
        token, copied = csrf_of(admin.get("/admin/editions").text), admin.cookies[COOKIE]
        outcome: list[httpx.Response] = []
        sender = threading.Thread(
            target=lambda: outcome.append(
                admin.post(
                    f"/admin/editions/{edition_id}/test",
                    data={"csrf": token, "email": "editor@example.org"},
                    timeout=60,
                )
            )
        )
        sender.start()
        deadline = time.monotonic() + 30
        while not smtp_server.handler.rcpt_attempts["editor@example.org"]:
            assert time.monotonic() < deadline, "the test send never reached the SMTP server"
            time.sleep(0.05)
        # While the server stalls, the site answers: other admins, readers, health checks.
        with httpx.Client(base_url=app.url, cookies={COOKIE: copied}, timeout=5) as other:
            assert other.get("/healthz").status_code == 200
            assert other.get("/admin/subscribers").status_code == 200
            assert other.get("/editions").status_code == 200
        sender.join(timeout=60)
    assert outcome and "Test copy of edition" in outcome[0].text
    assert smtp_server.counts()["editor@example.org"] == 1


def test_an_admin_session_ends_after_eight_idle_hours(db):
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    fingerprint = sessions.password_fingerprint(hash_password(PASSWORD))
    session_id = sessions.open_session(db, fingerprint, now=start)
    assert sessions.session_valid(db, session_id, fingerprint, now=start + timedelta(hours=7))
    # Used at 16:00, so it lasts until midnight, not until 17:00.
    assert sessions.session_valid(db, session_id, fingerprint, now=start + timedelta(hours=14, minutes=59))
    assert not sessions.session_valid(db, session_id, fingerprint, now=start + timedelta(hours=23, minutes=1))
    assert not sessions.session_valid(db, "not-a-session", fingerprint, now=start)
    other = sessions.password_fingerprint(hash_password(PASSWORD))  # the same password, hashed again
    fresh = sessions.open_session(db, fingerprint, replacing=session_id, now=start + timedelta(days=1))
    assert not sessions.session_valid(db, fresh, other, now=start + timedelta(days=1))
    assert db.execute("SELECT count(*) FROM admin_sessions").fetchone()[0] == 1  # the old one is gone
