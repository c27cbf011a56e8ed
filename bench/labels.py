"""Section labels, before and after, for every week of the shared corpus.

Each captured feed that yields papers is ingested into a fresh database as its kind of source (arXiv RSS
or API, Hugging Face daily, any feed), the edition's papers are selected and clustered as ``newsletter
digest build`` does, and each section is printed with its size, the label the previous labelling gave it
(bench/labels_before.py, a copy of it kept for this comparison: same sections, same counts), today's
label and today's subtitle (the grey line under the heading: "N papers · keywords"). The time of clustering
and labelling is printed for each week (best of ``--runs``).

    python bench/labels.py [--corpus ../shared/corpus] [--feeds NAME ...] [--runs 3] [--markdown]
    python bench/labels.py --common    # the words most of arXiv's archives use (cluster.COMMON_ACROSS_FIELDS)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import corpus  # noqa: E402
import labels_before  # noqa: E402

from newsletter.cluster import (  # noqa: E402
    GENERIC_RESEARCH_WORDS,
    STOP_WORDS,
    TOKEN_PATTERN,
    PaperText,
    cluster_documents,
)
from newsletter.db import open_database  # noqa: E402
from newsletter.fetch import Fetcher  # noqa: E402
from newsletter.ingest import run_ingest  # noqa: E402
from newsletter.settings import DigestSettings, SourceConfig  # noqa: E402
from newsletter.sources import STARTERS, arxiv_rss  # noqa: E402
from newsletter.store import new_papers_between  # noqa: E402

KINDS = (("arxiv_rss", "arxiv_rss"), ("arxiv_api", "arxiv_api"), ("hf_api", "hf_daily"))
# The arXiv categories the default configuration follows: the arXiv day restricted to them is the kind of
# edition most readers get (all of it machine learning, where the generic words are machine learning's).
DEFAULT_CATEGORIES = next(tuple(s["categories"]) for s in STARTERS if s["kind"] == "arxiv_rss")
SUBTITLE_KEYWORDS = 5  # as many as the email shows (newsletter/render.py)


def kind_of(path: Path) -> str:
    return next((kind for prefix, kind in KINDS if path.name.startswith(prefix)), "feed")


def week_documents(path: Path, workdir: Path, categories: tuple[str, ...] = ()) -> list[PaperText]:
    """The papers an edition of this capture would hold, as the clusterer sees them; with ``categories``,
    only the papers listed in one of them (what a source of those categories would have fetched)."""
    db = open_database(workdir / f"{path.stem}{'-'.join(('', *categories))}.db")
    now = datetime.now(UTC)
    try:
        with Fetcher() as fetcher:
            source = SourceConfig(name="week", kind=kind_of(path), url=path.as_uri())
            run_ingest(db, [source], fetcher, now=now - timedelta(hours=1))
        papers = new_papers_between(db, now - timedelta(days=1), now)
    finally:
        db.close()
    if categories:
        papers = [p for p in papers if set(json.loads(p["categories"] or "[]")) & set(categories)]
    return [PaperText(id=p["key"], title=p["title"], abstract=p["abstract"] or "") for p in papers]


def common_words(path: Path) -> list[str]:
    """The words that at least four in five of arXiv's archives use in one day's announcements, each in 2%
    of the archive's papers or more (archives of at least 15 papers), beside the research words already
    left out: how ``COMMON_ACROSS_FIELDS`` in newsletter/cluster.py was made."""
    archives: dict[str, list[set[str]]] = defaultdict(list)
    for paper in arxiv_rss.parse(path.read_bytes()).papers:
        words = {word.lower() for word in re.findall(TOKEN_PATTERN, f"{paper.title} {paper.abstract}")}
        archives[(paper.primary_category or "").split(".")[0]].append(words)
    large = [papers for papers in archives.values() if len(papers) >= 15]
    using: Counter[str] = Counter()
    for papers in large:
        counts = Counter(word for words in papers for word in words)
        using.update(word for word, n in counts.items() if n >= 0.02 * len(papers))
    return sorted(
        word
        for word, n in using.items()
        if n >= 0.8 * len(large) and word not in STOP_WORDS and word not in GENERIC_RESEARCH_WORDS
    )


def subtitle(size: int, keywords: list[str]) -> str:
    shown = keywords[:SUBTITLE_KEYWORDS]
    return f"{size} paper{'s' if size != 1 else ''}" + (f" · {', '.join(shown)}" if shown else "")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    corpus.add_argument(parser)
    parser.add_argument("--feeds", nargs="*", help="only these files of the corpus's feeds/")
    parser.add_argument("--runs", type=int, default=3, help="clusterings timed per week (best counts)")
    parser.add_argument("--markdown", action="store_true", help="print tables in Markdown")
    parser.add_argument("--common", action="store_true", help="print the words common to arXiv's fields")
    args = parser.parse_args()
    if args.common:
        path = corpus.feed(args.corpus)
        if path is None:
            return 2
        print(" ".join(common_words(path)))
        return 0
    feeds = args.corpus / "feeds"
    paths = [feeds / name for name in args.feeds] if args.feeds else sorted(feeds.glob("*"))
    paths = [p for p in paths if p.suffix in (".xml", ".json", ".atom", ".rdf")]
    if not paths:
        print(f"no captured feeds in {feeds} (use --corpus or NEWSLETTER_CORPUS)", file=sys.stderr)
        return 2
    settings = DigestSettings()
    with tempfile.TemporaryDirectory() as tmp:
        weeks = []
        for path in paths:
            weeks.append((path.name, week_documents(path, Path(tmp))))
            if kind_of(path) == "arxiv_rss":
                name = f"{path.name}, only {', '.join(DEFAULT_CATEGORIES)}"
                weeks.append((name, week_documents(path, Path(tmp), DEFAULT_CATEGORIES)))
        for name, documents in weeks:
            if not documents:
                continue
            best = float("inf")
            for _ in range(max(1, args.runs)):
                started = time.perf_counter()
                clustering = cluster_documents(
                    documents,
                    topics=settings.topics,
                    min_topics=settings.min_topics,
                    max_topics=settings.max_topics,
                    min_topic_size=settings.min_topic_size,
                    engine=settings.engine,
                )
                best = min(best, time.perf_counter() - started)
            before = labels_before.labels(documents, clustering.topics)
            print(
                f"== {name}: {len(documents)} papers, {len(clustering.topics)} sections, "
                f"clustered and labelled in {best:.2f} s"
            )
            rows = [
                (str(len(t.members)), old, t.label, subtitle(len(t.members), t.keywords))
                for t, (old, _) in zip(clustering.topics, before, strict=True)
            ]
            if args.markdown:
                print("\n| papers | label before | label after | subtitle after |\n|---|---|---|---|")
                for row in rows:
                    print("| " + " | ".join(row) + " |")
            else:
                width = max(len(row[1]) for row in rows)
                width_after = max(len(row[2]) for row in rows)
                for size, old, new, sub in rows:
                    print(f"  {size:>4}  {old:<{width}}  ->  {new:<{width_after}}  [{sub}]")
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
