"""Render emails: Jinja2 fills the MJML and text templates, mjml-python compiles the HTML once per edition.

Paper text is plain text and the templates autoescape, so nothing from a feed can become markup. The
compiled email keeps slots for the per-subscriber parts (greeting, preferences and unsubscribe links),
which ``newsletter.message`` fills in cheaply for each recipient. A slot is a marker made from a random
nonce drawn for each rendering: text from a feed, a form or an operator cannot spell a marker it cannot
know, so a reader's values only ever land where the template put them.

A digest's HTML must stay under Gmail's clipping limit (~102 KB) whatever the week: every section shows
its best papers, as many per section as fit in ``HTML_BUDGET``, and links to the full edition on the web
for the rest.
"""

from __future__ import annotations

import functools
import re
import secrets
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import jinja2
from markdown_it import MarkdownIt
from mjml import mjml2html

from newsletter.editions import Edition, EditionPaper, Section
from newsletter.errors import RenderError
from newsletter.settings import shipped_dir

# Gmail clips HTML past ~102 KB; personalisation adds a few hundred bytes, so compile to less.
CLIP_LIMIT = 102_000
HTML_BUDGET = 96_000
MAX_PER_SECTION = 10
AUTHORS_SHOWN = 3

# What differs per subscriber: the template variables that hold a slot in a personal email.
SLOT_NAMES = ("greeting", "preferences_url", "unsubscribe_url")


def templates_dir() -> Path:
    return shipped_dir("templates")


@dataclass(frozen=True, slots=True)
class RenderSettings:
    newsletter_name: str
    base_url: str  # the public web app: archive, preferences, unsubscribe pages

    def archive_url(self, edition_id: int) -> str:
        return f"{self.base_url.rstrip('/')}/editions/{edition_id}"


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


def new_markers(part: str) -> dict[str, str]:
    """Markers for one part of one rendering. Letters and digits only, so neither MJML, ``ascii_html``
    nor quoted-printable alters them, and shorter than a quoted-printable line."""
    nonce = secrets.token_hex(16)
    return {name: f"XNLXSLOT{nonce}{name.split('_')[0].upper()}{part.upper()}" for name in SLOT_NAMES}


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

    def digest(self, edition: Edition, sections: list[Section] | None = None) -> RenderedEmail:
        """The digest email of ``edition`` (or of a subset of its sections, in the order given)."""
        chosen = edition.sections if sections is None else sections
        subject = self.digest_subject(edition, sum(len(s.papers) for s in chosen))
        per_section = MAX_PER_SECTION
        html, text, slots = self._digest_parts(edition, chosen, subject, per_section)
        if len(html) > HTML_BUDGET:
            # Largest number of papers per section that fits: the size grows with it monotonically.
            low, high = 1, per_section - 1
            best = None
            while low <= high:
                middle = (low + high) // 2
                candidate = self._digest_parts(edition, chosen, subject, middle)
                if len(candidate[0]) <= HTML_BUDGET:
                    best, per_section, low = candidate, middle, middle + 1
                else:
                    high = middle - 1
            if best is None:
                per_section = 1
                best = self._digest_parts(edition, chosen, subject, 1)
            html, text, slots = best
        shown = sum(min(len(s.papers), per_section) for s in chosen)
        return RenderedEmail(subject, html, text, shown, per_section, slots)

    def digest_subject(self, edition: Edition, paper_count: int) -> str:
        return f"{self.settings.newsletter_name}: {paper_count} new papers, {_date_range(edition)}"

    def _digest_parts(
        self, edition: Edition, sections: list[Section], subject: str, per_section: int
    ) -> tuple[str, str, tuple[Slot, ...]]:
        archive = self.settings.archive_url(edition.id)
        context_sections = [
            {
                "anchor": f"topic-{number}",
                "label": section.label,
                "keywords": section.keywords[:5],
                "total": len(section.papers),
                "papers": [paper_view(paper) for paper in section.papers[:per_section]],
                "more": max(0, len(section.papers) - per_section),
                "more_url": f"{archive}#topic-{number}",
            }
            for number, section in enumerate(sections, start=1)
        ]
        total = sum(len(s.papers) for s in sections)
        intro = (
            f"{total} new paper{'s' if total != 1 else ''} in {len(sections)} topic"
            f"{'s' if len(sections) != 1 else ''}, the most upvoted and most central first."
            if sections
            else "Nothing new matched your topics in this edition."
        )
        context = self._common(subject, archive) | {
            "preview": intro,
            "header_line": f"{_date_range(edition)} · {total} papers",
            "intro": intro,
            "sections": context_sections,
        }
        return self._personal("email/digest.mjml.j2", "email/digest.txt.j2", context)

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
        self, mjml_template: str, text_template: str, context: dict[str, object]
    ) -> tuple[str, str, tuple[Slot, ...]]:
        """Both parts of a personal email, each with fresh slot markers, and the slots they hold."""
        html_markers, text_markers = new_markers("html"), new_markers("text")
        mjml = self._render(mjml_template, context | html_markers)
        html_slots = placed_slots(mjml, "html", html_markers, mjml_template)
        html = self._mjml(mjml_template, mjml, html_markers.values())
        check_slots(html, html_slots, f"the compiled {mjml_template}")
        text = self._render(text_template, context | text_markers)
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


def greeting(name: str) -> str:
    return f"Hello {name}," if name else "Hello,"


def paper_view(paper: EditionPaper) -> dict[str, object]:
    authors = paper.authors[:AUTHORS_SHOWN]
    byline = ", ".join(authors) + (" et al." if len(paper.authors) > AUTHORS_SHOWN else "")
    meta = [part for part in (byline, paper.primary_category) if part]
    if paper.upvotes:
        meta.append(f"▲ {paper.upvotes}")
    return {
        "title": paper.title,
        "url": link_url(paper.url),
        "meta": " · ".join(meta),
        "summary": paper.summary,
        "code_url": link_url(paper.github_repo),
    }


def link_url(url: str | None) -> str:
    """A URL as a browser reads it: tabs and line breaks dropped (the URL standard ignores them; MJML would
    write them into the attribute as backslash escapes)."""
    return (url or "").translate(_URL_IGNORED)


_URL_IGNORED = str.maketrans("", "", "\t\r\n")


def _date_range(edition: Edition) -> str:
    start, end = edition.window_start, edition.window_end
    return f"{_day(start)} – {_day(end)}" if start.date() != end.date() else _day(end)


def _day(moment: datetime) -> str:
    return f"{moment.day} {moment:%b %Y}"


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
