"""Where the benchmarks find the shared corpus of captured feeds."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEEK = "arxiv_rss2_all-archives_2024-11-28__aioarxiv.xml"  # 1,504 items of one arXiv announcement day


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--corpus",
        type=Path,
        default=Path(os.environ.get("NEWSLETTER_CORPUS", ROOT.parent / "shared" / "corpus")),
        help="the shared corpus (default: ../shared/corpus or NEWSLETTER_CORPUS)",
    )


def feed(corpus: Path, name: str = WEEK) -> Path | None:
    """The captured feed ``name``, or None after saying why it is missing."""
    path = corpus / "feeds" / name
    if not path.exists():
        print(f"corpus file not found: {path} (use --corpus or NEWSLETTER_CORPUS)", file=sys.stderr)
        return None
    return path
