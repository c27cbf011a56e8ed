"""What a message that arrived in the bounce mailbox says: a bounce (hard or soft), a complaint, an
auto-reply, or nothing we know, as one BounceEvent.

Read in this order, the first that recognises the message wins:

1. a feedback report (ARF, RFC 5965: a ``message/feedback-report`` part), or a provider's complaint
   without one (Microsoft's JMRP, AOL's older reports: the original attached as ``message/rfc822``);
2. a delivery status notification (RFC 3464: ``message/delivery-status``), read field by field;
3. an auto-reply (vacation, out of office), which is not a bounce even though it came to the bounce
   address;
4. the odd formats of many other mail servers, through flufl.bounce (Mailman's detectors);
5. anything else is "unknown": spam, a person's reply, garbage.

Everything in the message is data from outside: it is parsed with limits, never trusted to be
well-formed, and whatever the bytes, ``read_report`` returns an event and never raises.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import hashlib
import logging
import quopri
import re
import unicodedata
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from email.header import Header, decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from email.utils import getaddresses, parsedate_to_datetime

from flufl.bounce import all_failures

from newsletter.models import BounceEvent

SOURCE = "mailbox"
MAX_PARSED_BYTES = 1_000_000  # what is parsed of a message: the report and the returned headers come first
MAX_HEADER_CHARS = 4_000  # what is read of one header value
MAX_PARTS = 200  # MIME parts looked at, however the message nests them
MAX_DEPTH = 8
MAX_TEXT_CHARS = 200_000  # what is searched of a text part
MAX_ADDRESSES = 50
DETAIL_CHARS = 300

COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus"})  # RFC 5965's feedback types that are complaints
# Senders and subjects of complaints sent without a feedback-report part.
REDACTED = frozenset({"redacted", "removed", "anonymous"})
COMPLAINT_SENDERS = frozenset({"staff@hotmail.com", "scomp@aol.net"})
COMPLAINT_SUBJECT = re.compile(
    r"\b(complaint|abuse report|spam report|feedback loop|tos notification)\b", re.IGNORECASE
)
# What a mail server's own notice says of itself; such a message is never taken for an auto-reply.
BOUNCE_SENDER = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mailerdaemon)@", re.IGNORECASE)
BOUNCE_SUBJECT = re.compile(
    r"(undeliver|delivery (status|failure|has failed|notification)|returned mail|mail delivery|failure notice"
    r"|delivery failed|could not be delivered|nondeliverable|non-delivery|warning: could not send)",
    re.IGNORECASE,
)
AUTO_REPLY_SUBJECT = re.compile(
    r"(out of (the )?office|automatic reply|auto[- ]?reply|autoresponse|auto[- ]?response|vacation"
    r"|away from (my|the) (office|desk|email)|on leave|abwesenheit|réponse automatique|absence"
    r"|respuesta automática|risposta automatica|automatisch antwoord|afwezig|fuera de la oficina)",
    re.IGNORECASE,
)
AUTO_REPLY_HEADERS = ("x-autoreply", "x-autorespond", "x-autoresponder")
# Conventionally soft even when a server calls it permanent: the mailbox is full, not gone.
FULL_MAILBOX = re.compile(
    r"(\b5\.2\.2\b|\bquota\b|overquota|mailbox (is )?full|full mailbox|mailbox space"
    r"|insufficient (disk |storage )?space|storage (limit|space)|out of storage)",
    re.IGNORECASE,
)
# Where a bounce in plain text starts quoting the message it returns.
RETURNED_COPY = re.compile(
    r"^.*(copy of (the|your) (original )?message|original message (follows|headers)|message headers follow"
    r"|source mail attached|text of (the|your) (original )?message).*$",
    re.IGNORECASE | re.MULTILINE,
)
STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")  # RFC 3463
FAILURE_STATUS = re.compile(r"(?<![\d.])([45])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
MESSAGE_ID = re.compile(r"<([^<>\s\x00-\x1f\x7f]{1,250})>")
BARE_MESSAGE_ID = re.compile(r"^[^<>\s\x00-\x1f\x7f@]{1,200}@[^<>\s\x00-\x1f\x7f@]{1,200}$")
MESSAGE_ID_LINE = re.compile(r"^message-id:[ \t]*(<[^<>\r\n]{1,250}>)", re.IGNORECASE | re.MULTILINE)
ADDRESS = re.compile(
    r"^(?!\.)(?!.*\.\.)(?!.*\.@)[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
    r"(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)


class _DetectorErrors(logging.Filter):
    """flufl.bounce logs a detector's exception with its traceback, then raises it; read_report takes
    the exception (the message is then one no detector reads), so the log keeps no traceback of it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None


logging.getLogger("flufl.bounce").addFilter(_DetectorErrors())


def read_report(raw: bytes) -> BounceEvent:
    """The event that the message ``raw`` (as it arrived, headers and body) reports. Never raises."""
    source_id = hashlib.sha256(raw).hexdigest()
    try:
        message = _parse(raw[:MAX_PARSED_BYTES])
        return _read(message, source_id)
    except Exception as error:  # a parser or detector tripping on hostile bytes: still an answer
        return BounceEvent(SOURCE, source_id, "unknown", detail=_one_line(f"unreadable message: {error}"))


def _parse(raw: bytes) -> Message:
    """The message, or only its headers when its body cannot be parsed (parts nested too deep)."""
    try:
        return email.message_from_bytes(raw, policy=email.policy.compat32)
    except (RecursionError, ValueError, LookupError):
        return BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw, headersonly=True)


def _read(message: Message, source_id: str) -> BounceEvent:
    base = {
        "source": SOURCE,
        "source_id": source_id,
        "report_to": _report_to(message),
        "occurred_at": _date(_header(message, "date")),
    }
    parts = list(_parts(message))
    feedback = _first(parts, "message/feedback-report")
    if feedback is not None:
        return _feedback_report(message, parts, feedback, base)
    complaint = _provider_complaint(message, parts, base)
    if complaint is not None:
        return complaint
    statuses = [part for part in parts if part.get_content_type() in _STATUS_TYPES]
    if statuses:
        event = _delivery_status(message, parts, statuses, base)
        if event is not None:
            return event
    bounce_like = _bounce_like(message)
    if not bounce_like and _auto_reply(message, strong_only=True):
        return _auto_reply_event(message, base)
    event = _other_bounce(message, parts, base)
    if event is not None:
        return event
    if not bounce_like and _auto_reply(message, strong_only=False):
        return _auto_reply_event(message, base)
    subject = _decoded(_header(message, "subject"))
    return BounceEvent(
        kind="unknown",
        message_id=_referenced_id(message),
        detail=_one_line(f"not recognised: {subject}" if subject else "not recognised"),
        **base,
    )


_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")


# --- Complaints --------------------------------------------------------------------------------------


def _feedback_report(message: Message, parts: list[Message], report: Message, base: dict) -> BounceEvent:
    fields = _field_blocks(report)
    first = fields[0] if fields else Message()
    found_type = re.match(r"[a-z0-9_-]+", _one_line(_header(first, "feedback-type")).lower())
    feedback_type = found_type.group(0) if found_type else ""
    original = _original(parts, report)
    addresses = _addresses(value for block in fields for value in _all_headers(block, "original-rcpt-to"))
    if not addresses and original is not None:
        addresses = _complainant(original)
    occurred = _date(_header(first, "arrival-date")) or _date(_header(first, "received-date"))
    kind = "complaint" if feedback_type in COMPLAINT_TYPES else "unknown"
    detail = f"feedback report: {feedback_type or 'no feedback type'}"
    agent = _one_line(_header(first, "user-agent"))
    if agent:
        detail += f" from {agent}"
    return BounceEvent(
        kind=kind,
        addresses=addresses if kind == "complaint" else (),
        message_id=_message_id(original) if original is not None else None,
        detail=_one_line(detail),
        **{**base, "occurred_at": occurred or base["occurred_at"]},
    )


def _provider_complaint(message: Message, parts: list[Message], base: dict) -> BounceEvent | None:
    """A complaint sent without a feedback-report part: the original attached, with Microsoft's
    X-HmXmrOriginalRecipient, or from a known feedback-loop sender, or with a complaint's subject."""
    originals = [_embedded(part) for part in parts if part.get_content_type() == "message/rfc822"]
    originals = [original for original in originals if original is not None]
    if not originals:
        return None
    sender = _addresses([_header(message, "from")])
    subject = _decoded(_header(message, "subject"))
    microsoft = any(_header(original, "x-hmxmroriginalrecipient") for original in originals)
    if not (microsoft or set(sender) & COMPLAINT_SENDERS or COMPLAINT_SUBJECT.search(subject)):
        return None
    if _bounce_like(message):
        return None
    original = originals[0]
    return BounceEvent(
        kind="complaint",
        addresses=_complainant(original),
        message_id=_message_id(original),
        detail=_one_line(f"complaint: {subject}" if subject else "complaint"),
        **base,
    )


def _complainant(original: Message) -> tuple[str, ...]:
    """Who complained, from the original message: Microsoft's X-HmXmrOriginalRecipient, else its To.
    Providers that redact it (AOL writes "redacted@...") name nobody."""
    found = _addresses(_all_headers(original, "x-hmxmroriginalrecipient")) or _addresses(
        _all_headers(original, "original-rcpt-to") + _all_headers(original, "to")
    )
    return tuple(address for address in found if address.partition("@")[0] not in REDACTED)


def _original(parts: list[Message], report: Message) -> Message | None:
    """The original message (or its headers) that a report returns."""
    for part in parts:
        if part is report:
            continue
        if part.get_content_type() in ("message/rfc822", "message/global"):
            embedded = _embedded(part)
            if embedded is not None:
                return embedded
        if part.get_content_type() in ("text/rfc822-headers", "message/global-headers"):
            return HeaderParser(policy=email.policy.compat32).parsestr(_text(part, MAX_TEXT_CHARS))
    return None


# --- Delivery status notifications -------------------------------------------------------------------


def _delivery_status(
    message: Message, parts: list[Message], statuses: list[Message], base: dict
) -> BounceEvent | None:
    # kind: (address or None when it cannot be read, status, diagnostic)
    found: dict[str, list[tuple[str | None, str, str]]] = {"hard": [], "soft": []}
    arrival = None
    for part in statuses:
        for block in _field_blocks(part):
            arrival = arrival or _date(_header(block, "arrival-date"))
            if not any(_header(block, name) for name in ("action", "final-recipient", "original-recipient")):
                continue  # the per-message fields, or not a recipient's
            recipient = _recipient(block)
            action = _one_line(_header(block, "action")).lower()
            diagnostic = _one_line(_header(block, "diagnostic-code"))
            status = _status(_header(block, "status")) or _status(diagnostic)
            kind = _dsn_kind(action, status, diagnostic)
            if kind is not None:
                found[kind].append((recipient, status, diagnostic))
    kind = "hard" if found["hard"] else "soft" if found["soft"] else None
    if kind is None:
        return None
    recipients = found[kind]
    addresses = tuple(dict.fromkeys(address for address, _, _ in recipients if address))[:MAX_ADDRESSES]
    status = next((code for _, code, _ in recipients if code), "")
    detail = next((text for _, _, text in recipients if text), "") or _one_line(
        _decoded(_header(message, "subject"))
    )
    original = _original(parts, statuses[0])
    message_id = _message_id(original) if original is not None else _returned_id(message, parts)
    return BounceEvent(
        kind=kind,
        addresses=addresses,
        message_id=message_id,
        status=status,
        detail=_one_line(detail),
        **{**base, "occurred_at": arrival or base["occurred_at"]},
    )


def _recipient(block: Message) -> str | None:
    """Original-Recipient when it is an address (what we sent to), else Final-Recipient."""
    for name in ("original-recipient", "final-recipient", "x-actual-recipient"):
        value = _header(block, name)
        kind, _, address = value.partition(";")
        if not address:
            kind, address = "rfc822", kind
        if kind.strip().lower() not in ("rfc822", "utf-8", ""):
            continue
        found = _addresses([address])
        if found:
            return found[0]
    return None


def _dsn_kind(action: str, status: str, diagnostic: str) -> str | None:
    """hard, soft, or None (delivered, relayed, expanded: nothing went wrong) for one recipient."""
    if action.startswith("delayed"):
        return "soft"
    failed = action.startswith(("fail", "error")) or (not action and status.startswith("5"))
    if not failed:
        return None
    if status.startswith("4") or FULL_MAILBOX.search(f"{status} {diagnostic}"):
        return "soft"
    return "hard"


# --- Auto-replies ------------------------------------------------------------------------------------


def _auto_reply(message: Message, strong_only: bool) -> bool:
    if any(_header(message, name) for name in AUTO_REPLY_HEADERS):
        return True
    if _header(message, "x-autogenerated").strip().lower() == "reply":
        return True
    precedence = (_header(message, "precedence") + " " + _header(message, "x-precedence")).lower()
    if "auto_reply" in precedence or "auto-reply" in precedence:
        return True
    if AUTO_REPLY_SUBJECT.search(_decoded(_header(message, "subject"))):
        return True
    if strong_only:
        return False
    return _header(message, "auto-submitted").strip().lower().startswith("auto-replied")


def _auto_reply_event(message: Message, base: dict) -> BounceEvent:
    subject = _decoded(_header(message, "subject"))
    return BounceEvent(
        kind="auto_reply",
        addresses=_addresses([_header(message, "from")]),
        message_id=_referenced_id(message),
        detail=_one_line(f"auto-reply: {subject}" if subject else "auto-reply"),
        **base,
    )


def _bounce_like(message: Message) -> bool:
    senders = _addresses([_header(message, "from")]) + _addresses([_header(message, "return-path")])
    return (
        any(BOUNCE_SENDER.match(sender) for sender in senders)
        or bool(_header(message, "x-failed-recipients"))
        or bool(BOUNCE_SUBJECT.search(_decoded(_header(message, "subject"))))
    )


# --- Other bounce formats ----------------------------------------------------------------------------


def _other_bounce(message: Message, parts: list[Message], base: dict) -> BounceEvent | None:
    """A bounce in a mail server's own format, found by flufl.bounce's detectors."""
    try:
        temporary, permanent = all_failures(message)
    except Exception:  # a detector failing on an odd message: then it is not one we can read
        return None
    chosen = permanent or temporary
    if not chosen:
        return None
    # An address that does not look like one (a redacted "david...@gmail.com") is left out, but the
    # bounce is still one: its VERP address or Message-ID may tell whose it is.
    addresses = _addresses(_ascii(address) for address in sorted(chosen))
    notice = _notice_text(message)
    line = _diagnostic_line(notice)
    status = _status(line, FAILURE_STATUS) or _status(notice, FAILURE_STATUS)
    soft = not permanent or bool(FULL_MAILBOX.search(notice) or status.startswith("4") or status == "5.2.2")
    return BounceEvent(
        kind="soft" if soft else "hard",
        addresses=addresses,
        message_id=_returned_id(message, parts),
        status=status,
        detail=_one_line(line or _decoded(_header(message, "subject"))),
        **base,
    )


_DIAGNOSTIC = re.compile(
    r"(\b[45]\d\d\b|user unknown|unknown user|no such|does not exist|doesn't exist|not found|invalid"
    r"|mailbox|quota|rejected|unavailable|disabled|not known|unrouteable|undeliverable)",
    re.IGNORECASE,
)


def _diagnostic_line(text: str) -> str:
    for line in text.splitlines()[:400]:
        if (_DIAGNOSTIC.search(line) and "@" in line) or STATUS.search(line):
            return line.strip()
    for line in text.splitlines()[:400]:
        if _DIAGNOSTIC.search(line):
            return line.strip()
    return ""


def _returned_id(message: Message, parts: list[Message]) -> str | None:
    """Our Message-ID in a bounce without a returned-headers part: an attached message's, or a
    Message-ID line in the text that quotes the original."""
    own = _message_id(message)
    for part in parts:
        if part.get_content_type() in ("message/rfc822", "message/global"):
            embedded = _embedded(part)
            found = _message_id(embedded) if embedded is not None else None
            if found and found != own:
                return found
        if part.get_content_type() in ("text/rfc822-headers", "message/global-headers"):
            found = _message_id(
                HeaderParser(policy=email.policy.compat32).parsestr(_text(part, MAX_TEXT_CHARS))
            )
            if found and found != own:
                return found
    for match in MESSAGE_ID_LINE.finditer(_body_text(parts)):
        found = _normal_id(match.group(1))
        if found and found != own:
            return found
    return None


# --- Reading a message safely -----------------------------------------------------------------------


def _parts(message: Message) -> Iterator[Message]:
    """Every part, depth first, within MAX_PARTS and MAX_DEPTH, without recursion."""
    stack: list[tuple[Message, int]] = [(message, 0)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        yield part
        if depth >= MAX_DEPTH or part.get_content_type() in (*_STATUS_TYPES, "message/feedback-report"):
            continue
        payload = _payload(part)
        if isinstance(payload, list):
            stack.extend((child, depth + 1) for child in reversed(payload) if isinstance(child, Message))


def _payload(part: Message, decode: bool = False) -> object:
    """A part's payload, or None where the email package trips on it (a charset named "\\x00")."""
    try:
        return part.get_payload(decode=decode)
    except Exception:
        return None


def _first(parts: list[Message], content_type: str) -> Message | None:
    return next((part for part in parts if part.get_content_type() == content_type), None)


def _embedded(part: Message) -> Message | None:
    payload = _payload(part)
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    if isinstance(payload, str) and payload.strip():
        return HeaderParser(policy=email.policy.compat32).parsestr(_text(part, MAX_TEXT_CHARS))
    return None


def _field_blocks(part: Message) -> list[Message]:
    """The blocks of fields of a delivery-status or feedback-report part (RFC 3464, RFC 5965)."""
    payload = _payload(part)
    encoding = _header(part, "content-transfer-encoding").strip().lower()
    if isinstance(payload, list):
        blocks = [block for block in payload if isinstance(block, Message)]
        if encoding not in ("base64", "quoted-printable") and any(len(block.keys()) for block in blocks):
            return blocks
        # The parser took an encoded part for an embedded message: its text is the encoded fields.
        text = _decoded_body("\n\n".join(_as_string(block) for block in blocks), encoding)
    else:
        text = _text(part, MAX_TEXT_CHARS)
    parser = HeaderParser(policy=email.policy.compat32)
    chunks = re.split(r"\r?\n[ \t]*\r?\n", text.strip())
    return [parser.parsestr(chunk.strip() + "\n") for chunk in chunks[: MAX_ADDRESSES + 1] if chunk.strip()]


def _as_string(message: Message) -> str:
    try:
        return message.as_string()[:MAX_TEXT_CHARS]
    except Exception:
        return ""


def _decoded_body(text: str, encoding: str) -> str:
    data = text.encode("ascii", errors="ignore")
    try:
        if encoding == "base64":
            data = base64.b64decode(b"".join(data.split()), validate=False)
        elif encoding == "quoted-printable":
            data = quopri.decodestring(data)
    except (binascii.Error, ValueError):
        return ""
    return data[:MAX_TEXT_CHARS].decode("utf-8", errors="replace")


def _text(part: Message, limit: int) -> str:
    """A non-multipart part's content as text: transfer encoding undone, the charset tried."""
    payload = _payload(part, decode=True)
    if not isinstance(payload, bytes):
        payload = _payload(part)
        return payload[:limit] if isinstance(payload, str) else ""
    try:
        return payload[:limit].decode(part.get_content_charset() or "utf-8", errors="replace")
    except Exception:  # a charset Python does not know, or a name that is not one
        return payload[:limit].decode("utf-8", errors="replace")


def _notice_text(message: Message) -> str:
    """The text a bounce writes itself, without any message it returns (which is ours, and could say
    anything)."""
    texts: list[str] = []
    stack = [(message, 0)]
    while stack and len(texts) < MAX_PARTS:
        part, depth = stack.pop()
        payload = _payload(part)
        if part.get_content_maintype() == "message" and depth > 0:
            continue
        if isinstance(payload, list):
            if depth < MAX_DEPTH:
                stack.extend((child, depth + 1) for child in reversed(payload) if isinstance(child, Message))
        elif part.get_content_maintype() == "text":
            texts.append(_text(part, MAX_TEXT_CHARS))
        if sum(map(len, texts)) > MAX_TEXT_CHARS:
            break
    text = "\n".join(texts)[:MAX_TEXT_CHARS]
    return RETURNED_COPY.split(text, maxsplit=1)[0]


def _body_text(parts: list[Message]) -> str:
    texts = []
    for part in parts:
        if part.get_content_maintype() == "text" and not part.is_multipart():
            texts.append(_text(part, MAX_TEXT_CHARS))
        if sum(map(len, texts)) > MAX_TEXT_CHARS:
            break
    return "\n".join(texts)[:MAX_TEXT_CHARS]


def _header(message: Message, name: str) -> str:
    try:
        value = message.get(name)
    except Exception:
        return ""
    return "" if value is None else _string(value)[:MAX_HEADER_CHARS]


def _all_headers(message: Message, name: str) -> list[str]:
    try:
        values = message.get_all(name) or []
    except Exception:
        return []
    return [_string(value)[:MAX_HEADER_CHARS] for value in values[:MAX_ADDRESSES]]


def _string(value: object) -> str:
    """A header value as text. Raw 8-bit bytes (which the parser keeps as an unknown-8bit Header) are
    read as UTF-8, the charset nearly every mail server writes."""
    try:
        if isinstance(value, Header):
            return "".join(
                chunk.decode("utf-8", errors="replace") if isinstance(chunk, bytes) else chunk
                for chunk, _ in decode_header(value)
            )
        return str(value)
    except Exception:
        return ""


def _decoded(value: str) -> str:
    """A header value with its RFC 2047 encoded words decoded, as well as they can be."""
    try:
        return str(make_header(decode_header(value)))
    except Exception:
        return value


def _ascii(address: bytes) -> str:
    return address.decode("ascii", errors="replace")


# --- Values ------------------------------------------------------------------------------------------


def _report_to(message: Message) -> tuple[str, ...]:
    values: list[str] = []
    for name in ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to"):
        values.extend(_all_headers(message, name))
    return _addresses(values)


def _addresses(values: Iterable[str]) -> tuple[str, ...]:
    """Plain lowercase addresses in the header values: no display names, no angle brackets; what does
    not look like an address is left out."""
    found: list[str] = []
    for value in values:
        try:
            pairs = getaddresses([value[:MAX_HEADER_CHARS]])
        except Exception:
            continue
        for _, address in pairs:
            address = address.strip().strip("<>").lower()
            if ADDRESS.match(address) and address not in found:
                found.append(address)
            if len(found) >= MAX_ADDRESSES:
                return tuple(found)
    return tuple(found)


def _message_id(message: Message | None) -> str | None:
    if message is None:
        return None
    return _normal_id(_header(message, "message-id"))


def _referenced_id(message: Message) -> str | None:
    """The message an auto-reply or a reply answers: In-Reply-To, else the last of References."""
    found = _normal_id(_header(message, "in-reply-to"))
    if found:
        return found
    references = MESSAGE_ID.findall(_header(message, "references"))
    return f"<{references[-1]}>" if references else None


def _normal_id(value: str) -> str | None:
    match = MESSAGE_ID.search(value)
    if match:
        return f"<{match.group(1)}>"
    value = value.strip()
    return f"<{value}>" if BARE_MESSAGE_ID.match(value) else None


def _status(text: str, pattern: re.Pattern[str] = STATUS) -> str:
    match = pattern.search(text)
    return ".".join(match.groups()) if match else ""


def _date(value: str) -> datetime | None:
    value = value.strip()
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value[:200])
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _one_line(text: str) -> str:
    """One line of plain text: control and format characters gone, spaces collapsed, capped."""
    cleaned = "".join(
        " " if unicodedata.category(char) in ("Cc", "Zl", "Zp") else char
        for char in text[: DETAIL_CHARS * 8]
        if unicodedata.category(char) != "Cf"
    )
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= DETAIL_CHARS else cleaned[: DETAIL_CHARS - 1].rstrip() + "…"


__all__ = ["read_report"]
