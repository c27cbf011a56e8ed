"""The reader's papers on the web: where a digest's "More like this" / "Less like this" links land, the
"Your papers" page, and the edition page's actions. The real app under uvicorn on 127.0.0.1 with a real
SQLite file, the arXiv API on the local feed server, chromium for the flows, httpx for the bad input."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from newsletter.config import load_settings
from newsletter.db import open_database, write_transaction
from newsletter.devsmtp import free_port
from newsletter.editions import load_edition
from newsletter.erasure import forget_subscriber
from newsletter.library import DISLIKE, LIBRARY, LIKE, keep_papers, pending_items, reader_signals
from newsletter.library_items import MAX_FILE_BYTES, MAX_ITEMS
from newsletter.models import Paper
from newsletter.outbox import send_edition
from newsletter.settings import Settings
from newsletter.store import paper_ids_by_key, store_papers
from newsletter.subscribers import Subscriber, find_subscriber, set_status
from newsletter.tokens import Links, Tokens
from newsletter.web import create_app
from newsletter.web.papers import ADD_BYTES
from tests.support.arxivapi import FakeArxiv
from tests.support.browser import Browser, screenshot_dir
from tests.support.webserver import RunningApp, ServeProcess
from tests.test_deliver import edition_with_sample_papers, make_settings, subscribe
from tests.test_signup import csrf_of, web_settings

SECRET = "test-secret-key-0123456789"
PHONE = {"width": 375, "height": 812}
UNKNOWN_TO_ARXIV = "2402.99999"
FETCHED = "2402.00042"


@dataclass
class World:
    settings: Settings
    edition_id: int
    readers: list[str]
    app: RunningApp
    arxiv: FakeArxiv
    links: Links  # root-relative, as the site's pages write them

    def reader(self, n: int = 0) -> Subscriber:
        with database(self.settings) as db:
            found = find_subscriber(db, self.readers[n])
        assert found is not None
        return found

    def feedback_token(self, n: int = 0, edition_id: int | None = None) -> str:
        reader = self.reader(n)
        return self.links.feedback_token(reader.id, reader.email, edition_id or self.edition_id)

    def feedback_url(self, key: str, choice: str, *, n: int = 0, token: str | None = None) -> str:
        return self.app.url + self.links.feedback(token or self.feedback_token(n), key, choice)

    def papers_url(self, n: int = 0) -> str:
        reader = self.reader(n)
        return f"{self.app.url}{self.links.preferences(reader.id, reader.email)}/papers"

    def signals(self, n: int = 0) -> list[tuple[str, str, str]]:
        with database(self.settings) as db:
            return [(s.id, s.kind, s.created_at.isoformat()) for s in reader_signals(db, self.reader(n).id)]

    def edition_keys(self) -> list[str]:
        with database(self.settings) as db:
            edition = load_edition(db, self.edition_id)
        return [paper.key for section in edition.sections for paper in section.papers]


class database:
    def __init__(self, settings: Settings) -> None:
        self.db = open_database(settings.database)

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self.db

    def __exit__(self, *exc_info: object) -> None:
        self.db.close()


@pytest.fixture
def world(tmp_path, smtp_server, feed_server):
    """An edition sent to two readers, the web app on its own port (base_url points at it), and the arXiv
    API on the local feed server."""
    arxiv = FakeArxiv(feed_server)
    arxiv.papers = {FETCHED: ("Tactile Grasping Fetched by Id", "We grasp things with touch.", "cs.RO")}
    port = free_port()
    web_settings(tmp_path, smtp_server.port, port)
    config = tmp_path / "newsletter.toml"
    config.write_text(config.read_text() + f'\n[library]\narxiv_api = "{arxiv.url}"\nmin_interval = 0\n')
    settings = load_settings(config, environ={})
    edition_id = edition_with_sample_papers(settings)
    readers = subscribe(settings, 2)
    assert send_edition(settings, edition_id).counts == {"sent": 2}
    app = RunningApp(create_app(settings), port=port)
    yield World(settings, edition_id, readers, app, arxiv, Links("", Tokens(SECRET)))
    app.stop()


def post_form(client: httpx.Client, url: str, **fields: str) -> httpx.Response:
    """The page's form sent as its button does: the page first, for the session's CSRF token."""
    page = client.get(url)
    return client.post(url, data={"csrf": csrf_of(page.text), **fields})


# --- feedback in the browser --------------------------------------------------------------------------------


def test_a_feedback_link_opened_records_nothing_and_its_button_does(world, request):
    key = world.edition_keys()[0]
    shots = screenshot_dir(Path(request.config.rootpath))
    with Browser() as chromium:
        page = chromium.new_page(viewport=PHONE)
        page.goto(world.feedback_url(key, "more"))
        page.wait_for_selector("h1:has-text('More like this?')")
        assert world.signals() == []  # opening the link is not choosing
        page.screenshot(path=str(shots / "feedback-phone.png"), full_page=True)
        page.click("button:has-text('More like this')")
        page.wait_for_selector("h1:has-text('Noted: more like this')")
        assert "From the next edition, papers like this one rank higher" in page.inner_text("main")
        [(signalled, kind, _)] = world.signals()
        assert (signalled, kind) == (key, LIKE)
        assert world.signals(1) == []  # the other reader taught nothing

        page.click("text=Your papers")
        page.wait_for_selector("h1:has-text('Your papers')")
        liked = page.inner_text("section#like")
        with database(world.settings) as db:
            title = load_edition(db, world.edition_id).sections[0].papers[0].title
        assert title in liked
        page.screenshot(path=str(shots / "your-papers-phone.png"), full_page=True)
        page.click("section#like button:has-text('Remove')")
        page.wait_for_selector("text=Removed.")
        assert world.signals() == []
        assert title not in page.inner_text("section#like")

        # The other button of the landing page: the opposite choice, the latest wins.
        page.goto(world.feedback_url(key, "more"))
        page.click("button:has-text('Less like this instead')")
        page.wait_for_selector("h1:has-text('Noted: less like this')")
        assert [(s, k) for s, k, _ in world.signals()] == [(key, DISLIKE)]


def test_scanners_opening_every_feedback_link_record_nothing(world):
    """A mail scanner or link previewer follows every link of the email, with GET and HEAD."""
    with httpx.Client() as scanner:
        for key in world.edition_keys():
            for choice in ("more", "less"):
                url = world.feedback_url(key, choice)
                assert scanner.get(url).status_code == 200
                assert scanner.head(url).status_code == 200
                assert scanner.post(url).status_code == 403  # a POST without the page's token
    assert world.signals() == [] and world.signals(1) == []


def test_keys_with_spaces_and_slashes_reach_their_paper(world):
    with_doi = world.edition_keys()[1]
    with database(world.settings) as db:
        title_key, titled = db.execute(
            "SELECT k.key, p.key FROM paper_keys k JOIN papers p ON p.id = k.paper_id "
            "JOIN edition_papers ep ON ep.paper_id = p.id "
            "WHERE ep.edition_id = ? AND k.key LIKE 'title:% %' AND p.key != ? LIMIT 1",
            [world.edition_id, with_doi],
        ).fetchone()
        with write_transaction(db):  # the paper gets a DOI too: a key with a slash
            store_papers(
                db,
                [Paper(title="Whatever", arxiv_id=with_doi.removeprefix("arxiv:"), doi="10.5555/x/y.1")],
                source="journal",
                now=datetime.now(UTC),
            )
    with httpx.Client() as client:
        for key in (title_key, "doi:10.5555/x/y.1"):
            answer = post_form(client, world.feedback_url(key, "less"))
            assert answer.status_code == 200 and "Noted: less like this" in answer.text, key
    assert sorted((s, k) for s, k, _ in world.signals()) == sorted([(titled, DISLIKE), (with_doi, DISLIKE)])


# --- feedback: bad input ------------------------------------------------------------------------------------


def test_a_replayed_choice_changes_nothing_not_even_its_time(world):
    url = world.feedback_url(world.edition_keys()[0], "more")
    with httpx.Client() as client:
        csrf = csrf_of(client.get(url).text)
        first = client.post(url, data={"csrf": csrf})
        assert first.status_code == 200 and "Noted: more like this" in first.text
        before = world.signals()
        again = client.post(url, data={"csrf": csrf})  # the form sent again, as a replay or a reload
        assert again.status_code == 200 and "Already noted: more like this" in again.text
        assert "nothing changed" in again.text
        assert world.signals() == before
        shown = client.get(url)
        assert "You chose “More like this” for this paper already" in shown.text


def test_bad_feedback_links_are_refused_and_change_nothing(world):
    keys = world.edition_keys()
    key = keys[0]
    reader, other = world.reader(0), world.reader(1)
    token = world.feedback_token(0)
    payload, signature = token.rsplit(".", 1)
    with database(world.settings) as db:
        outside = next(
            row[0]
            for row in db.execute(
                "SELECT key FROM papers WHERE id NOT IN (SELECT paper_id FROM edition_papers WHERE edition_id = ?)",
                [world.edition_id],
            )
        )
    other_secret = Tokens("some-other-secret-key-123456")
    cases = {
        "altered signature": (world.feedback_url(key, "more", token=payload + "." + signature[::-1]), 400),
        "cut short": (world.feedback_url(key, "more", token=token[:-3]), 400),
        "another secret": (
            world.feedback_url(
                key, "more", token=other_secret.make("feedback", reader.id, reader.email, edition_id=1)
            ),
            400,
        ),
        "another purpose": (
            world.feedback_url(
                key, "more", token=Tokens(SECRET).make("preferences", reader.id, reader.email)
            ),
            400,
        ),
        "another reader's id": (
            world.feedback_url(
                key,
                "more",
                token=Tokens(SECRET).make("feedback", other.id, reader.email, edition_id=world.edition_id),
            ),
            400,
        ),
        "unknown choice": (world.feedback_url(key, "more").replace("/more/", "/sideways/"), 404),
        "no paper": (world.feedback_url(key, "more").removesuffix(key), 404),
        "a paper of another edition": (world.feedback_url(outside, "more"), 404),
        # Retention keeps the papers of editions and the editions themselves; a database restored from an
        # older backup (or a rule to come) may not have them.
        "a pruned paper": (world.feedback_url("arxiv:2600.99999", "more"), 410),
        "a pruned edition": (
            world.feedback_url(key, "more", token=world.feedback_token(0, edition_id=99)),
            410,
        ),
    }
    with httpx.Client() as client:
        csrf = csrf_of(client.get(world.feedback_url(key, "more")).text)
        for case, (url, status) in cases.items():
            shown = client.get(url)
            sent = client.post(url, data={"csrf": csrf})
            assert (shown.status_code, sent.status_code) == (status, status), case
            assert "<h1>" in sent.text and "Noted" not in sent.text, case
        forged = client.post(world.feedback_url(key, "more"), data={"csrf": "forged"})
        assert forged.status_code == 403 and "Please reload the page" in forged.text
    assert world.signals() == [] and world.signals(1) == []

    # A reader who unsubscribed is told so; one removed from the list has no link that works.
    with database(world.settings) as db:
        set_status(db, reader.id, "unsubscribed")
        forget_subscriber(db, other.id)
    removed_url = world.app.url + world.links.feedback(
        world.links.feedback_token(other.id, other.email, world.edition_id), key, "more"
    )
    with httpx.Client() as client:
        csrf = csrf_of(client.get(f"{world.app.url}/subscribe").text)
        for url, status, words in (
            (world.feedback_url(key, "more"), 403, "receives no digests now"),
            (removed_url, 400, "This link is not valid"),
        ):
            shown, sent = client.get(url), client.post(url, data={"csrf": csrf})
            assert (shown.status_code, sent.status_code) == (status, status) and words in sent.text
    with database(world.settings) as db:
        assert db.execute("SELECT count(*) FROM reader_signals").fetchone()[0] == 0


# --- the edition page ---------------------------------------------------------------------------------------


def test_the_edition_page_has_the_actions_only_with_a_readers_token(world):
    base = f"{world.app.url}/editions/{world.edition_id}"
    token = world.feedback_token(0)
    public = httpx.get(base)
    assert public.status_code == 200 and "More like this" not in public.text
    for wrong in ("nonsense", world.feedback_token(0, edition_id=world.edition_id + 1), token[:-2]):
        page = httpx.get(base, params={"r": wrong})
        assert page.status_code == 200 and "More like this" not in page.text
    mine = httpx.get(base, params={"r": token})
    assert mine.headers["referrer-policy"] == "no-referrer"
    more = re.findall(r'href="(/feedback/[^"]+/more/[^"]+)"', mine.text)
    less = re.findall(r'href="(/feedback/[^"]+/less/[^"]+)"', mine.text)
    assert len(more) == len(less) == len(world.edition_keys())
    assert more[0] == world.links.feedback(token, world.edition_keys()[0], "more")
    with httpx.Client(base_url=world.app.url) as scanner:
        assert all(scanner.get(link).status_code == 200 for link in more + less)
    assert world.signals() == []


def test_paper_links_from_the_edition_page_carry_no_referer(world, request):
    """The page's address holds the reader's token: the Referrer-Policy keeps it from the paper's site."""
    url = f"{world.app.url}/editions/{world.edition_id}?r={world.feedback_token(0)}"
    seen: list[dict[str, str]] = []
    with Browser() as chromium:
        page = chromium.new_page()

        def paper_site(route):  # type: ignore[no-untyped-def]
            seen.append(route.request.headers)
            route.fulfill(status=200, body="<p>the paper</p>", content_type="text/html")

        page.route("https://example.org/**", paper_site)
        page.goto(url)
        page.screenshot(path=str(screenshot_dir(Path(request.config.rootpath)) / "edition-actions.png"))
        page.click("article.paper h3 a >> nth=0")
        page.wait_for_selector("text=the paper")
        page.goto(url)
        page.click("text=More like this >> nth=0")
        page.wait_for_selector("h1:has-text('More like this?')")
        page.click("article.paper h3 a")
        page.wait_for_selector("text=the paper")
    assert len(seen) == 2 and all("referer" not in headers for headers in seen)
    assert world.signals() == []


# --- your papers --------------------------------------------------------------------------------------------


BIBTEX = """@article{stored,
  title = {STORED},
  author = {Somebody, Else},
}

@article{fetched,
  title = {Tactile Grasping Fetched by Id},
  journal = {arXiv preprint arXiv:FETCHED},
}

@article{broken,
  title = {A brace that is never closed,
  doi = {10.1/broken}

@article{journal,
  title = {A Journal Paper Nobody Has Brought Yet},
  doi = {10.1000/journal.42},
}
"""


def test_uploading_a_bibtex_file_keeps_the_good_entries_and_reports_the_broken_one(world, tmp_path, request):
    with database(world.settings) as db:
        paper = load_edition(db, world.edition_id).sections[0].papers[2]
    stored = paper.key  # found by its title
    bib = tmp_path / "mine.bib"
    bib.write_text(BIBTEX.replace("STORED", paper.title).replace("FETCHED", FETCHED))
    shots = screenshot_dir(Path(request.config.rootpath))
    with Browser() as chromium:
        page = chromium.new_page(viewport=PHONE)
        page.goto(world.papers_url())
        page.set_input_files("input[name=file]", str(bib))
        page.click("button:has-text('Add')")
        page.wait_for_selector("text=Not added:")
        page.screenshot(path=str(shots / "your-papers-added-phone.png"), full_page=True)
        report = page.inner_text("main")
        assert "Added 2 papers (1 fetched from arXiv); 1 waiting." in report
        assert "mine.bib" in report and "broken" in report
        library = page.inner_text("section#library")
        assert "Tactile Grasping Fetched by Id" in library
        waiting = page.inner_text("section#pending")
        assert "A Journal Paper Nobody Has Brought Yet" in waiting and "not stored yet" in waiting

        page.fill("textarea[name=items]", f"https://arxiv.org/abs/{UNKNOWN_TO_ARXIV}v3\nnot an id\n")
        page.click("button:has-text('Add')")
        page.wait_for_selector("text=Not added:")
        problems = page.inner_text("ul.problems")
        assert f"arXiv has no paper {UNKNOWN_TO_ARXIV}" in problems and "line 2" in problems

        page.click("section#pending button:has-text('Remove')")
        page.wait_for_selector("text=Removed.")
    assert world.arxiv.asked == [[FETCHED], [UNKNOWN_TO_ARXIV]]
    assert sorted((s, k) for s, k, _ in world.signals()) == sorted(
        [(stored, LIBRARY), (f"arxiv:{FETCHED}", LIBRARY)]
    )
    with database(world.settings) as db:
        assert pending_items(db, world.reader(0).id) == []
    assert world.signals(1) == []


def test_a_reader_never_sees_or_changes_another_readers_papers(world):
    keys = world.edition_keys()
    ada, bo = world.reader(0), world.reader(1)
    with database(world.settings) as db:
        ids = paper_ids_by_key(db, keys[:2])
        with write_transaction(db):
            keep_papers(db, bo.id, [ids[keys[0]]], LIKE)
            keep_papers(db, bo.id, [ids[keys[1]]], LIBRARY)
        bo_titles = [s.title for s in reader_signals(db, bo.id)]
    before = world.signals(1)
    with httpx.Client() as client:
        preferences = client.get(world.papers_url(0).removesuffix("/papers"))
        assert f'href="{world.papers_url(0).removeprefix(world.app.url)}"' in preferences.text
        page = client.get(world.papers_url(0))
        assert page.status_code == 200 and not any(title in page.text for title in bo_titles)
        assert "re•••••@example.org" in page.text
        refused = client.post(
            world.papers_url(0) + "/remove", data={"csrf": csrf_of(page.text), "key": keys[0]}
        )
        assert refused.status_code == 404 and "not among your papers" in refused.text
        # Tokens that are not Ada's preferences token for Ada open nothing.
        for forged in (
            Tokens(SECRET).make("feedback", ada.id, ada.email, edition_id=world.edition_id),
            Tokens(SECRET).make("preferences", bo.id, ada.email),
            Tokens("some-other-secret-key-123456").make("preferences", bo.id, bo.email),
        ):
            url = f"{world.app.url}/preferences/{forged}/papers"
            assert client.get(url).status_code == 400
            assert (
                client.post(url + "/remove", data={"csrf": csrf_of(page.text), "key": keys[0]}).status_code
                == 400
            )
            added = client.post(url + "/add", data={"csrf": csrf_of(page.text), "items": keys[2]})
            assert added.status_code == 400
        own = client.get(world.papers_url(1))
        assert all(title in own.text for title in bo_titles)
    assert world.signals(1) == before and world.signals(0) == []


def test_oversize_uploads_and_long_lists_get_a_clear_message_and_change_nothing(world):
    url = world.papers_url()
    with httpx.Client(timeout=60) as client:
        csrf = csrf_of(client.get(url).text)
        # Past the request's cap: refused before it is read.
        huge = client.post(
            url + "/add",
            data={"csrf": csrf},
            files={"file": ("big.bib", b"%" * (50 * 1_000_000), "text/plain")},
        )
        assert huge.status_code == 413
        assert "a library file may have at most 10 MB" in huge.text
        # Under the request's cap but over a library file's: refused unread, in the page.
        over = MAX_FILE_BYTES + 1_000_000
        assert over < ADD_BYTES
        big = client.post(
            url + "/add",
            data={"csrf": csrf},
            files={"file": ("big.txt", b"2401.00001\n" * (over // 11), "text/plain")},
        )
        assert big.status_code == 400
        assert "big.txt: 11.0 MB is more than a library file may have (10 MB): split it" in big.text
        # 100,000 ids: the first MAX_ITEMS are read, the rest said.
        lines = "\n".join(f"2403.{n:05d}" for n in range(1, 100_001))
        long = client.post(url + "/add", data={"csrf": csrf, "items": lines})
        assert long.status_code == 400
        assert f"line {MAX_ITEMS + 1}: an add takes at most {MAX_ITEMS:,} items" in long.text
        assert sum(len(asked) for asked in world.arxiv.asked) == MAX_ITEMS  # only what was read was asked for
        empty = client.post(url + "/add", data={"csrf": csrf, "items": "  \n"})
        assert empty.status_code == 400 and "Type arXiv ids, URLs or DOIs, or choose a file." in empty.text
    assert world.signals() == []
    with database(world.settings) as db:
        assert pending_items(db, world.reader(0).id) == []


# --- tokens stay out of the log -----------------------------------------------------------------------------


def test_feedback_and_library_tokens_never_reach_the_log(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port)
    edition_id = edition_with_sample_papers(settings)
    [address] = subscribe(settings, 1)
    send_edition(settings, edition_id)
    with database(settings) as db:
        reader = find_subscriber(db, address)
        key = load_edition(db, edition_id).sections[0].papers[0].key
    links = Links("", Tokens(SECRET))
    token = links.feedback_token(reader.id, reader.email, edition_id)
    preferences = links.preferences(reader.id, reader.email)
    server = ServeProcess(tmp_path, f'secret_key = "{SECRET}"', verbose=True)
    try:
        with httpx.Client(base_url=server.url) as client:
            assert post_form(client, links.feedback(token, key, "more")).status_code == 200
            assert client.get(f"/editions/{edition_id}", params={"r": token}).status_code == 200
            assert client.get(f"{preferences}/papers").status_code == 200
    finally:
        server.stop()
    log = server.log()
    assert "POST /feedback/[token]/more/" in log and f"/editions/{edition_id}?r=[token]" in log
    assert "/preferences/[token]/papers" in log
    assert token not in log and preferences.rsplit("/", 1)[1] not in log
