"""The web app (Starlette): sign-up with double opt-in, preferences, unsubscribe, the archive and its
Atom feed, the landing pages of a digest's feedback links and the reader's papers for readers;
subscribers, imports, editions and one-off messages for admins; the relays' bounce and complaint webhooks.

Pages are server-rendered with autoescaping and small CSS, usable on a phone. Every form carries a CSRF
token bound to the session (the relays' webhooks, which no browser posts, check the relay's own signature
instead); the admin pages need a login (scrypt password hash from the configuration);
sign-ups and logins are rate-limited; every response has security headers, and tokens in URLs never leak
through the Referer header. Request bodies are capped by path before anything reads them, and the server
(newsletter/web/server.py) limits how long a request may take to arrive and how many connections one client
may hold.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from newsletter import logs
from newsletter.settings import Settings
from newsletter.web import admin, papers, public, webhooks
from newsletter.web.pages import Site
from newsletter.web.security import BodyLimit, SecurityHeaders, SlashRedirect
from newsletter.web.server import Listener, listen, port_mismatch, run

log = logging.getLogger(__name__)

__all__ = ["Listener", "create_app", "listen_for", "serve"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
# Request body caps: every public form and the login form are a few fields; the admin forms behind the
# session carry at most a one-off message's text; the CSV import and a reader's library file are the
# uploads.
FORM_BYTES = 64 * 1024
ADMIN_FORM_BYTES = 1024 * 1024
IMPORT_BYTES = admin.MAX_UPLOAD + 64 * 1024


def body_limit(path: str) -> int:
    """The largest request body a path takes. The admin paths' larger caps only matter to a logged-in
    admin: without the session a handler refuses before reading the body."""
    if path == "/admin/import":
        return IMPORT_BYTES
    if webhooks.is_webhook_path(path):
        return webhooks.BODY_BYTES
    if papers.is_add_path(path):
        return papers.ADD_BYTES
    if path.startswith("/admin/") and path != "/admin/login":
        return ADMIN_FORM_BYTES
    return FORM_BYTES


def listen_for(settings: Settings, *, host: str | None = None, port: int | None = None) -> Listener:
    """Bind the web app's address (``[web] host`` and ``port`` unless given); raises ServeError."""
    return listen(host or settings.web.host, port or settings.web.port)


def serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    listener: Listener | None = None,
) -> None:
    """Run the web app in this process until SIGTERM or Ctrl-C. Binds first (unless given a ``listener``):
    a taken port or a wrong address raises ServeError before anything else. Returns after SIGTERM, so that
    the caller can stop what it runs beside the web app."""
    listener = listener or listen_for(settings, host=host, port=port)
    try:
        app = create_app(settings)  # opens the database: a broken one stops here, before any warning
        if warning := port_mismatch(settings.web.base_url, listener.port):
            log.warning(warning)
        run(app, settings.web, listener)
    finally:
        listener.close()
        logs.report_left_out()


async def favicon(request: Request) -> Response:
    """Where browsers and feed readers look for the site's icon without asking the page."""
    return FileResponse(
        STATIC_DIR / "favicon.ico",
        media_type="image/x-icon",
        headers={"cache-control": "public, max-age=86400"},
    )


def create_app(settings: Settings, *, send_signups: bool = True) -> Starlette:
    """``send_signups=False``: sign-up requests are recorded but their emails wait for another process."""
    site = Site(settings)
    readers = public.Public(site, send_signups=send_signups)
    library = papers.Papers(site)
    admins = admin.Admin(site)
    relays = webhooks.Webhooks(site)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with readers.lifespan(app), library.lifespan(app):
            yield

    routes = [
        Route("/", readers.home),
        Route("/subscribe", readers.subscribe_form, methods=["GET"]),
        Route("/subscribe", readers.subscribe, methods=["POST"]),
        Route("/confirm/{token}", readers.confirm_page, methods=["GET"]),
        Route("/confirm/{token}", readers.confirm, methods=["POST"]),
        Route("/preferences/{token}", readers.preferences_page, methods=["GET"]),
        Route("/preferences/{token}", readers.save_preferences, methods=["POST"]),
        Route("/unsubscribe/{token}", readers.unsubscribe_page, methods=["GET"]),
        Route("/unsubscribe/{token}", readers.unsubscribe, methods=["POST"]),
        Route("/editions", readers.archive),
        Route("/editions.atom", readers.feed),
        Route("/editions/{edition_id:int}", readers.edition),
        *library.routes(),
        Route("/healthz", readers.health),
        Route("/favicon.ico", favicon),
        *admins.routes(),
        *relays.routes(),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={sqlite3.OperationalError: site.database_busy},
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(BodyLimit, limit_for=body_limit, explain=papers.too_large),
            Middleware(
                SessionMiddleware,
                secret_key=site.secret,
                session_cookie="newsletter_session",
                max_age=8 * 3600,
                same_site="lax",
                https_only=settings.web.base_url.startswith("https://"),
            ),
        ],
    )
    app.router.redirect_slashes = False  # SlashRedirect instead: a relative Location, never the Host header
    app.router.default = SlashRedirect(app.router.routes, fallback=app.router.not_found)
    return app
