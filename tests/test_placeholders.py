"""Per-reader values go only where the template put a slot: feed text that spells any placeholder, marker,
template syntax, header or SMTP line arrives as the text it is, in every reader's message, in the preview
and on the web page.

The feed (tests/fixtures/hostile_placeholders.xml) is served by the real local HTTP server, ingested,
built into an edition and sent through aiosmtpd to readers with different names; then the bytes of every
reader's message are read back from the server's Maildir.
"""

from __future__ import annotations

import email
import email.policy
import html
import shutil
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from newsletter.compose import build_edition
from newsletter.db import open_database
from newsletter.editions import Edition, load_edition
from newsletter.errors import RenderError
from newsletter.fetch import Fetcher
from newsletter.ingest import run_ingest
from newsletter.message import MessageTemplate, Recipient
from newsletter.outbox import create_one_off, send_edition
from newsletter.render import Renderer, RenderSettings
from newsletter.settings import DigestSettings, Sender, SourceConfig
from newsletter.subscribers import add_subscriber
from newsletter.tokens import Tokens
from newsletter.web import create_app
from tests.support.feedserver import file_reply
from tests.support.webserver import RunningApp
from tests.test_cli import run
from tests.test_deliver import MONDAY, make_settings

READERS = [
    ("alice@example.org", "Alice Anders"),
    ("bob@example.org", "Bob Brown"),
    ("zoe@example.org", "Zoë Ößtürk"),
    # A reader's own name is data too: an encoded word, an old placeholder and template syntax.
    ("mallory@example.org", "=?utf-8?b?QWRtaW4=?= XNLXUNSUBSCRIBEXNLX {{ greeting }}"),
]

# Text that reached the database some other way than a feed (ingest would have cleaned it): raw
# markup, CR/LF with a header after it, the SMTP end-of-data line, an mbox "From " line.
RAW_TITLE = "Raw\r\nBcc: victim@attacker.example\r\n.\r\nFrom attacker XNLXUNSUBSCRIBEXNLX"
RAW_ABSTRACT = (
    '</mj-text><mj-raw><a href="XNLXUNSUBSCRIBEXNLX">XNLXPREFERENCESXNLX</a></mj-raw>'
    "<p>{{ greeting }}</p>\r\n.\r\nSubject: XNLXGREETINGXNLX"
)
RAW_AUTHORS = '["Eve\\r\\nBcc: victim@attacker.example", "=?utf-8?b?QWRtaW4=?="]'
RAW_URL = "https://attacker.example/raw?u=XNLXUNSUBSCRIBEXNLX\r\nBcc: victim@attacker.example"

HEADERS = [
    "Delivered-To",  # written by the test server's Maildir delivery
    "Return-Path",
    "To",
    "Date",
    "Message-ID",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "From",
    "Subject",
    "List-Id",
    "MIME-Version",
    "Content-Type",
]


@dataclass(frozen=True)
class Reader:
    email: str
    name: str
    preferences_url: str
    unsubscribe_url: str

    @property
    def private(self) -> list[str]:
        """What must never reach anyone else, nor any link but this reader's own slots."""
        tokens = [url.rsplit("/", 1)[1] for url in (self.preferences_url, self.unsubscribe_url)]
        return [*tokens, self.name, self.email]


def squash(text: str) -> str:
    return "".join(text.split())


class _Page(HTMLParser):
    """The links (href, text) and the text of an HTML page, entities decoded."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self.text: list[str] = []
        self._open: list[str] | None = None
        self.feed(source)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open = [dict(attrs).get("href") or "", ""]
            self.links.append(("", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.links[-1] = (self._open[0], self._open[1].strip())
            self._open = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._open is not None:
            self._open[1] += data
            self.links[-1] = (self._open[0], self._open[1].strip())


@pytest.fixture
def hostile(tmp_path, smtp_server, feed_server, fixtures):
    """The hostile feed ingested over HTTP, one paper's text replaced raw, the edition built."""
    settings = make_settings(tmp_path, smtp_server.port)
    db = open_database(settings.database)
    try:
        url = feed_server.route("/placeholders", file_reply(fixtures / "hostile_placeholders.xml"))
        with Fetcher() as fetcher:
            [report] = run_ingest(
                db, [SourceConfig(name="hostile", kind="feed", url=url)], fetcher, now=MONDAY
            )
        assert report.error is None and report.new == 5
        db.execute(
            "UPDATE papers SET title = ?, abstract = ?, authors = ?, url = ? WHERE url LIKE '%/headers?%'",
            [RAW_TITLE, RAW_ABSTRACT, RAW_AUTHORS, RAW_URL],
        )
        edition = build_edition(db, DigestSettings(), now=MONDAY + timedelta(hours=1))
        tokens = Tokens(settings.web.secret_key)
        readers = []
        for address, name in READERS:
            subscriber = add_subscriber(db, address, name).subscriber
            readers.append(
                Reader(
                    address,
                    name,
                    f"https://news.example.org/preferences/{tokens.make('preferences', subscriber.id, address)}",
                    f"https://news.example.org/unsubscribe/{tokens.make('unsubscribe', subscriber.id, address)}",
                )
            )
        edition = load_edition(db, edition.id)
    finally:
        db.close()
    assert sum(len(section.papers) for section in edition.sections) == 5
    return settings, edition, readers


def received(smtp_server, address: str) -> tuple[bytes, EmailMessage]:
    """The one message ``address`` got: the bytes as the server stored them, and parsed."""
    prefix = f"Delivered-To: {address}\r\n".encode()
    stored = [path.read_bytes() for path in (smtp_server.maildir / "new").iterdir()]
    [raw] = [data for data in stored if data.startswith(prefix)]
    return raw, email.message_from_bytes(raw, policy=email.policy.default)


def shown_texts(edition: Edition, *, keywords: bool = True) -> list[str]:
    """Every feed-provided string a page shows, as stored (the text part leaves out section keywords)."""
    texts = []
    for section in edition.sections:
        texts += [section.label, *(section.keywords[:5] if keywords else [])]
        for paper in section.papers:
            texts += [paper.title, paper.summary, paper.url or "", *paper.authors]
    return [text for text in texts if text]


def check_html(page_html: str, reader: Reader, everyone: list[Reader], edition: Edition | None) -> None:
    page = _Page(page_html)
    text = html.unescape(page_html)
    # The reader's values are exactly in the footer's two links and the greeting, nowhere else.
    personal = [
        link for link in page.links if any(secret in link[0] for r in everyone for secret in r.private)
    ]
    assert personal == [(reader.preferences_url, "Preferences"), (reader.unsubscribe_url, "Unsubscribe")]
    for token in reader.private[:2]:
        assert page_html.count(token) == 1
    assert text.count(f"Hello {reader.name},") == 1
    assert text.count(reader.name) == 1
    for other in everyone:
        if other is not reader:
            assert not any(secret in text for secret in other.private)
    near = [f"{href} {label}" for href, label in page.links] + page.text
    for chunk in near:
        if "attacker.example" in chunk:
            assert not any(secret in chunk for r in everyone for secret in r.private), chunk
    if edition is not None:
        assert_shown_as_text(page, edition)


def assert_shown_as_text(page: _Page, edition: Edition) -> None:
    """Every hostile string is shown as the text (or the link) it is."""
    shown = squash("".join(page.text))
    for value in shown_texts(edition):
        if value.startswith("https://"):
            assert any(squash(href) == squash(value) for href, _ in page.links), value
        else:
            assert squash(value) in shown, value


def check_text(text: str, reader: Reader, everyone: list[Reader], edition: Edition) -> None:
    lines = text.splitlines()
    assert lines[lines.index("Preferences:") + 1] == reader.preferences_url
    assert lines[lines.index("Unsubscribe:") + 1] == reader.unsubscribe_url
    for token in reader.private[:2]:
        assert text.count(token) == 1
    assert text.count(f"Hello {reader.name},") == 1 and text.count(reader.name) == 1
    for other in everyone:
        if other is not reader:
            assert not any(secret in text for secret in other.private)
    for number, line in enumerate(lines):
        if "attacker.example" in line:
            near = "\n".join(lines[max(0, number - 1) : number + 2])
            assert not any(secret in near for r in everyone for secret in r.private), near
    shown = squash(text)
    for value in shown_texts(edition, keywords=False):
        assert squash(value) in shown, value


def check_wire_shape(raw: bytes, message: EmailMessage, reader: Reader, everyone: list[Reader]) -> None:
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert list(message.keys()) == HEADERS  # no header planted by any text
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    assert "Bcc" not in head and "attacker" not in head
    assert message["To"].addresses[0].display_name == reader.name
    assert message["To"].addresses[0].addr_spec == reader.email
    assert message["List-Unsubscribe"] == (
        f"<{reader.unsubscribe_url}>, <mailto:unsubscribe@example.org?subject=unsubscribe>"
    )
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert [list(part.keys()) for part in parts] == [
        ["Content-Type", "Content-Transfer-Encoding"],
        ["Content-Type", "Content-Transfer-Encoding", "MIME-Version"],  # as the email package writes it
    ]
    for other in everyone:
        if other is not reader:
            assert not any(secret.encode() in raw for secret in [*other.private[:2], other.email])


# --- the tests ----------------------------------------------------------------------------------------------


def test_every_readers_message_gets_their_values_only_at_the_template_slots(hostile, smtp_server):
    settings, edition, readers = hostile
    report = send_edition(settings, edition.id)
    assert report.complete and report.counts == {"sent": len(readers)}
    for reader in readers:
        raw, message = received(smtp_server, reader.email)
        check_wire_shape(raw, message, reader, readers)
        check_html(message.get_body(("html",)).get_content(), reader, readers, edition)
        check_text(message.get_body(("plain",)).get_content(), reader, readers, edition)


def test_preview_fills_only_the_template_slots(hostile, tmp_path):
    _settings, edition, readers = hostile
    for reader in (readers[0], readers[3]):
        out = tmp_path / f"preview-{reader.email}.html"
        result = run(
            "--config",
            str(tmp_path / "newsletter.toml"),
            "digest",
            "preview",
            str(edition.id),
            "--as",
            reader.email,
            "--out",
            str(out),
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        check_html(out.read_text(encoding="utf-8"), reader, readers, edition)


def test_web_edition_page_shows_the_hostile_text_as_text(hostile, smtp_server):
    settings, edition, readers = hostile
    send_edition(settings, edition.id)
    app = RunningApp(create_app(settings))
    try:
        response = httpx.get(f"{app.url}/editions/{edition.id}")
    finally:
        app.stop()
    assert response.status_code == 200
    assert_shown_as_text(_Page(response.text), edition)
    assert not any(secret in response.text for reader in readers for secret in reader.private[:2])


def test_a_one_off_body_that_spells_slots_is_sent_as_text(hostile, smtp_server):
    settings, _edition, readers = hostile
    body = (
        "Spelled by the author: XNLXGREETINGXNLX, XNLXPREFERENCESXNLX and XNLXUNSUBSCRIBEXNLX,\n"
        "{{ unsubscribe_url }} and XNLXSLOT0123456789abcdef0123456789abcdefUNSUBSCRIBEHTML.\n\n"
        "[Collect](https://attacker.example/one-off?p=XNLXPREFERENCESXNLX&u=XNLXUNSUBSCRIBEXNLX)\n\n"
        ".\n\nFrom here on, text.\n"
    )
    edition_id = create_one_off(settings, "A message", body)
    report = send_edition(settings, edition_id)
    assert report.complete and report.counts == {"sent": len(readers)}
    for reader in readers:
        raw, message = received(smtp_server, reader.email)
        check_wire_shape(raw, message, reader, readers)
        page_html = message.get_body(("html",)).get_content()
        check_html(page_html, reader, readers, None)
        links = _Page(page_html).links
        attacker = "https://attacker.example/one-off?p=XNLXPREFERENCESXNLX&u=XNLXUNSUBSCRIBEXNLX"
        assert (attacker, "Collect") in links
        text = message.get_body(("plain",)).get_content()
        assert text.count(reader.unsubscribe_url) == 1 and text.count(reader.preferences_url) == 1
        for line in body.splitlines():
            assert line in text
        assert not any(secret in text for other in readers if other is not reader for secret in other.private)


def test_a_word_longer_than_an_smtp_line_reaches_every_reader(hostile, smtp_server):
    settings, _edition, readers = hostile
    word = "XNLXUNSUBSCRIBEXNLX" + "0123456789" * 150  # no space to cut at: 1,519 characters
    edition_id = create_one_off(settings, "Long", f"Before {word} after.")
    report = send_edition(settings, edition_id)
    assert report.complete and report.counts == {"sent": len(readers)}  # not "500 Line too long"
    for reader in readers:
        raw, message = received(smtp_server, reader.email)
        check_wire_shape(raw, message, reader, readers)
        html_part = message.get_body(("html",))
        assert html_part["Content-Transfer-Encoding"] == "quoted-printable"
        page_html = html_part.get_content()
        check_html(page_html, reader, readers, None)
        assert squash(f"Before {word} after.") in squash(page_html) and word in page_html
        assert f"Before {word} after." in message.get_body(("plain",)).get_content()


SETTINGS = RenderSettings(newsletter_name="Research Digest", base_url="https://news.example.org")
SENDER = Sender(from_address="Research Digest <digest@example.org>", list_id="<digest.example.org>")


def _templates_with(tmp_path: Path, name: str, old: str, new: str) -> Path:
    directory = tmp_path / "templates"
    shutil.copytree(Path(__file__).resolve().parent.parent / "templates", directory)
    template = directory / "email" / name
    source = template.read_text()
    assert old in source
    template.write_text(source.replace(old, new))
    return directory


def test_a_slot_the_rendering_loses_or_mangles_is_refused(tmp_path):
    # The footer's unsubscribe link left out of the text part: no email without it.
    missing = _templates_with(tmp_path / "a", "one_off.txt.j2", "{{ unsubscribe_url }}", "")
    with pytest.raises(RenderError, match="unsubscribe"):
        Renderer(SETTINGS, missing).one_off("Hi", "Body")

    # A slot placed mid-line after 80 characters: quoted-printable breaks it, so it cannot be filled.
    broken = _templates_with(
        tmp_path / "b", "one_off.txt.j2", "{{ unsubscribe_url }}", "x" * 60 + " {{ unsubscribe_url }}"
    )
    rendered = Renderer(SETTINGS, broken).one_off("Hi", "Body")
    with pytest.raises(RenderError, match="unsubscribe"):
        MessageTemplate(rendered, SENDER)

    # The intact templates give a message whose values sit where the slots were.
    rendered = Renderer(SETTINGS).one_off("Hi", "Body XNLXUNSUBSCRIBEXNLX")
    recipient = Recipient("a@example.org", "A", "https://x.example/p/1", "https://x.example/u/1", "<1@x>")
    message = email.message_from_bytes(MessageTemplate(rendered, SENDER).render(recipient))
    text = message.get_payload()[0].get_payload(decode=True).decode()
    assert "Body XNLXUNSUBSCRIBEXNLX" in text and text.count("https://x.example/u/1") == 1
