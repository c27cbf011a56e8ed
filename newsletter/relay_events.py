"""Bounces and complaints a relay reports over a webhook: each request's authentication checked by the
provider's own scheme, its body read into ``BounceEvent``s.

- Amazon SES through SNS: the message signature (SignatureVersion 1, SHA1withRSA, or 2, SHA256withRSA)
  with the certificate at SigningCertURL, fetched only over https from sns.<region>.amazonaws.com (or a
  host ``[webhooks] ses_certificate_hosts`` adds) and kept; the TopicArn must be one of
  ``ses_topic_arns``. A SubscriptionConfirmation is confirmed by fetching its SubscribeURL under the same
  rules, once its signature holds. Raw message delivery is not signed, so it is refused.
- Mailgun: HMAC-SHA256 of timestamp and token with the signing key, the timestamp within the replay window,
  each token taken once.
- SendGrid: the ECDSA P-256 signature over timestamp and body, the timestamp within the replay window.
- Postmark: HTTP basic auth.

Everything in a body is data: addresses, ids and diagnostics are checked, cut to size and kept on one line;
an event of another kind (delivered, opened...) yields nothing. A request that fails any check raises
``Refused`` with the status to answer and a reason that names no secret. The same event sent again yields
the same ``BounceEvent`` (same source and source_id), which taking it counts once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from newsletter.models import BounceEvent
from newsletter.settings import WebhooksSettings

PROVIDERS = ("ses", "postmark", "mailgun", "sendgrid")
MAX_BODY = 1_000_000  # bytes of one webhook request
MAX_EVENTS = 5000  # events read from one body (SendGrid batches them)
MAX_ADDRESSES = 50  # readers named by one event
CERT_BYTES = 64 * 1024  # an SNS signing certificate is about 2 KB
FETCH_TIMEOUT = 5.0  # seconds for each connect / read of a certificate or a subscription confirmation
CACHED_CERTS = 32
# SNS retries a notification with its original timestamp for up to an hour (its longest delivery policy).
SNS_MAX_AGE = 3600.0
AWS_CERT_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
_SNS_CONFIRMATION = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
SNS_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": _SNS_CONFIRMATION,
    "UnsubscribeConfirmation": _SNS_CONFIRMATION,
}
SNS_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}

SES_BOUNCE_KINDS = {"Permanent": "hard", "Transient": "soft", "Undetermined": "unknown"}
POSTMARK_KINDS = {
    "HardBounce": "hard",
    "BadEmailAddress": "hard",
    "SoftBounce": "soft",
    "Transient": "soft",
    "DnsError": "soft",
    "SpamNotification": "soft",
    "VirusNotification": "soft",
    "Blocked": "soft",
    "DMARCPolicy": "soft",
    "AutoResponder": "auto_reply",
    "AddressChange": "auto_reply",
    "ChallengeVerification": "auto_reply",
    "SpamComplaint": "complaint",
}
POSTMARK_RECORDS = ("Bounce", "SpamComplaint")
SENDGRID_DROPPED = {"Bounced Address": "hard", "Invalid": "hard", "Spam Reporting Address": "complaint"}

_STATUS = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}")
_MESSAGE_ID = re.compile(r"<[!-;=?-~]{1,900}>")  # printable ASCII without spaces, "<" or ">"
_ADDRESS = re.compile(r"[^\s<>@\"(),;:\\]{1,64}@[A-Za-z0-9.-]{1,255}")
_SPACES = re.compile(r"[\s\x00-\x1f\x7f]+")


class Refused(Exception):
    """A request that is not the provider's, or not readable: ``status`` is the answer (400, 401, 403,
    502), ``reason`` one line that says why and names no secret."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Received:
    """What one verified request holds: its bounce and complaint events, how many other events (delivered,
    opened...) it carried, and what else it did ("subscription confirmed")."""

    provider: str
    events: tuple[BounceEvent, ...] = ()
    ignored: int = 0
    note: str = ""
    replay_key: str | None = None  # the Mailgun token it used up (``RelayEvents.release`` gives it back)


class RelayEvents:
    """Verifies and reads the webhook requests of the relays ``settings`` configures. Safe to share between
    threads; ``read`` may block on a certificate fetch (seconds at most): call it off the event loop."""

    def __init__(self, settings: WebhooksSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self._lock = threading.Lock()
        self._certs: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()
        self._tokens: dict[str, float] = {}  # Mailgun tokens taken, until they are out of the window
        self._sendgrid_key: ec.EllipticCurvePublicKey | None = None
        if settings.sendgrid_public_key:
            key = load_der_public_key(base64.b64decode(settings.sendgrid_public_key))
            if not isinstance(key, ec.EllipticCurvePublicKey):  # [webhooks] was checked when it was read
                raise ValueError("the SendGrid key is not an ECDSA key")
            self._sendgrid_key = key

    def configured(self, provider: str) -> bool:
        return self.settings.configured(provider)

    def read(self, provider: str, headers: Mapping[str, str], body: bytes) -> Received:
        """The events of one request to /webhooks/<provider>, after checking it is the provider's; raises
        Refused. ``headers`` may be any mapping: names are compared without case."""
        if provider not in PROVIDERS or not self.configured(provider):
            raise Refused(404, f"no webhook for {provider!r} is configured")
        if len(body) > MAX_BODY:
            raise Refused(413, f"the body is over {MAX_BODY:,} bytes")
        lowered = {name.lower(): value for name, value in headers.items()}
        reader = {
            "ses": self._ses,
            "postmark": self._postmark,
            "mailgun": self._mailgun,
            "sendgrid": self._sendgrid,
        }
        return reader[provider](lowered, body)

    def release(self, received: Received) -> None:
        """Forget the replay key ``received`` used up, when taking its events failed and the provider will
        send it again."""
        if received.replay_key is not None:
            with self._lock:
                self._tokens.pop(received.replay_key, None)

    # --- Amazon SES through SNS -------------------------------------------------------------------------------

    def _ses(self, headers: Mapping[str, str], body: bytes) -> Received:
        if headers.get("x-amz-sns-rawdelivery", "").lower() == "true":
            raise Refused(403, "SNS raw message delivery is not signed: turn it off for this subscription")
        message = _json(body)
        if not isinstance(message, dict):
            raise Refused(400, "an SNS message is a JSON object")
        kind = message.get("Type")
        if not isinstance(kind, str) or kind not in SNS_SIGNED:
            raise Refused(400, f"not an SNS message type: {_text(kind, 40)!r}")
        required = [name for name in SNS_SIGNED[kind] if name != "Subject"]
        missing = [
            n
            for n in (*required, "SignatureVersion", "Signature", "SigningCertURL")
            if not _is_text(message.get(n))
        ]
        if missing:
            raise Refused(400, f"the SNS message has no {', '.join(missing)}")
        if message["TopicArn"] not in self.settings.ses_topic_arns:
            raise Refused(403, "the SNS topic is not one of [webhooks] ses_topic_arns")
        sent = _moment(message["Timestamp"])
        if sent is None:
            raise Refused(400, "the SNS message's Timestamp is not a time")
        age = self.clock() - sent.timestamp()
        if age > SNS_MAX_AGE or age < -self.settings.replay_window:
            raise Refused(403, "the SNS message's Timestamp is too far from now (a replay?)")
        self._verify_sns(message)
        if kind == "SubscriptionConfirmation":
            self._get(message["SubscribeURL"], "SubscribeURL")
            return Received("ses", note=f"subscription to {message['TopicArn']} confirmed")
        if kind == "UnsubscribeConfirmation":
            return Received("ses", note=f"unsubscribed from {message['TopicArn']}")
        try:
            notification = json.loads(message["Message"])
        except ValueError:
            notification = None
        event = _ses_event(notification, message["MessageId"]) if isinstance(notification, dict) else None
        return Received("ses", events=(event,) if event else (), ignored=0 if event else 1)

    def _verify_sns(self, message: Mapping[str, Any]) -> None:
        version = message["SignatureVersion"]
        if version not in SNS_HASHES:
            raise Refused(403, f"SNS SignatureVersion {_text(version, 10)!r} is not 1 or 2")
        try:
            signature = base64.b64decode(message["Signature"], validate=True)
        except (binascii.Error, ValueError):
            raise Refused(403, "the SNS Signature is not base64") from None
        signed = "".join(
            f"{name}\n{message[name]}\n"
            for name in SNS_SIGNED[message["Type"]]
            if message.get(name) is not None
        )
        key = self._certificate(message["SigningCertURL"])
        try:
            key.verify(signature, signed.encode("utf-8"), padding.PKCS1v15(), SNS_HASHES[version]())
        except InvalidSignature:
            raise Refused(403, "the SNS signature does not verify") from None

    def _certificate(self, url: str) -> rsa.RSAPublicKey:
        with self._lock:
            if url in self._certs:
                self._certs.move_to_end(url)
                return self._certs[url]
        pem = self._get(url, "SigningCertURL")
        try:
            certificate = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise Refused(403, "the SigningCertURL is not a PEM certificate") from None
        now = datetime.fromtimestamp(self.clock(), UTC)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise Refused(403, "the SNS signing certificate is not valid now")
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise Refused(403, "the SNS signing certificate's key is not RSA")
        with self._lock:
            self._certs[url] = key
            while len(self._certs) > CACHED_CERTS:
                self._certs.popitem(last=False)
        return key

    def allowed_url(self, url: str) -> bool:
        """Whether ``url`` may be fetched for SNS: https, no user name, and a host of AWS's SNS or one that
        [webhooks] ses_certificate_hosts names (with its port, if it gives one; else 443)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        host = (parts.hostname or "").lower()
        if parts.scheme != "https" or not host or parts.username is not None or parts.password is not None:
            return False
        if AWS_CERT_HOST.fullmatch(host) and port in (None, 443):
            return True
        where = f"{host}:{port}" if port is not None else host
        return where in self.settings.ses_certificate_hosts or (
            port in (None, 443) and host in self.settings.ses_certificate_hosts
        )

    def _get(self, url: str, what: str) -> bytes:
        """The body of a GET of ``url`` (at most CERT_BYTES), if it is an allowed SNS address."""
        if not self.allowed_url(url):
            raise Refused(
                403, f"the {what} is not https on an allowed host ([webhooks] ses_certificate_hosts)"
            )
        verify: ssl.SSLContext | bool = True
        if self.settings.ses_ca_file:
            verify = ssl.create_default_context(cafile=self.settings.ses_ca_file)
        try:
            with (
                httpx.Client(verify=verify, timeout=FETCH_TIMEOUT, follow_redirects=False) as client,
                client.stream("GET", url) as response,
            ):
                if response.status_code != 200:
                    raise Refused(502, f"the {what} answered {response.status_code}")
                data = b""
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > CERT_BYTES:
                        raise Refused(502, f"the {what} sent more than {CERT_BYTES:,} bytes")
                return data
        except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
            raise Refused(502, f"could not fetch the {what}: {type(exc).__name__}") from None

    # --- Postmark -----------------------------------------------------------------------------------------------

    def _postmark(self, headers: Mapping[str, str], body: bytes) -> Received:
        scheme, _, encoded = headers.get("authorization", "").partition(" ")
        try:
            user, _, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            user = password = b""
        expected_user = self.settings.postmark_username.encode("utf-8")
        expected_password = self.settings.postmark_password.encode("utf-8")
        same_user = hmac.compare_digest(user, expected_user)
        same_password = hmac.compare_digest(password, expected_password)
        if scheme.lower() != "basic" or not (same_user & same_password):
            raise Refused(401, "the basic-auth user name or password is wrong")
        record = _json(body)
        if not isinstance(record, dict):
            raise Refused(400, "a Postmark webhook body is a JSON object")
        if record.get("RecordType") not in POSTMARK_RECORDS:
            return Received("postmark", ignored=1)
        source_id = _identifier(record.get("ID"))
        if source_id is None:
            raise Refused(400, "the Postmark record has no ID")
        kind_name = "SpamComplaint" if record["RecordType"] == "SpamComplaint" else record.get("Type")
        event = BounceEvent(
            source="postmark",
            source_id=source_id,
            kind=_lookup(POSTMARK_KINDS, kind_name),
            addresses=_addresses([record.get("Email")]),
            status=_status(record.get("Details")) or _text(kind_name, 40),
            detail=_text(record.get("Description") or record.get("Details")),
            occurred_at=_moment(record.get("BouncedAt")),
        )
        return Received("postmark", events=(event,))

    # --- Mailgun ------------------------------------------------------------------------------------------------

    def _mailgun(self, headers: Mapping[str, str], body: bytes) -> Received:
        payload = _json(body)
        signature = payload.get("signature") if isinstance(payload, dict) else None
        if not isinstance(signature, dict):
            raise Refused(400, "a Mailgun webhook body is a JSON object with a signature")
        timestamp, token, digest = (signature.get(name) for name in ("timestamp", "token", "signature"))
        timestamp = (
            str(timestamp) if isinstance(timestamp, int) and not isinstance(timestamp, bool) else timestamp
        )
        if not (_is_text(timestamp) and _is_text(token) and _is_text(digest)):
            raise Refused(403, "the Mailgun signature is incomplete")
        expected = hmac.new(
            self.settings.mailgun_signing_key.encode("utf-8"), f"{timestamp}{token}".encode(), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected.encode(), digest.strip().lower().encode("utf-8", "replace")):
            raise Refused(403, "the Mailgun signature does not verify")
        self._within_window(timestamp, "Mailgun")
        self._use_token(token)
        data = payload.get("event-data")
        if not isinstance(data, dict):
            return Received("mailgun", ignored=1, replay_key=token)
        event = _mailgun_event(data)
        return Received(
            "mailgun", events=(event,) if event else (), ignored=0 if event else 1, replay_key=token
        )

    def _use_token(self, token: str) -> None:
        now = self.clock()
        with self._lock:
            if token in self._tokens:
                raise Refused(403, "this Mailgun token was used before (a replay)")
            if len(self._tokens) > 10_000:
                self._tokens = {t: until for t, until in self._tokens.items() if until > now}
            # Kept past both edges of the window: a timestamp may be up to a window ahead of now.
            self._tokens[token] = now + 2 * self.settings.replay_window

    def _within_window(self, timestamp: str, who: str) -> None:
        try:
            signed_at = float(timestamp)
        except ValueError:
            raise Refused(403, f"the {who} timestamp is not a number") from None
        if not math.isfinite(signed_at) or abs(self.clock() - signed_at) > self.settings.replay_window:
            raise Refused(403, f"the {who} timestamp is outside the replay window ([webhooks] replay_window)")

    # --- SendGrid -----------------------------------------------------------------------------------------------

    def _sendgrid(self, headers: Mapping[str, str], body: bytes) -> Received:
        signature = headers.get("x-twilio-email-event-webhook-signature", "")
        timestamp = headers.get("x-twilio-email-event-webhook-timestamp", "")
        if not signature or not timestamp:
            raise Refused(403, "the SendGrid signature headers are missing")
        try:
            der = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise Refused(403, "the SendGrid signature is not base64") from None
        assert self._sendgrid_key is not None  # configured() said so
        try:
            self._sendgrid_key.verify(der, timestamp.encode("utf-8") + body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            raise Refused(403, "the SendGrid signature does not verify") from None
        self._within_window(timestamp, "SendGrid")
        records = _json(body)
        if not isinstance(records, list):
            raise Refused(400, "a SendGrid webhook body is a JSON array of events")
        events = []
        ignored = 0
        for record in records[:MAX_EVENTS]:
            event = _sendgrid_event(record) if isinstance(record, dict) else None
            if event is None:
                ignored += 1
            else:
                events.append(event)
        return Received("sendgrid", events=tuple(events), ignored=ignored + max(0, len(records) - MAX_EVENTS))


# --- reading events -----------------------------------------------------------------------------------------------


def _ses_event(notification: Mapping[str, Any], message_id: str) -> BounceEvent | None:
    """A bounce or complaint of SES (a notification, or an event of a configuration set's event
    destination); None for deliveries and anything else."""
    kind_name = notification.get("notificationType") or notification.get("eventType")
    mail = notification.get("mail") if isinstance(notification.get("mail"), dict) else {}
    if kind_name == "Bounce" and isinstance(notification.get("bounce"), dict):
        report = notification["bounce"]
        recipients = _records(report.get("bouncedRecipients"))
        first = recipients[0] if recipients else {}
        kind = _lookup(SES_BOUNCE_KINDS, report.get("bounceType"))
        status = _status(first.get("status"))
        detail = _text(first.get("diagnosticCode")) or _text(
            f"{_text(report.get('bounceType'), 40)} {_text(report.get('bounceSubType'), 40)}"
        )
    elif kind_name == "Complaint" and isinstance(notification.get("complaint"), dict):
        report = notification["complaint"]
        recipients = _records(report.get("complainedRecipients"))
        kind, status = "complaint", ""
        detail = _text(report.get("complaintFeedbackType") or report.get("complaintSubType") or "complaint")
    else:
        return None
    return BounceEvent(
        source="ses",
        source_id=_identifier(report.get("feedbackId")) or _identifier(message_id) or "",
        kind=kind,
        addresses=_addresses([r.get("emailAddress") for r in recipients]),
        message_id=_ses_message_id(mail),
        status=status,
        detail=detail,
        occurred_at=_moment(report.get("timestamp")),
    )


def _ses_message_id(mail: Mapping[str, Any]) -> str | None:
    """Our Message-ID header, which SES includes with the headers (its own ``messageId`` is another id)."""
    common = mail.get("commonHeaders")
    if isinstance(common, dict) and (found := _message_id(common.get("messageId"))):
        return found
    for header in _records(mail.get("headers")):
        name = header.get("name")
        if isinstance(name, str) and name.lower() == "message-id":
            return _message_id(header.get("value"))
    return None


def _mailgun_event(data: Mapping[str, Any]) -> BounceEvent | None:
    name = data.get("event")
    if name == "failed":
        kind = _lookup({"permanent": "hard", "temporary": "soft"}, data.get("severity"))
    elif name == "complained":
        kind = "complaint"
    else:
        return None
    source_id = _identifier(data.get("id"))
    if source_id is None:
        raise Refused(400, "the Mailgun event has no id")
    status = data.get("delivery-status") if isinstance(data.get("delivery-status"), dict) else {}
    message = data.get("message") if isinstance(data.get("message"), dict) else {}
    message_headers = message.get("headers") if isinstance(message.get("headers"), dict) else {}
    code = status.get("code")
    return BounceEvent(
        source="mailgun",
        source_id=source_id,
        kind=kind,
        addresses=_addresses([data.get("recipient")]),
        message_id=_message_id(message_headers.get("message-id")),
        status=_status(status.get("enhanced-code"))
        or _status(status.get("message"))
        or (str(code) if isinstance(code, int) and not isinstance(code, bool) else ""),
        detail=_text(status.get("message") or status.get("description") or data.get("reason")),
        occurred_at=_moment(data.get("timestamp")),
    )


def _sendgrid_event(record: Mapping[str, Any]) -> BounceEvent | None:
    name = record.get("event")
    if name == "bounce":
        kind = "soft" if record.get("type") == "blocked" else "hard"
    elif name in ("blocked", "deferred"):
        kind = "soft"
    elif name == "spamreport":
        kind = "complaint"
    elif name == "dropped":
        kind = _lookup(SENDGRID_DROPPED, record.get("reason"))
    else:
        return None
    source_id = _identifier(record.get("sg_event_id"))
    if source_id is None:
        raise Refused(400, "a SendGrid event has no sg_event_id")
    return BounceEvent(
        source="sendgrid",
        source_id=source_id,
        kind=kind,
        addresses=_addresses([record.get("email")]),
        message_id=_message_id(record.get("smtp-id")),
        status=_status(record.get("status")) or _status(record.get("reason")),
        detail=_text(record.get("reason") or record.get("response")),
        occurred_at=_moment(record.get("timestamp")),
    )


# --- data from outside ----------------------------------------------------------------------------------------


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise Refused(400, "the body is not JSON") from None


def _lookup(kinds: Mapping[str, str], name: Any) -> str:
    return kinds.get(name, "unknown") if isinstance(name, str) else "unknown"


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 100_000


def _records(value: Any) -> list[Mapping[str, Any]]:
    return (
        [item for item in value[:MAX_ADDRESSES] if isinstance(item, dict)] if isinstance(value, list) else []
    )


def _text(value: Any, limit: int = 500) -> str:
    """One line of at most ``limit`` characters: control characters and line breaks become spaces."""
    if not isinstance(value, str):
        return ""
    return _SPACES.sub(" ", value[: limit * 4]).strip()[:limit]


def _identifier(value: Any) -> str | None:
    """A provider's event id: a number or up to 200 printable characters."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and 0 < len(value.strip()) <= 200 and value.strip().isprintable():
        return value.strip()
    return None


def _addresses(values: list[Any]) -> tuple[str, ...]:
    found: list[str] = []
    for value in values[:MAX_ADDRESSES]:
        if isinstance(value, str):
            address = value.strip()
            if address.startswith("<") and address.endswith(">"):
                address = address[1:-1]
            if _ADDRESS.fullmatch(address) and address not in found:
                found.append(address)
    return tuple(found)


def _message_id(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text.startswith("<"):
        text = f"<{text}>"
    return text if _MESSAGE_ID.fullmatch(text) else None


def _status(value: Any) -> str:
    """The enhanced status code ("5.1.1") in ``value``, or ""."""
    if not isinstance(value, str):
        return ""
    found = _STATUS.search(value[:1000])
    return found.group(0) if found else ""


def _moment(value: Any) -> datetime | None:
    """A time from seconds since the epoch or ISO 8601 text, as an aware datetime; None if it is neither."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value) or not 0 <= value < 32503680000:  # up to the year 3000
                return None
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str) and len(value) <= 64:
            text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip())  # .NET's 7 digits of a second
            moment = datetime.fromisoformat(text)
            return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None
