"""A real aiosmtpd server on 127.0.0.1 with scripted trouble per recipient, for delivery tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.smtp import SMTP as SMTPProtocol
from aiosmtpd.smtp import Envelope, Session

from newsletter.devsmtp import EmbeddedSMTPServer, MaildirHandler, messages_by_recipient


@dataclass
class Script:
    """What the server does for one recipient: a list of actions consumed one per attempt, then accept.

    Actions: an SMTP reply such as "451 4.3.0 Try again later" at RCPT time, "drop-rcpt" (hang up at
    RCPT), "drop-data" (hang up after receiving the whole message, without replying), "data:REPLY" (reply
    REPLY to the end of DATA without storing the message).
    """

    actions: list[str] = field(default_factory=list)


class ScriptedHandler(MaildirHandler):
    def __init__(self, maildir: Path) -> None:
        super().__init__(maildir)
        self.scripts: dict[str, Script] = {}
        self.rcpt_attempts: Counter[str] = Counter()
        self.arrivals: list[tuple[float, str]] = []  # (monotonic time, recipient) of stored messages
        self.delay = 0.0  # seconds to wait before answering the end of DATA
        self.on_message: Callable[[str], None] | None = None
        self.pipelining = False  # announce PIPELINING (RFC 2920), as Postfix does
        self._script_lock = threading.Lock()

    async def handle_EHLO(
        self, server: SMTPProtocol, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    def script(self, address: str, *actions: str) -> None:
        self.scripts[address.lower()] = Script(list(actions))

    def _next_action(self, address: str, stage: str) -> str | None:
        with self._script_lock:
            script = self.scripts.get(address.lower())
            if not script or not script.actions:
                return None
            action = script.actions[0]
            is_data_action = action.startswith("data:") or action == "drop-data"
            if (stage == "data") != is_data_action:
                return None
            return script.actions.pop(0)

    async def handle_RCPT(
        self,
        server: SMTPProtocol,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        self.rcpt_attempts[address.lower()] += 1
        action = self._next_action(address, "rcpt")
        if action == "drop-rcpt":
            server.transport.close()
            return "421 4.4.2 closing"
        if action:
            return action
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPProtocol, session: Session, envelope: Envelope) -> str:
        recipient = envelope.rcpt_tos[0]
        action = self._next_action(recipient, "data")
        if self.delay:
            await asyncio.sleep(self.delay)
        if action == "drop-data":
            server.transport.close()
            return "451 4.4.2 closing"
        if action and action.startswith("data:"):
            return action.removeprefix("data:")
        reply = await super().handle_DATA(server, session, envelope)
        self.arrivals.append((time.monotonic(), recipient.lower()))
        if self.on_message:
            self.on_message(recipient)
        return reply


class ScriptedSMTPServer:
    def __init__(self, maildir: Path, *, pipelining: bool = False) -> None:
        self.maildir = maildir
        self.handler = ScriptedHandler(maildir)
        self.handler.pipelining = pipelining
        self.server = EmbeddedSMTPServer(maildir, handler=self.handler).start()
        self.port = self.server.port

    def stop(self) -> None:
        self.server.stop()

    def counts(self) -> Counter[str]:
        return Counter(
            {address: len(messages) for address, messages in messages_by_recipient(self.maildir).items()}
        )

    def messages(self, address: str):  # type: ignore[no-untyped-def]
        return messages_by_recipient(self.maildir).get(address.lower(), [])
