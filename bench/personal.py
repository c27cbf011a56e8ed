"""Personal ranking benchmark: simulated readers on the captured arXiv listings.

A reader follows one cross-listed category: a category listed on at least ``--min-papers`` papers of the
file that is the primary category of fewer than half of them (categories that always come together,
such as math-ph and math.MP, count as one). Categories are never shown to the rankers: they see titles,
abstracts and authors. The papers are split in two halves by a hash of their id; 10 of the category's
papers in one half are the reader's library, the other half is the edition to rank, and its papers of
that category are the relevant ones. Each category gives a reader in each direction (library from
either half) when both halves hold enough of its papers.

Three rankers run on the same texts in the same run, and nDCG@10, P@10 and AUC are averaged over readers:

* the project's ranker (newsletter.personal), one ``PersonalRanker`` per edition, its space fitted on
  the edition and every reader's library (on the edition alone with ``--edition-space``);
* cosine to the centroid of the library's TF-IDF vectors;
* arxiv-sanity-lite's per-user LinearSVC (C=0.01, class_weight balanced), library positive and every
  paper of the edition negative, on arxiv-sanity-lite's TF-IDF (words and pairs, sublinear, min_df 5,
  max_df 0.5, 10,000 features, title + abstract + authors); both baselines share that TF-IDF.

Then readers with two unrelated interests: 5 library papers from each of two categories of different
archives, both categories relevant. Printed per file and for the week's new and replacement announcements
as separate listings (different papers, different vocabulary), then the ratio of the project's nDCG@10
to the better baseline's (target >= 1.2).

``--scale`` ranks 100,000 synthetic readers (10 library papers each, drawn from the corpus) against a
3,000-paper edition (the corpus's papers, each a second time with a third of its abstract's words left
out, to reach 3,000) and prints wall time and peak memory against the targets 60 s and 500 MB.

    python bench/personal.py [--corpus ../shared/corpus] [--feeds NAME ...] [--edition-space]
    python bench/personal.py --scale [--readers 100000]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import resource
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import corpus  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.svm import LinearSVC  # noqa: E402

from newsletter.cluster import PaperText  # noqa: E402
from newsletter.models import AnnounceType, Paper  # noqa: E402
from newsletter.personal import LIBRARY, PersonalRanker, Reader, Signal  # noqa: E402
from newsletter.sources import arxiv_api, arxiv_rss  # noqa: E402

LIBRARY_SIZE = 10
SCALE_EDITION = 3000
SCALE_SECONDS = 60.0
SCALE_MEGABYTES = 500.0


@dataclass(frozen=True)
class Case:
    name: str
    library: list[Paper]
    edition: list[Paper]
    relevant: np.ndarray  # over the edition
    half_papers: list[Paper]  # the library's half of the file, for the reference ceiling
    half_labels: np.ndarray  # which of those are relevant


# --- readers -------------------------------------------------------------------------------------------


def half(paper: Paper) -> int:
    return int(hashlib.sha256(key(paper).encode()).hexdigest(), 16) % 2


def key(paper: Paper) -> str:
    return paper.arxiv_id or paper.title


def draw(papers: list[Paper], salt: str = "") -> list[Paper]:
    """A deterministic shuffle: papers ordered by a hash of their id."""
    return sorted(papers, key=lambda p: hashlib.sha256(f"{salt}{key(p)}".encode()).hexdigest())


def followed_categories(
    papers: list[Paper], min_papers: int, cross_listed: bool = True
) -> list[tuple[str, frozenset[str]]]:
    """Categories listed on >= min_papers papers; cross-listed ones are the primary category of under
    half of them. Categories that always come together (math-ph and math.MP) count as one."""
    listed = Counter(c for p in papers for c in set(p.categories))
    primary = Counter(p.primary_category for p in papers)
    groups: dict[frozenset[str], list[str]] = {}
    for category in listed:
        members = frozenset(key(p) for p in papers if category in p.categories)
        groups.setdefault(members, []).append(category)
    chosen = []
    for members, names in groups.items():
        primaries = sum(primary[name] for name in names)
        if len(members) >= min_papers and (not cross_listed or 2 * primaries < len(members)):
            chosen.append(("/".join(sorted(names)), members))
    return sorted(chosen)


def single_interest(
    papers: list[Paper], min_papers: int, cross_listed: bool = True, draws: int = 1
) -> list[Case]:
    cases = []
    for name, members in followed_categories(papers, min_papers, cross_listed):
        for side in (0, 1):
            own_half = [p for p in papers if half(p) == side]
            edition = [p for p in papers if half(p) != side]
            relevant = np.array([key(p) in members for p in edition])
            labels = np.array([key(p) in members for p in own_half])
            for number in range(draws):
                pool = draw([p for p in own_half if key(p) in members], salt=str(number) if number else "")
                if len(pool) >= LIBRARY_SIZE and relevant.sum() >= 3:
                    library = pool[:LIBRARY_SIZE]
                    cases.append(Case(f"{name} ({side})", library, edition, relevant, own_half, labels))
    return cases


def two_interests(papers: list[Paper], min_papers: int) -> list[Case]:
    """Library: 5 papers of each of two categories of different archives; both are relevant."""
    categories = followed_categories(papers, min_papers)
    cases = []
    for (first, a), (second, b) in itertools.combinations(categories, 2):
        if archive(first) == archive(second) or a & b:
            continue
        for side in (0, 1):
            pool_a = draw([p for p in papers if key(p) in a and half(p) == side])
            pool_b = draw([p for p in papers if key(p) in b and half(p) == side])
            edition = [p for p in papers if half(p) != side]
            relevant = np.array([key(p) in a or key(p) in b for p in edition])
            half_size = LIBRARY_SIZE // 2
            if len(pool_a) >= half_size and len(pool_b) >= half_size:
                library = pool_a[:half_size] + pool_b[:half_size]
                own_half = [p for p in papers if half(p) == side]
                labels = np.array([key(p) in a or key(p) in b for p in own_half])
                cases.append(
                    Case(f"{first} + {second} ({side})", library, edition, relevant, own_half, labels)
                )
    return cases


def archive(category: str) -> str:
    return category.split("/")[0].split(".")[0].split("-")[0]


# --- rankers -------------------------------------------------------------------------------------------


def as_text(paper: Paper) -> PaperText:
    return PaperText(key(paper), paper.title, paper.abstract)


def project_scores(cases: list[Case], edition_space: bool = False) -> list[np.ndarray]:
    # One ranker per edition, its space fitted on the edition and every reader's library, as the send
    # path does with the libraries of all its readers (on the edition's papers alone with
    # ``edition_space``).
    libraries: dict[tuple[str, ...], list[Paper]] = {}
    for case in cases:
        libraries.setdefault(tuple(key(p) for p in case.edition), []).extend(case.library)
    rankers: dict[tuple[str, ...], PersonalRanker] = {}
    out = []
    for case in cases:
        edition_key = tuple(key(p) for p in case.edition)
        if edition_key not in rankers:
            rankers[edition_key] = PersonalRanker(
                [as_text(p) for p in case.edition],
                signal_papers=() if edition_space else [as_text(p) for p in libraries[edition_key]],
            )
        ranker = rankers[edition_key]
        view = ranker.rank([Signal(as_text(p), LIBRARY) for p in case.library])
        out.append(view.score_array)
    return out


def arxiv_sanity_features(documents: list[Paper]):  # type: ignore[no-untyped-def]
    vectorizer = TfidfVectorizer(
        strip_accents="unicode",
        lowercase=True,
        analyzer="word",
        stop_words="english",
        token_pattern=r"(?u)\b[a-zA-Z_][a-zA-Z0-9_]+\b",
        ngram_range=(1, 2),
        max_features=10_000,
        norm="l2",
        use_idf=True,
        smooth_idf=True,
        sublinear_tf=True,
        max_df=0.5,
        min_df=5,
    )
    return vectorizer.fit_transform(" ".join([p.title, p.abstract, " ".join(p.authors)]) for p in documents)


def ceiling_scores(case: Case) -> np.ndarray:
    """Not a ranker: a LinearSVC trained on every paper of the library's half with its true label."""
    features = arxiv_sanity_features(case.edition + case.half_papers)
    edition, known = features[: len(case.edition)], features[len(case.edition) :]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm = LinearSVC(class_weight="balanced", max_iter=10_000, tol=1e-6, C=0.1).fit(
            known, case.half_labels
        )
    return svm.decision_function(edition)


def baseline_scores(case: Case) -> tuple[np.ndarray, np.ndarray]:
    features = arxiv_sanity_features(case.edition + case.library)
    edition, library = features[: len(case.edition)], features[len(case.edition) :]
    centroid = np.asarray(library.mean(axis=0)).ravel()
    centroid /= np.linalg.norm(centroid) or 1.0
    labels = np.r_[np.zeros(len(case.edition)), np.ones(len(case.library))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm = LinearSVC(class_weight="balanced", max_iter=10_000, tol=1e-6, C=0.01).fit(features, labels)
    return edition @ centroid, svm.decision_function(edition)


# --- metrics -------------------------------------------------------------------------------------------


def metrics(scores: np.ndarray, relevant: np.ndarray) -> tuple[float, float, float]:
    # Ties are broken by the edition's order, as the ranker itself does.
    top = np.lexsort((np.arange(len(scores)), -scores))[:10]
    discounts = 1 / np.log2(np.arange(2, 12))
    ideal = discounts[: min(10, int(relevant.sum()))].sum()
    ndcg = float((relevant[top] * discounts[: len(top)]).sum() / ideal)
    return ndcg, float(relevant[top].mean()), float(roc_auc_score(relevant, scores))


LABELS = {
    "project": "project (newsletter.personal)",
    "centroid": "cosine to library centroid",
    "svm": "arxiv-sanity-lite LinearSVC",
    "ceiling": "reference: SVM on all labels of the half",
}


def measure(
    title: str, cases: list[Case], ceiling: bool = False, edition_space: bool = False
) -> dict[str, np.ndarray] | None:
    if not cases:
        return None
    results: dict[str, list[tuple[float, float, float]]] = {"project": [], "centroid": [], "svm": []}
    started = time.perf_counter()
    for case, project in zip(cases, project_scores(cases, edition_space), strict=True):
        results["project"].append(metrics(project, case.relevant))
    project_time = time.perf_counter() - started
    for case in cases:
        centroid, svm = baseline_scores(case)
        results["centroid"].append(metrics(centroid, case.relevant))
        results["svm"].append(metrics(svm, case.relevant))
        if ceiling:
            results.setdefault("ceiling", []).append(metrics(ceiling_scores(case), case.relevant))
    means = {name: np.array(values).mean(axis=0) for name, values in results.items()}
    print(f"{title}: {len(cases)} readers (project ranker {project_time:.1f} s in all)")
    for name, values in means.items():
        ndcg, p10, auc = values
        print(f"  {LABELS[name]:40s} nDCG@10 {ndcg:.3f}   P@10 {p10:.3f}   AUC {auc:.3f}")
    best = max(means["centroid"][0], means["svm"][0])
    print(f"  ratio nDCG@10 project / better baseline: {means['project'][0] / best:.2f}\n")
    return {name: np.array(values) for name, values in results.items()}


def listings(corpus_dir: Path, names: list[str] | None) -> list[tuple[str, list[Paper]]]:
    feeds = corpus_dir / "feeds"
    paths = [feeds / name for name in names] if names else sorted(feeds.glob("arxiv_*.xml"))
    out = []
    for path in paths:
        if not path.exists():
            print(f"corpus file not found: {path}", file=sys.stderr)
            continue
        parse = arxiv_rss.parse if path.name.startswith("arxiv_rss") else arxiv_api.parse
        try:
            papers = parse(path.read_bytes()).papers
        except Exception:  # an error capture in the corpus: nothing to rank
            continue
        out.append((path.name, [p for p in papers if p.abstract]))
    return out


def quality(args: argparse.Namespace) -> int:
    files = listings(args.corpus, args.feeds)
    if not files:
        return 2
    too_small = []
    for name, papers in files:
        if not single_interest(papers, args.min_papers):
            too_small.append(f"{name} ({len(papers)} papers)")
            continue
        print(f"== {name}: {len(papers)} papers")
        measure(
            f"one cross-listed category (>= {args.min_papers} papers, primary of under half)",
            single_interest(papers, args.min_papers),
            ceiling=True,
            edition_space=args.edition_space,
        )
        measure(
            f"any category of >= {args.min_papers} papers, two library draws each",
            single_interest(papers, args.min_papers, cross_listed=False, draws=2),
            edition_space=args.edition_space,
        )
        measure(
            "two unrelated categories, 5 + 5 library papers",
            two_interests(papers, args.min_papers),
            edition_space=args.edition_space,
        )
        # The announcement kinds are separate listings: different papers, different vocabularies.
        kinds = Counter(p.announce_type for p in papers)
        for kind in (AnnounceType.NEW, AnnounceType.REPLACE):
            if kinds[kind] < 200:
                continue
            selection = [p for p in papers if p.announce_type == kind]
            print(f"== {name}, its {len(selection)} {kind.value} announcements only")
            measure(
                f"any category of >= {args.slice_min_papers} papers, two library draws each",
                single_interest(selection, args.slice_min_papers, cross_listed=False, draws=2),
                edition_space=args.edition_space,
            )
    if too_small:
        print(f"no category qualifies (too few papers) in: {'; '.join(too_small)}")
    return 0


# --- scale ---------------------------------------------------------------------------------------------


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def scale(args: argparse.Namespace) -> int:
    path = corpus.feed(args.corpus)
    if path is None:
        return 2
    papers = [p for p in arxiv_rss.parse(path.read_bytes()).papers if p.abstract]
    rng = np.random.default_rng(0)
    edition = [as_text(p) for p in papers]
    for number, paper in enumerate(itertools.cycle(papers)):
        if len(edition) >= SCALE_EDITION:
            break
        words = [w for w in paper.abstract.split() if rng.random() > 1 / 3]
        edition.append(PaperText(f"variant-{number}", paper.title, " ".join(words)))
    pool = [as_text(p) for p in papers]
    now = datetime(2024, 12, 1, tzinfo=UTC)
    load = os.getloadavg()[0]

    # Library papers drawn at random from the whole corpus, added up to 400 days ago: readers whose
    # libraries span many topics, the costliest kind for the For-you section.
    signals = [Signal(paper, LIBRARY, now - timedelta(days=int(rng.integers(0, 400)))) for paper in pool]

    def readers():  # type: ignore[no-untyped-def]
        for number in range(args.readers):
            picks = rng.choice(len(pool), LIBRARY_SIZE, replace=False)
            yield Reader(f"reader{number}", [signals[i] for i in picks])

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    ranker = PersonalRanker(edition, signal_papers=pool, now=now)
    built = time.perf_counter() - started
    after_build = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with_for_you = 0
    for view in ranker.rank_many(readers()):
        with_for_you += bool(view.for_you)
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.readers} readers x {LIBRARY_SIZE} library papers against a {len(edition)}-paper edition")
    print(f"  edition's space built in {built:.1f} s; {with_for_you} readers got a For-you section")
    print(
        f"  wall time {elapsed:.1f} s, CPU time {cpu:.1f} s on {os.cpu_count()} cores, load average before "
        f"{load:.1f} (target <= {SCALE_SECONDS:.0f} s: {'met' if elapsed <= SCALE_SECONDS else 'NOT met'})"
    )
    print(
        f"  peak memory (max RSS of the process) {peak:.0f} MB: {before:.0f} MB before building, "
        f"{after_build:.0f} MB after (target <= {SCALE_MEGABYTES:.0f} MB: {'met' if peak <= SCALE_MEGABYTES else 'NOT met'})"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    corpus.add_argument(parser)
    parser.add_argument(
        "--feeds", nargs="*", help="listing files in the corpus (default: every arxiv_* file)"
    )
    parser.add_argument("--min-papers", type=int, default=20)
    parser.add_argument(
        "--slice-min-papers", type=int, default=12, help="the same, in one kind of announcement"
    )
    parser.add_argument(
        "--edition-space",
        action="store_true",
        help="fit the ranker's space on the edition's papers alone, not with the readers' libraries",
    )
    parser.add_argument("--scale", action="store_true", help="time 100,000 readers instead")
    parser.add_argument("--readers", type=int, default=100_000)
    args = parser.parse_args()
    return scale(args) if args.scale else quality(args)


if __name__ == "__main__":
    sys.exit(main())
