"""Rendering on its own: the confirmation and one-off templates, placeholders, the size budget."""

from __future__ import annotations

import email
import email.policy

import pytest

from newsletter.errors import MessageError
from newsletter.message import DigestTemplate, MessageTemplate, Recipient, address_header
from newsletter.render import Renderer, RenderSettings, ascii_html, new_markers
from newsletter.settings import Sender

SETTINGS = RenderSettings(newsletter_name="Research Digest", base_url="https://news.example.org")
SENDER = Sender(from_address="Research Digest <digest@example.org>", list_id="<digest.example.org>")


def test_confirmation_email_is_complete_and_personal():
    rendered = Renderer(SETTINGS).confirmation(
        name="Zoë", confirm_url="https://news.example.org/confirm/abc.def", expires_in="7 days"
    )
    assert rendered.subject == "Confirm your subscription to Research Digest"
    for part in (rendered.html, rendered.text):
        assert "https://news.example.org/confirm/abc.def" in part
        assert "7 days" in part
        assert "XNLXSLOT" not in part
    assert rendered.slots == ()  # the same for everyone: nothing to personalise
    assert "Hello Zo&#235;," in rendered.html and "Hello Zoë," in rendered.text
    assert "Unsubscribe" not in rendered.html  # nothing to unsubscribe from before confirming


def test_one_off_template_round_trips_through_a_message():
    rendered = Renderer(SETTINGS).one_off("Schedule change", "We move to *Tuesdays*.\n\n1. one\n2. two")
    template = MessageTemplate(rendered, SENDER)
    recipient = Recipient(
        email="a@example.org",
        name="",
        preferences_url="https://news.example.org/preferences/t",
        unsubscribe_url="https://news.example.org/unsubscribe/t",
        message_id="<1@example.org>",
    )
    message = email.message_from_bytes(template.render(recipient), policy=email.policy.default)
    assert message["Subject"] == "Schedule change"
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert "<em>Tuesdays</em>" in html and "Hello," in html and "Hello," in text
    assert (
        "https://news.example.org/unsubscribe/t" in html and "https://news.example.org/unsubscribe/t" in text
    )


def test_wire_form_doubles_leading_dots_and_ends_without_the_final_dot():
    rendered = Renderer(SETTINGS).one_off("Dots", ".hidden line\n\n..two dots\n")
    template = MessageTemplate(rendered, SENDER)
    recipient = Recipient(
        "a@example.org", "", "https://x.example/p", "https://x.example/u", "<2@example.org>"
    )
    plain, wire = template.render(recipient), template.wire(recipient)
    assert b"\r\n..hidden line" in wire and b"\r\n.hidden line" in plain.replace(b"\r\n..", b"")
    assert wire.endswith(b"\r\n") and not wire.endswith(b"\r\n.\r\n")


@pytest.mark.parametrize("name", ["Eve\r\nBcc: x@example.org", "Eve\nX: y", "Eve\x00"])
def test_header_values_with_line_breaks_are_refused(name):
    with pytest.raises(MessageError):
        address_header(name, "eve@example.org")


def test_ascii_html_keeps_lines_short_and_slots_alone():
    markers = new_markers("html")
    unsubscribe, greeting = markers["unsubscribe_url"], markers["greeting"]
    html = f"<p>{greeting}</p><p>" + "word " * 400 + f'é</p><a href="{unsubscribe}">u</a>'
    out = ascii_html(html, markers.values())
    assert out.isascii() and "&#233;" in out
    assert max(len(line) for line in out.split("\n")) <= 500
    assert f'href="{unsubscribe}"' in out.split("\n") and greeting in out.split("\n")


# --- cards, dates and the empty edition -------------------------------------------------------------------


def card_edition(papers, frequency: str = "weekly"):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from newsletter.editions import Edition, Section

    start, end = datetime(2026, 11, 24, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    sections = [Section("Language models", ["language"], papers)] if papers else []
    return Edition(1, "digest", "built", end, start, end, sections, "tfidf", frequency=frequency)


def arxiv_paper():  # type: ignore[no-untyped-def]
    from newsletter.editions import EditionPaper

    return EditionPaper(
        1,
        "arxiv:2412.01234",
        "Sparse attention for long contexts",
        1.0,
        "We propose sparse attention.",
        ["A. One", "B. Two", "C. Three", "D. Four"],
        "https://huggingface.co/papers/2412.01234",
        upvotes=12,
        primary_category="cs.CL",
        github_repo="https://github.com/example/sparse",
        categories=["cs.LG", "cs.CL", "cs.AI", "stat.ML"],
        arxiv_id="2412.01234",
        pdf_url="https://arxiv.org/pdf/2412.01234v2",
        dated="2026-11-27T01:00:00.000000+00:00",
    )


def test_a_card_shows_the_arxiv_id_pdf_date_and_categories_primary_first():
    cards = Renderer(SETTINGS).digest_cards(card_edition([arxiv_paper()]))
    html, text = "".join(cards.cards[0].html), "".join(cards.cards[0].text)
    assert '<a href="https://arxiv.org/abs/2412.01234">arXiv:2412.01234</a>' in html
    assert '<a href="https://arxiv.org/pdf/2412.01234v2">PDF</a>' in html
    assert '<a href="https://github.com/example/sparse">code</a>' in html
    assert "27 Nov 2026 &#183; cs.CL, cs.LG, cs.AI +1 &#183; &#9650; 12" in html
    assert "A. One, B. Two, C. Three et al." in html
    assert "arXiv:2412.01234 · 27 Nov 2026 · cs.CL, cs.LG, cs.AI +1 · ▲ 12" in text
    assert "PDF: https://arxiv.org/pdf/2412.01234v2" in text
    assert "https://huggingface.co/papers/2412.01234" in text  # the title's own link stays


def test_a_paper_without_an_arxiv_id_shows_what_it_has():
    from dataclasses import replace

    journal = replace(
        arxiv_paper(),
        key="doi:10.1000/xyz.1",
        url="https://journal.example/articles/1",
        arxiv_id=None,
        pdf_url=None,
        doi="10.1000/xyz.1",
        venue="Journal of Examples",
        categories=[],
        primary_category=None,
        github_repo=None,
        upvotes=None,
    )
    html = "".join(Renderer(SETTINGS).digest_cards(card_edition([journal])).cards[0].html)
    assert "arXiv" not in html and ">PDF<" not in html
    assert '<a href="https://doi.org/10.1000/xyz.1">doi:10.1000/xyz.1</a>' in html
    assert "Journal of Examples &#183; 27 Nov 2026</div>" in html
    bare = replace(journal, doi=None, venue=None, dated=None, authors=[])
    html = "".join(Renderer(SETTINGS).digest_cards(card_edition([bare])).cards[0].html)
    assert 'class="nl-meta"' not in html  # no empty lines for what a paper does not have


@pytest.mark.parametrize(
    ("topics", "frequency", "sentence", "subject"),
    [
        ((), "weekly", "No new papers this week.", "no new papers"),
        ((), "daily", "No new papers today.", "no new papers"),
        (("cs.CL",), "weekly", "Nothing new in cs.CL this week.", "nothing new in cs.CL"),
        (("cs.CL", "diffusion"), "daily", "Nothing new in cs.CL or diffusion today.", "nothing new in cs.CL or diffusion"),
        (("cs.CL", "cs.LG", "diffusion"), "weekly", "Nothing new in cs.CL, cs.LG or diffusion this week.", "nothing new in cs.CL, cs.LG or diffusion"),
        (("cs.CL", "cs.LG", "cs.CV", "diffusion"), "weekly", "Nothing new in your 4 topics this week.", "nothing new in your 4 topics"),
    ],
)  # fmt: skip
def test_an_empty_digest_says_one_sentence_that_fits_the_reader(topics, frequency, sentence, subject):
    from newsletter.render import empty_notice

    assert empty_notice(topics, frequency) == sentence
    kit = Renderer(SETTINGS).digest(card_edition([], frequency), topics=topics)
    assert kit.email.subject == f"Research Digest: {subject}, 24 Nov – 1 Dec 2026"
    assert kit.email.text.count(sentence) == 1
    assert kit.email.html.count(sentence) == 2  # the preview line and the body, nothing else
    assert "in this edition" not in kit.email.text + kit.email.html
    assert "0 papers" not in kit.email.text + kit.email.html


def test_a_digest_names_its_window_in_the_one_date_style():
    kit = Renderer(SETTINGS).digest(card_edition([arxiv_paper()]))
    assert kit.email.subject == "Research Digest: 1 new paper, 24 Nov – 1 Dec 2026"
    assert "24 Nov &#8211; 1 Dec 2026 &#183; 1 paper" in kit.email.html


def test_every_email_says_its_language_and_the_text_signs_off_with_dash_dash_space():
    kit = Renderer(SETTINGS).digest(card_edition([arxiv_paper()]))
    one_off = Renderer(SETTINGS).one_off("Note", "Hello.")
    confirmation = Renderer(SETTINGS).confirmation(
        name="", confirm_url="https://x.example/c", expires_in="7 days"
    )
    for rendered in (kit.email, one_off, confirmation):
        assert rendered.html.startswith('<!doctype html><html lang="en"')
    for rendered in (kit.email, one_off):
        assert "\n-- \n" in rendered.text
    recipient = Recipient(
        "a@example.org", "", "https://x.example/p", "https://x.example/u", "<3@example.org>"
    )
    digest = DigestTemplate(kit, SENDER, "https://news.example.org/feedback/")
    for wire in (MessageTemplate(one_off, SENDER).render(recipient), digest.render(recipient)):
        # Quoted-printable keeps the trailing space of the separator, encoded so that no relay strips it.
        assert b"\r\n--=20\r\n" in wire
        message = email.message_from_bytes(wire, policy=email.policy.default)
        assert "-- " in message.get_body(("plain",)).get_content().splitlines()
