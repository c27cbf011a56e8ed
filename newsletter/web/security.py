"""What keeps the web app safe: security headers, request body caps, redirects that stay on the site, CSRF
tokens, rate limits, admin passwords."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' https: data:; style-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


class SecurityHeaders:
    """Adds the security headers to every response (pages carry tokens in their URLs: no Referer)."""

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


# --- request bodies -------------------------------------------------------------------------------------------


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuses a request body larger than its path allows (``limit_for(path)`` bytes) with 413, before any
    handler reads it: at once when Content-Length says so, else as soon as the streamed bytes pass the cap.
    Form parsing spools file parts to disk, so the cap must act before it, whoever sends the form.

    A client that goes away while its body is read (or that the server cuts off for sending it too slowly)
    has nobody left to answer; that ends the request quietly instead of as an error with a traceback."""

    def __init__(
        self,
        app: ASGIApp,
        limit_for: Callable[[str], int],
        explain: Callable[[str, int], str | None] | None = None,
    ) -> None:
        self.app = app
        self.limit_for = limit_for
        self.explain = explain  # a path's own words for the refusal, if it has any

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await self._too_large(limit, scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def noted_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, noted_send)
        except _BodyTooLarge:
            if not started:
                await self._too_large(limit, scope, receive, send)
        except ClientDisconnect:
            pass

    async def _too_large(self, limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        explained = self.explain(scope["path"], limit) if self.explain else None
        # Connection: close, so that the server stops reading the rest of the body instead of draining it.
        response = PlainTextResponse(
            (explained or f"The request is too large: at most {limit:,} bytes here.") + "\n",
            status_code=413,
            headers={"connection": "close"},
        )
        await response(scope, receive, send)


# --- redirects ------------------------------------------------------------------------------------------------


class SlashRedirect:
    """Redirects ``/editions/`` to ``/editions`` (and ``/static`` to ``/static/``) when only the other
    spelling has a route, with a relative Location. Starlette's own redirect builds an absolute URL from
    the request's Host header, which any client can set: ``Host: evil.example`` would send the reader
    there. Everything else goes to ``fallback`` (the 404)."""

    def __init__(self, routes: Sequence[BaseRoute], fallback: ASGIApp) -> None:
        self.routes = routes
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if scope["type"] == "http" and path != "/":
            other = path.rstrip("/") if path.endswith("/") else path + "/"
            # A Location starting "//host" or "/\host" would take the browser to another site.
            if other[1:2] not in ("", "/", "\\") and self._routed({**scope, "path": other}):
                query = scope.get("query_string", b"").decode("latin-1")
                location = other + (f"?{query}" if query else "")
                await RedirectResponse(location, status_code=307)(scope, receive, send)
                return
        await self.fallback(scope, receive, send)

    def _routed(self, scope: Scope) -> bool:
        return any(route.matches(scope)[0] is not Match.NONE for route in self.routes)


# --- CSRF -------------------------------------------------------------------------------------------------------


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use; every form carries it in a hidden field."""
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return str(token)


def csrf_valid(request: Request, submitted: object) -> bool:
    expected = request.session.get("csrf")
    return bool(expected) and isinstance(submitted, str) and hmac.compare_digest(str(expected), submitted)


# --- rate limits ----------------------------------------------------------------------------------------------


class RateLimiter:
    """At most ``limit`` events per ``window`` seconds per key (a client address), in memory."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            events = self._events.setdefault(key, deque())
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now)
            if len(self._events) > 100_000:  # keep memory bounded under a flood of addresses
                self._events = {k: v for k, v in self._events.items() if v and v[-1] > now - self.window}
            return True

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may have another event; 0 when it may now (nothing is counted)."""
        now = time.monotonic()
        with self._lock:
            events = [t for t in self._events.get(key, ()) if t > now - self.window]
            if len(events) < self.limit:
                return 0.0
            return events[-self.limit] + self.window - now

    def retry_after_header(self, key: str) -> str:
        """``retry_after`` as a Retry-After header value: whole seconds, at least 1."""
        return str(max(1, math.ceil(self.retry_after(key))))

    def release(self, key: str) -> None:
        """Take back ``key``'s latest event (what it was counted for did not happen)."""
        with self._lock:
            events = self._events.get(key)
            if events:
                events.pop()


def client_key(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# --- admin passwords ------------------------------------------------------------------------------------------

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` (standard library scrypt, a random salt)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, **_SCRYPT)
    encode = base64.urlsafe_b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${encode(salt).decode()}${encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.urlsafe_b64decode(digest)
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.urlsafe_b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)
