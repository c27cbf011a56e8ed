"""Group papers into topic sections and name each section, from text alone.

Default engine, no model and no network: TF-IDF over title and abstract (title counted twice, words and
two-word phrases, sublinear counts) -> LSA (truncated SVD, dimensions growing with the number of papers,
since few papers support few dimensions) -> k-means on the unit sphere. The number of topics is the one
with the best silhouette (cosine) between the configured bounds, the upper bound also limited so that a
section holds at least ``MIN_AVERAGE_SECTION`` papers on average. Sections too small to stand alone are
gathered in a final "Other" section: every paper lands in exactly one section.

Labels name a section's subject as a researcher would: phrases as the papers write them, weighed by
how many of the section's papers use them and how much of their use is the section's, terms named in
titles first; a word gives way to the phrase that contains it, filler (words every abstract uses, parts of
any study, words common to all fields or to all the edition's sections) and bare modifiers never stand
alone. A label joins 1-3 terms, at most four words, in their most common spelling ("LLMs", not "llms");
the subtitle's keywords share no word with it, and no two sections share a label.

Everything is deterministic: input order does not matter and the random generators are seeded.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Iterator, Sequence
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
from newsletter.text import spelling_in

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
# And in a section's label: "protein design", "Gaussian processes", "image quality".
LABEL_HEAD_NOUNS = HEAD_NOUNS | frozenset(
    "analysis design process processes quality structure structures understanding".split()  # noqa: SIM905
)

# Words that name no subject on their own, in a label or a subtitle (they may in a phrase: "image
# generation", "label noise"). Three sources: the research words above; words that name a part, a stage
# or a kind of any study rather than what it studies; and the words that at least four in five of arXiv's archives
# used in one day's announcements (each in 2% of the archive's papers or more: the shared corpus's
# 1,504-paper day, archives of at least 15 papers; `python3 run.py bench labels --common` prints them).
# Each edition adds the words all its own sections use (_common_to_edition).
RESEARCH_FILLER = frozenset(
    """
    architecture assessment aspect baseline component cost domain error evidence factor feature gap goal
    identity image input knowledge label layer learn loss mechanism metric module objective output overview
    pattern pipeline prediction review scenario score step survey token
    """.split()  # noqa: SIM905
)
COMMON_ACROSS_FIELDS = frozenset(
    """
    addition application apply associated behavior cases class classical common complex computational
    conditions consistent constraints context corresponding critical density derive determine determined
    discuss distribution domain dynamical dynamics energy explore extended fields fully function functions
    generated geometry global higher highly identify impact increasing indicate initial instead
    interactions investigate known leading leads limit linear local long lower matrix multiple nature
    network networks open parameter parameters points possible power predictions presence promising
    properties random rate regions related relative relevant respectively role second set sets simulations
    size solution solutions space standard statistical test theoretical theory varying
    """.split()  # noqa: SIM905
)
LABEL_FILLER = GENERIC_RESEARCH_WORDS | RESEARCH_FILLER | COMMON_ACROSS_FIELDS | STOP_WORDS
LABEL_WORDS = 4  # a label has at most four words (a hyphenated compound counts as one)...
LABEL_TERMS = 3  # ...in at most three terms
KEYWORDS = 6  # terms kept for the subtitle, none sharing a word with the label
CANDIDATES = 60  # terms of a section weighed for its name
PHRASE_SAMPLE = 300  # papers of a section read to check that its phrases are written as phrases
PHRASE_SHARE = 0.25  # a word gives way to a phrase containing it that has this share of its score
LONGER_SHARE = 0.6  # a phrase to a longer one with this share of its score
MODIFIER = 0.7  # a single word this often followed by another content word is a modifier

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

    names = _name_sections(
        counts, vocabulary, [t[0] for t in topics_members], [t[2] for t in topics_members], ordered
    )
    for (members, near, is_other), (label, keywords) in zip(topics_members, names, strict=True):
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


def _name_sections(
    counts: sparse.csr_matrix,
    vocabulary: np.ndarray,
    groups: list[list[int]],
    is_other: list[bool],
    documents: Sequence[PaperText],
) -> list[tuple[str, list[str]]]:
    """Each section's label and subtitle keywords, in the order of ``groups``."""
    if counts.shape[1] == 0:
        return [(OTHER_LABEL if other else "Miscellaneous", []) for other in is_other]
    present = counts.copy()
    present.data[:] = 1.0
    in_topic = np.vstack([np.asarray(present[members].sum(axis=0)).ravel() for members in groups])
    coverage = in_topic / np.array([[max(1, len(members))] for members in groups])
    exclusivity = coverage / np.maximum(coverage.sum(axis=0), 1e-12)
    filler = LABEL_FILLER | _common_to_edition(vocabulary, coverage, in_topic, is_other)
    shapely = np.array([_phrase_shape_ok(str(term), filler) for term in vocabulary])
    named: list[tuple[str, list[str]]] = []
    used: set[str] = set()
    for row, members, other in zip(range(len(groups)), groups, is_other, strict=True):
        section = [documents[m] for m in members]
        support = 2 if len(members) >= 4 else 1
        scores = np.where(shapely & (in_topic[row] >= support), coverage[row] * exclusivity[row], 0.0)
        ranked = [i for i in np.argsort(-scores, kind="stable")[:CANDIDATES] if scores[i] > 0]
        text = _SectionText(section[:PHRASE_SAMPLE])
        candidates = []
        for i in ranked:
            term = str(vocabulary[i])
            share = float(coverage[row, i])
            if " " in term:  # a phrase must occur as written, not across a stop word or a full stop
                share = min(share, text.share(term))
                if share * text.size < support:
                    continue
            elif not _noun_like(term):
                continue
            in_titles = text.share(term, titles=True)
            candidates.append(
                _Candidate(term, (share + in_titles) / 2 * float(exclusivity[row, i]), in_titles > 0)
            )
        # A subject is what titles name: terms that some title of the section uses come first. Stable
        # sort: ties keep the vocabulary's order.
        candidates.sort(key=lambda c: (not c.titled, -c.score))
        terms = _surface_forms(_choose_terms(candidates, filler, text), section)
        if other:
            named.append((OTHER_LABEL, terms[:KEYWORDS]))
            used.add(OTHER_LABEL.casefold())
            continue
        label, keywords = _compose_label(terms, used)
        used.add(label.casefold())
        named.append((label, keywords))
    return named


@dataclass(frozen=True, slots=True)
class _Candidate:
    term: str
    score: float  # share of the section's papers using it x the section's share of its use
    titled: bool  # in the title of one of the section's papers


class _SectionText:
    """A section's titles and abstracts as one lower-case text, to tell a phrase written as such ("molecular
    graphs") from words that only meet once stop words are gone ("graphs of molecular ...")."""

    def __init__(self, documents: Sequence[PaperText]) -> None:
        parts = [f"{doc.title}. {doc.abstract}".lower() for doc in documents]
        self.starts = _starts(parts)
        self.text = "\x00".join(parts)  # not a space: no phrase runs from one paper into the next
        titles = [doc.title.lower() for doc in documents]
        self.title_starts = _starts(titles)
        self.titles = "\x00".join(titles)
        self.size = max(1, len(parts))

    def _matches(self, term: str, text: str, tail: str = "") -> Iterator[re.Match[str]]:
        """Where ``term`` is written as such in ``text``: its words apart only by spaces, each whole. The
        pattern starts with the term's first letters, which lets the search skip ahead (a look-behind
        first would try every position); a word character or hyphen before a match rules it out."""
        words = r"\s+".join(re.escape(word) for word in term.split())
        for match in re.finditer(rf"{words}(?![\w-]){tail}", text):
            start = match.start()
            if start == 0 or not (text[start - 1].isalnum() or text[start - 1] in "_-"):
                yield match

    def share(self, term: str, *, titles: bool = False) -> float:
        """The share of the papers that write ``term`` as written (in their titles, with ``titles``)."""
        text, starts = (self.titles, self.title_starts) if titles else (self.text, self.starts)
        papers = {bisect.bisect_right(starts, m.start()) for m in self._matches(term, text)}
        return len(papers) / self.size

    def modifier(self, term: str) -> float:
        """How often ``term`` stands right before another content word: near 1 for an adjective or a noun
        used as one ("molecular", "visual"), or for a fragment of a longer phrase ("open quantum"); either
        names no subject on its own."""
        follower = r"(?:\s+([^\W\d_]\w+(?:-\w+)*))?"
        matches = list(self._matches(term, self.text, follower))
        if not matches:
            return 0.0
        followed = sum(1 for m in matches if m.group(1) and m.group(1) not in STOP_WORDS)
        return followed / len(matches)


def _starts(parts: list[str]) -> list[int]:
    return list(itertools.accumulate((len(part) + 1 for part in parts[:-1]), initial=0))


def _noun_like(word: str) -> bool:
    """Not an adverb ("exponentially") or a past participle ("revealed", "trained"): neither names a
    subject on its own (both may start a phrase: "supervised learning")."""
    return not (word.endswith("ly") or (len(word) > 4 and word.endswith("ed") and not word.endswith("eed")))


def _common_to_edition(
    vocabulary: np.ndarray, coverage: np.ndarray, in_topic: np.ndarray, is_other: list[bool]
) -> frozenset[str]:
    """Words this edition's sections all use: in at least three quarters of them (of four or more), each
    time in 5% of the section's papers and at least two. "image" in a digest of computer vision,
    "tokens" in one of language models: true of every section, so the name of none."""
    rows = [i for i, other in enumerate(is_other) if not other]
    if len(rows) < 4:
        return frozenset()
    used = ((coverage[rows] >= 0.05) & (in_topic[rows] >= 2)).sum(axis=0)
    single = np.char.find(vocabulary.astype(str), " ") < 0
    return frozenset(str(vocabulary[i]) for i in np.flatnonzero(single & (used >= 0.75 * len(rows))))


def _is_filler(word: str, filler: frozenset[str]) -> bool:
    return word in filler or _stem(word) in filler


def _phrase_shape_ok(term: str, filler: frozenset[str]) -> bool:
    """A phrase must start with a word that is no mere research word ("proposed", "novel"), end with a
    topical word or a head noun ("language models", "reinforcement learning"), and hold at least one word
    that is not filler ("image features" names nothing). Single words are judged when chosen."""
    words = term.split()
    if len(words) == 1:
        return True
    first, last = words[0], words[-1]
    if first in GENERIC_RESEARCH_WORDS or (last in GENERIC_RESEARCH_WORDS and last not in LABEL_HEAD_NOUNS):
        return False
    return any(not _is_filler(word, filler) and word not in LABEL_HEAD_NOUNS for word in words)


def _choose_terms(candidates: list[_Candidate], filler: frozenset[str], text: _SectionText) -> list[str]:
    """The section's terms, best first, none repeating a word of another: a single word gives way to the
    best phrase that contains it when that phrase holds a fair share of its weight ("reasoning" ->
    "chain-of-thought reasoning"); a filler word or a bare modifier ("molecular") that no phrase carries
    is left out."""
    by_word: dict[str, list[_Candidate]] = {}
    for candidate in candidates:
        words = candidate.term.split()
        if len(words) > 1:
            for word in {_stem(w) for w in words}:
                by_word.setdefault(word, []).append(candidate)

    def settle(term: str, score: float) -> str | None:
        if " " not in term:
            if _is_filler(term, filler):
                return None
            phrases = [c for c in by_word.get(_stem(term), []) if c.score >= PHRASE_SHARE * score]
            if phrases:
                term, score = phrases[0].term, phrases[0].score  # candidates are sorted: the first is best
            elif text.modifier(term) >= MODIFIER:
                return None
        # A phrase gives way in turn to a longer one nearly as strong ("neural networks" -> "graph neural
        # networks"), or to any longer one when it is a fragment ("open quantum" of "open quantum systems").
        longer = [
            c
            for c in by_word.get(_stem(term.split()[0]), [])
            if len(c.term.split()) > len(term.split()) and f" {term} " in f" {c.term} "
        ]
        fragment = " " in term and text.modifier(term) >= MODIFIER
        if longer and (fragment or longer[0].score >= LONGER_SHARE * score):
            return longer[0].term
        return None if fragment else term

    chosen: list[str] = []
    chosen_stems: list[set[str]] = []
    for candidate in candidates:
        settled = settle(candidate.term, candidate.score)
        if settled is None:
            continue
        term = settled
        stems = set(_stem_key(term).split())
        if any(stems & other for other in chosen_stems):
            continue
        if any(_abbreviates(term, other) or _abbreviates(other, term) for other in chosen):
            continue
        chosen.append(term)
        chosen_stems.append(stems)
        if len(chosen) == LABEL_TERMS + KEYWORDS:
            break
    return chosen


def _compose_label(terms: list[str], used: set[str]) -> tuple[str, list[str]]:
    """The label: the best term, joined by the next ones while the label stays within ``LABEL_WORDS``
    words and ``LABEL_TERMS`` terms; the rest are the subtitle's keywords. A label another section took
    starts from the next term instead."""
    if not terms:
        return "Miscellaneous", []
    for start in range(len(terms)):
        picked = _fill_label(terms[start:])
        label = _join(picked)
        if label.casefold() not in used:
            break
    else:
        picked = _fill_label(terms)
        base, number = _join(picked), 2
        label = f"{base} ({number})"
        while label.casefold() in used:  # the same terms as another section: number them rather than merge
            number += 1
            label = f"{base} ({number})"
    return label, [term for term in terms if term not in picked][:KEYWORDS]


def _fill_label(terms: list[str]) -> list[str]:
    picked = [terms[0]]
    words = len(terms[0].split())
    for term in terms[1:]:
        if len(picked) == LABEL_TERMS or words >= LABEL_WORDS:
            break
        if words + len(term.split()) <= LABEL_WORDS:
            picked.append(term)
            words += len(term.split())
    return picked


def _stem_key(term: str) -> str:
    return " ".join(_stem(word) for word in term.split())


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _abbreviates(short: str, phrase: str) -> bool:
    """ "llms" abbreviates "large language models", "gnn" "graph neural networks"; and it stands for a phrase
    it ends with: "llms" and "vlms" are "language models" too."""
    words = phrase.split()
    if len(words) < 2 or " " in short:
        return False
    initials, letters = "".join(word[0] for word in words).lower(), _stem(short.lower())
    return letters == initials or (len(letters) <= len(initials) + 1 and letters.endswith(initials))


def _surface_forms(terms: list[str], documents: Sequence[PaperText]) -> list[str]:
    """Each term in the spelling the papers use most ("LLMs", "Gaussian splatting")."""
    text = " ".join(f"{doc.title} {doc.abstract}" for doc in documents[:200])
    return [spelling_in(term, text) for term in terms]


def _join(terms: list[str]) -> str:
    """The terms as a heading: the first letter capitalised, unless the term is written in mixed case
    ("rRNA", "iPhone")."""
    text = ", ".join(terms)
    return text if text.split(" ")[0] != text.split(" ")[0].lower() else text[:1].upper() + text[1:]


def score_paper(*, upvotes: int | None, centrality: float, recency: float) -> float:
    """Rank inside a section: community upvotes first where known, then closeness to the section's centre,
    nudged by recency.

    Known upvotes add 2 + log(1 + upvotes), which no centrality (at most 1) plus recency (at most 0.1) can
    reach; ``recency`` is 1 for the newest paper of the edition and 0 for the oldest, so a newer paper
    passes an older one only when they are within 0.1 of each other in closeness.
    """
    boost = 2.0 + math.log1p(max(0, upvotes)) if upvotes is not None else 0.0
    return round(boost + max(0.0, centrality) + 0.1 * recency, 4)
