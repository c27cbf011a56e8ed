"""Pages for readers: subscribe, confirm, preferences, unsubscribe, the archive and its feed."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import jinja2
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from newsletter.dates import day, day_range
from newsletter.db import ping
from newsletter.editions import (
    Edition,
    EditionPaper,
    PublishedEdition,
    load_published_edition,
    published_editions,
)
from newsletter.errors import EditionNotFound, PreferenceError, SubscriberError
from newsletter.preferences import EMPTY_DIGEST, Preferences, parse_list
from newsletter.render import empty_notice, markdown_html, paper_view
from newsletter.signup_sender import SignupSender
from newsletter.signups import SignupRequest, enqueue
from newsletter.subscribers import (
    CONFIRMATION_DAYS,
    Subscriber,
    confirm,
    link_predates_unsubscribe,
    set_preferences,
    set_status,
)
from newsletter.text import extract_summary
from newsletter.tokens import TokenSubject
from newsletter.web.pages import Site, mask_email
from newsletter.web.papers import feedback_reader
from newsletter.web.security import RateLimiter, client_key

log = logging.getLogger(__name__)


class Public:
    def __init__(self, site: Site, *, send_signups: bool = True) -> None:
        self.site = site
        self.signups = RateLimiter(limit=5, window=600)
        # send_signups=False: the requests wait in the queue for a sender in another process.
        self.sender = SignupSender(site.settings) if send_signups else None

    @asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        """The sign-up sender runs while the app does."""
        if self.sender is not None:
            self.sender.start()
        try:
            yield
        finally:
            if self.sender is not None:
                await anyio.to_thread.run_sync(self.sender.stop)

    # --- subscribe and confirm ---------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        return await self.subscribe_form(request)

    async def subscribe_form(self, request: Request) -> Response:
        return await self._subscribe_page(request)

    async def _subscribe_page(
        self, request: Request, *, error: str = "", form: dict[str, Any] | None = None, status_code: int = 200
    ) -> Response:
        form = form or {}
        chosen = tuple(form.get("categories", ()))

        def read(db: Any) -> tuple[list[dict[str, Any]], list[PublishedEdition]]:
            return self.site.topic_choices(db, chosen), published_editions(db, limit=RECENT_EDITIONS)

        choices, recent = await self.site.call(read)
        return self.site.page(
            request,
            "web/subscribe.html.j2",
            status_code,
            choices=choices,
            error=error,
            form=form,
            daily=self.site.settings.digest.daily,
            recent=[_archive_entry(edition) for edition in recent],
        )

    async def subscribe(self, request: Request) -> Response:
        """Validate, record, answer: the same work and the same page whatever the address's state (it is
        not even looked up here), so neither the answer nor its timing tells who is subscribed. The
        email goes out from the sign-up queue."""
        form = await request.form()
        if refused := self.site.refused_form(request, form):
            return refused
        values = {
            "email": str(form.get("email", "")),
            "name": str(form.get("name", "")),
            "categories": [str(v) for v in form.getlist("categories")],
            "keywords": str(form.get("keywords", "")),
            "frequency": str(form.get("frequency", "weekly")),
        }
        client = client_key(request)
        if self.signups.retry_after(client):
            return self._too_many(request, client)
        try:
            frequency = values["frequency"] if self.site.settings.digest.daily else "weekly"
            preferences = Preferences.create(values["categories"], parse_list(values["keywords"]), frequency)
            signup = SignupRequest.create(values["email"], values["name"], preferences)
        except (SubscriberError, PreferenceError) as exc:
            # Only sign-ups that are accepted count against the client's limit.
            return await self._subscribe_page(request, error=str(exc), form=values, status_code=400)
        if not self.signups.allow(client):
            return self._too_many(request, client)
        try:
            await self.site.call(lambda db: enqueue(db, signup))
        except BaseException:
            self.signups.release(client)
            raise
        response = self.site.message(
            request,
            "Check your inbox",
            f"If {values['email'].strip()} can receive {self.site.settings.name}, an email with a link is on "
            f"its way. The subscription starts when you open the link (valid for {CONFIRMATION_DAYS} days).",
        )
        if self.sender is not None:
            # Woken once the answer is out: the sender's work, which does depend on the address, never
            # competes with the answer for the CPU.
            response.background = BackgroundTask(self.sender.wake)
        return response

    def _too_many(self, request: Request, client: str) -> Response:
        response = self.site.message(
            request, "Too many requests", "Please wait a few minutes before trying again.", 429
        )
        response.headers["Retry-After"] = self.signups.retry_after_header(client)
        return response

    async def confirm_page(self, request: Request) -> Response:
        found = await self._confirming(request)
        if found is None:
            return self._stale_confirmation(request)
        subject, subscriber = found
        if subscriber.status == "active":
            return self._confirmed(request, subscriber)
        if link_predates_unsubscribe(subscriber, subject.issued_at):
            return self._superseded_confirmation(request)
        return self.site.page(
            request, "web/confirm.html.j2", masked_email=mask_email(subscriber.email), action=request.url.path
        )

    async def confirm(self, request: Request) -> Response:
        # A button press, not the GET: mail scanners that open links must not confirm on the reader's behalf.
        form = await request.form()
        if refused := self.site.refused_form(request, form):
            return refused
        found = await self._confirming(request)
        if found is None:
            return self._stale_confirmation(request)
        subject, subscriber = found
        confirmed = await self.site.call(
            lambda db: confirm(db, subscriber.id, link_issued_at=subject.issued_at)
        )
        if confirmed is None or confirmed.status != "active":
            if confirmed is not None and link_predates_unsubscribe(confirmed, subject.issued_at):
                return self._superseded_confirmation(request)
            return self.site.message(
                request, "Not subscribed", "This address cannot receive our emails.", 400
            )
        return self._confirmed(request, confirmed)

    async def _confirming(self, request: Request) -> tuple[TokenSubject, Subscriber] | None:
        return await self.site.link_target(
            "confirm", request.path_params["token"], max_age=CONFIRMATION_DAYS * 86400
        )

    def _confirmed(self, request: Request, subscriber: Any) -> Response:
        return self.site.page(
            request,
            "web/confirmed.html.j2",
            masked_email=mask_email(subscriber.email),
            preferences_url=self.site.page_links.preferences(subscriber.id, subscriber.email),
        )

    def _stale_confirmation(self, request: Request) -> Response:
        return self.site.message(
            request,
            "This link is not valid",
            "It may have expired or been altered. Subscribe again to get a new one.",
            400,
        )

    def _superseded_confirmation(self, request: Request) -> Response:
        return self.site.message(
            request,
            "This link is no longer valid",
            "It was sent before this address unsubscribed. Subscribe again to get a new one.",
            400,
        )

    # --- preferences and unsubscribe ----------------------------------------------------------------------

    async def preferences_page(self, request: Request) -> Response:
        subscriber = await self.site.subscriber_for("preferences", request.path_params["token"])
        if subscriber is None:
            return self._invalid_link(request)
        return await self._preferences(request, subscriber)

    async def _preferences(
        self,
        request: Request,
        subscriber: Any,
        *,
        saved: bool = False,
        error: str = "",
        status_code: int = 200,
    ) -> Response:
        prefs = subscriber.preferences
        choices = await self.site.call(lambda db: self.site.topic_choices(db, prefs.categories))
        return self.site.page(
            request,
            "web/preferences.html.j2",
            status_code,
            masked_email=mask_email(subscriber.email),
            status=subscriber.status,
            choices=choices,
            keywords=", ".join(prefs.keywords),
            frequency=prefs.frequency,
            empty_digest=prefs.empty_digest,
            empty_choices=EMPTY_DIGEST,
            daily=self.site.settings.digest.daily,
            saved=saved,
            error=error,
            action=request.url.path,
            unsubscribe_url=self.site.page_links.unsubscribe(subscriber.id, subscriber.email),
            papers_url=self.site.page_links.preferences(subscriber.id, subscriber.email) + "/papers",
        )

    async def save_preferences(self, request: Request) -> Response:
        form = await request.form()
        if refused := self.site.refused_form(request, form):
            return refused
        subscriber = await self.site.subscriber_for("preferences", request.path_params["token"])
        if subscriber is None:
            return self._invalid_link(request)
        try:
            frequency = str(form.get("frequency", "weekly")) if self.site.settings.digest.daily else "weekly"
            preferences = Preferences.create(
                [str(v) for v in form.getlist("categories")],
                parse_list(str(form.get("keywords", ""))),
                frequency,
                str(form.get("empty_digest", "notice")),
            )
        except PreferenceError as exc:
            return await self._preferences(request, subscriber, error=str(exc), status_code=400)
        await self.site.call(lambda db: set_preferences(db, subscriber.id, preferences))
        subscriber.preferences = preferences
        return await self._preferences(request, subscriber, saved=True)

    async def unsubscribe_page(self, request: Request) -> Response:
        subscriber = await self.site.subscriber_for("unsubscribe", request.path_params["token"])
        if subscriber is None:
            return self._invalid_link(request)
        if subscriber.status not in ("active", "pending"):
            return self.site.message(
                request, "Unsubscribed", f"{mask_email(subscriber.email)} receives nothing from us."
            )
        return self.site.page(
            request,
            "web/unsubscribe.html.j2",
            masked_email=mask_email(subscriber.email),
            action=request.url.path,
        )

    async def unsubscribe(self, request: Request) -> Response:
        # RFC 8058 one-click: a mail program POSTs "List-Unsubscribe=One-Click" with no session and no
        # CSRF token; the signed token in the URL is the authority. No login, no redirect.
        subscriber = await self.site.subscriber_for("unsubscribe", request.path_params["token"])
        if subscriber is None:
            return self._invalid_link(request)
        if subscriber.status in ("active", "pending"):
            await self.site.call(lambda db: set_status(db, subscriber.id, "unsubscribed"))
        return self.site.message(
            request,
            "Unsubscribed",
            f"{mask_email(subscriber.email)} will receive nothing more from {self.site.settings.name}.",
        )

    def _invalid_link(self, request: Request) -> Response:
        return self.site.message(
            request,
            "This link is not valid",
            "It may have been altered or cut short. Use the link from the most recent email.",
            400,
        )

    # --- archive and feed ---------------------------------------------------------------------------------

    async def archive(self, request: Request) -> Response:
        editions = await self.site.call(published_editions)
        return self.site.page(
            request, "web/archive.html.j2", editions=[_archive_entry(edition) for edition in editions]
        )

    async def feed(self, request: Request) -> Response:
        # Atom wants absolute URLs: the feed links through base_url, whatever address it was fetched at.
        base = self.site.settings.web.base_url.rstrip("/")
        editions = await self.site.call(lambda db: published_editions(db, limit=FEED_ENTRIES))
        name = self.site.settings.name
        entries = [
            {
                "id": edition.id,
                "url": f"{base}/editions/{edition.id}",
                "title": f"{name}: {_title(edition)}",
                "updated": edition.created_at,
                "summary": _summary(edition),
            }
            for edition in editions
        ]
        updated = entries[0]["updated"] if entries else datetime.now(UTC).isoformat()
        xml = self.site.templates.get_template("web/feed.atom.j2").render(
            newsletter_name=name, base_url=base, entries=entries, updated=updated
        )
        return Response(xml, media_type="application/atom+xml; charset=utf-8")

    async def health(self, request: Request) -> Response:
        """For container health checks and monitors: the database answers."""
        await self.site.call(ping)
        return Response("ok\n", media_type="text/plain")

    async def edition(self, request: Request) -> Response:
        edition_id = int(request.path_params["edition_id"])
        try:
            edition = await self.site.call(lambda db: load_published_edition(db, edition_id))
        except EditionNotFound:
            # The same answer for an edition that is not public as for one that does not exist.
            return self.site.message(request, "No such edition", "There is no edition with this number.", 404)
        # Opened from a reader's email (?r=: the feedback token of their copy): each card has the two
        # feedback links. Any other token is ignored, and the page is the public one.
        token = request.query_params.get("r", "")
        if token and await feedback_reader(self.site, token, edition_id) is None:
            token = ""
        return edition_page(self.site, request, edition, feedback_token=token)


FEED_ENTRIES = 50
RECENT_EDITIONS = 3  # linked from the sign-up page


def edition_page(
    site: Site, request: Request, edition: Edition, *, preview: bool = False, feedback_token: str = ""
) -> Response:
    """An edition with every paper (a one-off: its message), as the archive shows it; with a reader's
    feedback token, each paper has its "More like this" and "Less like this" links."""
    if edition.kind == "one-off":
        return site.page(
            request,
            "web/edition.html.j2",
            title=edition.subject or "Message",
            subtitle=f"Sent {day(edition.created_at)}",
            sections=[],
            body_html=jinja2.utils.markupsafe.Markup(markdown_html(edition.body or "")),
            empty="",
            preview=preview,
            feedback=False,
        )
    sections = [
        {
            "label": s.label,
            "keywords": s.keywords[:5],
            "papers": [_card(site, p, feedback_token) for p in s.papers],
        }
        for s in edition.sections
    ]
    return site.page(
        request,
        "web/edition.html.j2",
        title=f"Edition {edition.id}",
        subtitle=f"{day_range(edition.window_start, edition.window_end)} · {_papers(edition.paper_count)}",
        sections=sections,
        body_html=None,
        empty=empty_notice((), edition.frequency),
        preview=preview,
        feedback=bool(feedback_token),
    )


def _card(site: Site, paper: EditionPaper, feedback_token: str) -> dict[str, object]:
    card = paper_view(paper)
    if feedback_token:
        card["more_url"] = site.page_links.feedback(feedback_token, paper.key, "more")
        card["less_url"] = site.page_links.feedback(feedback_token, paper.key, "less")
    return card


def _title(edition: PublishedEdition) -> str:
    if edition.kind == "one-off":
        return edition.subject or "Message"
    return f"{_papers(edition.paper_count)}, {day_range(edition.window_start, edition.window_end)}"


def _papers(count: int) -> str:
    return f"{count} paper{'s' if count != 1 else ''}"


def _summary(edition: PublishedEdition) -> str:
    if edition.kind == "one-off":
        return extract_summary(edition.body or "", max_chars=300)
    return "; ".join(f"{label} ({size})" for label, size in edition.sections)


def _archive_entry(edition: PublishedEdition) -> dict[str, Any]:
    return {
        "id": edition.id,
        "kind": edition.kind,
        "subject": edition.subject or "Message",
        "date": day(edition.created_at),
        "span": day_range(edition.window_start, edition.window_end),
        "end": day(edition.window_end),
        "papers": edition.paper_count,
        "topics": edition.topic_count,
        "frequency": edition.frequency,
    }
