"""The web app served by a real uvicorn on 127.0.0.1, in a background thread, or by the real
``newsletter serve`` in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import uvicorn

from newsletter.devsmtp import free_port


class RunningApp:
    def __init__(self, app: object, port: int | None = None) -> None:
        self.port = port or free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the web app did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class ServeProcess:
    """The real ``newsletter serve`` (or ``run``) in a subprocess, its log in a file; ``web`` is the text of
    the [web] table. ``TMPDIR`` is a directory of its own, to see whether anything is spooled to disk."""

    def __init__(
        self,
        tmp_path: Path,
        web: str = "",
        *,
        command: str = "serve",
        more_config: str = "",
        preexec: Callable[[], None] | None = None,
        verbose: bool = False,  # -v: the access log too
    ) -> None:
        self.port = free_port()
        self.tmpdir = tmp_path / "server-tmp"
        self.tmpdir.mkdir()
        self.log_path = tmp_path / "serve.log"
        config = tmp_path / "newsletter.toml"
        config.write_text(f'[newsletter]\ndatabase = "news.db"\n[web]\n{web}\n{more_config}')
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
        env["TMPDIR"] = str(self.tmpdir)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "newsletter", *(["-v"] if verbose else []), "--config", str(config),
                 command, "--port", str(self.port)],
                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"newsletter serve did not start:\n{self.log()}")
            time.sleep(0.1)

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self, source: str = "127.0.0.1") -> socket.socket:
        """A connection from ``source`` (any 127.x.y.z address: another client)."""
        sock = socket.socket()
        sock.bind((source, 0))
        sock.settimeout(10)
        sock.connect(("127.0.0.1", self.port))
        return sock

    def open_files_under(self, directory: Path) -> list[str]:
        """The files the server has open in ``directory`` (also unnamed temporary files, which Linux
        creates with O_TMPFILE and no directory entry)."""
        found = []
        for fd in Path(f"/proc/{self.process.pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(str(directory)):
                found.append(target)
        return found

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
