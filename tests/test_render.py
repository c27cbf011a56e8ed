"""Rendering on its own: the confirmation and one-off templates, placeholders, the size budget."""

from __future__ import annotations

import email
import email.policy

import pytest

from newsletter.errors import MessageError
from newsletter.message import MessageTemplate, Recipient, address_header
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
