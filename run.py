#!/usr/bin/env python3
"""Quick start: a virtual environment in .venv, the project installed into it, then one of

    python3 run.py demo [ARGS...]   the main job end to end on embedded defaults (newsletter demo)
    python3 run.py test [ARGS...]   the whole test suite (pytest; ARGS go to pytest)
    python3 run.py lint             ruff lint and format check
    python3 run.py bench NAME       a benchmark from bench/ (e.g. ingest), which prints its figures
    python3 run.py newsletter ...   any newsletter command

Needs only Python 3.11+ and a package index. The environment is reinstalled when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("NEWSLETTER_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".installed-from"


def ensure_environment() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this file must run, and explain, on an old Python too
        sys.exit(f"Python 3.11 or newer is needed (this is {sys.version.split()[0]})")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    if not (BIN / "python").exists():
        print(f"creating virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing the project and its test tools (first run only)", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "--editable", f"{ROOT}[test]"], check=True)
    STAMP.write_text(wanted)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    command, args = argv[0], argv[1:]
    commands = {
        "demo": [str(BIN / "newsletter"), "demo", *args],
        "test": [str(BIN / "python"), "-m", "pytest", *args],
        "newsletter": [str(BIN / "newsletter"), *args],
        "bench": [
            str(BIN / "python"),
            str(ROOT / "bench" / f"{args[0] if args else 'ingest'}.py"),
            *args[1:],
        ],
    }
    if command not in (*commands, "lint"):
        print(f"unknown command {command!r}\n{__doc__}", file=sys.stderr)
        return 2
    ensure_environment()
    if command == "lint":
        ruff = str(BIN / "ruff")
        checks = [[ruff, "check", str(ROOT)], [ruff, "format", "--check", str(ROOT)]]
        return max(subprocess.run(check, cwd=ROOT).returncode for check in checks)
    cwd = ROOT if command == "test" else None
    return subprocess.run(commands[command], cwd=cwd).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
