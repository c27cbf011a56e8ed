"""Clustering benchmark on a real arXiv announcement day (the 1,504-item rss.arxiv.org capture).

The clusterer sees titles and abstracts only; the papers' primary categories (130 of them, in 20 archives)
are the reference it is scored against: NMI and ARI, number of topics, labels and wall time. Run with the
number of topics chosen from the data, then forced to the number of distinct primary categories (and of
archives). A plain reference pipeline, TF-IDF -> LSA(200) -> k-means with the same k, runs in the same
process for comparison.

    python bench/cluster.py [--engine tfidf|embeddings] [--corpus ../shared/corpus]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import corpus  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.decomposition import TruncatedSVD  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score  # noqa: E402
from sklearn.preprocessing import normalize  # noqa: E402

from newsletter.cluster import PaperText, cluster_documents  # noqa: E402
from newsletter.sources import arxiv_rss  # noqa: E402

FEED_NAME = corpus.WEEK


def reference_labels(documents: list[PaperText], k: int) -> np.ndarray:
    """The textbook pipeline the issue quotes: TF-IDF (uni+bigrams, sublinear) -> LSA(200) -> k-means."""
    texts = [f"{d.title} {d.abstract}" for d in documents]
    tfidf = TfidfVectorizer(
        ngram_range=(1, 2), sublinear_tf=True, min_df=2, stop_words="english"
    ).fit_transform(texts)
    reduced = normalize(TruncatedSVD(200, random_state=0).fit_transform(tfidf))
    return KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(reduced)


def labels_of(clustering, n: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    labels = np.full(n, -1)
    for number, topic in enumerate(clustering.topics):
        labels[topic.members] = number
    assert (labels >= 0).all(), "a paper was left out"
    return labels


def score(name: str, truth: list[str], labels: np.ndarray) -> str:
    nmi = normalized_mutual_info_score(truth, labels)
    ari = adjusted_rand_score(truth, labels)
    return f"{name}: NMI {nmi:.3f}  ARI {ari:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", default="tfidf", choices=["tfidf", "embeddings"])
    corpus.add_argument(parser)
    args = parser.parse_args()
    path = corpus.feed(args.corpus)
    if path is None:
        return 2
    papers = arxiv_rss.parse(path.read_bytes()).papers
    documents = [PaperText(p.arxiv_id or p.title, p.title, p.abstract) for p in papers]  # no categories
    primary = [p.primary_category or "" for p in papers]
    archive = [category.split(".")[0] for category in primary]
    print(
        f"{len(papers)} papers from {FEED_NAME}; {len(set(primary))} primary categories in "
        f"{len(set(archive))} archives; engine {args.engine}\n"
    )

    runs = [
        ("topics chosen from the data", None),
        (f"--topics {len(set(primary))} (primary categories)", len(set(primary))),
    ]
    runs.append((f"--topics {len(set(archive))} (archives)", len(set(archive))))
    for title, topics in runs:
        started = time.perf_counter()
        clustering = cluster_documents(documents, topics=topics, engine=args.engine)
        elapsed = time.perf_counter() - started
        labels = labels_of(clustering, len(documents))
        k = len(clustering.topics)
        print(f"== {title}: {k} topics in {elapsed:.2f} s")
        print("  " + score("vs primary category", primary, labels))
        print("  " + score("vs archive", archive, labels))
        started = time.perf_counter()
        reference = reference_labels(documents, k)
        reference_time = time.perf_counter() - started
        print(
            f"  reference TF-IDF -> LSA(200) -> k-means, same k, {reference_time:.2f} s: "
            + score("vs primary category", primary, reference)
        )
        if topics is None:
            print(
                "  silhouette by k: " + ", ".join(f"{k}: {v:.3f}" for k, v in clustering.candidates.items())
            )
        if k <= 20:
            for topic in clustering.topics:
                print(f"  {len(topic.members):5}  {topic.label}")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
