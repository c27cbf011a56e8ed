"""The embedded SMTP server: aiosmtpd on 127.0.0.1, storing every message it receives in a Maildir.

Used by ``newsletter demo`` and by ``[smtp] host = "embedded"`` so that the whole pipeline runs with
nothing else installed, and by the tests as the real SMTP peer. Each stored message starts with a
``Delivered-To:`` line naming its recipient, as a local delivery agent would write it: one copy per
recipient, openable in any mail program that reads Maildir.
"""

from __future__ import annotations

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


class MaildirHandler:
    """Stores each accepted message once per recipient in a Maildir."""

    def __init__(self, maildir: Path) -> None:
        self.maildir_path = Path(maildir)
        self.maildir_path.parent.mkdir(parents=True, exist_ok=True)
        self.maildir = mailbox.Maildir(self.maildir_path, create=True)
        self._lock = threading.Lock()
        self.received = 0

    async def handle_DATA(self, server: SMTPProtocol, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        with self._lock:
            for recipient in envelope.rcpt_tos:
                self.maildir.add(f"Delivered-To: {recipient}\r\n".encode() + content)
                self.received += 1
        return "250 2.0.0 Message accepted for delivery"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


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
        self.port = port or free_port(host)
        self._controller = Controller(
            self.handler,
            hostname=host,
            port=self.port,
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
    for message in mailbox.Maildir(maildir, create=False):
        grouped.setdefault(str(message["Delivered-To"]).lower(), []).append(message)
    return grouped
