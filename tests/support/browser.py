"""Debian's chromium, driven by Playwright (Playwright's own browser download is never used)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Browser:
    def __enter__(self):  # type: ignore[no-untyped-def]
        playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
        if not Path(CHROMIUM).exists():
            if os.environ.get("CI") == "true":
                pytest.fail("chromium is missing in CI: .ci/run installs it with apt-get")
            pytest.skip("chromium is not installed (apt-get install chromium)")
        self._playwright = playwright_api.sync_playwright().start()
        self._browser = self._playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)
        return self._browser

    def __exit__(self, *exc_info: object) -> None:
        self._browser.close()
        self._playwright.stop()


def screenshot_dir(rootpath: Path) -> Path:
    path = rootpath / "test-output" / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path
