"""Serving the web app with uvicorn: the listening sockets, and limits that keep slow or greedy clients from
holding the server.

uvicorn closes idle keep-alive connections but has no timeout for a request still arriving and no limit per
client. Its HTTP protocol is subclassed here to add both: the headers must arrive within ``header_timeout``
and the body within ``body_timeout`` (else 408 and the connection is closed), and connections beyond
``max_connections`` in all, or ``max_connections_per_client`` from one address, are closed as soon as they are
accepted. Addresses in ``trusted_proxies`` have no per-client limit: a reverse proxy carries every client
over its own connections, and the proxy enforces the per-client limits (deploy/nginx.conf, deploy/Caddyfile).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import resource
import signal
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.utils import get_remote_addr

from newsletter.errors import ServeError
from newsletter.settings import WebSettings

log = logging.getLogger(__name__)

# File descriptors kept free of connections: the database connections of the worker threads, the SMTP
# connections of a send, log files and the listening sockets.
RESERVED_FILES = 100
# Connections waiting to be accepted. asyncio accepts up to this many at once before any is looked at (and
# refused), so it also counts against the open files.
BACKLOG = 128


@dataclass(frozen=True, slots=True)
class Listener:
    sockets: list[socket.socket]
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{f'[{self.host}]' if ':' in self.host else self.host}:{self.port}"

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def listen(host: str, port: int) -> Listener:
    """Bind ``host:port`` now, so that a taken port or a wrong address is one clear error before anything
    else starts."""
    where = f"{host}:{port}"
    if not 1 <= port <= 65535:
        raise ServeError(f"cannot listen on {where}: a port is a number from 1 to 65535", exit_code=2)
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(f"cannot listen on {where}: {exc.strerror}", exit_code=2) from None
    sockets: list[socket.socket] = []
    try:
        for family, _, _, _, address in dict.fromkeys(addresses):
            sockets.append(socket.create_server(address, family=family, backlog=BACKLOG))
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise _bind_error(where, exc) from None
    return Listener(sockets, host, sockets[0].getsockname()[1])


def _bind_error(where: str, exc: OSError) -> ServeError:
    if exc.errno == errno.EADDRINUSE:
        return ServeError(
            f"cannot listen on {where}: the port is already in use (another `newsletter serve` or `run`?); "
            "choose another with --port"
        )
    if exc.errno == errno.EACCES:
        return ServeError(f"cannot listen on {where}: permission denied (ports below 1024 need privileges)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return ServeError(f"cannot listen on {where}: no network interface has that address", exit_code=2)
    return ServeError(f"cannot listen on {where}: {exc.strerror or exc}")


def port_mismatch(base_url: str, port: int) -> str | None:
    """A warning when ``base_url`` addresses this server directly (its own port, or a loopback host) but
    on another port than the one it listens on: every link in emails and pages would miss it."""
    parts = urlsplit(base_url)
    linked = parts.port or (443 if parts.scheme == "https" else 80)
    direct = parts.port is not None or _is_loopback(parts.hostname or "")
    if not direct or linked == port:
        return None
    return (
        f"listening on port {port}, but [web] base_url {base_url} points to port {linked}: links in emails "
        "and pages will miss this server unless something forwards that port here"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def raise_file_limit() -> int:
    """Raise the soft limit on open files to the hard limit; returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("could not raise the limit on open files from %d to %d: %s", soft, wanted, exc)
    return soft


@dataclass(frozen=True, slots=True)
class ClientLimits:
    header_timeout: float
    body_timeout: float
    max_connections: int
    max_connections_per_client: int
    exempt: Callable[[str | None], bool]

    @classmethod
    def from_settings(cls, web: WebSettings, open_files: int) -> ClientLimits:
        max_connections = web.max_connections
        room = max(16, open_files - RESERVED_FILES - BACKLOG)
        if room < max_connections:
            log.warning(
                "[web] max_connections lowered from %d to %d: the process may open only %d files",
                max_connections,
                room,
                open_files,
            )
            max_connections = room
        return cls(
            header_timeout=web.header_timeout,
            body_timeout=web.body_timeout,
            max_connections=max_connections,
            max_connections_per_client=web.max_connections_per_client,
            exempt=trusted_addresses(web.trusted_proxies),
        )


def trusted_addresses(trusted_proxies: str) -> Callable[[str | None], bool]:
    """Whether a peer address is one of ``trusted_proxies`` (addresses or networks, comma-separated, or *)."""
    items = [item.strip() for item in trusted_proxies.split(",") if item.strip()]
    if "*" in items:
        return lambda _address: True
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            continue

    def trusted(address: str | None) -> bool:
        if address is None:  # a Unix socket: only a local proxy can reach it
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in networks)

    return trusted


_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    b"content-length: 37\r\n\r\nThe request did not arrive in time.\r\n"
)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with request timeouts and connection limits (see the module docstring)."""

    limits: ClassVar[ClientLimits]
    open_by_client: ClassVar[Counter[str | None]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused = False
        self._address: str | None = None
        self._awaiting: str | None = None  # "headers" or "body": what the client still has to send
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = get_remote_addr(transport)
        address = peer[0] if peer else None
        refusal = self._refusal(address)
        if refusal:
            self._refused = True
            transport.close()
            log.warning(refusal)
            return
        self._address = address
        self.open_by_client[address] += 1
        super().connection_made(transport)
        self._watch()

    def _refusal(self, address: str | None) -> str | None:
        limits = self.limits
        if len(self.connections) >= limits.max_connections:
            return f"refusing new connections: {limits.max_connections} are open ([web] max_connections)"
        if not limits.exempt(address) and self.open_by_client[address] >= limits.max_connections_per_client:
            return (
                f"refusing connections from {address}: it has {limits.max_connections_per_client} open "
                "([web] max_connections_per_client)"
            )
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self.open_by_client[self._address] -= 1
        if self.open_by_client[self._address] <= 0:
            del self.open_by_client[self._address]
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def _watch(self) -> None:
        """Start the clock when the connection begins waiting for a request's headers or its body. It is
        not restarted by each byte, so trickling does not keep a connection open."""
        state = self.conn.their_state
        awaiting = "headers" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
        if self.transport.is_closing():
            awaiting = None
        if awaiting == self._awaiting:
            return
        self._cancel_deadline()
        self._awaiting = awaiting
        if awaiting is not None:
            timeout = self.limits.header_timeout if awaiting == "headers" else self.limits.body_timeout
            self._deadline = self.loop.call_later(timeout, self._expired, awaiting, timeout)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, awaiting: str, timeout: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if awaiting == "headers":
            answer = bool(self.conn.trailing_data[0])  # a request had begun (else: an idle connection)
        else:
            cycle = self.cycle
            answer = cycle is not None and not cycle.response_started
            if cycle is not None and not cycle.response_complete:
                # The handler waiting for the body sees the client gone, and writes nothing after this.
                cycle.disconnected = True
                cycle.message_event.set()
        if answer:
            self.transport.write(_TIMED_OUT)
        if answer or awaiting == "body":
            # Without the client's address: the same line for every client, so that a crowd of slow
            # clients adds one line a minute to the log, not one per connection.
            log.warning("closed a connection: the request %s did not arrive within %g s", awaiting, timeout)
        self.transport.close()


def protocol_class(limits: ClientLimits) -> type[GuardedH11Protocol]:
    """A protocol class for one server: its limits and its count of connections per client."""
    return type(
        "ServerH11Protocol",
        (GuardedH11Protocol,),
        {"limits": limits, "open_by_client": Counter()},
    )


def run(app: Any, web: WebSettings, listener: Listener) -> None:
    """Serve ``app`` on ``listener`` until SIGTERM or Ctrl-C."""
    limits = ClientLimits.from_settings(web, raise_file_limit())
    config = uvicorn.Config(
        app,
        http=protocol_class(limits),
        ws="none",
        log_config=None,  # our handler: one format, secrets and link tokens redacted
        proxy_headers=True,
        forwarded_allow_ips=web.trusted_proxies,
        backlog=BACKLOG,
        timeout_keep_alive=5,
    )
    server = uvicorn.Server(config)
    log.info("web app on %s (Ctrl-C stops it)", listener.url)
    with _return_on_sigterm(server):
        server.run(sockets=listener.sockets)


@contextmanager
def _return_on_sigterm(server: uvicorn.Server) -> Iterator[None]:
    """uvicorn stops on SIGTERM, then raises the signal again for the handler that was there before it:
    the default one would end the process at once, before the caller stops the scheduler (a send would
    be cut off mid-message). This handler only asks the server to stop (in case uvicorn is not listening
    for signals yet), so ``run`` returns and the caller cleans up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(_signum: int, _frame: object) -> None:
        server.should_exit = True

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
