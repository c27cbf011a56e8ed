"""DKIM (RFC 6376): the signing key, the DNS record that publishes it, and each message's signature.

The key's kind decides the algorithm: an RSA key signs rsa-sha256, an Ed25519 key ed25519-sha256 (RFC
8463). Key files are what dkimpy's own tools read and write: RSA as a PEM file, Ed25519 as its 32 bytes in
base64 on one line; any PEM private key of either kind is read too.

A newsletter message is mostly the same for every reader, so a template prepares its signature once
(``Signer.prepare``): the header fields that never change are canonicalised then (dkimpy's "relaxed"
header canonicalisation), and only each reader's own fields (To, Date, Message-ID, List-Unsubscribe...)
are canonicalised per message. The body hash is SHA-256 over the reader's assembled body with "simple"
body canonicalisation (the body is already CRLF; trailing empty lines dropped), taken over the body as
a message holds it: a dot-stuffed SMTP body is unstuffed for the hash. The private key is loaded once
per send; signing is one call into OpenSSL through ``cryptography``, which releases the GIL while it
signs with RSA, so the connections of a send sign in parallel.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from dkim import rfc822_parse
from dkim.canonicalization import Relaxed
from dkim.util import InvalidTagValueList, parse_tag_value

from newsletter.errors import DkimKeyError
from newsletter.settings import DkimSettings

KINDS = ("rsa", "ed25519")
RSA_BITS = 2048  # what `newsletter dkim keygen` makes
MIN_RSA_BITS = 1024  # RFC 8301: verifiers refuse shorter keys
MAX_KEY_FILE = 64 * 1024
TXT_STRING = 255  # bytes in one character-string of a TXT record

# The fields a signature covers, in the order of its h= tag, when the message has them: a field the
# message lacks is left out. From and Subject are named twice: no relay can add a second one unnoticed.
SIGNED = (
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "reply-to",
)
OVERSIGNED = ("from", "subject")


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A private key that signs DKIM signatures."""

    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    @property
    def kind(self) -> str:
        return "rsa" if isinstance(self.private, rsa.RSAPrivateKey) else "ed25519"

    @property
    def algorithm(self) -> str:
        return "rsa-sha256" if self.kind == "rsa" else "ed25519-sha256"

    def public_key(self) -> str:
        """The p= value of the DNS record: RSA's SubjectPublicKeyInfo, Ed25519's raw 32 bytes, in base64."""
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            data = public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        else:
            data = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(data).decode("ascii")

    def record(self) -> str:
        """The TXT record to publish at <selector>._domainkey.<domain>."""
        return f"v=DKIM1; k={self.kind}; p={self.public_key()}"

    def file_bytes(self) -> bytes:
        """The key file as dkimpy's tools write it."""
        if isinstance(self.private, rsa.RSAPrivateKey):
            return self.private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        raw = self.private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return base64.b64encode(raw) + b"\n"

    def sign(self, data: bytes) -> bytes:
        """The signature of the canonicalised header fields: RSASSA-PKCS1-v1_5 over SHA-256, or Ed25519
        over their SHA-256 digest (RFC 8463)."""
        if isinstance(self.private, rsa.RSAPrivateKey):
            return self.private.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return self.private.sign(hashlib.sha256(data).digest())


def generate_key(kind: str) -> DkimKey:
    if kind == "rsa":
        return DkimKey(rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS))
    if kind == "ed25519":
        return DkimKey(ed25519.Ed25519PrivateKey.generate())
    raise ValueError(f"unknown key kind {kind!r}")


def read_key(path: Path) -> DkimKey:
    """The key in ``path``; ``DkimKeyError`` names the file and says what is wrong with it."""
    where = f"DKIM key {path}"
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise DkimKeyError(f"{where}: no such file (`newsletter dkim keygen` makes one)") from None
    except PermissionError:
        raise DkimKeyError(f"{where}: cannot be read by this user (permission denied)") from None
    except IsADirectoryError:
        raise DkimKeyError(f"{where}: is a directory, not a key file") from None
    except OSError as exc:
        raise DkimKeyError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_KEY_FILE:
        raise DkimKeyError(f"{where}: too large to be a private key")
    return DkimKey(_private_key(data, where))


def _private_key(data: bytes, where: str) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    if b"-----BEGIN" in data:
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            raise DkimKeyError(
                f"{where}: is protected by a password; the key must be stored without one"
            ) from None
        except (ValueError, UnsupportedAlgorithm):
            raise DkimKeyError(f"{where}: is not a readable PEM private key") from None
        if isinstance(private, rsa.RSAPrivateKey):
            if private.key_size < MIN_RSA_BITS:
                raise DkimKeyError(
                    f"{where}: an RSA key of {private.key_size} bits is too short to be trusted "
                    f"(at least {MIN_RSA_BITS}; `newsletter dkim keygen` makes {RSA_BITS})"
                )
            return private
        if isinstance(private, ed25519.Ed25519PrivateKey):
            return private
        kind = type(private).__name__.removeprefix("_").replace("PrivateKey", "")
        raise DkimKeyError(f"{where}: is an {kind} key; DKIM signs with RSA or Ed25519 keys")
    try:
        raw = base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise DkimKeyError(
            f"{where}: is neither a PEM private key nor an Ed25519 key (32 bytes in base64, as dkimpy "
            "writes it)"
        )
    return ed25519.Ed25519PrivateKey.from_private_bytes(raw)


def write_key(key: DkimKey, path: Path, *, force: bool = False) -> None:
    """Write the key readable by its owner only (0600); an existing file is replaced only with ``force``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
        descriptor = os.open(path, flags, 0o600)
    except FileExistsError:
        raise DkimKeyError(
            f"DKIM key {path}: the file exists; --force replaces it (the record published for it then "
            "stops matching)"
        ) from None
    except OSError as exc:
        raise DkimKeyError(f"DKIM key {path}: cannot be written ({exc.strerror or exc})") from None
    with os.fdopen(descriptor, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)  # a replaced file keeps its old mode otherwise
        handle.write(key.file_bytes())


def record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def txt_strings(record: str) -> list[str]:
    """The record as the character-strings of at most 255 bytes a TXT record is made of."""
    return [record[start : start + TXT_STRING] for start in range(0, len(record), TXT_STRING)] or [""]


def zone_entry(selector: str, domain: str, record: str) -> str:
    """The record as a zone file line: the long value split into quoted strings inside parentheses."""
    strings = "\n    ".join(f'"{part}"' for part in txt_strings(record))
    return f"{record_name(selector, domain)}. IN TXT (\n    {strings} )"


def record_problem(published: str, key: DkimKey) -> str | None:
    """What is wrong with a published DKIM record for ``key``, or None when it matches."""
    try:
        tags = parse_tag_value(published.encode("ascii", "replace"))
    except InvalidTagValueList as exc:
        return f"the record cannot be read ({exc})"
    version = tags.get(b"v")
    if version is not None and version != b"DKIM1":
        return f"the record's v= is {version.decode('ascii', 'replace')}, not DKIM1"
    kind = tags.get(b"k", b"rsa").decode("ascii", "replace")
    if kind != key.kind:
        return f"the record is for an {kind} key, the configured key is {key.kind}"
    published_key = b"".join(tags.get(b"p", b"").split()).decode("ascii", "replace")
    if not published_key:
        return "the record has an empty p= (a revoked key)"
    if published_key != key.public_key():
        return "the record's public key (p=) is not the configured key's"
    return None


@lru_cache(maxsize=4)
def _cached_key(path: Path, _stamp: tuple[int, int]) -> DkimKey:
    return read_key(path)


@dataclass(frozen=True, slots=True)
class Signer:
    """Signs as ``domain`` with ``key``, whose public part is published under ``selector``."""

    domain: str
    selector: str
    key: DkimKey

    @classmethod
    def from_settings(cls, settings: DkimSettings) -> Signer | None:
        """The signer of [dkim], the key read (once per version of the file); None when signing is off.
        Raises ``DkimKeyError`` for a key that cannot be used."""
        if settings.domain is None or settings.private_key_file is None:
            return None
        path = settings.private_key_file
        try:
            status = path.stat()
            stamp = (status.st_mtime_ns, status.st_size)
        except OSError:
            stamp = (0, 0)  # read_key says what is wrong
        return cls(settings.domain, settings.selector, _cached_key(path, stamp))

    def prepare(self, static_headers: bytes, reader_fields: Sequence[str]) -> TemplateSignature:
        """The signature of a message whose header block starts with each reader's ``reader_fields``
        (lower-case names) followed by ``static_headers`` (CRLF-terminated fields, the same for all)."""
        return TemplateSignature(self, static_headers, tuple(reader_fields))


class TemplateSignature:
    """What one message template's signatures share: the canonicalised static fields and the start of
    the DKIM-Signature field."""

    def __init__(self, signer: Signer, static_headers: bytes, reader_fields: tuple[str, ...]) -> None:
        self.key = signer.key
        fields, _body = rfc822_parse(static_headers + b"\r\n")
        canonical = {
            name.decode("ascii"): name + b":" + value
            for name, value in Relaxed.canonicalize_headers([(name, value) for name, value in fields])
        }
        present = set(canonical) | set(reader_fields)
        names = [name for name in SIGNED if name in present]
        # Each name of h= either a canonical line ready now, or the reader's field to canonicalise.
        self._parts: list[bytes | str] = [
            name if name in reader_fields else canonical[name] for name in names
        ]
        self.signed = (*names, *OVERSIGNED)
        self._prefix = (
            f"DKIM-Signature: v=1; a={signer.key.algorithm}; c=relaxed/simple; d={signer.domain};\r\n"
            f" s={signer.selector}; h={':'.join(self.signed)};\r\n"
        ).encode("ascii")
        # The field as the signature covers it: relaxed, unfolded, b= empty; the reader's tags follow.
        name, value = self._prefix.split(b":", 1)
        ((_, start),) = Relaxed.canonicalize_headers([(name, value)])
        self._canonical_prefix = b"dkim-signature:" + start.rstrip(b"\r\n")

    def field(self, reader_lines: Sequence[str], message: bytes, body_start: int, now: datetime, *,
              stuffed: bool) -> bytes:  # fmt: skip
        """The DKIM-Signature field (CRLF-terminated) to put first in ``message``: its own fields are
        ``reader_lines`` ("Name: value", one line each), its body starts at ``body_start``; ``stuffed``:
        the message is dot-stuffed as SMTP DATA carries it, the signature is of the message as received."""
        body_hash = base64.b64encode(_body_hash(message, body_start, stuffed))
        tags = b" t=%d; bh=%s;" % (int(now.timestamp()), body_hash)
        own = {}
        for line in reader_lines:
            name, value = line.split(":", 1)
            own[name.lower()] = _WSP.sub(" ", value).strip(" \t")
        data = [
            part if isinstance(part, bytes) else f"{part}:{own[part]}\r\n".encode() for part in self._parts
        ]
        data.append(self._canonical_prefix + tags + b" b=")
        signature = base64.b64encode(self.key.sign(b"".join(data)))
        folded = b"\r\n  ".join(signature[start : start + 72] for start in range(0, len(signature), 72))
        return self._prefix + tags + b"\r\n b=" + folded + b"\r\n"


_WSP = re.compile(r"[ \t]+")
_STUFFED = re.compile(rb"\r\n\.\.")


def _body_hash(message: bytes, start: int, stuffed: bool) -> bytes:
    """SHA-256 of the body from ``start`` with "simple" canonicalisation (RFC 6376 3.4.3: empty lines at
    the end dropped, a missing final CRLF added), unstuffing a dot-stuffed body on the way, without
    copying it."""
    view = memoryview(message)
    end = len(message)
    while end - start >= 4 and message.endswith(b"\r\n\r\n", 0, end):
        end -= 2
    digest = hashlib.sha256()
    if stuffed:
        for found in _STUFFED.finditer(message, start - 2, end):  # faster than bytes.find in a loop
            digest.update(view[start : found.start() + 3])  # up to the first dot
            start = found.start() + 4  # the second dot was added by the stuffing
    digest.update(view[start:end])
    if not message.endswith(b"\r\n", 0, end):
        digest.update(b"\r\n")
    return digest.digest()
