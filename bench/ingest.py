"""Ingest benchmark: the 1,504-item rss.arxiv.org capture, served over a local HTTP server.

Prints entries/s of the whole ingest (fetch + parse + dedupe + store into a fresh SQLite file) and its
ratio to ``feedparser.parse`` alone on the same bytes, both measured in this run (best of --runs).
Target: ratio <= 1.5. Then fetches the unchanged feed again and shows that the 304 costs no parsing.

    python bench/ingest.py [--runs 5] [--corpus ../shared/corpus]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import corpus  # noqa: E402
import feedparser  # noqa: E402

from newsletter import text  # noqa: E402
from newsletter.db import open_database, write_transaction  # noqa: E402
from newsletter.fetch import Fetcher  # noqa: E402
from newsletter.ingest import run_ingest  # noqa: E402
from newsletter.settings import SourceConfig  # noqa: E402
from newsletter.sources import arxiv_rss  # noqa: E402
from newsletter.store import store_papers  # noqa: E402
from tests.support.feedserver import FeedServer, file_reply  # noqa: E402

FEED_NAME = corpus.WEEK


def best_of(runs: int, action) -> tuple[float, list[float]]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times), times


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    corpus.add_argument(parser)
    args = parser.parse_args()
    path = corpus.feed(args.corpus)
    if path is None:
        return 2
    body = path.read_bytes()

    reference, reference_times = best_of(args.runs, lambda: feedparser.parse(body))
    entries = len(feedparser.parse(body).entries)

    server = FeedServer()
    url = server.route("/rss", file_reply(path))
    source = SourceConfig(name="arxiv", kind="arxiv_rss", url=url)
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    reports = []

    def ingest_into_fresh_database() -> None:
        # A real week brings abstracts never seen before: start every run with a cold LaTeX cache.
        text._convert_island.cache_clear()
        db = open_database(workdir / f"run{len(reports)}.db")
        with Fetcher() as fetcher:
            reports.append(run_ingest(db, [source], fetcher, now=datetime.now(UTC))[0])
        db.close()

    ingest, ingest_times = best_of(args.runs, ingest_into_fresh_database)
    assert all(r.status == "ok" and r.fetched == entries for r in reports), reports

    # Where the time goes, stage by stage, on the same bytes.
    with Fetcher() as fetcher:
        fetch_time, _ = best_of(args.runs, lambda: fetcher.get(url + "?nocache"))
    parse_time, _ = best_of(args.runs, lambda: (text._convert_island.cache_clear(), arxiv_rss.parse(body)))
    papers = arxiv_rss.parse(body).papers
    store_runs = []

    def store_only() -> None:
        db = open_database(workdir / f"store{len(store_runs)}.db")
        with write_transaction(db):
            store_runs.append(store_papers(db, papers, source="arxiv", now=datetime.now(UTC)))
        db.close()

    store_time, _ = best_of(args.runs, store_only)

    # An unchanged feed: the server answers 304 and nothing is parsed.
    db = open_database(workdir / "run0.db")
    with Fetcher() as fetcher:
        started = time.perf_counter()
        [again] = run_ingest(db, [source], fetcher, now=datetime.now(UTC))
        not_modified_time = time.perf_counter() - started
    db.close()
    server.close()

    ratio = ingest / reference
    print(f"feed: {FEED_NAME} ({len(body) / 1e6:.1f} MB, {entries} entries), best of {args.runs} runs")
    print(
        f"feedparser.parse alone:         {reference * 1000:8.1f} ms  (median {statistics.median(reference_times) * 1000:.1f})"
    )
    print(
        f"whole ingest (fetch+parse+dedupe+store, fresh db): {ingest * 1000:8.1f} ms  (median {statistics.median(ingest_times) * 1000:.1f})"
    )
    print(
        f"  of which: HTTP fetch {fetch_time * 1000:.1f} ms, parse+clean {parse_time * 1000:.1f} ms, store {store_time * 1000:.1f} ms"
    )
    print(f"entries/s:                      {entries / ingest:8.0f}")
    print(
        f"ratio ingest / feedparser:      {ratio:8.2f}   (target <= 1.5: {'met' if ratio <= 1.5 else 'NOT met'})"
    )
    print(
        f"second fetch of unchanged feed: {not_modified_time * 1000:8.1f} ms, status {again.status}, "
        f"documents parsed {again.documents_parsed}"
    )
    return 0 if again.documents_parsed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
