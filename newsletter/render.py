"""Render emails: Jinja2 fills the MJML and text templates, mjml-python compiles the HTML once per edition.

Paper text is plain text and the templates autoescape, so nothing from a feed can become markup. The
compiled email keeps slots for the per-subscriber parts (greeting, preferences and unsubscribe links),
which ``newsletter.message`` fills in cheaply for each recipient. A slot is a marker made from a random
nonce drawn for each rendering: text from a feed, a form or an operator cannot spell a marker it cannot
know, so a reader's values only ever land where the template put them.

A digest differs from reader to reader beyond those slots: the "For you" section, the order of each
topic's papers, the feedback links on every card. ``Renderer.digest`` therefore compiles a ``DigestKit``:
the frame of the email once (MJML), with a block slot for "For you" and for each topic's cards, and
every paper's card once, as pieces split at markers where the reader's why-line and feedback links go.
``newsletter.message`` assembles a reader's email from those pieces; nothing is compiled per reader.

A digest's HTML must stay under Gmail's clipping limit (~102 KB) whatever the week and whatever the
reader: every topic shows as many papers as fit in ``HTML_BUDGET`` with cards of the topic's average
size and a full "For you" section of large cards (``DigestKit.html_size`` lets the layout of a reader
whose picks are all unusually long trim them to the limit), and links to the full edition on the web
for the rest.
"""

from __future__ import annotations

import contextlib
import functools
import re
import secrets
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from markdown_it import MarkdownIt
from mjml import mjml2html

from newsletter.dates import day, day_range
from newsletter.editions import Edition, EditionPaper, Section
from newsletter.errors import RenderError
from newsletter.settings import shipped_dir
from newsletter.tokens import feedback_path

# Gmail clips HTML past ~102 KB; personalisation adds a few hundred bytes, so compile to less.
CLIP_LIMIT = 102_000
HTML_BUDGET = 96_000
MAX_PER_SECTION = 10
AUTHORS_SHOWN = 3

# What differs per subscriber: the template variables that hold a slot in a personal email.
SLOT_NAMES = ("greeting", "preferences_url", "unsubscribe_url")
FOR_YOU_BLOCK = "for_you"  # a digest's block slots: "For you", then each topic's cards
CARDS_BLOCK = "cards"
FEEDBACK_TOKEN_ALLOWANCE = 80  # a feedback token's length, subscriber and edition ids of ten digits
WHY_ALLOWANCE = 320  # a why-line's HTML at its longest


def templates_dir() -> Path:
    return shipped_dir("templates")


@dataclass(frozen=True, slots=True)
class RenderSettings:
    newsletter_name: str
    base_url: str  # the public web app: archive, preferences, unsubscribe pages

    def archive_url(self, edition_id: int) -> str:
        return f"{self.base_url.rstrip('/')}/editions/{edition_id}"

    @property
    def feedback_base(self) -> str:
        """Where every feedback link starts, before the reader's token."""
        return f"{self.base_url.rstrip('/')}/feedback/"


@dataclass(frozen=True, slots=True)
class Slot:
    """Where the template put one per-reader value in one part, and how many times."""

    name: str  # one of SLOT_NAMES
    part: str  # "html" (the value is HTML-escaped) or "text" (quoted-printable)
    marker: str  # stands in the rendered part until the value replaces it
    count: int  # how many times the template placed it


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    html: str  # ASCII (non-ASCII as character references), HTML slot markers on lines of their own
    text: str  # text slot markers on lines of their own
    papers_shown: int = 0
    per_section: int = 0
    slots: tuple[Slot, ...] = ()  # empty for an email that is the same for everyone (confirmation)


def new_markers(part: str, names: Iterable[str] = SLOT_NAMES) -> dict[str, str]:
    """Markers for one part of one rendering. Letters and digits only, so neither MJML, ``ascii_html``
    nor quoted-printable alters them, and shorter than a quoted-printable line."""
    nonce = secrets.token_hex(16)
    return {name: f"XNLXSLOT{nonce}{name.replace('_', '').upper()}{part.upper()}" for name in names}


def placed_slots(rendered: str, part: str, markers: dict[str, str], template: str) -> tuple[Slot, ...]:
    """The slots ``template`` placed; it must place each one (an email without its unsubscribe link is
    never sent). Nothing but the template can have written a marker."""
    slots = tuple(Slot(name, part, marker, rendered.count(marker)) for name, marker in markers.items())
    missing = [slot.name for slot in slots if not slot.count]
    if missing:
        raise RenderError(f"template {template} has no {', '.join(missing)} slot")
    return slots


def check_slots(rendered: str | bytes, slots: Iterable[Slot], where: str) -> None:
    """Every slot is still there as often as the template placed it, or the email cannot be personalised."""
    for slot in slots:
        found = (
            rendered.count(slot.marker)
            if isinstance(rendered, str)
            else rendered.count(slot.marker.encode("ascii"))
        )
        if found != slot.count:
            raise RenderError(
                f"{where}: the {slot.name} slot of the {slot.part} part appears {found} times "
                f"where the template placed it {slot.count} times"
            )


@functools.cache
def _environment(directory: Path) -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        autoescape=lambda name: name is None or not name.endswith(".txt.j2"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["wrap"] = _wrap
    return environment


def _wrap(text: str, width: int = 76, indent: str = "") -> str:
    return textwrap.fill(str(text), width=width, subsequent_indent=indent, break_on_hyphens=False)


class Renderer:
    def __init__(self, settings: RenderSettings, directory: Path | None = None) -> None:
        self.settings = settings
        self._env = _environment(directory or templates_dir())

    # --- the weekly digest ------------------------------------------------------------------------------

    def digest(
        self,
        edition: Edition,
        sections: list[Section] | None = None,
        *,
        cards: DigestCards | None = None,
        for_you: int = 0,
        topics: Sequence[str] = (),
    ) -> DigestKit:
        """The digest of ``edition`` (or of a subset of its sections, in the order given), as a kit from
        which each reader's email is assembled; room is kept for a "For you" section of ``for_you`` papers.
        ``cards``: the edition's cards when already rendered (they are the same in every variant).
        ``topics``: what its readers follow (categories and keywords; none: everything), which an email
        with nothing for them names."""
        chosen = edition.sections if sections is None else sections
        cards = cards if cards is not None else self.digest_cards(edition)
        subject = self.digest_subject(edition, sum(len(s.papers) for s in chosen), topics)
        members = tuple(tuple(cards.index[paper.key] for paper in section.papers) for section in chosen)
        per_section = MAX_PER_SECTION
        html, text, slots = self._digest_frame(edition, chosen, subject, per_section, topics)
        while True:
            # The frame hardly changes with the number of papers shown (a "more" line per topic).
            fitting = _most_per_section(cards, members, for_you, HTML_BUDGET - len(html))
            default = [member[:fitting] for member in members]
            while (
                fitting > 1 and len(html) + sum(cards.cards[i].size for m in default for i in m) > HTML_BUDGET
            ):
                fitting -= 1  # the edition's own first papers are unusually long
                default = [member[:fitting] for member in members]
            if fitting >= per_section:
                break
            per_section = fitting
            html, text, slots = self._digest_frame(edition, chosen, subject, per_section, topics)
        shown = sum(min(len(member), per_section) for member in members)
        frame = RenderedEmail(subject, html, text, shown, per_section, slots)
        return DigestKit(frame, cards, members, per_section, for_you)

    def digest_subject(self, edition: Edition, paper_count: int, topics: Sequence[str] = ()) -> str:
        """The subject: "Research Digest: 38 new papers, 24 Nov – 1 Dec 2026"; with nothing for the
        reader, "no new papers" or "nothing new in cs.CL" instead of a count."""
        if paper_count:
            what = f"{paper_count} new paper{'s' if paper_count != 1 else ''}"
        else:
            what = f"nothing new in {topic_names(topics)}" if topics else "no new papers"
        return f"{self.settings.newsletter_name}: {what}, {_date_range(edition)}"

    def digest_cards(self, edition: Edition) -> DigestCards:
        """Every paper's card, in the edition's order, split where the reader's values go."""
        papers: dict[str, EditionPaper] = {}
        for section in edition.sections:
            for paper in section.papers:
                papers.setdefault(paper.key, paper)
        html_module = self._module("email/digest_cards.html.j2")
        text_module = self._module("email/digest_cards.txt.j2")
        html_markers = new_markers("html", _CARD_SLOTS)
        text_markers = new_markers("text", _CARD_SLOTS)
        built = []
        try:
            for paper in papers.values():
                view = paper_view(paper)
                html = ascii_html(
                    str(html_module.card(view, *(html_markers[name] for name in _CARD_SLOTS))),
                    html_markers.values(),
                )
                text = str(text_module.card(view, text_markers["why"], text_markers["more_url"]))
                html_pieces = _pieces(html, html_markers, _CARD_SLOTS, "card")
                links = 2 * (
                    len(self.settings.feedback_base)
                    + FEEDBACK_TOKEN_ALLOWANCE
                    + len(feedback_path(paper.key, "more"))
                )
                built.append(
                    Card(
                        paper.key,
                        html_pieces,
                        _pieces(text, text_markers, _CARD_SLOTS[:2], "card (text)"),
                        sum(len(piece) for piece in html_pieces) + links,
                    )
                )
            why_html = ascii_html(str(html_module.why_line(html_markers["why"])), [html_markers["why"]])
            why_text = str(text_module.why_line(text_markers["why"]))
            head_html = ascii_html(str(html_module.for_you_head()))
            head_text = str(text_module.for_you_head())
        except jinja2.TemplateError as exc:
            raise RenderError(f"template email/digest_cards failed: {exc}") from exc
        return DigestCards(
            tuple(built),
            {card.key: position for position, card in enumerate(built)},
            tuple(card.key for card in built),
            _pieces(why_html, html_markers, ("why",), "why_line"),
            _pieces(why_text, text_markers, ("why",), "why_line (text)"),
            head_html,
            head_text,
        )

    def _digest_frame(
        self,
        edition: Edition,
        sections: list[Section],
        subject: str,
        per_section: int,
        topics: Sequence[str] = (),
    ) -> tuple[str, str, tuple[Slot, ...]]:
        archive = self.settings.archive_url(edition.id)
        blocks = [FOR_YOU_BLOCK, *(f"{CARDS_BLOCK}{number}" for number in range(1, len(sections) + 1))]
        total = sum(len(s.papers) for s in sections)
        intro = (
            f"{total} new paper{'s' if total != 1 else ''} in {len(sections)} topic"
            f"{'s' if len(sections) != 1 else ''}, the most upvoted and most central first."
            if sections
            else empty_notice(topics, edition.frequency)
        )

        def context(markers: dict[str, str]) -> dict[str, object]:
            return self._common(subject, archive) | {
                "preview": intro,
                "header_line": f"{_date_range(edition)} · {total} paper{'s' if total != 1 else ''}"
                if total
                else _date_range(edition),
                "intro": intro,
                "for_you": markers[FOR_YOU_BLOCK],
                "sections": [
                    {
                        "anchor": f"topic-{number}",
                        "label": section.label,
                        "keywords": section.keywords[:5],
                        "total": len(section.papers),
                        "cards": markers[f"{CARDS_BLOCK}{number}"],
                        "more": max(0, len(section.papers) - per_section),
                        "more_url": f"{archive}#topic-{number}",
                    }
                    for number, section in enumerate(sections, start=1)
                ],
            }

        return self._personal("email/digest.mjml.j2", "email/digest.txt.j2", context, blocks)

    # --- one-off messages and confirmations --------------------------------------------------------------

    def one_off(self, subject: str, markdown_body: str) -> RenderedEmail:
        body_html = markdown_html(markdown_body)
        context = self._common(subject, None) | {
            "preview": _first_line(markdown_body),
            "header_line": subject,
            "body_html": jinja2.utils.markupsafe.Markup(body_html),
            "body_text": markdown_body.strip(),
        }
        html, text, slots = self._personal("email/one_off.mjml.j2", "email/one_off.txt.j2", context)
        return RenderedEmail(subject, html, text, slots=slots)

    def confirmation(self, *, name: str, confirm_url: str, expires_in: str) -> RenderedEmail:
        subject = f"Confirm your subscription to {self.settings.newsletter_name}"
        context = {
            "subject": subject,
            "preview": "One click to confirm your subscription.",
            "newsletter_name": self.settings.newsletter_name,
            "header_line": "Please confirm your subscription",
            "greeting": greeting(name),
            "confirm_url": confirm_url,
            "expires_in": expires_in,
            "why": f"Someone, hopefully you, asked to subscribe this address to "
            f"{self.settings.newsletter_name} at {self.settings.base_url}.",
            "preferences_url": "",
            "unsubscribe_url": "",
            "archive_url": None,
        }
        return RenderedEmail(
            subject,
            self._mjml("email/confirm.mjml.j2", self._render("email/confirm.mjml.j2", context), ()),
            self._render("email/confirm.txt.j2", context),
        )

    # --- shared -----------------------------------------------------------------------------------------

    def _common(self, subject: str, archive_url: str | None) -> dict[str, object]:
        return {
            "subject": subject,
            "newsletter_name": self.settings.newsletter_name,
            "archive_url": archive_url,
            "why": f"You receive {self.settings.newsletter_name} because you subscribed at "
            f"{self.settings.base_url}.",
        }

    def _personal(
        self,
        mjml_template: str,
        text_template: str,
        context: dict[str, object] | Callable[[dict[str, str]], dict[str, object]],
        blocks: Iterable[str] = (),
    ) -> tuple[str, str, tuple[Slot, ...]]:
        """Both parts of a personal email, each with fresh slot markers, and the slots they hold.
        ``context`` is the templates' context, or makes it from the markers (for block slots)."""
        names = (*SLOT_NAMES, *blocks)
        html_markers, text_markers = new_markers("html", names), new_markers("text", names)

        def filled(markers: dict[str, str]) -> dict[str, object]:
            return (context(markers) if callable(context) else context) | {
                name: markers[name] for name in SLOT_NAMES
            }

        mjml = self._render(mjml_template, filled(html_markers))
        html_slots = placed_slots(mjml, "html", html_markers, mjml_template)
        html = self._mjml(mjml_template, mjml, html_markers.values())
        check_slots(html, html_slots, f"the compiled {mjml_template}")
        text = self._render(text_template, filled(text_markers))
        return html, text, html_slots + placed_slots(text, "text", text_markers, text_template)

    def _mjml(self, template: str, mjml: str, markers: Iterable[str]) -> str:
        try:
            html = mjml2html(mjml)
        except ValueError as exc:
            raise RenderError(f"MJML compilation of {template} failed: {exc}") from exc
        return ascii_html(html, markers)

    def _render(self, template: str, context: dict[str, object]) -> str:
        try:
            return self._env.get_template(template).render(context)
        except jinja2.TemplateError as exc:
            raise RenderError(f"template {template} failed: {exc}") from exc

    def _module(self, template: str) -> Any:
        """A template of macros, to call each macro many times."""
        try:
            return self._env.get_template(template).module
        except jinja2.TemplateError as exc:
            raise RenderError(f"template {template} failed: {exc}") from exc


_CARD_SLOTS = ("why", "more_url", "less_url")  # where a card holds the reader's values, in order


@dataclass(frozen=True, slots=True)
class Card:
    """One paper's card, cut where the reader's values go: ``html`` is (up to the why-line, up to the
    "More like this" link, up to the "Less like this" link, the rest), ``text`` the same without the
    second link."""

    key: str
    html: tuple[str, ...]
    text: tuple[str, ...]
    size: int  # of the HTML with the reader's two feedback links


@dataclass(frozen=True, slots=True)
class DigestCards:
    """Every card of an edition (the same in every reader's email) and the pieces of "For you"."""

    cards: tuple[Card, ...]  # the edition's order
    index: dict[str, int]  # paper key -> position in ``cards``
    keys: tuple[str, ...]  # each card's paper key
    why_html: tuple[str, str]  # a why-line's HTML around its text
    why_text: tuple[str, str]
    for_you_html: str  # the head of the "For you" section
    for_you_text: str


@dataclass(frozen=True, slots=True)
class DigestKit:
    """A digest as each reader's email is assembled from it: the frame (``email``: its slots include the
    block slots "for_you" and "cards1", "cards2", ... of each topic), the edition's cards, and which
    cards each topic holds (positions in ``cards.cards``, the edition's order), of which a reader sees
    ``per_section``."""

    email: RenderedEmail
    cards: DigestCards
    sections: tuple[tuple[int, ...], ...]
    per_section: int
    for_you: int  # the most "For you" papers room was kept for

    def default_cards(self) -> list[list[int]]:
        """Each topic's cards for a reader the digest knows nothing about: the edition's order."""
        return [list(members[: self.per_section]) for members in self.sections]

    def html_size(self, for_you: Sequence[int], sections: Iterable[Iterable[int]]) -> int:
        """About how long a reader's HTML is with these "For you" picks and topic cards (the why-lines
        counted at their longest)."""
        cards = self.cards.cards
        size = len(self.email.html) + sum(cards[i].size for members in sections for i in members)
        if for_you:
            size += len(self.cards.for_you_html) + sum(cards[i].size + WHY_ALLOWANCE for i in for_you)
        return size


def _pieces(rendered: str, markers: dict[str, str], names: tuple[str, ...], template: str) -> tuple[str, ...]:
    """``rendered`` cut at the markers of ``names``, each placed exactly once and in that order."""
    pieces = []
    rest = rendered
    for name in names:
        before, found, rest = rest.partition(markers[name])
        if not found or markers[name] in rest or markers[name] in before:
            raise RenderError(f"template email/digest_cards ({template}) must place {{{{ {name} }}}} once")
        pieces.append(before)
    pieces.append(rest)
    if any(piece.startswith(".") for piece in pieces[1:]):
        # A reader's value may end a line: what follows it must not start a line with SMTP's dot.
        raise RenderError(f"template email/digest_cards ({template}): a piece after a slot starts with '.'")
    return tuple(pieces)


def _most_per_section(
    cards: DigestCards, members: tuple[tuple[int, ...], ...], for_you: int, room: int
) -> int:
    """The most papers per topic that fit in ``room`` characters of HTML: cards of each topic's average
    size (a reader's best papers are as long as any), a full "For you" of large cards (nine in ten are
    smaller), every card with its feedback links."""
    everything = sorted(card.size for card in cards.cards)
    large = everything[int(0.9 * (len(everything) - 1))] if everything else 0
    for_you_room = len(cards.for_you_html) + for_you * (large + WHY_ALLOWANCE) if for_you else 0
    averages = [sum(cards.cards[i].size for i in member) / len(member) for member in members if member]
    counts = [len(member) for member in members if member]
    for per_section in range(MAX_PER_SECTION, 1, -1):
        shown = sum(
            average * min(count, per_section) for average, count in zip(averages, counts, strict=True)
        )
        if for_you_room + shown <= room:
            return per_section
    return 1


def empty_notice(topics: Sequence[str], frequency: str) -> str:
    """The one sentence of a digest with nothing for its reader: "Nothing new in cs.CL this week." for
    a reader who follows topics, "No new papers today." for one who follows everything (daily)."""
    when = "today" if frequency == "daily" else "this week"
    return f"Nothing new in {topic_names(topics)} {when}." if topics else f"No new papers {when}."


TOPICS_NAMED = 3


def topic_names(topics: Sequence[str]) -> str:
    """What a reader follows, in a few words: "cs.CL", "cs.CL or cs.LG", "cs.CL, cs.LG or diffusion",
    or "your 5 topics"."""
    topics = list(topics)
    if len(topics) > TOPICS_NAMED:
        return f"your {len(topics)} topics"
    if len(topics) == 1:
        return topics[0]
    return f"{', '.join(topics[:-1])} or {topics[-1]}"


def greeting(name: str) -> str:
    return f"Hello {name}," if name else "Hello,"


def paper_view(paper: EditionPaper) -> dict[str, object]:
    """A card's values: the title and its link, the byline, and a line of what identifies the paper
    (arXiv id or DOI and PDF, linked, the day it was announced, its categories, primary first)."""
    authors = paper.authors[:AUTHORS_SHOWN]
    byline = ", ".join(authors) + (" et al." if len(paper.authors) > AUTHORS_SHOWN else "")
    return {
        "title": paper.title,
        "url": link_url(paper.url),
        "meta": byline,
        "line": _paper_line(paper),
        "summary": paper.summary,
        "code_url": link_url(paper.github_repo),
    }


CATEGORIES_SHOWN = 3


def _paper_line(paper: EditionPaper) -> list[dict[str, str]]:
    """The parts of a card's second line, each a label with its link or without: "arXiv:2412.01234",
    "PDF", "code", "1 Dec 2026", "cs.CL, cs.LG +1", "▲ 12"."""
    parts = []
    if paper.arxiv_id:
        parts.append({"label": f"arXiv:{paper.arxiv_id}", "url": f"https://arxiv.org/abs/{paper.arxiv_id}"})
        parts.append(
            {"label": "PDF", "url": link_url(paper.pdf_url) or f"https://arxiv.org/pdf/{paper.arxiv_id}"}
        )
    else:
        if paper.doi:
            parts.append(
                {"label": f"doi:{paper.doi}", "url": f"https://doi.org/{quote(paper.doi, safe='/:;()')}"}
            )
        if paper.pdf_url:
            parts.append({"label": "PDF", "url": link_url(paper.pdf_url)})
    if paper.github_repo:
        parts.append({"label": "code", "url": link_url(paper.github_repo)})
    if paper.venue and not paper.arxiv_id:
        parts.append({"label": paper.venue, "url": ""})
    with contextlib.suppress(ValueError):  # a date that cannot be read is left out
        if paper.dated:
            parts.append({"label": day(paper.dated), "url": ""})
    categories = list(paper.categories)
    if paper.primary_category:
        categories = [paper.primary_category, *(c for c in categories if c != paper.primary_category)]
    if categories:
        shown = ", ".join(categories[:CATEGORIES_SHOWN])
        more = len(categories) - CATEGORIES_SHOWN
        parts.append({"label": f"{shown} +{more}" if more > 0 else shown, "url": ""})
    if paper.upvotes:
        parts.append({"label": f"▲ {paper.upvotes}", "url": ""})
    return parts


def link_url(url: str | None) -> str:
    """A URL as a browser reads it: tabs and line breaks dropped (the URL standard ignores them; MJML would
    write them into the attribute as backslash escapes)."""
    return (url or "").translate(_URL_IGNORED)


_URL_IGNORED = str.maketrans("", "", "\t\r\n")


def _date_range(edition: Edition) -> str:
    return day_range(edition.window_start, edition.window_end)


def _first_line(markdown_body: str) -> str:
    for line in markdown_body.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:150]
    return ""


@functools.cache
def _markdown() -> MarkdownIt:
    # CommonMark without raw HTML: an operator's message is text with formatting, not arbitrary markup.
    return MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


def markdown_html(markdown_body: str) -> str:
    return _markdown().render(markdown_body)


_LONG_LINE = 500


def ascii_html(html: str, markers: Iterable[str] = ()) -> str:
    """Non-ASCII characters as numeric references, each slot marker on a line of its own and other lines
    of at most ``_LONG_LINE`` characters: the HTML part travels as 7bit text, and no personalised value
    can push a line past SMTP's 998 octets."""
    html = html.encode("ascii", "xmlcharrefreplace").decode("ascii")
    alternatives = [re.escape(marker) for marker in markers]
    if alternatives:
        # Whitespace between attributes is free in HTML: a link's href gets its own line; in text, a line
        # break is just a space.
        slot = re.compile("|".join([f'href="(?:{"|".join(alternatives)})"', *alternatives]))
        html = slot.sub(lambda match: f"\n{match.group(0)}\n", html)
    lines = []
    for line in html.split("\n"):
        while len(line) > _LONG_LINE:
            cut = line.rfind(" ", 0, _LONG_LINE)
            if cut <= 0:
                cut = line.find(" ", _LONG_LINE)
                if cut == -1:
                    break
            lines.append(line[:cut])
            line = line[cut + 1 :]
        lines.append(line)
    return "\n".join(lines)
