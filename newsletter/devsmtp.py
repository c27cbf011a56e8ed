"""The embedded SMTP server: aiosmtpd on 127.0.0.1, storing every message it receives in a Maildir.

Used by ``newsletter demo`` and by ``[smtp] host = "embedded"`` so that the whole pipeline runs with
nothing else installed, and by the tests as the real SMTP peer. Each stored message starts with a
``Delivered-To:`` line naming its recipient, as a local delivery agent would write it: one copy per
recipient, openable in any mail program that reads Maildir.
"""

from __future__ import annotations

import errno
import logging
import mailbox
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPProtocol
from aiosmtpd.smtp import Envelope, Session

log = logging.getLogger(__name__)

# aiosmtpd logs every SMTP command and reply at INFO, some 18 lines per message, which buried the log of
# `serve` and `run` (their level is INFO) whenever the embedded server sent a mail. Its warnings still show.
logging.getLogger("mail.log").setLevel(logging.WARNING)

MAILDIR_FOLDERS = ("tmp", "new", "cur")


def prepare_maildir(path: Path) -> mailbox.Maildir:
    """The Maildir at ``path`` with its folders. ``mailbox`` creates them only along with a new directory,
    so an existing empty directory would otherwise fail every message."""
    for folder in MAILDIR_FOLDERS:
        (path / folder).mkdir(parents=True, exist_ok=True)
    return mailbox.Maildir(path, create=False)


class MaildirHandler:
    """Stores each accepted message once per recipient in a Maildir, created when the first one arrives
    (starting the server, e.g. for `newsletter doctor`, leaves no trace on disk)."""

    def __init__(self, maildir: Path) -> None:
        self.maildir_path = Path(maildir)
        self._maildir: mailbox.Maildir | None = None
        self._lock = threading.Lock()
        self.received = 0

    def _open_maildir(self) -> mailbox.Maildir:
        # A method, not a property: aiosmtpd looks at every attribute of its handler (inspect.getmembers).
        if self._maildir is None:
            self._maildir = prepare_maildir(self.maildir_path)
        return self._maildir

    async def handle_DATA(self, server: SMTPProtocol, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        try:
            with self._lock:
                maildir = self._open_maildir()
                # As a delivery agent does: where bounces of the message would go, and whom it was for.
                trace = f"Return-Path: <{envelope.mail_from or ''}>\r\n"
                for recipient in envelope.rcpt_tos:
                    maildir.add(f"Delivered-To: {recipient}\r\n{trace}".encode() + content)
                    self.received += 1
        except OSError as exc:  # a full disk or a wrong path is temporary trouble, not the message's fault
            log.error("cannot store a message in %s: %s", self.maildir_path, exc)
            return "451 4.3.0 Cannot store the message now"
        return "250 2.0.0 Message accepted for delivery"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (0: any free port), or an OSError that names the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be used: {exc.strerror}"
        raise OSError(exc.errno, f"{host}:{port} {reason}") from None


class _BoundController(Controller):
    """aiosmtpd's controller serving a socket bound beforehand: a port in use fails at once, in the
    caller's thread, instead of after aiosmtpd's ready timeout (10 s) in its own."""

    def __init__(self, handler: Any, listener: socket.socket, **options: Any) -> None:
        self._listener = listener
        host, port = listener.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port, **options)

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._listener, ssl=self.ssl_context)


class EmbeddedSMTPServer:
    """aiosmtpd in a background thread on 127.0.0.1; ``port`` 0 picks a free one."""

    def __init__(
        self,
        maildir: Path,
        *,
        port: int = 0,
        handler: Any | None = None,
        host: str = "127.0.0.1",
        **smtp_options: Any,  # passed to aiosmtpd's SMTP: tls_context, authenticator, auth_required...
    ) -> None:
        self.handler = handler or MaildirHandler(maildir)
        self.host = host
        listener = listening_socket(host, port)
        self.port = int(listener.getsockname()[1])
        self._controller = _BoundController(
            self.handler,
            listener,
            server_hostname="newsletter.embedded",
            ready_timeout=10,
            **smtp_options,
        )

    def start(self) -> EmbeddedSMTPServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


@contextmanager
def embedded_smtp_server(maildir: Path, *, port: int = 0) -> Iterator[EmbeddedSMTPServer]:
    server = EmbeddedSMTPServer(maildir, port=port).start()
    try:
        yield server
    finally:
        server.stop()


def messages_by_recipient(maildir: Path) -> dict[str, list[mailbox.MaildirMessage]]:
    """Every stored message, grouped by the recipient in its ``Delivered-To`` line."""
    grouped: dict[str, list[mailbox.MaildirMessage]] = {}
    if not (maildir / "new").is_dir():
        return grouped  # nothing has arrived yet
    for message in mailbox.Maildir(maildir, create=False):
        grouped.setdefault(str(message["Delivered-To"]).lower(), []).append(message)
    return grouped
