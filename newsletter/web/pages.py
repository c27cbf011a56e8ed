"""What every page shares: templates, the database, tokens, topic choices."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anyio.to_thread
import jinja2
import sqlite_utils
from starlette.requests import Request
from starlette.responses import HTMLResponse

from newsletter.dates import day
from newsletter.db import check_writable, open_database
from newsletter.errors import InvalidToken
from newsletter.preferences import CATEGORY_NAMES
from newsletter.render import templates_dir
from newsletter.settings import Settings
from newsletter.store import common_categories
from newsletter.subscribers import Subscriber, get_subscriber
from newsletter.taxonomy import is_category
from newsletter.tokens import Links, Tokens, TokenSubject, site_secret
from newsletter.web.security import csrf_token, csrf_valid

T = TypeVar("T")
# What a page that found the database locked past the busy timeout asks the client to wait.
BUSY_RETRY_AFTER = 30
# Worker threads for database work: enough that a request waiting on a locked database (up to the busy
# timeout) leaves room for the others, few enough to bound the connections a flood can open.
DATABASE_THREADS = 16


class Site:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(templates_dir()),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["day"] = day  # every date a page shows: "1 Dec 2026"
        check_writable(settings.database)  # a web app that cannot write would fail every sign-up
        with self.database() as db:
            self.secret = site_secret(db, settings.web.secret_key)
        self.tokens = Tokens(self.secret)
        self.links = Links(settings.web.base_url, self.tokens)  # for emails: absolute, through base_url
        # For links between the site's own pages: root-relative, so they work at whatever address and port
        # the page was served from.
        self.page_links = Links("", self.tokens)
        self._database_threads = anyio.CapacityLimiter(DATABASE_THREADS)

    async def call(self, work: Callable[[sqlite_utils.Database], T]) -> T:
        """``work(db)`` in a worker thread with its own connection: a busy lock or a slow disk holds up
        that request only, never the event loop that serves every other one."""

        def run() -> T:
            with self.database() as db:
                return work(db)

        return await anyio.to_thread.run_sync(run, limiter=self._database_threads)

    @contextmanager
    def database(self) -> Iterator[sqlite_utils.Database]:
        db = open_database(self.settings.database)
        try:
            yield db
        finally:
            db.close()

    def page(self, request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(template).render(
            newsletter_name=self.settings.name,
            csrf=csrf_token(request),
            admin=bool(request.session.get("admin")),
            **context,
        )
        return HTMLResponse(html, status_code=status_code)

    def message(self, request: Request, heading: str, text: str, status_code: int = 200) -> HTMLResponse:
        return self.page(request, "web/message.html.j2", status_code, heading=heading, text=text)

    def refused_form(self, request: Request, form: Any) -> HTMLResponse | None:
        """A 403 page for a form without this session's CSRF token (an old page, or another site's form)."""
        if csrf_valid(request, form.get("csrf")):
            return None
        return self.message(
            request, "Please reload the page", "The form has expired or is missing its security token.", 403
        )

    async def database_busy(self, request: Request, exc: Exception) -> HTMLResponse:
        """The answer for a database locked longer than the busy timeout (another process writing at
        length): a 503 that says when to come back. Any other database error stays a server error."""
        if not database_locked(exc):
            raise exc
        response = self.message(
            request, "Busy, please try again", "The site is busy just now. Please try again in a minute.", 503
        )
        response.headers["Retry-After"] = str(BUSY_RETRY_AFTER)
        return response

    async def subscriber_for(
        self, purpose: str, token: str, *, max_age: float | None = None
    ) -> Subscriber | None:
        """The subscriber a signed link names, or None when the link is forged, altered or stale."""
        found = await self.link_target(purpose, token, max_age=max_age)
        return found[1] if found else None

    async def link_target(
        self, purpose: str, token: str, *, max_age: float | None = None
    ) -> tuple[TokenSubject, Subscriber] | None:
        """What a signed link says (with when it was issued) and the subscriber it names, or None."""
        try:
            subject = self.tokens.read(purpose, token, max_age=max_age)
        except InvalidToken:
            return None
        subscriber = await self.call(lambda db: get_subscriber(db, subject.subscriber_id))
        if subscriber is None or not subject.matches(subscriber.email):
            return None
        return subject, subscriber

    def topic_choices(self, db: sqlite_utils.Database, chosen: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Categories to offer: those the sources follow, those common in recent papers, the reader's own."""
        offered: list[str] = []
        for source in self.settings.sources:
            offered += [c for c in source.categories if c not in offered]
        since = datetime.now(UTC) - timedelta(days=60)
        for category, _papers in common_categories(db, limit=30, seen_since=since):
            if category not in offered:
                offered.append(category)
        offered += [c for c in chosen if c not in offered]
        offered = [c for c in offered if is_category(c)]  # only what the form would accept back
        return [
            {"value": c, "label": CATEGORY_NAMES.get(c, c), "checked": c in chosen}
            for c in sorted(offered, key=lambda c: (c.split(".")[0], c))
        ]


def database_locked(error: BaseException) -> bool:
    """SQLite gave up waiting for a lock: its result code is BUSY or LOCKED (with any extended code), the
    rule the command line's error lines follow too (newsletter/trouble.py), not words in the message."""
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def mask_email(email: str) -> str:
    """Enough of the address to recognise it, not enough to harvest it from a forwarded link."""
    local, _, domain = email.partition("@")
    return f"{local[:2]}{'•' * max(1, len(local) - 2)}@{domain}"
