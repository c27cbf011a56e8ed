"""The web app (Starlette): sign-up with double opt-in, preferences, unsubscribe, the archive and its
Atom feed for readers; subscribers, imports, editions and one-off messages for admins.

Pages are server-rendered with autoescaping and small CSS, usable on a phone. Every form carries a CSRF
token bound to the session; the admin pages need a login (scrypt password hash from the configuration);
sign-ups and logins are rate-limited; every response has security headers, and tokens in URLs never leak
through the Referer header.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from newsletter.config import Settings
from newsletter.web import admin, public
from newsletter.web.pages import Site
from newsletter.web.security import SecurityHeaders

STATIC_DIR = Path(__file__).resolve().parent / "static"


def serve(settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    """Run the web app in this process until SIGTERM or Ctrl-C (uvicorn handles both)."""
    import uvicorn

    uvicorn.run(
        create_app(settings),
        host=host or settings.web.host,
        port=port or settings.web.port,
        log_config=None,  # our handler: one format, secrets and link tokens redacted
        proxy_headers=True,
        forwarded_allow_ips=settings.web.trusted_proxies,
    )


def create_app(settings: Settings, *, send_signups: bool = True) -> Starlette:
    """``send_signups=False``: sign-up requests are recorded but their emails wait for another process."""
    site = Site(settings)
    readers = public.Public(site, send_signups=send_signups)
    admins = admin.Admin(site)
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
        Route("/healthz", readers.health),
        *admins.routes(),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    return Starlette(
        routes=routes,
        lifespan=readers.lifespan,
        exception_handlers={sqlite3.OperationalError: site.database_busy},
        middleware=[
            Middleware(SecurityHeaders),
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
