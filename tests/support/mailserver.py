"""A real IMAP and POP3 server for tests: Debian's dovecot (dovecot-imapd, dovecot-pop3d) started with a
throwaway configuration in a temporary directory, listening on 127.0.0.1 only, with a Maildir per user.

One server can hold many mailboxes: ``server.new_mailbox()`` adds a user with a password of its own, so
each test gets an empty mailbox without a new server. Messages go in by IMAP APPEND over the plain port,
as a mail client would put them there.

Run as root (CI), dovecot keeps to its own rules: its master runs as root, the login processes as
``dovenull``, and mailbox access as ``nobody`` (dovecot refuses uid 0 for mail). Run as anyone else, every
process is that user.
"""

from __future__ import annotations

import ctypes
import grp
import imaplib
import itertools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from newsletter.settings import BouncesSettings
from tests.support.tls import server_certificate

DOVECOT = "dovecot"


def dovecot_binary() -> str | None:
    """Where dovecot is installed (``/usr/sbin`` is not always on a test user's PATH), or None."""
    return shutil.which(DOVECOT) or shutil.which(DOVECOT, path="/usr/sbin:/usr/local/sbin")


def require_dovecot() -> str:
    """The dovecot binary; without one the test is skipped, except under CI=true, where it fails
    (.ci/run installs dovecot-imapd and dovecot-pop3d)."""
    binary = dovecot_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "dovecot is not installed, and CI=true: .ci/run installs dovecot-imapd and dovecot-pop3d"
            )
        pytest.skip("dovecot is not installed (apt-get install dovecot-imapd dovecot-pop3d)")
    return binary


def _free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now: all bound at once, so that they differ, then released for dovecot."""
    probes = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Ports:
    imap: int
    imaps: int | None  # None: a server without TLS
    pop3: int
    pop3s: int | None


@dataclass
class Mailbox:
    """One user's mailbox on the server."""

    server: Dovecot
    username: str
    password: str

    def settings(self, protocol: str = "imap", security: str = "tls", **changes: object) -> BouncesSettings:
        """[bounces] settings that read this mailbox over ``protocol`` with ``security`` (the server's
        certificate trusted through ``ca_file``); ``changes`` set any other key."""
        base = BouncesSettings(
            protocol=protocol,
            host="127.0.0.1",
            port=self.server.port(protocol, security),
            security=security,
            ca_file=str(self.server.ca_file),
            username=self.username,
            password=self.password,
        )
        return replace(base, **changes)

    @contextmanager
    def imap(self) -> Iterator[imaplib.IMAP4]:
        """A logged-in IMAP connection over the plain port, as a mail client of the test's own."""
        client = imaplib.IMAP4("127.0.0.1", self.server.ports.imap, timeout=30)
        try:
            client.login(self.username, self.password)
            yield client
        finally:
            with suppress(imaplib.IMAP4.error, OSError):
                client.logout()

    def append(self, *messages: bytes, folder: str = "INBOX") -> None:
        """Put messages in ``folder`` (made if absent), in order."""
        with self.imap() as client:
            if folder != "INBOX":
                client.create(_quoted(folder))  # an existing folder answers NO: fine
            for raw in messages:
                status, data = client.append(_quoted(folder), None, None, raw)
                assert status == "OK", data

    def messages(self, folder: str = "INBOX") -> list[bytes]:
        """The messages in ``folder``, in order, as stored (none if it does not exist)."""
        return [raw for raw, _flags in self.messages_with_flags(folder)]

    def messages_with_flags(self, folder: str = "INBOX") -> list[tuple[bytes, set[str]]]:
        """Each message in ``folder`` with its flags and keywords (``\\Seen``, ``$NewsletterProcessed``)."""
        with self.imap() as client:
            status, _ = client.select(_quoted(folder), readonly=True)
            if status != "OK":
                return []
            status, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
            found = []
            for item in data:
                if isinstance(item, tuple):
                    head = item[0].decode()
                    flags = head.split("FLAGS (", 1)[1].split(")", 1)[0].split()
                    found.append((item[1], set(flags)))
            return found

    def folders(self) -> set[str]:
        with self.imap() as client:
            _, data = client.list()
            return {line.decode().rsplit(" ", 1)[-1].strip('"') for line in data if line}


@dataclass
class Dovecot:
    """A running dovecot; ``stop()`` ends it and removes its directory."""

    directory: Path
    ca_file: Path  # the self-signed certificate it presents, to trust as ca_file
    ports: Ports
    process: subprocess.Popen[bytes]
    _users: itertools.count[int]

    @property
    def log(self) -> str:
        path = self.directory / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def port(self, protocol: str, security: str) -> int:
        tls = security == "tls"
        port = {
            ("imap", False): self.ports.imap,
            ("imap", True): self.ports.imaps,
            ("pop3", False): self.ports.pop3,
            ("pop3", True): self.ports.pop3s,
        }[(protocol, tls)]
        if port is None:
            raise ValueError("this server was started without TLS")
        return port

    def new_mailbox(self) -> Mailbox:
        """A new user with an empty mailbox."""
        username = f"reader{next(self._users)}"
        password = secrets.token_urlsafe(12)
        # A file per user: dovecot reads a changed passwd-file at most once a second, a new one at once.
        entry = self.directory / "users" / username
        entry.write_text(f"{username}:{{PLAIN}}{password}::::::\n")
        entry.chmod(0o644)
        return Mailbox(self, username, password)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def _config(directory: Path, ports: Ports, tls: bool, imap_capability: str | None) -> str:
    if os.geteuid() == 0:
        internal, group, login, mail = "dovecot", "dovecot", "dovenull", pwd.getpwnam("nobody")
    else:
        mail = pwd.getpwuid(os.geteuid())
        internal = login = mail.pw_name
        group = grp.getgrgid(os.getegid()).gr_name
    tls_listeners = {"imap": ports.imaps, "pop3": ports.pop3s}
    plain_listeners = {"imap": ports.imap, "pop3": ports.pop3}
    services = []
    for protocol in ("imap", "pop3"):
        listeners = f"  inet_listener {protocol} {{\n    port = {plain_listeners[protocol]}\n  }}\n"
        if tls:
            listeners += (
                f"  inet_listener {protocol}s {{\n    port = {tls_listeners[protocol]}\n    ssl = yes\n  }}\n"
            )
        services.append(f"service {protocol}-login {{\n  chroot =\n{listeners}}}\n")
    # What the server announces after login, instead of its own list:
    capability = f"imap_capability = {imap_capability}\n" if imap_capability is not None else ""
    ssl = (
        f"ssl = yes\nssl_cert = <{directory}/cert.pem\nssl_key = <{directory}/key.pem\n"
        if tls
        else "ssl = no\n"
    )
    return f"""\
instance_name = newsletter-test-{directory.name}
base_dir = {directory}/run
state_dir = {directory}/state
log_path = {directory}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
{ssl}{capability}disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = {internal}
default_internal_group = {group}
default_login_user = {login}
first_valid_uid = {mail.pw_uid}
first_valid_gid = {mail.pw_gid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {directory}/users/%u
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {directory}/users/%u
  default_fields = uid={mail.pw_uid} gid={mail.pw_gid} home={directory}/home/%u mail=maildir:{directory}/mail/%u
}}
service anvil {{
  chroot =
}}
{"".join(services)}"""


def _end_with_parent() -> None:
    """In the child, before dovecot starts: a SIGTERM when the test process dies, however it dies, so
    that no dovecot outlives a killed test run (Linux's PR_SET_PDEATHSIG)."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _answers(port: int) -> bool:
    try:
        with closing(socket.create_connection(("127.0.0.1", port), timeout=5)):
            return True
    except OSError:
        return False


def start_dovecot(*, tls: bool = True, imap_capability: str | None = None) -> Dovecot:
    """Start dovecot on free ports of 127.0.0.1; with ``tls`` it offers imaps and pop3s, and STARTTLS
    and STLS on the plain ports, with a certificate for 127.0.0.1. ``imap_capability`` replaces the
    capabilities it announces after login ("IMAP4rev1 UIDPLUS": a server without MOVE)."""
    binary = dovecot_binary()
    if binary is None:
        raise FileNotFoundError("dovecot is not installed (apt-get install dovecot-imapd dovecot-pop3d)")
    directory = Path(tempfile.mkdtemp(prefix="dovecot-"))
    directory.chmod(0o755)  # dovecot's own users reach its sockets, users and mail through it
    try:
        ca_file, _context = server_certificate(directory)
        (directory / "users").mkdir()
        (directory / "users").chmod(0o755)
        for part in ("mail", "home"):
            (directory / part).mkdir()
            if os.geteuid() == 0:
                nobody = pwd.getpwnam("nobody")
                os.chown(directory / part, nobody.pw_uid, nobody.pw_gid)
        for attempt in range(3):  # a free port taken by someone else in between: new ports
            imap, imaps, pop3, pop3s = _free_ports(4)
            ports = Ports(imap, imaps if tls else None, pop3, pop3s if tls else None)
            (directory / "dovecot.conf").write_text(_config(directory, ports, tls, imap_capability))
            (directory / "dovecot.log").unlink(missing_ok=True)
            process = subprocess.Popen(
                [binary, "-F", "-c", str(directory / "dovecot.conf")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                preexec_fn=_end_with_parent,
            )
            server = Dovecot(directory, ca_file, ports, process, itertools.count(1))
            wanted = [port for port in vars(ports).values() if port is not None]
            deadline = time.monotonic() + 30
            while process.poll() is None and time.monotonic() < deadline:
                if all(_answers(port) for port in wanted):
                    return server
                time.sleep(0.05)
            log = server.log
            if process.poll() is None:
                process.terminate()
                process.wait()
            if "Address already in use" not in log or attempt == 2:
                raise RuntimeError(f"dovecot did not start:\n{log}")
        raise AssertionError("unreachable")
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


@contextmanager
def dovecot(*, tls: bool = True, imap_capability: str | None = None) -> Iterator[Dovecot]:
    server = start_dovecot(tls=tls, imap_capability=imap_capability)
    try:
        yield server
    finally:
        server.stop()
