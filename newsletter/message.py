"""Turn a rendered email into wire-ready bytes for each recipient, fast.

The MIME structure is built once per edition with the ``email`` package: a multipart/alternative with a
quoted-printable text part and a 7bit HTML part (ASCII, short lines: see ``render.ascii_html``), which
is quoted-printable instead when a word or link from a feed is longer than an SMTP line. The serialised
bytes are then split at the rendering's slot markers (random, so no text can spell one, and counted:
each must appear exactly as often as the template placed it), so a recipient's message is one ``join``
of the static pieces with their own values: greeting, preferences and unsubscribe links, and headers
(To, Message-ID, Date, List-Unsubscribe). Building a 100 KB message with ``EmailMessage`` takes ~6 ms;
this takes a few microseconds plus the copy.

Every value is encoded for where it goes: header values are checked and RFC 2047-encoded, HTML values
escaped (non-ASCII as character references; quoted-printable too in a quoted-printable HTML part), text
values quoted-printable. CRLF line endings throughout.

A template given a DKIM ``Signer`` puts a DKIM-Signature first in every message (``dkim_sign``): the
fields the same for all readers are canonicalised once, each message adds its reader's fields, the hash
of its assembled body and the signature.
"""

from __future__ import annotations

import binascii
import email.policy
import html
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import quoprimime
from email.charset import Charset
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

from newsletter.dkim_sign import Signer, TemplateSignature
from newsletter.errors import MessageError
from newsletter.render import (
    CARDS_BLOCK,
    FOR_YOU_BLOCK,
    DigestCards,
    DigestKit,
    RenderedEmail,
    Slot,
    check_slots,
    greeting,
)
from newsletter.settings import Sender
from newsletter.tokens import feedback_path

_HEADER_SAFE = re.compile(r"^[^\r\n\x00]*$")
MAX_LINE = 998  # octets per line, RFC 5321


@dataclass(frozen=True, slots=True)
class Recipient:
    email: str
    name: str
    preferences_url: str
    unsubscribe_url: str
    message_id: str  # "<...@domain>"
    feedback_token: str = ""  # a digest's feedback links (one token per reader and edition)


def new_message_id(domain: str, *parts: object) -> str:
    stem = ".".join(str(part) for part in parts)
    return f"<{stem}.{secrets.token_hex(6)}@{domain}>"


def header_value(value: str) -> str:
    if not _HEADER_SAFE.match(value):
        raise MessageError("header values cannot contain line breaks")
    return value


def address_header(name: str, address: str) -> str:
    """``Name <address>`` with the name quoted or RFC 2047-encoded as needed; never a second header."""
    header_value(name)
    header_value(address)
    if "=?" in name:
        # Mail programs decode what looks like an RFC 2047 word in a display name: encoded as a whole, the
        # name reads back as the text it is.
        return f"{Charset('utf-8').header_encode(name)} <{address}>"
    return formataddr((name, address), charset="utf-8")


class MessageTemplate:
    """The bytes of one rendered email, ready to be personalised for any number of recipients."""

    def __init__(
        self,
        rendered: RenderedEmail,
        sender: Sender,
        *,
        html_qp: bool = False,
        dkim: Signer | None = None,
    ) -> None:
        """An email with slots is personal: each reader's greeting and links fill them, and it carries the
        list headers; a confirmation email has neither. ``html_qp``: the HTML part travels
        quoted-printable even if its own lines would not need it. ``dkim``: every message is signed."""
        self.sender = sender
        self.envelope_from = sender.envelope_from
        self.subject = rendered.subject
        body = EmailMessage(policy=email.policy.SMTP)
        body["From"] = header_value(sender.from_address)
        body["Subject"] = header_value(rendered.subject)
        body["List-Id"] = header_value(sender.list_id)
        if sender.reply_to:
            body["Reply-To"] = header_value(sender.reply_to)
        body.set_content(rendered.text, cte="quoted-printable")
        # SMTP carries lines of at most 998 octets: HTML that ascii_html could not cut that short (a word
        # or link from a feed longer than a line) travels quoted-printable instead of 7bit.
        self._html_qp = html_qp or any(len(line) > MAX_LINE for line in rendered.html.splitlines())
        body.add_alternative(
            rendered.html, subtype="html", cte="quoted-printable" if self._html_qp else "7bit"
        )
        serialized = body.as_bytes()
        if not serialized.endswith(b"\r\n"):
            serialized += b"\r\n"
        self.personal = bool(rendered.slots)
        check_slots(serialized, rendered.slots, "the message")
        self._segments, self._slots = _split(serialized, rendered.slots)
        # SMTP DATA doubles a dot that starts a line; no value starts with a dot (a greeting starts with
        # "Hello", a link with "https", quoted-printable writes a dot after a soft break as "=2E"), so the
        # static pieces can be escaped once here rather than the whole message for every recipient.
        self._wire_segments = [segment.replace(b"\r\n.", b"\r\n..") for segment in self._segments]
        self.size = len(serialized)
        # The fields before the first blank line are the same for every reader (no slot is in them).
        self._body_offset = self._segments[0].index(b"\r\n\r\n") + 4
        self._dkim: TemplateSignature | None = None
        if dkim is not None:
            reader_fields = ["to", "date", "message-id"]
            if self.personal:
                reader_fields += ["list-unsubscribe", "list-unsubscribe-post"]
            self._dkim = dkim.prepare(self._segments[0][: self._body_offset - 2], reader_fields)

    def render(self, recipient: Recipient, *, now: datetime | None = None) -> bytes:
        """The complete message for ``recipient`` (RFC 5322, CRLF line endings)."""
        return self._assemble(self._segments, recipient, now)

    def wire(self, recipient: Recipient, *, now: datetime | None = None) -> bytes:
        """The message as SMTP DATA carries it: dot-stuffed, ending in CRLF, without the final ".\r\n"."""
        return self._assemble(self._wire_segments, recipient, now)

    def _assemble(self, segments: list[bytes], recipient: Recipient, now: datetime | None) -> bytes:
        values = _values(recipient, html_qp=self._html_qp)
        now = now or datetime.now(UTC)
        lines = self._header_lines(recipient, now)
        pieces = [_header_block(lines)]
        for segment, slot in zip(segments, self._slots, strict=False):
            pieces.append(segment)
            pieces.append(values[slot])
        pieces.append(segments[-1])
        return self._signed(b"".join(pieces), lines, len(pieces[0]), now, segments is self._wire_segments)

    def _signed(self, message: bytes, lines: list[str], own: int, now: datetime, wire: bool) -> bytes:
        """``message`` with its DKIM-Signature first, when the template signs (``own``: the length of the
        reader's own header fields, which come first)."""
        if self._dkim is None:
            return message
        field = self._dkim.field(lines, message, own + self._body_offset, now, stuffed=wire)
        return field + message

    def _header_lines(self, recipient: Recipient, now: datetime) -> list[str]:
        lines = [
            f"To: {address_header(recipient.name, recipient.email)}",
            f"Date: {format_datetime(now)}",
            f"Message-ID: {header_value(recipient.message_id)}",
        ]
        if self.personal:
            unsubscribe = f"<{header_value(recipient.unsubscribe_url)}>"
            if self.sender.unsubscribe_mailto:
                unsubscribe += f", <mailto:{self.sender.unsubscribe_mailto}?subject=unsubscribe>"
            lines += [f"List-Unsubscribe: {unsubscribe}", "List-Unsubscribe-Post: List-Unsubscribe=One-Click"]
        return lines


def _header_block(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def personalise_html(rendered: RenderedEmail, recipient: Recipient) -> str:
    """The HTML part exactly as ``recipient`` receives it (for previews and archives)."""
    values = _values(recipient)
    html_part = rendered.html
    for slot in rendered.slots:
        if slot.part == "html":
            html_part = html_part.replace(slot.marker, values[(slot.name, slot.part)].decode("ascii"))
    return html_part


SlotKey = tuple[str, str]  # (slot name, part)


def _values(recipient: Recipient, *, html_qp: bool = False) -> dict[SlotKey, bytes]:
    """Each per-reader value encoded for each part: HTML-escaped ASCII (quoted-printable too if the HTML
    part is), or quoted-printable."""
    raw = {
        "greeting": greeting(recipient.name),
        "preferences_url": recipient.preferences_url,
        "unsubscribe_url": recipient.unsubscribe_url,
    }
    values = {}
    for name, value in raw.items():
        in_html = _html_value(value)
        values[(name, "html")] = _qp_html_value(in_html) if html_qp else in_html
        values[(name, "text")] = _qp_value(value)
    return values


def _split(data: bytes, slots: tuple[Slot, ...]) -> tuple[list[bytes], list[SlotKey]]:
    """Split ``data`` at the slot markers, and only there; note which slot each cut was."""
    if not slots:
        return [data], []
    by_marker = {slot.marker.encode("ascii"): (slot.name, slot.part) for slot in slots}
    pattern = re.compile(b"|".join(re.escape(marker) for marker in by_marker))
    segments, order, position = [], [], 0
    for match in pattern.finditer(data):
        segments.append(data[position : match.start()])
        order.append(by_marker[match.group(0)])
        position = match.end()
    segments.append(data[position:])
    return segments, order


def _html_value(value: str) -> bytes:
    return html.escape(value, quote=True).encode("ascii", "xmlcharrefreplace")


def _qp_html_value(value: bytes) -> bytes:
    # In a quoted-printable HTML part a value may follow a few characters on its line ('href=3D"'), so
    # its own lines stay shorter than the 76 the encoding allows.
    encoded = quoprimime.body_encode(value.decode("ascii"), maxlinelen=64, eol="\r\n").encode("ascii")
    return encoded.replace(b"\r\n.", b"\r\n=2E")


def _qp_value(value: str) -> bytes:
    encoded = binascii.b2a_qp(value.encode("utf-8"), header=False)
    # b2a_qp breaks long lines with "=\n"; the message uses CRLF, and a line must never start with a dot.
    encoded = encoded.replace(b"=\n", b"=\r\n")
    return encoded.replace(b"\r\n.", b"\r\n=2E")


@dataclass(frozen=True, slots=True)
class ReaderLayout:
    """What one reader's digest holds beyond the greeting and links: the "For you" picks (positions of
    cards in the kit, each with its why-line) and each topic's cards, best first for this reader
    (``None``: the edition's order)."""

    for_you: tuple[tuple[int, str], ...] = ()
    sections: Sequence[Sequence[int]] | None = None

    def encode(self) -> str:
        """As the ledger keeps it until the message is sent ("": the edition's order)."""
        if not self.for_you and self.sections is None:
            return ""
        return json.dumps({"for_you": self.for_you, "sections": self.sections}, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | None, kit: DigestKit) -> ReaderLayout:
        """A stored layout of a reader of ``kit``; the edition's order for none, or for one that does not
        fit the kit (it is never worth failing a reader's message over)."""
        if not text:
            return COLD
        try:
            stored = json.loads(text)
            for_you = tuple((int(position), str(why)) for position, why in stored["for_you"])
            sections = [[int(position) for position in section] for section in stored["sections"]]
        except (ValueError, KeyError, TypeError):
            return COLD
        positions = [position for position, _ in for_you] + [p for section in sections for p in section]
        cards = len(kit.cards.cards)
        if len(sections) != len(kit.sections) or any(not 0 <= position < cards for position in positions):
            return COLD
        return cls(for_you, sections)


COLD = ReaderLayout()
SharedCards = dict[bool, "_EncodedCards"]  # by whether the HTML part is quoted-printable
WHY_CACHE = 20_000  # encoded why-lines kept (a few hundred bytes each)
_QP_LITERAL = re.compile(r"[!-<>-~ ]*[!-<>-~]")  # printable ASCII but "=", not ending in a space


@dataclass(frozen=True, slots=True)
class _EncodedCard:
    """A card's encoded pieces, joined wherever nothing of the reader's comes between: in a topic, the
    card is ``head``, token, ``more``, token, ``less``; in "For you", ``pick_open``, why-line,
    ``pick_rest``, token, ``more``, token, ``less`` (the text part: one link, ``more`` ends the card)."""

    html_head: bytes
    html_pick_open: bytes
    html_pick_rest: bytes
    html_more: bytes
    html_less: bytes
    text_head: bytes
    text_pick_open: bytes
    text_pick_rest: bytes
    text_more: bytes

    def stuffed(self) -> _EncodedCard:
        return _EncodedCard(*(_stuffed(piece) for piece in (getattr(self, name) for name in self.__slots__)))


class _EncodedCards:
    """The edition's cards and "For you" pieces in the transfer encodings of the message's parts, once
    as a message holds them and once dot-stuffed as SMTP DATA carries them."""

    def __init__(self, cards: DigestCards, *, html_qp: bool) -> None:
        self.html_qp = html_qp

        def html(piece: str) -> bytes:
            return _qp_body(piece) if html_qp else piece.replace("\n", "\r\n").encode("ascii")

        def link_html(path: str) -> bytes:
            return _qp_html_value(_html_value(path)) if html_qp else _html_value(path)

        why_html = tuple(html(piece) for piece in cards.why_html)
        why_text = tuple(_qp_body(piece) for piece in cards.why_text)
        self.plain = []
        for card in cards.cards:
            h = [html(piece) for piece in card.html]
            t = [_qp_body(piece) for piece in card.text]
            self.plain.append(
                _EncodedCard(
                    html_head=h[0] + h[1],
                    html_pick_open=h[0] + why_html[0],
                    html_pick_rest=why_html[1] + h[1],
                    html_more=link_html(feedback_path(card.key, "more")) + h[2],
                    html_less=link_html(feedback_path(card.key, "less")) + h[3],
                    text_head=t[0] + t[1],
                    text_pick_open=t[0] + why_text[0],
                    text_pick_rest=why_text[1] + t[1],
                    text_more=_qp_value(feedback_path(card.key, "more")) + t[2],
                )
            )
        self.wire = [card.stuffed() for card in self.plain]
        self.head_html = html(cards.for_you_html)
        self.head_text = _qp_body(cards.for_you_text)
        self.wire_head_html = _stuffed(self.head_html)
        self.wire_head_text = _stuffed(self.head_text)


class DigestTemplate(MessageTemplate):
    """A digest's message, assembled for each reader from pieces encoded once: the frame (as
    ``MessageTemplate``), then in its block slots the reader's "For you" picks with their why-lines and
    each topic's cards in the reader's order, every card with the reader's feedback links."""

    def __init__(
        self,
        kit: DigestKit,
        sender: Sender,
        feedback_base: str,
        *,
        shared: SharedCards | None = None,
        dkim: Signer | None = None,
    ) -> None:
        """``feedback_base``: the feedback links' start, before the reader's token. ``shared``: where the
        variants of one edition keep the encoded cards, which are the same in all of them. ``dkim``: every
        message is signed."""
        # A card with a line SMTP cannot carry makes the whole HTML part quoted-printable.
        cards_qp = any(
            len(line) > MAX_LINE
            for card in kit.cards.cards
            for piece in card.html
            for line in piece.splitlines()
        )
        super().__init__(kit.email, sender, html_qp=cards_qp, dkim=dkim)
        self.kit = kit
        self.feedback_base = feedback_base
        shared = shared if shared is not None else {}
        if self._html_qp not in shared:
            shared[self._html_qp] = _EncodedCards(kit.cards, html_qp=self._html_qp)
        self._cards = shared[self._html_qp]
        self._default = kit.default_cards()
        self._whys: dict[str, tuple[bytes, bytes]] = {}
        self._blocks = [self._block(name) for name, _part in self._slots]

    def _block(self, name: str) -> int | None:
        """-1 for "For you", a topic's number from 0, None for a slot that is not a block."""
        if name == FOR_YOU_BLOCK:
            return -1
        if name.startswith(CARDS_BLOCK):
            return int(name[len(CARDS_BLOCK) :]) - 1
        return None

    def render(
        self, recipient: Recipient, *, now: datetime | None = None, layout: ReaderLayout = COLD
    ) -> bytes:
        return self._assemble_digest(False, recipient, now, layout)

    def wire(
        self, recipient: Recipient, *, now: datetime | None = None, layout: ReaderLayout = COLD
    ) -> bytes:
        return self._assemble_digest(True, recipient, now, layout)

    def _assemble_digest(
        self, wire: bool, recipient: Recipient, now: datetime | None, layout: ReaderLayout
    ) -> bytes:
        values = _values(recipient, html_qp=self._html_qp)
        encoded = self._cards
        cards = encoded.wire if wire else encoded.plain
        segments = self._wire_segments if wire else self._segments
        token_html, token_text = self._token_values(recipient)
        sections = self._default if layout.sections is None else layout.sections
        now = now or datetime.now(UTC)
        lines = self._header_lines(recipient, now)
        pieces = [_header_block(lines)]
        append = pieces.append
        for segment, slot, block in zip(segments, self._slots, self._blocks, strict=False):
            append(segment)
            if block is None:
                append(values[slot])
            elif slot[1] == "html":
                if block >= 0:
                    for position in sections[block]:
                        card = cards[position]
                        pieces += (card.html_head, token_html, card.html_more, token_html, card.html_less)
                elif layout.for_you:
                    append(encoded.wire_head_html if wire else encoded.head_html)
                    for position, why in layout.for_you:
                        card = cards[position]
                        pieces += (card.html_pick_open, self._why_values(why)[0], card.html_pick_rest,
                                   token_html, card.html_more, token_html, card.html_less)  # fmt: skip
            elif block >= 0:
                for position in sections[block]:
                    card = cards[position]
                    pieces += (card.text_head, token_text, card.text_more)
            elif layout.for_you:
                append(encoded.wire_head_text if wire else encoded.head_text)
                for position, why in layout.for_you:
                    card = cards[position]
                    pieces += (card.text_pick_open, self._why_values(why)[1], card.text_pick_rest, token_text,
                               card.text_more)  # fmt: skip
        append(segments[-1])
        return self._signed(b"".join(pieces), lines, len(pieces[0]), now, wire)

    def _token_values(self, recipient: Recipient) -> tuple[bytes, bytes]:
        """The reader's part of every feedback link: the base and their token, encoded for each part (in
        quoted-printable, ending in a soft line break: the card's part of the link follows)."""
        link = f"{self.feedback_base}{recipient.feedback_token}/"
        html_value = _html_value(link)
        if self._html_qp:
            html_value = _qp_html_value(html_value) + b"=\r\n"
        text = f"  {link}"
        if _QP_LITERAL.fullmatch(text):  # a link as links are: quoted-printable leaves it as it is
            text_value = b"=\r\n".join(text[i : i + 75].encode("ascii") for i in range(0, len(text), 75))
        else:
            text_value = _qp_body(text, 75)
        return html_value, text_value + b"=\r\n"

    def _why_values(self, why: str) -> tuple[bytes, bytes]:
        """A why-line in each part; the same line comes back for many readers."""
        values = self._whys.get(why)
        if values is None:
            html_why = _html_value(why)
            if self._html_qp:
                html_why = _qp_html_value(html_why)
            values = (html_why, _qp_value(_wrap_why(why)))
            if len(self._whys) >= WHY_CACHE:
                self._whys.clear()
            self._whys[why] = values
        return values

    def html(self, recipient: Recipient, layout: ReaderLayout = COLD) -> str:
        """The HTML part exactly as ``recipient`` receives it (for previews and archives)."""
        message = email.message_from_bytes(self.render(recipient, layout=layout), policy=email.policy.SMTP)
        part = message.get_body(("html",))
        assert part is not None
        return str(part.get_content())

    def text(self, recipient: Recipient, layout: ReaderLayout = COLD) -> str:
        message = email.message_from_bytes(self.render(recipient, layout=layout), policy=email.policy.SMTP)
        part = message.get_body(("plain",))
        assert part is not None
        return str(part.get_content())


def _wrap_why(why: str, width: int = 74) -> str:
    """The why-line in lines of at most ``width`` (a word longer than that stands alone), continued
    lines indented like the card; ``textwrap`` takes 50 times as long, for every pick of every reader."""
    lines: list[str] = []
    line = ""
    for word in why.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\n  ".join(lines)


def _qp_body(piece: str, line_length: int = 76) -> bytes:
    """A piece of a part as the ``email`` package encodes a quoted-printable body (UTF-8, CRLF)."""
    encoded = quoprimime.body_encode(piece.encode("utf-8").decode("latin-1"), line_length, eol="\r\n")
    return encoded.encode("ascii")


def _stuffed(piece: bytes) -> bytes:
    return piece.replace(b"\r\n.", b"\r\n..")
