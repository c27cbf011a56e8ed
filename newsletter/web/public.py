"""Pages for readers: subscribe, confirm, preferences, unsubscribe, the archive and its feed."""

from __future__ import annotations

import logging
import smtplib
from datetime import UTC, datetime
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import Response

from newsletter.deliver import ServerUnavailable
from newsletter.editions import (
    Edition,
    EditionNotFound,
    PublishedEdition,
    load_published_edition,
    published_editions,
)
from newsletter.outbox import CONFIRMATION_DAYS, send_signup_email
from newsletter.preferences import EMPTY_DIGEST, PreferenceError, Preferences, parse_list
from newsletter.render import markdown_html, paper_view
from newsletter.subscribers import (
    SubscriberError,
    confirm,
    confirmation_not_sent,
    request_subscription,
    set_preferences,
    set_status,
)
from newsletter.text import extract_summary
from newsletter.web.pages import Site, mask_email
from newsletter.web.security import RateLimiter, client_key

log = logging.getLogger(__name__)


class Public:
    def __init__(self, site: Site) -> None:
        self.site = site
        self.signups = RateLimiter(limit=5, window=600)

    # --- subscribe and confirm ---------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        return await self.subscribe_form(request)

    async def subscribe_form(self, request: Request) -> Response:
        return self._subscribe_page(request)

    def _subscribe_page(
        self, request: Request, *, error: str = "", form: dict[str, Any] | None = None, status_code: int = 200
    ) -> Response:
        form = form or {}
        chosen = tuple(form.get("categories", ()))
        with self.site.database() as db:
            choices = self.site.topic_choices(db, chosen)
            recent = db.execute(
                "SELECT id, window_end, paper_count FROM editions WHERE kind = 'digest' AND status != 'built' "
                "ORDER BY id DESC LIMIT 3"
            ).fetchall()
        return self.site.page(
            request,
            "web/subscribe.html.j2",
            status_code,
            choices=choices,
            error=error,
            form=form,
            daily=self.site.settings.digest.daily,
            recent=[{"id": r[0], "date": r[1][:10], "papers": r[2]} for r in recent],
        )

    async def subscribe(self, request: Request) -> Response:
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
        if not self.signups.allow(client_key(request)):
            return self.site.message(
                request, "Too many requests", "Please wait a few minutes before trying again.", 429
            )
        try:
            frequency = values["frequency"] if self.site.settings.digest.daily else "weekly"
            preferences = Preferences.create(values["categories"], parse_list(values["keywords"]), frequency)
            with self.site.database() as db:
                outcome = request_subscription(db, values["email"], values["name"], preferences)
        except (SubscriberError, PreferenceError) as exc:
            return self._subscribe_page(request, error=str(exc), form=values, status_code=400)
        if outcome.email and outcome.subscriber:
            try:
                send_signup_email(self.site.settings, outcome.subscriber, outcome.email)
            except (ServerUnavailable, smtplib.SMTPException, OSError) as exc:
                log.error("could not send the %s email: %s", outcome.email, exc)
                with self.site.database() as db:
                    confirmation_not_sent(db, outcome.subscriber.id)
                return self.site.message(
                    request,
                    "Please try again later",
                    "We could not send the confirmation email just now. Please try again in a few minutes.",
                    503,
                )
        # The same answer whatever the address's status: the form tells nobody who is subscribed.
        return self.site.message(
            request,
            "Check your inbox",
            f"If {values['email'].strip()} can receive {self.site.settings.name}, an email with a link is on "
            f"its way. The subscription starts when you open the link (valid for {CONFIRMATION_DAYS} days).",
        )

    async def confirm_page(self, request: Request) -> Response:
        subscriber = self._confirming(request)
        if subscriber is None:
            return self._stale_confirmation(request)
        if subscriber.status == "active":
            return self._confirmed(request, subscriber)
        return self.site.page(
            request, "web/confirm.html.j2", masked_email=mask_email(subscriber.email), action=request.url.path
        )

    async def confirm(self, request: Request) -> Response:
        # A button press, not the GET: mail scanners that open links must not confirm on the reader's behalf.
        form = await request.form()
        if refused := self.site.refused_form(request, form):
            return refused
        subscriber = self._confirming(request)
        if subscriber is None:
            return self._stale_confirmation(request)
        with self.site.database() as db:
            confirmed = confirm(db, subscriber.id)
        if confirmed is None or confirmed.status != "active":
            return self.site.message(
                request, "Not subscribed", "This address cannot receive our emails.", 400
            )
        return self._confirmed(request, confirmed)

    def _confirming(self, request: Request):  # type: ignore[no-untyped-def]
        return self.site.subscriber_for(
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

    # --- preferences and unsubscribe ----------------------------------------------------------------------

    async def preferences_page(self, request: Request) -> Response:
        subscriber = self.site.subscriber_for("preferences", request.path_params["token"])
        if subscriber is None:
            return self._invalid_link(request)
        return self._preferences(request, subscriber)

    def _preferences(
        self,
        request: Request,
        subscriber: Any,
        *,
        saved: bool = False,
        error: str = "",
        status_code: int = 200,
    ) -> Response:
        prefs = subscriber.preferences
        with self.site.database() as db:
            choices = self.site.topic_choices(db, prefs.categories)
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
        )

    async def save_preferences(self, request: Request) -> Response:
        form = await request.form()
        if refused := self.site.refused_form(request, form):
            return refused
        subscriber = self.site.subscriber_for("preferences", request.path_params["token"])
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
            return self._preferences(request, subscriber, error=str(exc), status_code=400)
        with self.site.database() as db:
            set_preferences(db, subscriber.id, preferences)
        subscriber.preferences = preferences
        return self._preferences(request, subscriber, saved=True)

    async def unsubscribe_page(self, request: Request) -> Response:
        subscriber = self.site.subscriber_for("unsubscribe", request.path_params["token"])
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
        subscriber = self.site.subscriber_for("unsubscribe", request.path_params["token"])
        if subscriber is None:
            return self._invalid_link(request)
        if subscriber.status in ("active", "pending"):
            with self.site.database() as db:
                set_status(db, subscriber.id, "unsubscribed")
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
        await self.site.call(lambda db: db.execute("SELECT 1").fetchone())
        return Response("ok\n", media_type="text/plain")

    async def edition(self, request: Request) -> Response:
        edition_id = int(request.path_params["edition_id"])
        try:
            edition = await self.site.call(lambda db: load_published_edition(db, edition_id))
        except EditionNotFound:
            # The same answer for an edition that is not public as for one that does not exist.
            return self.site.message(request, "No such edition", "There is no edition with this number.", 404)
        return edition_page(self.site, request, edition)


FEED_ENTRIES = 50


def edition_page(site: Site, request: Request, edition: Edition, *, preview: bool = False) -> Response:
    """An edition with every paper (a one-off: its message), as the archive shows it."""
    if edition.kind == "one-off":
        return site.page(
            request,
            "web/edition.html.j2",
            title=edition.subject or "Message",
            subtitle=f"Sent {edition.created_at:%d %B %Y}",
            sections=[],
            body_html=jinja2.utils.markupsafe.Markup(markdown_html(edition.body or "")),
            preview=preview,
        )
    sections = [
        {"label": s.label, "keywords": s.keywords[:5], "papers": [paper_view(p) for p in s.papers]}
        for s in edition.sections
    ]
    return site.page(
        request,
        "web/edition.html.j2",
        title=f"Edition {edition.id}",
        subtitle=f"{edition.window_start:%d %B %Y} – {edition.window_end:%d %B %Y} · {edition.paper_count} papers",
        sections=sections,
        body_html=None,
        preview=preview,
    )


def _title(edition: PublishedEdition) -> str:
    if edition.kind == "one-off":
        return edition.subject or "Message"
    return f"{edition.paper_count} papers, {edition.window_start[:10]} to {edition.window_end[:10]}"


def _summary(edition: PublishedEdition) -> str:
    if edition.kind == "one-off":
        return extract_summary(edition.body or "", max_chars=300)
    return "; ".join(f"{label} ({size})" for label, size in edition.sections)


def _archive_entry(edition: PublishedEdition) -> dict[str, Any]:
    return {
        "id": edition.id,
        "kind": edition.kind,
        "subject": edition.subject or "Message",
        "date": edition.created_at[:10],
        "start": edition.window_start[:10],
        "end": edition.window_end[:10],
        "papers": edition.paper_count,
        "topics": edition.topic_count,
        "frequency": edition.frequency,
    }
