"""Peak memory of ingesting one large feed, from a file:// and from an http:// source.

Builds a feed of about 45 MB (under the default 50 MB size cap) by repeating the items of the 1,504-item
rss.arxiv.org capture with their arXiv ids changed per copy (so every copy is new papers), then runs the
whole ingest (fetch, parse, clean, store into a fresh database) in a process of its own for each source
and prints its peak memory (VmHWM) next to the feed's size and the peak of the same process doing nothing
but importing the code, all measured in this run. The feed is read as an arXiv feed (the strict parser)
and as a generic feed (feedparser), each as captured and with a single emoji added to one title: a
parser that turns the whole document into one string pays four bytes a character for it.

    python bench/feed_memory.py [--copies 16] [--kind arxiv_rss|feed] [--corpus ../shared/corpus]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import corpus  # noqa: E402

from tests.support.feedserver import FeedServer, file_reply  # noqa: E402

_ITEM = re.compile(rb"<item>.*?</item>\s*", re.DOTALL)


def build_feed(capture: Path, copies: int, out: Path, *, emoji: bool = False) -> int:
    """Write ``copies`` times the capture's items into one feed; returns the number of items."""
    data = capture.read_bytes()
    items = list(_ITEM.finditer(data))
    head, tail = data[: items[0].start()], data[items[-1].end() :]
    body = b"".join(match.group(0) for match in items)
    with out.open("wb") as feed:
        feed.write(head)
        for copy in range(copies):
            # 2411.17700 -> 2401.17700, 2402.17700...: other months, so each copy is papers never seen.
            prefix = f"{24 - copy // 12:02d}{copy % 12 + 1:02d}.".encode()
            text = body.replace(b"2411.", prefix)
            if emoji and copy == 0:
                text = text.replace(b"<title>", "<title>\U0001f680 ".encode(), 1)
            feed.write(text)
        feed.write(tail)
    return len(items) * copies


def probe(url: str | None, kind: str, database: Path) -> None:
    """Runs in the child: ingest ``url`` (or nothing) and print the counts and the peak memory."""
    from datetime import UTC, datetime

    from newsletter.db import open_database
    from newsletter.fetch import Fetcher
    from newsletter.ingest import run_ingest
    from newsletter.settings import SourceConfig

    fetched = 0
    if url is not None:
        db = open_database(database)
        with Fetcher() as fetcher:
            [report] = run_ingest(
                db, [SourceConfig(name="big", kind=kind, url=url)], fetcher, now=datetime.now(UTC)
            )
        db.close()
        if report.failed:
            raise SystemExit(f"ingest failed: {report.error}")
        fetched = report.fetched
    status = Path("/proc/self/status").read_text()
    peak = next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]
    print(fetched, peak)


def run_probe(url: str | None, kind: str, database: Path) -> tuple[int, int, float]:
    """(papers fetched, peak KB, seconds) of a fresh process ingesting ``url``."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, __file__, "--probe", url or "-", "--kind", kind, "--db", str(database)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if result.returncode != 0:
        raise SystemExit(f"probe of {url} failed: {result.stderr[-800:]}")
    fetched, peak = result.stdout.split()[-2:]
    return int(fetched), int(peak), time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--copies", type=int, default=16)
    parser.add_argument("--kind", choices=("arxiv_rss", "feed"), help="only this source kind (default: both)")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    corpus.add_argument(parser)
    args = parser.parse_args()
    if args.probe:
        probe(None if args.probe == "-" else args.probe, args.kind or "feed", args.db)
        return 0
    capture = corpus.feed(args.corpus)
    if capture is None:
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-feed-memory-"))
    server = FeedServer()
    kinds = [args.kind] if args.kind else ["arxiv_rss", "feed"]
    try:
        _, idle, _ = run_probe(None, "feed", workdir / "idle.db")
        for emoji in (False, True):
            path = workdir / f"big{int(emoji)}.xml"
            items = build_feed(capture, args.copies, path, emoji=emoji)
            size = path.stat().st_size
            route = server.route(f"/big{int(emoji)}", file_reply(path, "application/rss+xml; charset=utf-8"))
            print(
                f"feed: {items:,} items, {size / 1e6:.1f} MB ({args.copies} copies of {capture.name})"
                + (", one emoji in one title" if emoji else "")
            )
            for kind in kinds:
                for label, url in (("file://", path.as_uri()), ("http://", route)):
                    fetched, peak, seconds = run_probe(url, kind, workdir / f"{kind}{emoji}{label[:4]}.db")
                    print(
                        f"  {kind:9} from {label:8} peak {peak / 1024:5.0f} MB = idle + "
                        f"{(peak - idle) / 1024:4.0f} MB ({(peak - idle) * 1024 / size:4.1f} x the feed), "
                        f"{fetched:,} papers, {seconds:.1f} s"
                    )
        print(f"the same process without ingesting anything: {idle / 1024:.0f} MB")
    finally:
        server.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
