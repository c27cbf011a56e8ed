"""Regenerates tests/fixtures/bounces/postfix/: the delivery status notifications a real Postfix writes.

    sudo .venv/bin/python -m tests.support.postfix_bounces [OUTDIR]

Runs a throwaway Postfix instance (its own config_directory and queue_directory in a temporary
directory; needs root and Postfix 3.x: postfix, postconf, postalias, sendmail, postqueue) with local
delivery, and a small SMTP server on 127.0.0.1 (aiosmtpd) that plays a remote domain refusing some
recipients. Each message is submitted with the newsletter's kind of envelope sender
(``bounces+<ref>@news.example.test``, VERP) and Message-ID; the bounces come back to that sender, which
the instance delivers to a Maildir through an alias, so each captured file is exactly what arrives in a
bounce mailbox (with Postfix's Return-Path and Delivered-To). Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aiosmtpd.controller import Controller

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "fixtures" / "bounces" / "postfix"
SENDER = "bounces+{ref}@news.example.test"

# What the remote domain (remote.test, played by the SMTP server below) answers at RCPT time.
REMOTE_REPLIES = {
    "gone@remote.test": "550 5.1.1 <gone@remote.test>: Recipient address rejected: User unknown",
    "full@remote.test": "552 5.2.2 <full@remote.test>: Mailbox full, quota exceeded",
    "later@remote.test": "452 4.2.2 <later@remote.test>: Mailbox full, try again later",
}


class RemoteDomain:
    """The SMTP server of remote.test: refuses the recipients above, accepts and forgets the rest."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # aiosmtpd's hook
        reply = REMOTE_REPLIES.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 Accepted"


def original(ref: str, to: str, subject: str) -> bytes:
    """A newsletter message as the sender writes it: our Message-ID, our list headers."""
    return (
        "From: Research digest <digest@news.example.test>\r\n"
        f"To: {to}\r\n"
        f"Subject: {subject}\r\n"
        "Date: Wed, 02 Dec 2026 09:00:00 +0000\r\n"
        f"Message-ID: <{ref}@news.example.test>\r\n"
        "List-Unsubscribe: <https://news.example.test/u/abc>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "This week's papers, by topic.\r\n"
    ).encode()


class Instance:
    """A Postfix of its own under ROOT: config in ROOT/etc, queue in ROOT/queue, the bounce Maildir."""

    def __init__(self, root: Path, remote_port: int) -> None:
        self.root = root
        self.etc = root / "etc"
        self.maildir = root / "mail" / "bounces"
        self.env = {**os.environ, "MAIL_CONFIG": str(self.etc)}
        self.remote_port = remote_port

    def configure(self) -> None:
        root, etc = self.root, self.etc
        root.chmod(0o755)  # the postfix and nobody users walk through it
        for name in ("etc", "queue", "data", "mail"):
            (root / name).mkdir()
        nobody = pwd.getpwnam("nobody")
        os.chown(root / "mail", nobody.pw_uid, nobody.pw_gid)
        postfix = pwd.getpwnam("postfix")
        os.chown(root / "data", postfix.pw_uid, postfix.pw_gid)
        (etc / "aliases").write_text(f"bounces: {self.maildir}/\nmailer-daemon: /dev/null\n")
        (etc / "transport").write_text(f"remote.test smtp:[127.0.0.1]:{self.remote_port}\n")
        (etc / "main.cf").write_text(
            "\n".join(
                [
                    "compatibility_level = 3.6",
                    f"queue_directory = {root / 'queue'}",
                    f"data_directory = {root / 'data'}",
                    "command_directory = /usr/sbin",
                    "daemon_directory = /usr/lib/postfix/sbin",
                    "meta_directory = /etc/postfix",
                    "shlib_directory = /usr/lib/postfix",
                    "mail_owner = postfix",
                    "setgid_group = postdrop",
                    f"maillog_file = {root / 'maillog'}",
                    f"maillog_file_prefixes = {root}",
                    "myhostname = mx.example.test",
                    "mydomain = example.test",
                    "myorigin = $mydomain",
                    "mydestination = example.test, news.example.test, localhost",
                    "inet_interfaces = loopback-only",
                    "inet_protocols = ipv4",
                    "mynetworks = 127.0.0.0/8",
                    "recipient_delimiter = +",
                    f"alias_maps = hash:{etc / 'aliases'}",
                    f"alias_database = hash:{etc / 'aliases'}",
                    f"transport_maps = hash:{etc / 'transport'}",
                    "relayhost =",
                    "smtp_tls_security_level = none",
                    "smtp_host_lookup = native",
                    "biff = no",
                    "queue_run_delay = 1s",
                    "minimal_backoff_time = 1s",
                    "maximal_backoff_time = 2s",
                    "delay_warning_time = 1s",
                    "maximal_queue_lifetime = 1h",
                    "bounce_queue_lifetime = 1h",
                    "",
                ]
            )
        )
        shutil.copy("/usr/share/postfix/master.cf.dist", etc / "master.cf")
        # No chroot (the instance lives outside /var/spool/postfix), no listening smtpd.
        lines = []
        for line in (etc / "master.cf").read_text().splitlines():
            fields = line.split()
            if line[:1] not in ("#", " ", "\t", "") and len(fields) >= 8:
                if fields[0] == "smtp" and fields[1] == "inet":
                    continue
                fields[4] = "n"
                line = " ".join(fields)
            lines.append(line)
        lines.append("postlog unix-dgram n - n - 1 postlogd")
        (etc / "master.cf").write_text("\n".join(lines) + "\n")
        self.run("postalias", str(etc / "aliases"))
        self.run("postmap", str(etc / "transport"))
        self.run("postfix", "check")

    def run(self, *command: str) -> None:
        subprocess.run([*command[:1], "-c", str(self.etc), *command[1:]], check=True, env=self.env)

    def start(self) -> None:
        self.run("postfix", "start")

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], env=self.env, check=False)

    def set(self, setting: str) -> None:
        self.run("postconf", "-e", setting)
        self.run("postfix", "reload")

    def submit(self, ref: str, recipients: list[str], subject: str, *options: str) -> None:
        message = original(ref, ", ".join(recipients), subject)
        subprocess.run(
            [
                "sendmail",
                "-C",
                str(self.etc),
                "-i",
                *options,
                "-f",
                SENDER.format(ref=ref),
                "--",
                *recipients,
            ],
            input=message,
            check=True,
            env=self.env,
        )

    def flush(self) -> None:
        self.run("postqueue", "-f")

    def delivered(self) -> list[Path]:
        new = self.maildir / "new"
        return sorted(new.iterdir(), key=lambda path: path.stat().st_mtime_ns) if new.is_dir() else []


def wait_for(what: str, condition: Callable[[], bool], instance: Instance, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            log = instance.root / "maillog"
            sys.exit(f"timed out waiting for {what}\n{log.read_text() if log.exists() else ''}")
        time.sleep(0.2)


def capture(instance: Instance, out: Path, name: str, action: Callable[[], None]) -> None:
    """Run one scenario and keep the one bounce it produces as OUT/NAME."""
    before = set(instance.delivered())
    action()
    wait_for(name, lambda: set(instance.delivered()) - before, instance)
    [path] = set(instance.delivered()) - before
    (out / name).write_bytes(path.read_bytes())
    print(f"wrote {out / name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    out = parser.parse_args(argv).out
    if os.geteuid() != 0:
        sys.exit("run this as root: a Postfix instance starts its daemons as root")
    out.mkdir(parents=True, exist_ok=True)
    with socket.socket() as probe:  # a free port for the remote domain's server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(RemoteDomain(), hostname="127.0.0.1", port=port)
    controller.start()
    with tempfile.TemporaryDirectory(prefix="postfix-bounces-") as temp:
        instance = Instance(Path(temp), port)
        instance.configure()
        instance.start()
        try:
            capture(
                instance,
                out,
                "local-unknown-user.eml",
                lambda: instance.submit("e3.r17", ["nosuchuser@example.test"], "Papers this week"),
            )
            capture(
                instance,
                out,
                "local-unknown-users-headers-only.eml",
                lambda: instance.submit(
                    "e3.r18",
                    ["nosuchuser1@example.test", "NoSuchUser2@example.test", "nosuchuser3@example.test"],
                    "Papers this week",
                    "-R",
                    "hdrs",
                ),
            )
            capture(
                instance,
                out,
                "remote-user-unknown.eml",
                lambda: instance.submit("e3.r19", ["gone@remote.test"], "Papers this week"),
            )
            capture(
                instance,
                out,
                "remote-mailbox-full.eml",
                lambda: instance.submit("e3.r20", ["full@remote.test"], "Papers this week"),
            )
            # A recipient refused with 4xx: deferred, a delay warning after delay_warning_time, then
            # (once the queue lifetime is cut to nothing) returned as failed with the last 4xx status.
            capture(
                instance,
                out,
                "remote-deferred-delay-warning.eml",
                lambda: (
                    instance.submit(
                        "e3.r21", ["later@remote.test"], "Papers this week", "-N", "delay,failure"
                    ),
                    time.sleep(2),
                    instance.flush(),
                ),
            )
            capture(
                instance,
                out,
                "remote-deferred-expired.eml",
                lambda: (instance.set("maximal_queue_lifetime = 1s"), time.sleep(2), instance.flush()),
            )
        finally:
            instance.stop()
            controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
