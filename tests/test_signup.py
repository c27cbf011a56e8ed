"""Sign-up, confirmation, preferences, archive, feed and admin pages over real HTTP (uvicorn + httpx)."""

from __future__ import annotations

import email
import email.policy
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import feedparser
import httpx
import pytest

from newsletter.config import load_settings
from newsletter.db import open_database
from newsletter.devsmtp import free_port
from newsletter.subscribers import find_subscriber
from newsletter.tokens import Tokens
from newsletter.web import create_app
from newsletter.web.security import hash_password
from tests.support.webserver import RunningApp
from tests.test_deliver import edition_with_sample_papers, make_settings

ADMIN_PASSWORD = "correct horse battery"


def web_settings(tmp_path, smtp_port: int, port: int):
    """Settings whose base_url is the web app's own port (plain HTTP, so the session cookie travels)."""
    make_settings(tmp_path, smtp_port)
    config = tmp_path / "newsletter.toml"
    text = config.read_text().replace(
        'base_url = "https://news.example.org"', f'base_url = "http://127.0.0.1:{port}"'
    )
    text = text.replace("[web]", f'[web]\nadmin_password_hash = "{hash_password(ADMIN_PASSWORD)}"')
    config.write_text(text)
    return load_settings(config, environ={})


@pytest.fixture
def site(tmp_path, smtp_server):
    """The web app on a real port, base_url pointing at it, mail going to the test SMTP server."""
    port = free_port()
    settings = web_settings(tmp_path, smtp_server.port, port)
    running = RunningApp(create_app(settings), port=port)
    yield settings, running
    running.stop()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "the form has no CSRF token"
    return match.group(1)


def links_in(server, address: str) -> list[str]:
    messages = server.messages(address)
    urls = []
    for stored in messages:
        message = email.message_from_bytes(stored.as_bytes(), policy=email.policy.default)
        urls += re.findall(r"https?://\S+", message.get_body(("plain",)).get_content())
    return urls


def subscribe(client: httpx.Client, base: str, address: str, **fields: object) -> httpx.Response:
    page = client.get(f"{base}/subscribe")
    data = {"csrf": csrf_of(page.text), "email": address, "name": "", "keywords": ""}
    data.update({k: v for k, v in fields.items() if v is not None})
    return client.post(f"{base}/subscribe", data=data)


def wait_until(condition: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def queue_length(settings) -> int:
    db = open_database(settings.database)
    try:
        return db.execute("SELECT count(*) FROM signup_requests").fetchone()[0]
    finally:
        db.close()


def drained(settings) -> None:
    """Wait until the sign-up queue has handled every request (sent, or decided that nothing is sent)."""
    wait_until(lambda: queue_length(settings) == 0, "the sign-up queue to drain")


def test_double_opt_in(site, smtp_server):
    settings, app = site
    with httpx.Client() as client:
        typo = subscribe(client, app.url, "new.reader@example", name="New Reader")
        assert typo.status_code == 400 and "is not a valid email address" in typo.text
        assert 'value="New Reader"' in typo.text  # what was typed is kept
        answer = subscribe(client, app.url, "new.reader@example.org", name="New Reader", categories=["cs.RO"])
        assert answer.status_code == 200 and "Check your inbox" in answer.text
        drained(settings)
        db = open_database(settings.database)
        pending = find_subscriber(db, "new.reader@example.org")
        db.close()
        assert pending.status == "pending" and pending.preferences.categories == ("cs.RO",)

        [confirm_link] = [u for u in links_in(smtp_server, "new.reader@example.org") if "/confirm/" in u]
        page = client.get(confirm_link)  # opening the link (or a mail scanner) does not confirm
        assert page.status_code == 200 and "Confirm my subscription" in page.text
        db = open_database(settings.database)
        assert find_subscriber(db, "new.reader@example.org").status == "pending"
        db.close()
        done = client.post(confirm_link, data={"csrf": csrf_of(page.text)})
        assert done.status_code == 200 and "You are subscribed" in done.text
        db = open_database(settings.database)
        assert find_subscriber(db, "new.reader@example.org").status == "active"
        db.close()


def test_a_confirmation_email_the_server_defers_is_sent_again_from_the_queue(site, smtp_server):
    settings, app = site
    smtp_server.handler.script("unlucky@example.org", "451 4.3.0 Try again later", "451 4.3.0 Still busy")
    with httpx.Client() as client:
        answer = subscribe(client, app.url, "unlucky@example.org")
    assert answer.status_code == 200  # the reader is not the one to retry
    drained(settings)
    assert smtp_server.handler.rcpt_attempts["unlucky@example.org"] == 3
    assert [u for u in links_in(smtp_server, "unlucky@example.org") if "/confirm/" in u]


def test_a_confirmation_email_refused_for_good_lets_the_mailbox_ask_again_at_once(site, smtp_server):
    settings, app = site
    smtp_server.handler.script("typo@example.org", "550 5.1.1 No such user")
    with httpx.Client() as client:
        assert subscribe(client, app.url, "typo@example.org").status_code == 200
        drained(settings)
        assert smtp_server.messages("typo@example.org") == []
        assert subscribe(client, app.url, "typo@example.org").status_code == 200
    drained(settings)
    assert [u for u in links_in(smtp_server, "typo@example.org") if "/confirm/" in u]


def test_the_form_does_not_reveal_who_is_subscribed(site, smtp_server):
    settings, app = site
    db = open_database(settings.database)
    from newsletter.subscribers import add_subscriber, set_status, suppress

    add_subscriber(db, "active@example.org")
    gone = add_subscriber(db, "gone@example.org").subscriber
    set_status(db, gone.id, "unsubscribed")
    add_subscriber(db, "bounced@example.org")
    suppress(db, "bounced@example.org", "hard bounce")
    suppress(db, "suppressed@example.org", "hard bounce")  # never a subscriber
    db.close()
    answers = {}
    addresses = ("active@example.org", "gone@example.org", "bounced@example.org", "suppressed@example.org")
    for address in (*addresses, "nobody@example.org"):
        with httpx.Client() as client:
            response = subscribe(client, app.url, address)
        answers[address] = (response.status_code, response.text.replace(address, "ADDRESS"))
    assert len({answer for answer in answers.values()}) == 1  # byte for byte the same page
    drained(settings)
    # ... while each address gets what it needs by email: its owner learns the truth, nobody else.
    assert any("/preferences/" in u for u in links_in(smtp_server, "active@example.org"))
    assert any("/confirm/" in u for u in links_in(smtp_server, "gone@example.org"))
    assert any("/confirm/" in u for u in links_in(smtp_server, "nobody@example.org"))
    assert links_in(smtp_server, "bounced@example.org") == []
    assert links_in(smtp_server, "suppressed@example.org") == []
    db = open_database(settings.database)
    assert find_subscriber(db, "gone@example.org").status == "unsubscribed"  # until the owner confirms
    db.close()

    [link] = [u for u in links_in(smtp_server, "gone@example.org") if "/confirm/" in u]
    with httpx.Client() as client:
        page = client.get(link)
        client.post(link, data={"csrf": csrf_of(page.text)})
    db = open_database(settings.database)
    assert find_subscriber(db, "gone@example.org").status == "active"  # re-subscribed by confirming
    db.close()


def test_confirmation_links_expire_and_cannot_be_forged(site, smtp_server, monkeypatch):
    settings, app = site
    with httpx.Client() as client:
        subscribe(client, app.url, "late@example.org")
    drained(settings)
    [link] = [u for u in links_in(smtp_server, "late@example.org") if "/confirm/" in u]
    token = link.rsplit("/", 1)[1]
    with httpx.Client() as client:
        assert client.get(f"{app.url}/confirm/{token[:-3]}abc").status_code == 400
        forged = Tokens("an-attackers-own-secret-key").make("confirm", 1, "late@example.org")
        assert client.get(f"{app.url}/confirm/{forged}").status_code == 400
        import itsdangerous.timed

        real_time = itsdangerous.timed.time.time
        monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real_time() + 8 * 86400)
        expired = client.get(link)  # the clock of the token check only: a week and a day later
        assert expired.status_code == 400 and "expired" in expired.text


def test_signups_are_rate_limited_and_need_the_form_token(site, smtp_server):
    _, app = site
    with httpx.Client() as client:
        page = client.get(f"{app.url}/subscribe")
        no_token = client.post(f"{app.url}/subscribe", data={"email": "x@example.org"})
        assert no_token.status_code == 403
        token = csrf_of(page.text)
        codes = [
            client.post(
                f"{app.url}/subscribe", data={"csrf": token, "email": f"r{n}@example.org"}
            ).status_code
            for n in range(7)
        ]
        refused = client.post(f"{app.url}/subscribe", data={"csrf": token, "email": "r9@example.org"})
    assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
    assert refused.status_code == 429 and 0 < int(refused.headers["retry-after"]) <= 600


def test_preferences_page_saves_choices(site, smtp_server):
    settings, app = site
    db = open_database(settings.database)
    from newsletter.subscribers import add_subscriber

    reader = add_subscriber(db, "prefs@example.org").subscriber
    db.close()
    link = f"{app.url}/preferences/{Tokens(settings.web.secret_key).make('preferences', reader.id, reader.email)}"
    with httpx.Client() as client:
        page = client.get(link)
        assert page.status_code == 200 and "pr•••@example.org" in page.text
        saved = client.post(
            link,
            data={
                "csrf": csrf_of(page.text),
                "categories": ["cs.CV", "cs.RO"],
                "keywords": "diffusion, robot arm",
                "empty_digest": "skip",
            },
        )
        assert saved.status_code == 200 and "Saved." in saved.text
        rejected = client.post(link, data={"csrf": csrf_of(page.text), "categories": ["not a category!"]})
        assert rejected.status_code == 400
        assert client.post(link, data={"categories": ["cs.CV"]}).status_code == 403  # no CSRF token
        assert client.get(link.replace("/preferences/", "/preferences/x")).status_code == 400
    db = open_database(settings.database)
    prefs = find_subscriber(db, "prefs@example.org").preferences
    db.close()
    assert (prefs.categories, prefs.keywords, prefs.empty_digest) == (
        ("cs.CV", "cs.RO"),
        ("diffusion", "robot arm"),
        "skip",
    )


def test_archive_and_atom_feed(site, smtp_server):
    settings, app = site
    from newsletter.outbox import send_edition
    from newsletter.subscribers import add_subscriber

    edition_id = edition_with_sample_papers(settings)
    db = open_database(settings.database)
    add_subscriber(db, "reader@example.org")
    db.close()
    send_edition(settings, edition_id)
    index = httpx.get(f"{app.url}/editions")
    assert index.status_code == 200 and f'href="/editions/{edition_id}"' in index.text
    page = httpx.get(f"{app.url}/editions/{edition_id}")
    assert page.text.count('class="paper"') == 38  # every paper, not only those the email had room for
    feed = feedparser.parse(httpx.get(f"{app.url}/editions.atom").content)
    assert feed.bozo == 0 and feed.version == "atom10"
    assert len(feed.entries) == 1
    entry = feed.entries[0]
    assert entry.link == f"{app.url}/editions/{edition_id}"
    assert "38 papers" in entry.title and "diffusion" in entry.summary.lower()


# --- admin ---------------------------------------------------------------------------------------------------


@contextmanager
def admin_client(app: RunningApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=app.url) as client:
        page = client.get("/admin/login")
        response = client.post("/admin/login", data={"csrf": csrf_of(page.text), "password": ADMIN_PASSWORD})
        assert response.status_code == 303
        yield client


def test_admin_needs_a_login_and_a_csrf_token(site):
    _, app = site
    with httpx.Client(base_url=app.url) as client:
        assert client.get("/admin/subscribers").status_code == 303  # to the login page
        page = client.get("/admin/login")
        wrong = client.post("/admin/login", data={"csrf": csrf_of(page.text), "password": "guess"})
        assert wrong.status_code == 401 and "Wrong password" in wrong.text
        assert client.get("/admin/subscribers").status_code == 303
        no_token = client.post("/admin/login", data={"password": ADMIN_PASSWORD})
        assert no_token.status_code == 403
    with admin_client(app) as client:
        listing = client.get("/admin/subscribers")
        assert listing.status_code == 200 and "Add a subscriber" in listing.text
        forged = client.post("/admin/subscribers/add", data={"email": "x@example.org", "csrf": "forged"})
        assert forged.status_code == 403
        missing = client.post("/admin/subscribers/add", data={"email": "x@example.org"})
        assert missing.status_code == 403
        assert "x@example.org" not in client.get("/admin/subscribers").text


def test_admin_subscribers_search_filter_pages_add_status_remove(site):
    settings, app = site
    db = open_database(settings.database)
    from newsletter.subscribers import import_rows

    import_rows(db, "\n".join(f"member{n:03d}@example.org,Member {n}" for n in range(120)))
    db.close()
    with admin_client(app) as client:
        first = client.get("/admin/subscribers")
        assert "120 subscribers" in first.text and "page 1 of 3" in first.text
        third = client.get("/admin/subscribers", params={"page": 3})
        assert third.text.count("@example.org</td>") == 20
        found = client.get("/admin/subscribers", params={"q": "member042"})
        assert "1 subscriber " in found.text and "Member 42" in found.text
        token = csrf_of(first.text)
        added = client.post(
            "/admin/subscribers/add", data={"csrf": token, "email": "New@Example.org", "name": "New"}
        )
        assert "Added New@example.org." in added.text
        bad = client.post("/admin/subscribers/add", data={"csrf": token, "email": "nope"})
        assert bad.status_code == 400 and "not a valid email address" in bad.text
        db = open_database(settings.database)
        member = find_subscriber(db, "member007@example.org")
        db.close()
        changed = client.post(
            f"/admin/subscribers/{member.id}/status", data={"csrf": token, "status": "unsubscribed"}
        )
        assert "member007@example.org is now unsubscribed." in changed.text
        filtered = client.get("/admin/subscribers", params={"status": "unsubscribed"})
        assert "1 subscriber " in filtered.text and "member007@example.org" in filtered.text
        removed = client.post(f"/admin/subscribers/{member.id}/remove", data={"csrf": token})
        assert "Removed member007@example.org" in removed.text
    db = open_database(settings.database)
    assert find_subscriber(db, "member007@example.org") is None
    db.close()


def test_admin_csv_import_reports_broken_rows(site, tmp_path):
    settings, app = site
    csv_text = (
        "email,name,attributes\n"
        'ana@example.org,Ana,"{""city"": ""Lisbon""}"\n'
        "broken-address,Bob,{}\n"
        'carl@example.org,Carl,"not json"\n'
        "dana@example.org,Dana,\n"
    )
    with admin_client(app) as client:
        page = client.get("/admin/import")
        response = client.post(
            "/admin/import",
            data={"csrf": csrf_of(page.text)},
            files={"file": ("people.csv", csv_text.encode(), "text/csv")},
        )
        assert response.status_code == 200
        assert "people.csv: 2 added, 0 already on the list, 2 rejected." in response.text
        assert "<td>3</td>" in response.text and "not a valid email address" in response.text
        assert "<td>4</td>" in response.text and "attributes are not valid JSON" in response.text
        again = client.post(
            "/admin/import",
            data={"csrf": csrf_of(page.text)},
            files={"file": ("people.csv", csv_text.encode(), "text/csv")},
        )
        assert "0 added, 2 already on the list" in again.text
    db = open_database(settings.database)
    assert find_subscriber(db, "ana@example.org").attributes == {"city": "Lisbon"}
    db.close()


def test_admin_editions_test_send_and_one_off(site, smtp_server):
    settings, app = site
    edition_id = edition_with_sample_papers(settings)
    db = open_database(settings.database)
    from newsletter.subscribers import add_subscriber

    for n in range(3):
        add_subscriber(db, f"member{n}@example.org")
    db.close()
    with admin_client(app) as client:
        page = client.get("/admin/editions")
        assert f'<a href="/admin/editions/{edition_id}">{edition_id}</a>' in page.text
        assert "not public" in page.text  # built, not sent: the archive does not show it
        preview = client.get(f"/admin/editions/{edition_id}")
        assert preview.status_code == 200 and preview.text.count('class="paper"') == 38
        token = csrf_of(page.text)
        tested = client.post(
            f"/admin/editions/{edition_id}/test", data={"csrf": token, "email": "editor@example.org"}
        )
        assert "Test copy of edition" in tested.text and smtp_server.counts()["editor@example.org"] == 1
        form = client.get("/admin/send")
        sent = client.post(
            "/admin/send",
            data={
                "csrf": csrf_of(form.text),
                "subject": "Hello readers",
                "body": "A **short** note.",
                "segment": "all",
            },
        )
        assert "sending now" in sent.text
        one_off_id = int(re.search(r"stored as edition (\d+)", sent.text).group(1))
        for _ in range(100):
            listing = client.get("/admin/editions").text
            if smtp_server.counts().get("member2@example.org") == 1:
                break
            threading.Event().wait(0.1)
        listing = client.get("/admin/editions").text
        row = listing.split(f'<a href="/admin/editions/{one_off_id}">{one_off_id}</a>')[1].split("</tr>")[0]
        assert f'<a href="/editions/{one_off_id}">public</a>' in row  # it went to the whole list
        assert re.findall(r'class="number">(\d+)<', row)[:3] == ["3", "0", "0"]  # sent, failed, pending


def test_cli_and_web_write_the_same_database_at_once(site, tmp_path):
    settings, app = site
    csv_path = tmp_path / "bulk.csv"
    csv_path.write_text("\n".join(f"bulk{n:05d}@example.org,Bulk {n}" for n in range(20_000)))
    importer = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "--config", str(tmp_path / "newsletter.toml"), "subscribers", "import", str(csv_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    statuses = []
    with admin_client(app) as client:
        token = csrf_of(client.get("/admin/subscribers").text)
        for n in range(40):
            response = client.post(
                "/admin/subscribers/add", data={"csrf": token, "email": f"web{n}@example.org"}
            )
            statuses.append(response.status_code)
    out, err = importer.communicate(timeout=120)
    assert importer.returncode == 0, err
    assert "imported 20000 new subscribers" in out
    assert statuses == [200] * 40
    db = open_database(settings.database)
    assert db.execute("SELECT count(*) FROM subscribers").fetchone()[0] == 20_040
    db.close()


def test_unknown_edition_and_pages_have_security_headers(site):
    _, app = site
    response = httpx.get(f"{app.url}/subscribe")
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert httpx.get(f"{app.url}/editions/424242").status_code == 404


def test_health_endpoint(site):
    _, app = site
    response = httpx.get(f"{app.url}/healthz")
    assert (response.status_code, response.text) == (200, "ok\n")


# --- the sign-up queue: nothing a slow relay, a locked database or a visitor does may freeze or leak -------


def unsubscribe_url(settings, app: RunningApp, address: str) -> str:
    from newsletter.subscribers import add_subscriber

    db = open_database(settings.database)
    reader = add_subscriber(db, address).subscriber
    db.close()
    return f"{app.url}/unsubscribe/{Tokens(settings.web.secret_key).make('unsubscribe', reader.id, reader.email)}"


def test_signups_are_answered_while_the_smtp_server_takes_8_seconds_a_message(site, smtp_server):
    settings, app = site
    unsubscribe_page = unsubscribe_url(settings, app, "leaving@example.org")
    smtp_server.handler.delay = 8
    addresses = [f"patient{n}@example.org" for n in range(3)]
    with httpx.Client(timeout=30) as client:
        answers = [subscribe(client, app.url, address).status_code for address in addresses]
        health = client.get(f"{app.url}/healthz")
        unsubscribe = client.get(unsubscribe_page)
    # Every page was answered before the server accepted even the first email.
    assert smtp_server.handler.arrivals == []
    assert answers == [200, 200, 200]
    assert (health.status_code, unsubscribe.status_code) == (200, 200)
    wait_until(lambda: len(smtp_server.handler.arrivals) == 3, "the three emails", timeout=90)
    for address in addresses:
        assert [u for u in links_in(smtp_server, address) if "/confirm/" in u]


def test_a_database_locked_past_the_busy_timeout_gives_503_while_other_pages_answer(
    site, smtp_server, monkeypatch
):
    import sqlite3

    import newsletter.db

    settings, app = site
    monkeypatch.setattr(newsletter.db, "BUSY_TIMEOUT_MS", 5000)  # every connection opened from now on
    with httpx.Client(timeout=60) as client:
        data = {"csrf": csrf_of(client.get(f"{app.url}/subscribe").text), "email": "locked@example.org"}
        holder = sqlite3.connect(settings.database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process writing at length
        try:
            outcome: dict[str, httpx.Response] = {}
            poster = threading.Thread(
                target=lambda: outcome.update(signup=client.post(f"{app.url}/subscribe", data=data))
            )
            poster.start()
            time.sleep(0.5)  # the sign-up is waiting for the lock
            with httpx.Client(timeout=30) as other:
                health = other.get(f"{app.url}/healthz")
                archive = other.get(f"{app.url}/editions")
            answered_meanwhile = poster.is_alive()
            poster.join(timeout=60)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert (health.status_code, archive.status_code) == (200, 200)
        assert answered_meanwhile  # while the sign-up still waited for the lock
        signup = outcome["signup"]
        assert signup.status_code == 503 and "try again" in signup.text.lower()
        assert int(signup.headers["retry-after"]) > 0
        again = client.post(f"{app.url}/subscribe", data=data)  # the lock is gone
    assert again.status_code == 200
    drained(settings)
    assert [u for u in links_in(smtp_server, "locked@example.org") if "/confirm/" in u]


def test_tag_and_case_variants_from_many_clients_get_one_email_per_mailbox(site, smtp_server):
    settings, app = site
    answers = []
    for client_number in range(5):
        # uvicorn believes X-Forwarded-For from 127.0.0.1: five clients as far as the app can tell.
        with httpx.Client(headers={"X-Forwarded-For": f"198.51.100.{client_number + 1}"}) as client:
            for n in range(5):
                local = "Victim" if n % 2 else "victim"
                address = f"{local}+c{client_number}n{n}@Example.org"
                answers.append(subscribe(client, app.url, address).status_code)
    with httpx.Client(headers={"X-Forwarded-For": "198.51.100.99"}) as client:
        answers.append(subscribe(client, app.url, "someone.else@example.org").status_code)
    assert answers == [200] * 26
    drained(settings)
    received = {address: n for address, n in smtp_server.counts().items() if address.startswith("victim")}
    assert sum(received.values()) == 1, received
    assert smtp_server.counts()["someone.else@example.org"] == 1  # the throttle is per mailbox, not global


def test_the_confirmation_email_carries_no_typed_name_and_names_like_links_are_refused(site, smtp_server):
    settings, app = site
    with httpx.Client() as client:
        for name in (
            "URGENT: your account is locked, verify at https://evil.example/login",
            "verify at evil.example/login",
            "write to help@evil.example",
            "www.evil.example",
        ):
            refused = subscribe(client, app.url, "target@example.org", name=name)
            assert refused.status_code == 400 and "cannot look like a web or email address" in refused.text
        accepted = subscribe(client, app.url, "target@example.org", name="Ada Lovelace")
        assert accepted.status_code == 200
    drained(settings)
    [stored] = smtp_server.messages("target@example.org")
    raw = stored.as_bytes()
    assert b"/confirm/" in raw.replace(b"=\r\n", b"").replace(b"=\n", b"")
    assert b"Ada" not in raw and b"Lovelace" not in raw and b"evil" not in raw
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["To"] == "target@example.org"
    assert "Hello," in message.get_body(("plain",)).get_content()


def test_only_accepted_signups_count_against_the_client_limit_and_429_says_when(site, smtp_server):
    _, app = site
    with httpx.Client() as client:
        token = csrf_of(client.get(f"{app.url}/subscribe").text)
        post = lambda **data: client.post(f"{app.url}/subscribe", data={"csrf": token, **data})  # noqa: E731
        rejected = [
            post(email="not-an-address"),
            post(email="a@example.org", name="see https://evil.example"),
            post(email="b@example.org", categories=["not a category!"]),
            post(email=""),
            post(email="c@example.org", name="x" * 101),
            post(email="d@example"),
        ]
        assert [r.status_code for r in rejected] == [400] * 6
        accepted = [post(email=f"fine{n}@example.org").status_code for n in range(5)]
        over = post(email="one-more@example.org")
    assert accepted == [200] * 5
    assert over.status_code == 429 and 0 < int(over.headers["retry-after"]) <= 600


def test_pending_signups_are_pruned_after_their_link_expired(tmp_path):
    from datetime import UTC, datetime, timedelta

    from newsletter.preferences import Preferences
    from newsletter.retention import prune
    from newsletter.settings import RetentionSettings
    from newsletter.subscribers import add_subscriber, request_subscription, set_status

    db = open_database(tmp_path / "news.db")
    now = datetime.now(UTC)
    weeks_ago = now - timedelta(days=15)
    request_subscription(db, "forgotten@example.org", "", Preferences(), now=weeks_ago)
    request_subscription(db, "recent@example.org", "", Preferences(), now=now - timedelta(days=6))
    add_subscriber(db, "reader@example.org", now=weeks_ago)
    gone = add_subscriber(db, "gone@example.org", now=weeks_ago).subscriber
    set_status(db, gone.id, "unsubscribed", now=weeks_ago)
    counts = prune(db, RetentionSettings(), now=now)
    assert counts["pending_signups"] == 1
    assert find_subscriber(db, "forgotten@example.org") is None
    kept = {row[0] for row in db.execute("SELECT email FROM subscribers")}
    assert kept == {"recent@example.org", "reader@example.org", "gone@example.org"}
    db.close()


def test_the_request_path_does_the_same_work_whatever_the_address(tmp_path, smtp_server):
    """What reveals a bounced or suppressed address is work the request does only for some addresses. The
    sender is held back here, so what the requests did is all there is to see: one queued row each, the
    same for every address, and nothing else changed."""
    from datetime import UTC, datetime, timedelta

    from newsletter.preferences import Preferences
    from newsletter.signup_sender import SignupSender
    from newsletter.subscribers import add_subscriber, request_subscription, set_status, suppress

    port = free_port()
    settings = web_settings(tmp_path, smtp_server.port, port)
    db = open_database(settings.database)
    add_subscriber(db, "active@example.org")
    gone = add_subscriber(db, "gone@example.org").subscriber
    set_status(db, gone.id, "unsubscribed")
    add_subscriber(db, "bounced@example.org")
    suppress(db, "bounced@example.org", "hard bounce")
    suppress(db, "suppressed@example.org", "hard bounce")
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    request_subscription(db, "waiting@example.org", "", Preferences(), now=an_hour_ago)

    def snapshot() -> dict[str, list[tuple]]:
        tables = [t for t in db.table_names() if t != "signup_requests"]
        return {t: sorted(db.execute(f"SELECT * FROM [{t}]").fetchall(), key=repr) for t in tables}

    before = snapshot()
    addresses = ["nobody@example.org", "waiting@example.org", "active@example.org", "gone@example.org"]
    addresses += ["bounced@example.org", "suppressed@example.org"]
    app = RunningApp(create_app(settings, send_signups=False), port=port)
    try:
        pages = set()
        for n, address in enumerate(addresses):
            with httpx.Client(headers={"X-Forwarded-For": f"198.51.100.{n + 1}"}) as client:
                answer = subscribe(client, app.url, address, name="Reader", categories=["cs.LG"])
            pages.add((answer.status_code, answer.text.replace(address, "ADDRESS")))
    finally:
        app.stop()
    assert len(pages) == 1 and next(iter(pages))[0] == 200
    assert snapshot() == before  # no subscriber, suppression or throttle was read into a write
    rows = db.execute(
        "SELECT email, name, categories, keywords, frequency, attempts, subscriber_id, email_kind "
        "FROM signup_requests ORDER BY id"
    ).fetchall()
    assert [row[0] for row in rows] == addresses
    assert {row[1:] for row in rows} == {("Reader", '["cs.LG"]', "[]", "weekly", 0, None, None)}
    db.close()

    assert smtp_server.counts() == {}
    SignupSender(settings).drain()  # now the queue decides, out of every request's way
    assert queue_length(settings) == 0
    assert any("/confirm/" in u for u in links_in(smtp_server, "nobody@example.org"))
    assert any("/confirm/" in u for u in links_in(smtp_server, "waiting@example.org"))
    assert any("/confirm/" in u for u in links_in(smtp_server, "gone@example.org"))
    assert any("/preferences/" in u for u in links_in(smtp_server, "active@example.org"))
    assert smtp_server.messages("bounced@example.org") == []
    assert smtp_server.messages("suppressed@example.org") == []


def test_queued_signups_survive_a_stop_and_two_senders_send_each_once(tmp_path, smtp_server):
    from newsletter.signup_sender import SignupSender

    port = free_port()
    settings = web_settings(tmp_path, smtp_server.port, port)
    addresses = [f"queued{n}@example.org" for n in range(5)]
    app = RunningApp(create_app(settings, send_signups=False), port=port)
    try:
        with httpx.Client() as client:
            assert [subscribe(client, app.url, a).status_code for a in addresses] == [200] * 5
    finally:
        app.stop()
    assert queue_length(settings) == 5  # recorded, nothing sent, nothing lost with the process gone
    smtp_server.handler.delay = 0.3  # so that the two senders overlap
    senders = [SignupSender(settings), SignupSender(settings)]
    for sender in senders:
        sender.start()
    try:
        drained(settings)
    finally:
        for sender in senders:
            sender.stop()
    assert {a: smtp_server.counts()[a] for a in addresses} == dict.fromkeys(addresses, 1)


def test_a_request_that_fails_unexpectedly_waits_and_the_sender_goes_on(tmp_path, smtp_server, monkeypatch):
    """A failure the sender does not expect (a template that cannot be rendered, a bug) must not end the
    sender thread: every later sign-up would wait for a restart while the form still says an email is on
    its way. Such a failure cannot be caused from outside the installed package, so the email function is
    replaced for one address by one that raises; the other address gets the real email."""
    import newsletter.signup_sender
    from newsletter.preferences import Preferences
    from newsletter.signup_sender import SignupSender
    from newsletter.signups import SignupRequest, enqueue

    settings = web_settings(tmp_path, smtp_server.port, free_port())
    real_send = newsletter.signup_sender.send_signup_email

    def send(settings, subscriber, kind):
        if subscriber.email == "broken@example.org":
            raise RuntimeError("the confirmation template cannot be rendered")
        return real_send(settings, subscriber, kind)

    monkeypatch.setattr(newsletter.signup_sender, "send_signup_email", send)
    db = open_database(settings.database)
    for address in ("broken@example.org", "fine@example.org"):  # the broken one is handled first
        enqueue(db, SignupRequest.create(address, "", Preferences()))
    db.close()
    sender = SignupSender(settings)
    sender.start()
    try:
        wait_until(lambda: smtp_server.counts().get("fine@example.org") == 1, "the next request's email", 40)
    finally:
        sender.stop()
    db = open_database(settings.database)
    waiting = [row[0] for row in db.execute("SELECT email FROM signup_requests")]
    db.close()
    assert waiting == ["broken@example.org"]  # kept, to be tried again once its claim runs out


def test_a_confirmation_link_sent_before_an_unsubscribe_changes_nothing(site, smtp_server):
    from datetime import UTC, datetime, timedelta

    from newsletter.preferences import Preferences
    from newsletter.subscribers import request_subscription

    settings, app = site
    db = open_database(settings.database)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    reader = request_subscription(db, "fickle@example.org", "", Preferences(), now=an_hour_ago).subscriber
    db.close()
    tokens = Tokens(settings.web.secret_key)
    old_link = f"{app.url}/confirm/{tokens.make('confirm', reader.id, reader.email)}"
    unsubscribe_link = f"{app.url}/unsubscribe/{tokens.make('unsubscribe', reader.id, reader.email)}"

    def status() -> str:
        db = open_database(settings.database)
        try:
            return find_subscriber(db, "fickle@example.org").status
        finally:
            db.close()

    with httpx.Client() as client:
        page = client.get(old_link)
        assert client.post(old_link, data={"csrf": csrf_of(page.text)}).status_code == 200
        assert status() == "active"
        assert client.post(unsubscribe_link).status_code == 200
        assert status() == "unsubscribed"

        again = client.get(old_link)
        assert again.status_code == 400 and "before this address unsubscribed" in again.text
        replayed = client.post(old_link, data={"csrf": csrf_of(page.text)})
        assert replayed.status_code == 400 and "before this address unsubscribed" in replayed.text
        assert status() == "unsubscribed"

        assert subscribe(client, app.url, "fickle@example.org").status_code == 200
        drained(settings)
        [fresh_link] = [u for u in links_in(smtp_server, "fickle@example.org") if "/confirm/" in u]
        page = client.get(fresh_link)
        assert client.post(fresh_link, data={"csrf": csrf_of(page.text)}).status_code == 200
        assert status() == "active"
