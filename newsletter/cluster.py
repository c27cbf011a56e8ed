"""Group papers into topic sections and name each section, from text alone.

Default engine, no model and no network: TF-IDF over title and abstract (title counted twice, words and
two-word phrases, sublinear counts) -> LSA (truncated SVD, dimensions growing with the number of papers,
since few papers support few dimensions) -> k-means on the unit sphere. The number of topics is the one
with the best silhouette (cosine) between the configured bounds, the upper bound also limited so that a
section holds at least ``MIN_AVERAGE_SECTION`` papers on average. Sections too small to stand alone are
gathered in a final "Other" section: every paper lands in exactly one section.

Labels come from class-based TF-IDF: the terms frequent in one section and rare in the others, with stop
words and words every abstract uses ("model", "propose", "results") left out. Each label joins 2-4 terms
in their most common spelling ("LLMs", not "llms"), and no two sections share a label.

Everything is deterministic: input order does not matter and the random generators are seeded.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer, TfidfTransformer
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import normalize

from newsletter.errors import EngineUnavailable
from newsletter.settings import ENGINES

SEED = 0
MIN_AVERAGE_SECTION = 6  # papers per section on average, at the most topics allowed
SILHOUETTE_SAMPLE = 3000  # silhouette is quadratic: judged on a fixed sample of large editions
SELECTION_SAMPLE = 6000  # and k itself is chosen on a sample, then fitted on everything
OTHER_LABEL = "Other papers"

# Words that say "this is a paper", not what it is about.
GENERIC_RESEARCH_WORDS = frozenset(
    """
    ability able abstract accuracy accurate achieve achieved achieves achieving additionally address
    addresses addressing allow allows analysis analyze approach approaches area areas aspects based
    benchmark benchmarks better capabilities capability case challenge challenges challenging compare
    compared comparison component components conduct conducted consider contribution contributions
    crucial current data dataset datasets demonstrate demonstrated demonstrates design designed develop
    developed different effect effective effectiveness effects efficiency efficient enable enables
    enhance enhanced enhancing essential evaluate evaluated evaluating evaluation example examples
    existing experiment experimental experiments extensive field finally findings focus focuses form
    framework frameworks furthermore general given high high-quality however important improve improved
    improvement improvements improves improving including information insights introduce introduced
    introduces key lack large learning level levels leverage leveraging like limited low make manner
    measure measures method methodology methods model models new novel number numerous observed obtain
    obtained order outperform outperforms overall paper particular perform performance performs
    potential practical present presented presents previous prior problem problems process propose
    proposed proposes provide provided provides quality range real recent recently remains require
    requires research result results robust robustness scale setting settings show shown shows
    significant significantly simple small specific specifically state state-of-the-art strategies
    strategy strong structure structures studies study substantial success successful suggest superior
    system systems task tasks technique techniques terms time times tool tools training type types
    typically underlying understanding use used uses using value values variety various way ways work
    works yield yields
    """.split()  # noqa: SIM905 - a block of words reads better than a list of strings
)
STOP_WORDS = frozenset(ENGLISH_STOP_WORDS)
# Generic on their own, yet the head of many a topic's name: "language models", "reinforcement learning".
HEAD_NOUNS = frozenset(
    "model models learning network networks data dataset datasets system systems benchmark benchmarks training".split()  # noqa: SIM905
)

# Words of at least two letters and digits, hyphenated compounds kept whole ("chain-of-thought").
TOKEN_PATTERN = r"(?u)\b[^\W\d_]\w+(?:-\w+)*\b"


@dataclass(frozen=True, slots=True)
class PaperText:
    """What the clusterer sees of a paper: an id to give back, its title and its abstract."""

    id: str
    title: str
    abstract: str

    @property
    def text(self) -> str:
        # The title says what the paper is about more densely than the abstract: count it twice.
        return f"{self.title}. {self.title}. {self.abstract}"


@dataclass(slots=True)
class Topic:
    label: str
    keywords: list[str]
    members: list[int]  # indices into the documents given to cluster_documents
    centrality: list[float]  # cosine similarity of each member to the topic's centre, in members' order
    is_other: bool = False


@dataclass(slots=True)
class Clustering:
    topics: list[Topic] = field(default_factory=list)
    engine: str = "tfidf"
    dimensions: int = 0
    candidates: dict[int, float] = field(default_factory=dict)  # k -> silhouette, when k was chosen


def cluster_documents(
    documents: Sequence[PaperText],
    *,
    topics: int | None = None,
    min_topics: int = 4,
    max_topics: int = 15,
    min_topic_size: int = 2,
    engine: str = "tfidf",
) -> Clustering:
    """Cluster ``documents`` into topics; ``topics`` fixes their number, otherwise it is chosen."""
    if not documents:
        return Clustering(engine=engine)
    order = sorted(range(len(documents)), key=lambda i: documents[i].id)
    ordered = [documents[i] for i in order]
    # One counting pass: three-word phrases serve the labels ("large language models"), words and pairs
    # of words the clustering.
    counts, vocabulary = _term_counts(ordered)
    if len(ordered) == 1 or counts.shape[1] == 0:
        everyone = list(range(len(ordered)))
        return _finish(
            ordered, order, [everyone], [[1.0] * len(everyone)], counts, vocabulary, Clustering(engine=engine)
        )

    if engine not in ENGINES:
        raise EngineUnavailable(
            f"unknown clustering engine {engine!r} (expected one of {', '.join(ENGINES)})"
        )
    up_to_pairs = [i for i, term in enumerate(vocabulary) if term.count(" ") < 2]
    lexical, dimensions = _lsa(counts[:, up_to_pairs])
    if topics:
        k, candidates = min(topics, len(ordered)), {}
    else:
        # The lexical space also decides k for the embedding engine: silhouettes in a dense embedding
        # space keep favouring the fewest topics, which would make a useless digest.
        k, candidates = _choose_k(lexical, min_topics, max_topics)
    vectors = lexical
    if engine == "embeddings":
        from newsletter import embeddings

        vectors = _unit_rows(embeddings.encode([f"{doc.title}. {doc.abstract}" for doc in ordered]))
        dimensions = vectors.shape[1]
    labels, centres = _kmeans(vectors, k)
    groups, closeness = _groups(vectors, labels, centres, k)
    result = Clustering(engine=engine, dimensions=dimensions, candidates=candidates)
    return _finish(ordered, order, groups, closeness, counts, vocabulary, result, min_topic_size)


# --- vectors --------------------------------------------------------------------------------------------


def _term_counts(documents: Sequence[PaperText]) -> tuple[sparse.csr_matrix, np.ndarray]:
    vectorizer = CountVectorizer(
        ngram_range=(1, 3),
        stop_words=sorted(STOP_WORDS),
        token_pattern=TOKEN_PATTERN,
        min_df=2 if len(documents) >= 20 else 1,
        max_df=0.5 if len(documents) >= 20 else 1.0,
        dtype=np.float32,
    )
    try:
        counts = vectorizer.fit_transform(doc.text for doc in documents)
    except ValueError:  # nothing but stop words, or empty texts
        return sparse.csr_matrix((len(documents), 0), dtype=np.float32), np.array([], dtype=object)
    return counts.tocsr(), vectorizer.get_feature_names_out()


def lsa_dimensions(n_documents: int) -> int:
    """Few papers support few latent dimensions: measured best near n/50, between 10 and 100."""
    return max(10, min(100, n_documents // 50))


def _lsa(counts: sparse.csr_matrix) -> tuple[np.ndarray, int]:
    tfidf = TfidfTransformer(sublinear_tf=True).fit_transform(counts)
    n_documents = tfidf.shape[0]
    dimensions = min(lsa_dimensions(n_documents), tfidf.shape[1] - 1, n_documents - 1)
    if dimensions < 2:
        return _unit_rows(tfidf.toarray()), tfidf.shape[1]
    reduced = TruncatedSVD(dimensions, algorithm="randomized", random_state=SEED).fit_transform(tfidf)
    return _unit_rows(reduced), dimensions


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    unit = normalize(np.asarray(matrix, dtype=np.float64))
    # A document whose text vanished in preprocessing would be the zero vector; give it a direction.
    empty = ~unit.any(axis=1)
    if empty.any():
        unit[empty, 0] = 1.0
    return unit


# --- choosing k and clustering ----------------------------------------------------------------------------


def topic_bounds(n_documents: int, min_topics: int, max_topics: int) -> tuple[int, int]:
    upper = max(1, min(max_topics, n_documents // MIN_AVERAGE_SECTION))
    return min(min_topics, upper), upper


def _choose_k(vectors: np.ndarray, min_topics: int, max_topics: int) -> tuple[int, dict[int, float]]:
    low, high = topic_bounds(len(vectors), min_topics, max_topics)
    if low == high:
        return low, {}
    sample = vectors
    if len(vectors) > SELECTION_SAMPLE:
        picks = np.random.default_rng(SEED).choice(len(vectors), SELECTION_SAMPLE, replace=False)
        sample = vectors[np.sort(picks)]
    scores: dict[int, float] = {}
    for k in range(low, high + 1):
        labels, _ = _kmeans(sample, k)
        if len(set(labels.tolist())) < 2:
            continue
        scores[k] = float(
            silhouette_score(
                sample,
                labels,
                metric="cosine",
                sample_size=min(SILHOUETTE_SAMPLE, len(sample)),
                random_state=SEED,
            )
        )
    if not scores:
        return low, {}
    best = max(scores, key=lambda k: (round(scores[k], 4), k))
    return best, scores


def _kmeans(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if len(vectors) > 10_000:
        model: KMeans | MiniBatchKMeans = MiniBatchKMeans(
            n_clusters=k, random_state=SEED, n_init=3, batch_size=4096
        )
    else:
        model = KMeans(n_clusters=k, random_state=SEED, n_init=10)
    labels = model.fit_predict(vectors)
    return labels, normalize(model.cluster_centers_)


def _groups(
    vectors: np.ndarray, labels: np.ndarray, centres: np.ndarray, k: int
) -> tuple[list[list[int]], list[list[float]]]:
    similarity = np.einsum("ij,ij->i", vectors, centres[labels])
    groups: list[list[int]] = [[] for _ in range(k)]
    closeness: list[list[float]] = [[] for _ in range(k)]
    for index, (label, score) in enumerate(zip(labels.tolist(), similarity.tolist(), strict=True)):
        groups[label].append(index)
        closeness[label].append(float(score))
    keep = [i for i in range(k) if groups[i]]
    return [groups[i] for i in keep], [closeness[i] for i in keep]


# --- sections and labels -------------------------------------------------------------------------------------


def _finish(
    ordered: Sequence[PaperText],
    order: list[int],
    groups: list[list[int]],
    closeness: list[list[float]],
    counts: sparse.csr_matrix,
    vocabulary: np.ndarray,
    result: Clustering,
    min_topic_size: int = 1,
) -> Clustering:
    small = [i for i, members in enumerate(groups) if len(members) < min_topic_size]
    if len(small) == len(groups):
        small = []  # everything tiny (a handful of papers): keep the groups rather than one "Other"
    topics_members = [(groups[i], closeness[i], False) for i in range(len(groups)) if i not in small]
    if small:
        other = [m for i in small for m in groups[i]]
        other_closeness = [c for i in small for c in closeness[i]]
        topics_members.append((other, other_closeness, True))
    # Largest first; "Other" always last. Ties broken by the first member's id, for determinism.
    topics_members.sort(key=lambda t: (t[2], -len(t[0]), ordered[t[0][0]].id))

    keyword_lists = _keywords(counts, vocabulary, [t[0] for t in topics_members], ordered)
    labels = _unique_labels(keyword_lists, [t[2] for t in topics_members])
    for (members, near, is_other), keywords, label in zip(topics_members, keyword_lists, labels, strict=True):
        result.topics.append(
            Topic(
                label=label,
                keywords=keywords,
                members=[order[m] for m in members],
                centrality=near,
                is_other=is_other,
            )
        )
    return result


def _keywords(
    counts: sparse.csr_matrix, vocabulary: np.ndarray, groups: list[list[int]], documents: Sequence[PaperText]
) -> list[list[str]]:
    """Class-based TF-IDF: a term's weight in a section against how common it is in all sections."""
    if counts.shape[1] == 0:
        return [[] for _ in groups]
    per_topic = np.vstack([np.asarray(counts[members].sum(axis=0)).ravel() for members in groups])
    words_per_topic = per_topic.sum(axis=1, keepdims=True)
    term_frequency = per_topic / np.maximum(words_per_topic, 1)
    average_words = float(words_per_topic.mean())
    idf = np.log1p(average_words / np.maximum(per_topic.sum(axis=0), 1))
    scores = term_frequency * idf
    usable = np.array([_label_worthy(str(term)) for term in vocabulary])
    result = []
    for row, members in zip(scores, groups, strict=True):
        row = np.where(usable, row, 0.0)
        ranked = np.argsort(-row, kind="stable")[:200]
        scored = [(str(vocabulary[i]), float(row[i])) for i in ranked if row[i] > 0]
        chosen = _distinct_terms(_prefer_phrases(scored), limit=8)
        result.append(_surface_forms(chosen, [documents[m] for m in members]))
    return result


def _label_worthy(term: str) -> bool:
    """A word must be topical. A phrase must start with a topical word and end with a topical word or a
    head noun ("language models", "reinforcement learning"), not with "using" or "proposed"."""
    words = term.split()
    if len(words) == 1:
        return term not in GENERIC_RESEARCH_WORDS
    first, last = words[0], words[-1]
    return first not in GENERIC_RESEARCH_WORDS and (last not in GENERIC_RESEARCH_WORDS or last in HEAD_NOUNS)


def _prefer_phrases(scored: list[tuple[str, float]]) -> list[str]:
    """Replace a term by the best longer phrase containing it when that phrase is nearly as distinctive:
    "black holes" says more than "black", "graph neural networks" more than "graph neural". Singular and
    plural spellings count together ("black hole" + "black holes")."""
    variants: dict[str, float] = {}
    for term, term_score in scored:
        variants[_stem_key(term)] = variants.get(_stem_key(term), 0.0) + term_score
    containing: dict[str, list[str]] = {}
    for term, _ in scored:
        words = term.split()
        for length in range(1, len(words)):
            for start in range(len(words) - length + 1):
                containing.setdefault(" ".join(words[start : start + length]), []).append(term)

    def extend(term: str) -> str:
        while containing.get(term):
            phrase = max(containing[term], key=lambda option: variants[_stem_key(option)])
            if variants[_stem_key(phrase)] < 0.6 * variants[_stem_key(term)]:
                break
            term = phrase
        return term

    terms: list[str] = []
    for term, _ in scored:
        longest = extend(term)
        if longest not in terms:
            terms.append(longest)
    return terms


def _stem_key(term: str) -> str:
    return " ".join(_stem(word) for word in term.split())


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _abbreviates(short: str, phrase: str) -> bool:
    """ "llms" abbreviates "large language models", "gnn" abbreviates "graph neural networks"."""
    words = phrase.split()
    return len(words) > 1 and _stem(short) == "".join(word[0] for word in words)


def _distinct_terms(terms: list[str], limit: int) -> list[str]:
    """Drop a term that repeats a chosen one: "diffusion" after "diffusion models", "images" after "image"."""
    chosen: list[str] = []
    chosen_stems: list[set[str]] = []
    for term in terms:
        stems = set(_stem_key(term).split())
        if any(stems <= other or other <= stems for other in chosen_stems):
            continue
        if any(_abbreviates(term, other) or _abbreviates(other, term) for other in chosen):
            continue
        chosen.append(term)
        chosen_stems.append(stems)
        if len(chosen) == limit:
            break
    return chosen


def _surface_forms(terms: list[str], documents: Sequence[PaperText]) -> list[str]:
    """Each term in the spelling the papers use most ("LLMs", "Gaussian splatting")."""
    text = " ".join(f"{doc.title} {doc.abstract}" for doc in documents[:200])
    forms = []
    for term in terms:
        pattern = r"\b" + r"\s+".join(re.escape(word) for word in term.split()) + r"\b"
        spellings = Counter(" ".join(m.group(0).split()) for m in re.finditer(pattern, text, re.IGNORECASE))
        if not spellings:
            forms.append(term)
            continue
        # Prefer the lower-case form on a tie: sentence-initial capitals are not the term's spelling.
        forms.append(max(spellings.items(), key=lambda item: (item[1], item[0].islower()))[0])
    return forms


def _unique_labels(keyword_lists: list[list[str]], is_other: list[bool]) -> list[str]:
    labels: list[str] = []
    used: set[str] = set()
    for keywords, other in zip(keyword_lists, is_other, strict=True):
        label = OTHER_LABEL if other else _label_from(keywords, used)
        base, suffix = label, 2
        while label.casefold() in used:  # identical keyword lists: number them rather than merge them
            label = f"{base} ({suffix})"
            suffix += 1
        used.add(label.casefold())
        labels.append(label)
    return labels


def _label_from(keywords: list[str], used: set[str]) -> str:
    if not keywords:
        return "Miscellaneous"
    # Two or three terms read at a glance; a fourth only when the first three are single words.
    size = 3 if sum(" " in k for k in keywords[:3]) else min(4, len(keywords))
    for start in range(max(1, len(keywords) - size + 1)):
        candidate = _join(keywords[start : start + max(2, min(size, len(keywords)))])
        if candidate.casefold() not in used:
            return candidate
    return _join(keywords[: max(2, min(size, len(keywords)))])


def _join(terms: list[str]) -> str:
    text = ", ".join(terms)
    return text[:1].upper() + text[1:]


def score_paper(*, upvotes: int | None, centrality: float, recency: float) -> float:
    """Rank inside a section: community upvotes first where known, then closeness to the section's centre,
    nudged by recency.

    Known upvotes add 2 + log(1 + upvotes), which no centrality (at most 1) plus recency (at most 0.1) can
    reach; ``recency`` is 1 for the newest paper of the edition and 0 for the oldest, so a newer paper
    passes an older one only when they are within 0.1 of each other in closeness.
    """
    boost = 2.0 + math.log1p(max(0, upvotes)) if upvotes is not None else 0.0
    return round(boost + max(0.0, centrality) + 0.1 * recency, 4)
