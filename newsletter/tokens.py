"""Signed tokens for the links in every email (unsubscribe, preferences, confirmation, feedback).

A token names a subscriber and carries a short digest of their address, signed with the site's secret
(itsdangerous): a forged or altered token fails verification, and a token minted for an address no longer
matches once the address changes. Unsubscribe links never expire (old emails must keep working);
confirmation links do, and carry when they were issued (to the millisecond), so a link sent before the
reader unsubscribed cannot subscribe them again. A feedback token ("More like this" / "Less like this"
on a digest's cards) also names the edition it was sent with: one token per reader and edition, the
paper and the choice travel beside it in the URL. The secret comes from ``[web] secret_key`` / ``NEWSLETTER_WEB_SECRET_KEY``, or is
generated once and kept in the database.

The same secret signs the envelope sender of every delivery (VERP): ``bounces+<delivery ref>@domain``,
where the ref is the delivery's id and a MAC over it, in lower-case letters and digits only because some
servers change the case of an address's local part on the way back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import sqlite_utils
from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer

from newsletter.db import write_transaction
from newsletter.errors import InvalidToken

PURPOSES = ("unsubscribe", "preferences", "confirm", "feedback")
FEEDBACK_CHOICES = ("more", "less")


@dataclass(frozen=True, slots=True)
class TokenSubject:
    subscriber_id: int
    email_digest: str
    issued_at: datetime | None = None  # confirmation links only
    edition_id: int | None = None  # feedback links only

    def matches(self, email: str) -> bool:
        return secrets.compare_digest(self.email_digest, email_digest(email))


def email_digest(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()[:16]


class Tokens:
    def __init__(self, secret_key: str) -> None:
        if len(secret_key) < 16:
            raise ValueError("the secret key must be at least 16 characters")
        self._serializers = {
            purpose: URLSafeSerializer(secret_key, salt=purpose)
            for purpose in PURPOSES
            if purpose != "confirm"
        }
        self._timed = URLSafeTimedSerializer(secret_key, salt="confirm")
        self._bounce_key = hashlib.sha256(b"bounce-ref\0" + secret_key.encode("utf-8")).digest()

    def bounce_ref(self, delivery_id: int) -> str:
        """The signed reference to one delivery that its envelope sender carries: "<id in base 36>-<MAC>"."""
        if delivery_id < 0:
            raise ValueError("a delivery id is never negative")
        number = _base36(delivery_id)
        return f"{number}-{self._bounce_mac(number)}"

    def read_bounce_ref(self, ref: str) -> int | None:
        """The delivery a ref names; None for one this site did not sign (forged, truncated, mangled)."""
        match = _BOUNCE_REF.fullmatch(ref.strip().lower())
        if match is None:
            return None
        number, mac = match.groups()
        if not hmac.compare_digest(mac, self._bounce_mac(number)):
            return None
        return int(number, 36)

    def _bounce_mac(self, number: str) -> str:
        digest = hmac.new(self._bounce_key, number.encode("ascii"), hashlib.sha256).digest()
        return base64.b32encode(digest[:10]).decode("ascii").lower()  # 80 bits, 16 characters

    def make(self, purpose: str, subscriber_id: int, email: str, *, edition_id: int | None = None) -> str:
        payload: list[int | str] = [subscriber_id, email_digest(email)]
        if (purpose == "feedback") != (edition_id is not None):
            raise ValueError("a feedback token, and only a feedback token, names an edition")
        if edition_id is not None:
            payload.append(edition_id)
        if purpose == "confirm":
            # The signer's own timestamp has whole seconds; an unsubscribe and a new sign-up can fall in
            # the same second, so the moment of issue travels in the payload too.
            return self._timed.dumps([*payload, time.time_ns() // 1_000_000])
        return self._serializer(purpose).dumps(payload)

    def read(self, purpose: str, token: str, *, max_age: float | None = None) -> TokenSubject:
        issued_at: datetime | None = None
        edition_id: int | None = None
        try:
            if purpose == "confirm":
                payload, signed_at = self._timed.loads(token, max_age=max_age, return_timestamp=True)
                issued_at = signed_at.astimezone(UTC)
            else:
                payload = self._serializer(purpose).loads(token)
        except SignatureExpired:
            raise InvalidToken("this link has expired") from None
        except BadSignature:
            raise InvalidToken("this link is not valid") from None
        if (
            not isinstance(payload, list)
            or len(payload) not in {"confirm": (2, 3), "feedback": (3,)}.get(purpose, (2,))
            or not isinstance(payload[0], int)
            or not isinstance(payload[1], str)
            or (len(payload) == 3 and not isinstance(payload[2], int))
        ):
            raise InvalidToken("this link is not valid")
        if purpose == "feedback":
            edition_id = payload[2]
        elif len(payload) == 3:  # links issued before the payload carried it have the signer's second
            issued_at = datetime.fromtimestamp(payload[2] / 1000, UTC)
        return TokenSubject(payload[0], payload[1], issued_at, edition_id)

    def _serializer(self, purpose: str) -> URLSafeSerializer:
        if purpose not in self._serializers:
            raise ValueError(f"unknown token purpose {purpose!r}")
        return self._serializers[purpose]


_BOUNCE_REF = re.compile(r"([0-9a-z]{1,13})-([a-z2-7]{16})")


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = digits[digit] + text
        if not number:
            return text


class ReturnPaths:
    """The envelope sender of each message, where its bounces go: ``bounces+<ref>@domain`` for a delivery
    when VERP is on, the bounce address itself (or the from address) otherwise."""

    def __init__(self, tokens: Tokens, envelope_from: str, *, bounce_address: str | None, verp: bool) -> None:
        self.tokens = tokens
        self.plain = bounce_address or envelope_from
        self._verp = bool(bounce_address) and verp
        local, _, self._domain = self.plain.rpartition("@")
        self._prefix = f"{local}+"

    def for_delivery(self, delivery_id: int) -> str:
        if not self._verp:
            return self.plain
        return f"{self._prefix}{self.tokens.bounce_ref(delivery_id)}@{self._domain}"

    def delivery_of(self, address: str) -> int | None:
        """The delivery whose envelope sender ``address`` is (any case, with or without angle brackets);
        None when it is not one of ours or its signature does not hold."""
        local, at, domain = address.strip().strip("<>").rpartition("@")
        if (
            not at
            or domain.lower() != self._domain.lower()
            or not local.lower().startswith(self._prefix.lower())
        ):
            return None
        return self.tokens.read_bounce_ref(local[len(self._prefix) :])


def site_secret(db: sqlite_utils.Database, configured: str | None) -> str:
    """The configured secret, else the one generated for this database on first use."""
    if configured:
        return configured
    row = db.execute("SELECT value FROM app_secrets WHERE name = 'secret_key'").fetchone()
    if row:
        return str(row[0])
    with write_transaction(db):
        db.conn.execute(
            "INSERT INTO app_secrets (name, value) VALUES ('secret_key', ?) ON CONFLICT (name) DO NOTHING",
            [secrets.token_urlsafe(32)],
        )
    return str(db.execute("SELECT value FROM app_secrets WHERE name = 'secret_key'").fetchone()[0])


class Links:
    """The signed links of one subscriber's email: preferences, unsubscribe, confirmation."""

    def __init__(self, base_url: str, tokens: Tokens) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens = tokens

    def unsubscribe(self, subscriber_id: int, email: str) -> str:
        return f"{self.base_url}/unsubscribe/{self.tokens.make('unsubscribe', subscriber_id, email)}"

    def preferences(self, subscriber_id: int, email: str) -> str:
        return f"{self.base_url}/preferences/{self.tokens.make('preferences', subscriber_id, email)}"

    def confirm(self, subscriber_id: int, email: str) -> str:
        return f"{self.base_url}/confirm/{self.tokens.make('confirm', subscriber_id, email)}"

    def feedback_token(self, subscriber_id: int, email: str, edition_id: int) -> str:
        """The token of every feedback link in one reader's copy of one edition."""
        return self.tokens.make("feedback", subscriber_id, email, edition_id=edition_id)

    def feedback(self, token: str, paper_key: str, choice: str) -> str:
        """The landing page of "More like this" (``choice`` "more") or "Less like this" ("less") for a
        paper; opening it records nothing, its button does."""
        return f"{self.feedback_prefix(token)}{feedback_path(paper_key, choice)}"

    def feedback_prefix(self, token: str) -> str:
        return f"{self.base_url}/feedback/{token}/"


def feedback_path(paper_key: str, choice: str) -> str:
    """What follows the token in a feedback link: the choice, then the paper's key (which may hold a
    slash, a DOI's: the route takes the rest of the path)."""
    if choice not in FEEDBACK_CHOICES:
        raise ValueError(f"unknown feedback choice {choice!r}")
    return f"{choice}/{quote(paper_key, safe=':/')}"
