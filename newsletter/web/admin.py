"""Admin pages: login, subscribers (search, filter, pages, add, status, remove, CSV import), editions with
their delivery counts, test sends and one-off messages. Every page needs the admin session; every form
carries the session's CSRF token."""

from __future__ import annotations

import logging
import smtplib
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from math import ceil
from typing import Any
from urllib.parse import urlencode

import anyio.to_thread
import sqlite_utils
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from newsletter import outbox
from newsletter.bounces import BounceRow, list_bounces
from newsletter.dates import day, day_range
from newsletter.editions import EditionEntry, load_edition, public_among, recent_editions
from newsletter.erasure import forget_subscriber
from newsletter.errors import (
    DkimKeyError,
    EditionNotFound,
    SendError,
    SendInProgress,
    ServerUnavailable,
    SubscriberError,
)
from newsletter.ledger import delivery_summaries
from newsletter.subscribers import (
    STATUSES,
    Subscriber,
    add_subscriber,
    count_by_status,
    count_subscribers,
    get_subscriber,
    import_file,
    list_subscribers,
    set_status,
)
from newsletter.web.pages import Site
from newsletter.web.public import edition_page
from newsletter.web.security import RateLimiter, client_key, verify_password
from newsletter.web.sessions import close_session, open_session, password_fingerprint, session_valid

log = logging.getLogger(__name__)
PAGE_SIZE = 50
BOUNCE_HISTORY = 1000  # bounces shown for one page of readers, newest first
MAX_UPLOAD = 20_000_000
NO_PASSWORD = "No admin password is configured: run `newsletter admin-password`."

Handler = Callable[[Request], Awaitable[Response]]


class Admin:
    def __init__(self, site: Site) -> None:
        self.site = site
        self.logins = RateLimiter(limit=10, window=600)
        self.sends: dict[int, threading.Thread] = {}
        stored = site.settings.web.admin_password_hash
        # Sessions opened under another password hash than this one are over.
        self.fingerprint = password_fingerprint(stored) if stored else None

    def routes(self) -> list[Route]:
        return [
            Route("/admin/login", self.login_form, methods=["GET"]),
            Route("/admin/login", self.login, methods=["POST"]),
            Route("/admin/logout", self._guard(self.logout), methods=["POST"]),
            Route("/admin", self._guard(self.subscribers), methods=["GET"]),
            Route("/admin/subscribers", self._guard(self.subscribers), methods=["GET"]),
            Route("/admin/subscribers/add", self._guard(self.add), methods=["POST"]),
            Route(
                "/admin/subscribers/{subscriber_id:int}/status",
                self._guard(self.change_status),
                methods=["POST"],
            ),
            Route(
                "/admin/subscribers/{subscriber_id:int}/remove", self._guard(self.remove), methods=["POST"]
            ),
            Route("/admin/import", self._guard(self.import_form), methods=["GET"]),
            Route("/admin/import", self._guard(self.import_csv), methods=["POST"]),
            Route("/admin/editions", self._guard(self.editions), methods=["GET"]),
            Route("/admin/editions/{edition_id:int}", self._guard(self.edition), methods=["GET"]),
            Route("/admin/editions/{edition_id:int}/test", self._guard(self.test_send), methods=["POST"]),
            Route("/admin/send", self._guard(self.one_off_form), methods=["GET"]),
            Route("/admin/send", self._guard(self.one_off), methods=["POST"]),
        ]

    def _guard(self, handler: Handler) -> Handler:
        """Login required everywhere (an open session in the database, not only a signed cookie); a POST
        also needs the session's CSRF token."""

        async def guarded(request: Request) -> Response:
            if not await self._logged_in(request):
                request.session.pop("admin", None)
                return RedirectResponse("/admin/login", status_code=303)
            if request.method == "POST":
                form = await request.form(max_part_size=MAX_UPLOAD)
                if refused := self.site.refused_form(request, form):
                    return refused
            return await handler(request)

        return guarded

    async def _logged_in(self, request: Request) -> bool:
        session_id = request.session.get("admin")
        if not isinstance(session_id, str) or self.fingerprint is None:
            return False
        fingerprint = self.fingerprint
        return await self.site.call(lambda db: session_valid(db, session_id, fingerprint))

    # --- session ------------------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        return self._login_page(request)

    def _login_page(self, request: Request, status_code: int = 200, error: str = "") -> Response:
        # Without a configured password the page says so at once, before anyone types a password.
        configured = self.fingerprint is not None
        return self.site.page(
            request,
            "web/admin/login.html.j2",
            status_code,
            error=error or ("" if configured else NO_PASSWORD),
            configured=configured,
        )

    async def login(self, request: Request) -> Response:
        form = await request.form()
        if refused := self.site.refused_form(request, form):
            return refused
        client = client_key(request)
        if not self.logins.allow(client):
            response = self._login_page(request, 429, "Too many attempts; wait a few minutes.")
            response.headers["Retry-After"] = self.logins.retry_after_header(client)
            return response
        if self.fingerprint is None:  # no password is configured
            return self._login_page(request, 403)
        stored = self.site.settings.web.admin_password_hash
        password = str(form.get("password", ""))
        # scrypt takes tens of milliseconds of CPU on purpose: not on the event loop.
        if not await anyio.to_thread.run_sync(verify_password, password, stored):
            return self._login_page(request, 401, "Wrong password.")
        fingerprint, previous = self.fingerprint, request.session.get("admin")
        session_id = await self.site.call(
            lambda db: open_session(
                db, fingerprint, replacing=previous if isinstance(previous, str) else None
            )
        )
        request.session.clear()  # a fresh session (and CSRF token) after login
        request.session["admin"] = session_id
        return RedirectResponse("/admin/subscribers", status_code=303)

    async def logout(self, request: Request) -> Response:
        session_id = request.session.get("admin")
        if isinstance(session_id, str):
            await self.site.call(lambda db: close_session(db, session_id))
        request.session.clear()
        return RedirectResponse("/admin/login", status_code=303)

    # --- subscribers --------------------------------------------------------------------------------------

    async def subscribers(
        self, request: Request, *, notice: str = "", error: str = "", status_code: int = 200
    ) -> Response:
        query = request.query_params
        status = query.get("status") or None
        status = status if status in STATUSES else None
        search = (query.get("q") or "").strip() or None
        listing = await self.site.call(
            lambda db: subscriber_page(db, status=status, search=search, requested=query.get("page", ""))
        )
        page, pages = listing.page, listing.pages

        def link(number: int) -> str:
            params = {k: v for k, v in (("status", status), ("q", search), ("page", number)) if v}
            return "/admin/subscribers?" + urlencode(params)

        return self.site.page(
            request,
            "web/admin/subscribers.html.j2",
            status_code,
            subscribers=listing.rows,
            bounces=listing.bounces,
            total=listing.total,
            counts=listing.counts,
            statuses=STATUSES,
            status=status or "",
            q=search or "",
            page=page,
            pages=pages,
            previous=link(page - 1) if page > 1 else None,
            next=link(page + 1) if page < pages else None,
            notice=notice,
            error=error,
        )

    async def add(self, request: Request) -> Response:
        form = await request.form()
        email, name = str(form.get("email", "")), str(form.get("name", ""))
        try:
            result = await self.site.call(lambda db: add_subscriber(db, email, name, source="admin"))
        except SubscriberError as exc:
            return await self.subscribers(request, error=str(exc), status_code=400)
        notice = (
            f"Added {result.subscriber.email}."
            if result.created
            else f"{result.subscriber.email}: {result.note}."
        )
        return await self.subscribers(request, notice=notice)

    async def change_status(self, request: Request) -> Response:
        form = await request.form()
        status = str(form.get("status", ""))
        subscriber_id = request.path_params["subscriber_id"]

        def change(db: sqlite_utils.Database) -> Subscriber | None:
            if get_subscriber(db, subscriber_id) is None:
                return None
            return set_status(db, subscriber_id, status)

        try:
            subscriber = await self.site.call(change)
        except SubscriberError as exc:
            return await self.subscribers(request, error=str(exc), status_code=400)
        if subscriber is None:
            return await self.subscribers(request, error="No such subscriber.", status_code=404)
        return await self.subscribers(request, notice=f"{subscriber.email} is now {status}.")

    async def remove(self, request: Request) -> Response:
        subscriber_id = request.path_params["subscriber_id"]

        def remove(db: sqlite_utils.Database) -> Subscriber | None:
            subscriber = get_subscriber(db, subscriber_id)
            if subscriber is not None:
                forget_subscriber(db, subscriber.id)
            return subscriber

        subscriber = await self.site.call(remove)
        if subscriber is None:
            return await self.subscribers(request, error="No such subscriber.", status_code=404)
        return await self.subscribers(
            request, notice=f"Removed {subscriber.email} and their delivery records."
        )

    async def import_form(self, request: Request) -> Response:
        return self.site.page(request, "web/admin/import.html.j2", report=None, error="")

    async def import_csv(self, request: Request) -> Response:
        form = await request.form(max_part_size=MAX_UPLOAD)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return self.site.page(
                request, "web/admin/import.html.j2", 400, report=None, error="Choose a CSV file."
            )
        # Read from the spooled upload a line at a time, off the event loop; bad lines are in the report.
        report = await self.site.call(lambda db: import_file(db, upload.file))
        return self.site.page(
            request, "web/admin/import.html.j2", report=report, error="", filename=upload.filename or ""
        )

    # --- editions, test sends, one-off messages ---------------------------------------------------------------

    async def editions(
        self, request: Request, *, notice: str = "", error: str = "", status_code: int = 200
    ) -> Response:
        entries, summaries, public = await self.site.call(_editions_overview)
        editions = [
            {
                "id": entry.id,
                "kind": entry.kind,
                "status": entry.status,
                "created": f"{day(entry.created_at)} {entry.created_at[11:16]}",
                "title": entry.subject
                or f"{day_range(entry.window_start, entry.window_end)}, {entry.paper_count} papers",
                "sending": entry.id in self.sends and self.sends[entry.id].is_alive(),
                "public": entry.id in public,
                **summaries[entry.id],
            }
            for entry in entries
        ]
        return self.site.page(
            request, "web/admin/editions.html.j2", status_code, editions=editions, notice=notice, error=error
        )

    async def edition(self, request: Request) -> Response:
        """Any edition as the archive would show it, public or not (a digest before its send)."""
        edition_id = int(request.path_params["edition_id"])
        try:
            edition = await self.site.call(lambda db: load_edition(db, edition_id))
        except EditionNotFound:
            return self.site.message(request, "No such edition", "There is no edition with this number.", 404)
        return edition_page(self.site, request, edition, preview=True)

    async def test_send(self, request: Request) -> Response:
        form = await request.form()
        edition_id = request.path_params["edition_id"]
        address = str(form.get("email", ""))
        try:
            # SMTP (and rendering) in a worker thread: a slow relay holds up this request only.
            reply = await anyio.to_thread.run_sync(
                outbox.send_test_copy, self.site.settings, edition_id, address
            )
        except (SendError, DkimKeyError, ServerUnavailable, smtplib.SMTPException, OSError) as exc:
            return await self.editions(request, error=f"The test copy was not sent: {exc}", status_code=400)
        return await self.editions(
            request, notice=f"Test copy of edition {edition_id} sent to {address} ({reply})."
        )

    async def one_off_form(self, request: Request) -> Response:
        return self.site.page(request, "web/admin/send.html.j2", error="", form={})

    async def one_off(self, request: Request) -> Response:
        form = await request.form()
        values: dict[str, Any] = {k: str(form.get(k, "")) for k in ("subject", "body", "segment")}
        try:
            edition_id = await anyio.to_thread.run_sync(
                outbox.create_one_off,
                self.site.settings,
                values["subject"],
                values["body"],
                values["segment"].strip() or "all",
            )
        except SendError as exc:
            return self.site.page(request, "web/admin/send.html.j2", 400, error=str(exc), form=values)
        # The send runs beside the web app; the editions page shows its progress from the ledger.
        thread = threading.Thread(
            target=self._send, args=(edition_id,), name=f"send-{edition_id}", daemon=True
        )
        self.sends[edition_id] = thread
        thread.start()
        return await self.editions(request, notice=f"Message stored as edition {edition_id}; sending now.")

    def _send(self, edition_id: int) -> None:
        try:
            report = outbox.send_edition(self.site.settings, edition_id)
            if report.stopped:
                log.error("edition %s stopped: %s", edition_id, report.stopped)
        except (SendInProgress, SendError, DkimKeyError) as exc:
            log.error("edition %s was not sent: %s", edition_id, exc)
        except Exception:
            log.exception("sending edition %s failed", edition_id)


@dataclass(frozen=True, slots=True)
class SubscriberPage:
    rows: list[Subscriber]
    total: int
    counts: dict[str, int]
    page: int
    pages: int
    bounces: dict[int, list[BounceRow]]  # each listed reader's bounces and complaints, newest first


def subscriber_page(
    db: sqlite_utils.Database, *, status: str | None, search: str | None, requested: str
) -> SubscriberPage:
    """One page of the subscriber list, at the nearest page there is to the one ``requested``."""
    total = count_subscribers(db, status=status, search=search)
    pages = max(1, ceil(total / PAGE_SIZE))
    page = page_number(requested, pages)
    rows = list(
        list_subscribers(db, status=status, search=search, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    )
    history: dict[int, list[BounceRow]] = {}
    for bounce in list_bounces(db, subscriber_ids=[row.id for row in rows], limit=BOUNCE_HISTORY):
        if bounce.subscriber_id is not None:
            history.setdefault(bounce.subscriber_id, []).append(bounce)
    return SubscriberPage(rows, total, count_by_status(db), page, pages, history)


def page_number(requested: str, pages: int) -> int:
    """The page a ``?page=`` value asks for: past the end (however long the number) is the last page,
    anything that is not a number the first."""
    if not (requested.isascii() and requested.isdigit()):
        return 1
    digits = requested.lstrip("0")
    if len(digits) > len(str(pages)):
        return pages
    return min(max(int(digits or "0"), 1), pages)


def _editions_overview(
    db: sqlite_utils.Database,
) -> tuple[list[EditionEntry], dict[int, dict[str, int]], set[int]]:
    entries = recent_editions(db, limit=100)
    ids = [entry.id for entry in entries]
    return entries, delivery_summaries(db, ids), public_among(db, ids)
