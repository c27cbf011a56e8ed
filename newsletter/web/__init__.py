"""The web app (Starlette): the pages behind the links in every email.

- ``GET /unsubscribe/{token}`` shows what will happen; ``POST`` unsubscribes at once: the RFC 8058
  one-click request mail programs send, or the button on the page. No login, no redirect. A forged or
  altered token gets 400 and changes nothing.
- ``GET /editions/{id}``: an edition with every paper, which the digest links to for the papers it has no
  room for.

Pages are server-rendered, autoescaped, and sent with security headers; tokens in URLs never leak to
other sites through the Referer header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsletter.config import Settings
from newsletter.db import open_database
from newsletter.editions import EditionNotFound, load_edition
from newsletter.render import markdown_html, paper_view, templates_dir
from newsletter.subscribers import get_subscriber, set_status
from newsletter.tokens import InvalidToken, Tokens, site_secret

STATIC_DIR = Path(__file__).resolve().parent / "static"

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' https: data:; style-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class WebApp:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(templates_dir()),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        db = open_database(settings.database)
        try:
            self.tokens = Tokens(site_secret(db, settings.web.secret_key))
        finally:
            db.close()

    def page(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(template).render(newsletter_name=self.settings.name, **context)
        return HTMLResponse(html, status_code=status_code)

    def message(self, heading: str, text: str, status_code: int = 200) -> HTMLResponse:
        return self.page("web/message.html.j2", status_code, heading=heading, text=text)

    # --- unsubscribe ---------------------------------------------------------------------------------------

    async def unsubscribe_page(self, request: Request) -> Response:
        subscriber = self._subscriber_for(request.path_params["token"])
        if subscriber is None:
            return self._invalid_link()
        if subscriber.status != "active":
            return self.message("Unsubscribed", f"{_mask(subscriber.email)} receives nothing from us.")
        return self.page(
            "web/unsubscribe.html.j2",
            masked_email=_mask(subscriber.email),
            action=request.url.path,
        )

    async def unsubscribe(self, request: Request) -> Response:
        subscriber = self._subscriber_for(request.path_params["token"])
        if subscriber is None:
            return self._invalid_link()
        db = open_database(self.settings.database)
        try:
            if subscriber.status in ("active", "pending"):
                set_status(db, subscriber.id, "unsubscribed")
        finally:
            db.close()
        return self.message(
            "Unsubscribed",
            f"{_mask(subscriber.email)} will receive nothing more from {self.settings.name}.",
        )

    def _subscriber_for(self, token: str):  # type: ignore[no-untyped-def]
        try:
            subject = self.tokens.read("unsubscribe", token)
        except InvalidToken:
            return None
        db = open_database(self.settings.database)
        try:
            subscriber = get_subscriber(db, subject.subscriber_id)
        finally:
            db.close()
        if subscriber is None or not subject.matches(subscriber.email):
            return None
        return subscriber

    def _invalid_link(self) -> Response:
        return self.message(
            "This link is not valid",
            "It may have been altered or cut short. Use the link from the most recent email.",
            status_code=400,
        )

    # --- archive -------------------------------------------------------------------------------------------

    async def edition(self, request: Request) -> Response:
        db = open_database(self.settings.database)
        try:
            edition = load_edition(db, int(request.path_params["edition_id"]))
        except EditionNotFound:
            return self.message("No such edition", "There is no edition with this number.", status_code=404)
        finally:
            db.close()
        if edition.kind == "one-off":
            return self.page(
                "web/edition.html.j2",
                title=edition.subject or "Message",
                subtitle=f"Sent {edition.created_at:%d %B %Y}",
                sections=[],
                body_html=jinja2.utils.markupsafe.Markup(markdown_html(edition.body or "")),
            )
        sections = [
            {"label": s.label, "keywords": s.keywords[:5], "papers": [paper_view(p) for p in s.papers]}
            for s in edition.sections
        ]
        return self.page(
            "web/edition.html.j2",
            title=f"Edition {edition.id}",
            subtitle=f"{edition.window_start:%d %B %Y} – {edition.window_end:%d %B %Y} · "
            f"{edition.paper_count} papers",
            sections=sections,
            body_html=None,
        )

    async def home(self, request: Request) -> Response:
        return self.message(self.settings.name, "A digest of new research papers, grouped by topic.")


def create_app(settings: Settings) -> Starlette:
    web = WebApp(settings)
    return Starlette(
        routes=[
            Route("/", web.home),
            Route("/unsubscribe/{token}", web.unsubscribe_page, methods=["GET"]),
            Route("/unsubscribe/{token}", web.unsubscribe, methods=["POST"]),
            Route("/editions/{edition_id:int}", web.edition),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=[Middleware(SecurityHeaders)],
    )


def _mask(email: str) -> str:
    """Enough of the address to recognise it, not enough to harvest it from a forwarded link."""
    local, _, domain = email.partition("@")
    return f"{local[:2]}{'•' * max(1, len(local) - 2)}@{domain}"
