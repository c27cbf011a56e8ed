"""Reading the bounce mailbox over IMAP (TLS or STARTTLS) or POP3: each waiting message handed to a
handler, then marked processed on the server, so that a rerun never hands it again and a crash loses none.

The contract with ``handle(raw)``: when it returns, it has recorded the message durably and idempotently
(keyed by the SHA-256 of ``raw``). Only then is the message marked, one at a time: over IMAP it is moved
to ``processed_folder`` (MOVE, RFC 6851; COPY, \\Deleted and EXPUNGE where MOVE is missing), or, without
one, given the keyword ``$NewsletterProcessed`` (and \\Seen) where it is, and later runs search past it;
over POP3 it is deleted, which the server commits at QUIT. A crash between handling and marking (or before
QUIT) leaves messages for the next run, which hands them again: harmless, since the handler is
idempotent. Nothing is ever marked that was not handled, except a message over ``max_size``, which is
marked without being loaded and reported.

If ``handle`` raises, the run stops there: that message and the rest stay for the next run, those before
stay processed, and ``MailboxRun.stopped`` says why. Trouble with the server (unreachable, TLS, login,
a missing folder, a broken connection) raises a ``MailboxError`` with one line to show.
"""

from __future__ import annotations

import base64
import imaplib
import ipaddress
import poplib
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from newsletter.errors import (
    MailboxError,
    MailboxFolderMissing,
    MailboxLoginFailed,
    MailboxTlsError,
    MailboxUnreachable,
    MailboxUnusable,
)
from newsletter.settings import BouncesSettings

MAX_MESSAGE_BYTES = 10 * 1024 * 1024
PROCESSED_KEYWORD = "$NewsletterProcessed"
TIMEOUT = 30.0  # seconds allowed for connecting and for each reply
_SIZE_BATCH = 500  # UIDs per FETCH of sizes


@dataclass(frozen=True, slots=True)
class Failure:
    """A message that was not handled: which one ("UID 7", "message 3") and why."""

    message: str
    reason: str


@dataclass(slots=True)
class MailboxRun:
    """What one reading of the mailbox did."""

    found: int = 0  # messages waiting (not yet processed) when the run looked
    skipped: int = 0  # messages already processed, left alone (flagged ones, IMAP without processed_folder)
    handled: int = 0  # handed to the handler and then marked processed
    too_large: int = 0  # over max_size: marked processed without being read (each also in failures)
    failures: list[Failure] = field(default_factory=list)
    stopped: str | None = None  # why the run stopped early: the handler raised (the message stays)
    handler_error: Exception | None = field(default=None, compare=False)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def left(self) -> int:
        """Messages still waiting for a later run (past ``limit``, or after a handler failure)."""
        return self.found - self.handled - self.too_large


def read_mailbox(
    settings: BouncesSettings,
    handle: Callable[[bytes], object],
    *,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    timeout: float = TIMEOUT,
    max_size: int = MAX_MESSAGE_BYTES,
) -> MailboxRun:
    """Hand each waiting message of the mailbox (at most ``limit``) to ``handle``, oldest first, and mark
    it processed once ``handle`` returns. ``progress(done, total)`` follows each message."""
    context = _checked(settings)
    session: _Session = (_Imap if settings.protocol == "imap" else _Pop3)(settings, context, timeout)
    run = MailboxRun()
    try:
        session.open()
        waiting, run.skipped = session.waiting()
        run.found = len(waiting)
        todo = waiting if limit is None else waiting[: max(limit, 0)]
        sizes = session.sizes(todo)
        for done, ref in enumerate(todo, 1):
            size = sizes.get(ref)
            raw = None if size is None or size > max_size else session.fetch(ref, max_size)
            if size is None or (raw is None and size <= max_size):
                run.found -= 1  # gone meanwhile: another client took it
            elif size > max_size or raw is _TOO_LARGE:
                session.mark(ref)
                run.too_large += 1
                run.failures.append(
                    Failure(
                        session.label(ref),
                        f"{size} bytes, over the {_amount(max_size)} limit: marked processed without being read",
                    )
                )
            else:
                assert isinstance(raw, bytes)
                try:
                    handle(raw)
                except Exception as exc:
                    line = _one_line(str(exc)) or type(exc).__name__
                    run.failures.append(Failure(session.label(ref), line))
                    run.stopped = (
                        f"handling {session.label(ref)} failed ({line}): it and the messages after it stay "
                        "in the mailbox for the next run"
                    )
                    run.handler_error = exc
                    break
                session.mark(ref)
                run.handled += 1
            if progress is not None:
                progress(done, len(todo))
        session.finish()
    finally:
        session.close()
    return run


# Settings and TLS


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _checked(settings: BouncesSettings) -> ssl.SSLContext | None:
    """The TLS context to use (None for security = "none"), once the settings are known to be usable."""
    if not settings.host:
        raise MailboxUnusable("[bounces] host is not set: there is no mailbox to read")
    if settings.protocol not in ("imap", "pop3"):
        raise MailboxUnusable(f'[bounces] protocol must be "imap" or "pop3", not {settings.protocol!r}')
    if settings.protocol == "pop3" and settings.folder != "INBOX":
        raise MailboxUnusable(
            '[bounces] folder: POP3 reads only the inbox; use protocol = "imap" for another folder'
        )
    if settings.processed_folder and settings.processed_folder == settings.folder:
        raise MailboxUnusable("[bounces] processed_folder must differ from folder")
    if settings.security == "none":
        if not _is_loopback(settings.host):
            raise MailboxUnusable(
                f'[bounces] security = "none" would send the password in clear to {settings.host}: it is '
                'allowed only for a server on this machine (localhost, 127.0.0.1, ::1); use "tls" or "starttls"'
            )
        return None
    if settings.security not in ("tls", "starttls"):
        raise MailboxUnusable(
            f'[bounces] security must be "tls", "starttls" or "none", not {settings.security!r}'
        )
    try:
        return ssl.create_default_context(cafile=settings.ca_file or None)
    except FileNotFoundError:
        raise MailboxUnusable(f"[bounces] ca_file {settings.ca_file} does not exist") from None
    except ssl.SSLError:  # an OSError too: first
        raise MailboxUnusable(
            f"[bounces] ca_file {settings.ca_file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ) from None
    except OSError as exc:
        raise MailboxUnusable(
            f"[bounces] ca_file {settings.ca_file} cannot be read: {exc.strerror}"
        ) from None


def _amount(size: int) -> str:
    return f"{size / (1024 * 1024):g} MB" if size >= 1024 * 1024 else f"{size} bytes"


def _one_line(text: object, limit: int = 200) -> str:
    """What a server or an exception said, as one short line of printable text."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    line = " ".join("".join(ch if ch.isprintable() else " " for ch in str(text)).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _said(exc: BaseException) -> str:
    return _one_line(exc.args[0] if exc.args else exc)


_TOO_LARGE = object()


class _Session:
    """One connection to the mailbox: the steps ``read_mailbox`` takes, each turning trouble into one
    ``MailboxError``."""

    protocol = ""

    def __init__(self, settings: BouncesSettings, context: ssl.SSLContext | None, timeout: float) -> None:
        self.settings = settings
        self.context = context
        self.timeout = timeout
        self.where = f"the {self.protocol} server {settings.host}:{settings.port}"

    # The steps
    def open(self) -> None: ...
    def waiting(self) -> tuple[list[int], int]: ...
    def sizes(self, refs: list[int]) -> dict[int, int]: ...
    def fetch(self, ref: int, max_size: int) -> bytes | object | None: ...
    def mark(self, ref: int) -> None: ...
    def finish(self) -> None: ...
    def close(self) -> None: ...
    def label(self, ref: int) -> str: ...

    @contextmanager
    def trouble(self, stage: str, refused: type[MailboxError] = MailboxError) -> Iterator[None]:
        """Server trouble while ``stage`` as one line; ``refused`` is the error for a refusal in the
        protocol (a NO or -ERR) at this stage."""
        settings, where = self.settings, self.where
        try:
            yield
        except MailboxError:
            raise
        except socket.gaierror as exc:
            raise MailboxUnreachable(
                f"cannot find the {self.protocol} server {settings.host!r} ([bounces] host): {exc.strerror}"
            ) from None
        except ConnectionRefusedError:
            raise MailboxUnreachable(
                f"{where} refused the connection: is the server running, and is {settings.port} its "
                f"{self.protocol} port ([bounces] port)?"
            ) from None
        except TimeoutError:
            raise MailboxUnreachable(
                f"{where} did not answer within {self.timeout:g} s while {stage}"
                + (
                    f'; is {settings.port} a port for security = "{settings.security}"? ({self._ports_hint()})'
                    if stage == "connecting"
                    else ""
                )
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise MailboxTlsError(
                f"{where}: its certificate is not trusted ({exc.verify_message}); for a certificate from a "
                "private CA, set [bounces] ca_file to the CA's certificate"
            ) from None
        except ssl.SSLError as exc:
            raise MailboxTlsError(
                f"{where}: TLS failed while {stage} ({exc.reason or _said(exc)}); is {settings.port} a port "
                f'for security = "{settings.security}"? ({self._ports_hint()})'
            ) from None
        except (imaplib.IMAP4.abort, EOFError, ConnectionError) as exc:
            raise MailboxError(f"{where} closed the connection while {stage}: {_said(exc)}") from None
        except OSError as exc:
            raise MailboxUnreachable(f"{where}: {exc.strerror or _said(exc)} while {stage}") from None
        except (imaplib.IMAP4.error, poplib.error_proto) as exc:
            if refused is MailboxUnreachable:
                said = _said(exc)
                article = "an" if self.protocol == "IMAP" else "a"
                raise MailboxUnreachable(
                    f"{where} did not answer as {article} {self.protocol} server"
                    + (f" (it said: {said})" if said not in ("", "None") else "")
                    + f": is {settings.port} its {self.protocol} port?"
                ) from None
            if refused is MailboxLoginFailed:
                raise MailboxLoginFailed(
                    f"{where} refused the login of {settings.username!r} ({_said(exc)}): check [bounces] "
                    "username and password (NEWSLETTER_BOUNCES_PASSWORD)"
                ) from None
            raise refused(f"{where} refused {stage}: {_said(exc)}") from None

    def _ports_hint(self) -> str:
        tls, plain = (993, 143) if self.protocol == "IMAP" else (995, 110)
        return f"{tls} speaks TLS from the start, {plain} takes STARTTLS"

    def no_starttls(self) -> MailboxTlsError:
        return MailboxTlsError(
            f'{self.where} does not offer STARTTLS: not logging in without TLS; use security = "tls" '
            f"and its TLS port ({self._ports_hint()})"
        )


# IMAP


def _imap_utf7(name: str) -> str:
    """A folder name in IMAP's modified UTF-7 (RFC 3501, 5.1.3)."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            encoded = base64.b64encode("".join(run).encode("utf-16-be")).decode("ascii")
            out.append("&" + encoded.rstrip("=").replace("/", ",") + "-")
            run.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    flush()
    return "".join(out)


def _imap_mailbox(name: str) -> str:
    encoded = _imap_utf7(name)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _imap_quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")


class _Imap(_Session):
    protocol = "IMAP"

    def __init__(self, settings: BouncesSettings, context: ssl.SSLContext | None, timeout: float) -> None:
        super().__init__(settings, context, timeout)
        self.client: imaplib.IMAP4 | None = None
        self.capabilities: set[str] = set()
        self.move_to = _imap_mailbox(settings.processed_folder) if settings.processed_folder else None

    def label(self, ref: int) -> str:
        return f"UID {ref}"

    def ok(
        self, stage: str, reply: tuple[str, list[object]], refused: type[MailboxError] = MailboxError
    ) -> list:
        status, data = reply
        if status != "OK":
            raise refused(f"{self.where} refused {stage}: {_one_line(data[-1] if data else status)}")
        return data

    def open(self) -> None:
        settings = self.settings
        with self.trouble("connecting", refused=MailboxUnreachable):
            if settings.security == "tls":
                self.client = imaplib.IMAP4_SSL(
                    settings.host, settings.port, ssl_context=self.context, timeout=self.timeout
                )
            else:
                self.client = imaplib.IMAP4(settings.host, settings.port, timeout=self.timeout)
        client = self.client
        if settings.security == "starttls":
            if "STARTTLS" not in client.capabilities:
                raise self.no_starttls()
            with self.trouble("starting TLS"):
                self.ok("STARTTLS", client.starttls(self.context), MailboxTlsError)
        with self.trouble("logging in", refused=MailboxLoginFailed):
            if "AUTH=PLAIN" in client.capabilities:
                secret = f"\0{settings.username}\0{settings.password}".encode()
                client.authenticate("PLAIN", lambda _challenge: secret)
            else:
                client.login(_imap_quoted(settings.username), settings.password)
        with self.trouble("reading its capabilities"):
            data = self.ok("CAPABILITY", client.capability())
            words = data[0].decode("ascii", "replace") if data and isinstance(data[0], bytes) else ""
            self.capabilities = set(words.upper().split())
        if self.move_to:
            with self.trouble(f"finding the folder {settings.processed_folder!r}"):
                listed = self.ok("LIST", client.list('""', self.move_to))
                if not any(listed):
                    self.ok(
                        f"creating the folder {settings.processed_folder!r} ([bounces] processed_folder)",
                        client.create(self.move_to),
                    )
        with self.trouble(f"opening the folder {settings.folder!r}"):
            status, data = client.select(_imap_mailbox(settings.folder))
            if status != "OK":
                raise MailboxFolderMissing(
                    f"{self.where} has no folder {settings.folder!r} to read ({_one_line(data[-1] if data else status)}); "
                    "set [bounces] folder to one that exists"
                )
            self.exists = int(data[0]) if data and data[0] else 0
            if not self.move_to:
                _, permanent = client.response("PERMANENTFLAGS")
                flags = _one_line(permanent[0]) if permanent and permanent[0] else None
                if flags is not None and "\\*" not in flags and PROCESSED_KEYWORD not in flags:
                    raise MailboxError(
                        f"{self.where} cannot keep the keyword {PROCESSED_KEYWORD} on messages in "
                        f"{settings.folder!r}: set [bounces] processed_folder to move processed messages there"
                    )

    def waiting(self) -> tuple[list[int], int]:
        assert self.client is not None
        criteria = ["UNDELETED"] if self.move_to else ["UNDELETED", "UNKEYWORD", PROCESSED_KEYWORD]
        with self.trouble("searching for messages"):
            data = self.ok("SEARCH", self.client.uid("SEARCH", *criteria))
        uids = sorted({int(uid) for uid in (data[0] or b"").split()}) if data else []
        return uids, max(self.exists - len(uids), 0)

    def sizes(self, refs: list[int]) -> dict[int, int]:
        assert self.client is not None
        sizes: dict[int, int] = {}
        for start in range(0, len(refs), _SIZE_BATCH):
            batch = ",".join(str(uid) for uid in refs[start : start + _SIZE_BATCH])
            with self.trouble("reading message sizes"):
                data = self.ok("FETCH", self.client.uid("FETCH", batch, "(RFC822.SIZE)"))
            for item in data:
                head = item[0] if isinstance(item, tuple) else item
                if isinstance(head, bytes) and (uid := _UID.search(head)) and (size := _SIZE.search(head)):
                    sizes[int(uid.group(1))] = int(size.group(1))
        return sizes

    def fetch(self, ref: int, max_size: int) -> bytes | object | None:
        assert self.client is not None
        # A partial fetch: never more than max_size + 1 bytes, whatever size the server announced.
        with self.trouble(f"reading UID {ref}"):
            data = self.ok(
                f"FETCH of UID {ref}", self.client.uid("FETCH", str(ref), f"(BODY.PEEK[]<0.{max_size + 1}>)")
            )
        literals = [item for item in data if isinstance(item, tuple)]
        if len(literals) > 1:
            literals = [
                item for item in literals if (uid := _UID.search(item[0])) and int(uid.group(1)) == ref
            ]
        if not literals:
            return None
        raw = bytes(literals[0][1])
        return _TOO_LARGE if len(raw) > max_size else raw

    def mark(self, ref: int) -> None:
        assert self.client is not None
        client, uid = self.client, str(ref)
        with self.trouble(f"marking UID {ref} processed"):
            if not self.move_to:
                self.ok("STORE", client.uid("STORE", uid, "+FLAGS.SILENT", f"({PROCESSED_KEYWORD} \\Seen)"))
            elif "MOVE" in self.capabilities:
                self.ok("MOVE", client.uid("MOVE", uid, self.move_to))
            else:  # RFC 3501: a copy, then the original deleted and keyworded, expunged at the end
                self.ok("COPY", client.uid("COPY", uid, self.move_to))
                self.ok(
                    "STORE",
                    client.uid("STORE", uid, "+FLAGS.SILENT", f"(\\Seen \\Deleted {PROCESSED_KEYWORD})"),
                )

    def finish(self) -> None:
        assert self.client is not None
        if self.move_to and "MOVE" not in self.capabilities:
            self.expunge_copied()
        with suppress(imaplib.IMAP4.error, OSError, EOFError):
            self.client.logout()
        self.client = None

    def expunge_copied(self) -> None:
        """Expunge the originals of messages copied to processed_folder: this run's, and those a run that
        stopped before its end left flagged \\Deleted. With UIDPLUS (RFC 4315) only those; without it,
        EXPUNGE also removes what other clients flagged \\Deleted in the folder."""
        assert self.client is not None
        with self.trouble("expunging the moved messages"):
            data = self.ok("SEARCH", self.client.uid("SEARCH", "DELETED", "KEYWORD", PROCESSED_KEYWORD))
            uids = (data[0] or b"").split() if data else []
            if uids and "UIDPLUS" in self.capabilities:
                self.ok("EXPUNGE", self.client.uid("EXPUNGE", b",".join(uids).decode("ascii")))
            elif uids:
                self.ok("EXPUNGE", self.client.expunge())

    def close(self) -> None:
        if self.client is not None:
            with suppress(OSError):
                self.client.shutdown()
            self.client = None


# POP3


class _Pop3Lines:
    """poplib with lines as long as a message may be (its own limit, 2048 bytes, refuses many a real
    HTML line) and RETR that stops keeping a message once it passes the size limit."""

    max_line = MAX_MESSAGE_BYTES

    def _getline(self) -> tuple[bytes, int]:
        line = self.file.readline(self.max_line + 1)  # type: ignore[attr-defined]
        if len(line) > self.max_line:  # type: ignore[attr-defined]
            raise poplib.error_proto("line too long")
        if not line:
            raise poplib.error_proto("-ERR EOF")
        octets = len(line)
        if line[-2:] == b"\r\n":
            return line[:-2], octets
        if line[:1] == b"\r":
            return line[1:-1], octets
        return line[:-1], octets

    def retrieve(self, which: int, max_size: int) -> bytes | None:
        """Message ``which`` with CRLF line ends, or None (read to its end, not kept) past ``max_size``."""
        self.max_line = max(self.max_line, max_size + 2)
        self._shortcmd(f"RETR {which}")  # type: ignore[attr-defined]
        message = bytearray()
        over = False
        while True:
            line, _ = self._getline()
            if line == b".":
                break
            if line.startswith(b".."):
                line = line[1:]
            if not over:
                message += line + b"\r\n"
                if len(message) > max_size:
                    over, message = True, bytearray()
        return None if over else bytes(message)


class _POP3(_Pop3Lines, poplib.POP3):
    pass


class _POP3_SSL(_Pop3Lines, poplib.POP3_SSL):
    pass


class _Pop3(_Session):
    protocol = "POP3"

    def __init__(self, settings: BouncesSettings, context: ssl.SSLContext | None, timeout: float) -> None:
        super().__init__(settings, context, timeout)
        self.client: _POP3 | _POP3_SSL | None = None

    def label(self, ref: int) -> str:
        return f"message {ref}"

    def open(self) -> None:
        settings = self.settings
        with self.trouble("connecting", refused=MailboxUnreachable):
            if settings.security == "tls":
                self.client = _POP3_SSL(
                    settings.host, settings.port, timeout=self.timeout, context=self.context
                )
            else:
                self.client = _POP3(settings.host, settings.port, timeout=self.timeout)
        client = self.client
        if settings.security == "starttls":
            with self.trouble("asking for its capabilities"):
                try:
                    offered = client.capa()
                except poplib.error_proto:  # no CAPA (RFC 2449): no STLS either
                    offered = {}
            if "STLS" not in offered:
                raise self.no_starttls()
            with self.trouble("starting TLS", refused=MailboxTlsError):
                client.stls(self.context)
        with self.trouble("logging in", refused=MailboxLoginFailed):
            client.user(settings.username)
            client.pass_(settings.password)

    def waiting(self) -> tuple[list[int], int]:
        assert self.client is not None
        with self.trouble("listing messages"):
            _, lines, _ = self.client.list()
        self.listed: dict[int, int] = {}
        for line in lines:
            number, _, size = line.partition(b" ")
            with suppress(ValueError):
                self.listed[int(number)] = int(size.split()[0])
        return sorted(self.listed), 0

    def sizes(self, refs: list[int]) -> dict[int, int]:
        return {ref: self.listed[ref] for ref in refs}

    def fetch(self, ref: int, max_size: int) -> bytes | object | None:
        assert self.client is not None
        with self.trouble(f"reading message {ref}"):
            raw = self.client.retrieve(ref, max_size)
        return _TOO_LARGE if raw is None else raw

    def mark(self, ref: int) -> None:
        assert self.client is not None
        with self.trouble(f"deleting message {ref}"):
            self.client.dele(ref)

    def finish(self) -> None:
        assert self.client is not None
        # QUIT commits the deletions (RFC 1939, UPDATE state); without it the server keeps every message.
        with self.trouble("quitting (which commits the deletions)"):
            self.client.quit()
        self.client = None

    def close(self) -> None:
        if self.client is not None:
            with suppress(OSError):
                self.client.close()
            self.client = None
