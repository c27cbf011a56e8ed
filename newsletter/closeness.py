"""How close papers are: the lexical and latent space of an edition, and the cached closeness rows of
the papers readers signal (the numbers behind ``newsletter.personal``).

The space reuses the clusterer's pieces: its token pattern (hyphenated compounds kept whole), its stop
words and its generic research words. Words only (two-word phrases measured worse for ranking), title
counted twice, sublinear TF-IDF with unit rows; a truncated SVD of the most widespread words gives the
latent space. Papers the space was not fitted on are projected into it.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import sparse
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import CountVectorizer

from newsletter.cluster import GENERIC_RESEARCH_WORDS, STOP_WORDS, TOKEN_PATTERN

NGRAMS = (1, 1)  # words (hyphenated compounds whole): measured better than adding two-word phrases
MIN_DF = 2  # a word must be in two papers to count (with 20 papers or more)
LATENT_WEIGHT = 0.5  # share of the latent space in the closeness of two papers
MIN_LATENT_PAPERS = 20  # below this, the edition is too small for a latent space: words only
MAX_LATENT_DIMENSIONS = 150  # and at most a quarter of the papers: few papers support few dimensions
LATENT_TERMS = 30_000  # the latent space is fitted on the most widespread words only
SEED = 0

_STOP = sorted(STOP_WORDS | GENERIC_RESEARCH_WORDS)


class Text(Protocol):
    """What the ranker reads of a paper (``cluster.PaperText`` is one)."""

    @property
    def id(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def abstract(self) -> str: ...


@dataclass(frozen=True, slots=True)
class BatchRows:
    index: dict[str, int]  # paper id -> row
    rows: np.ndarray  # closeness to every paper of the edition (canonical order), float32
    means: np.ndarray  # of each row
    spreads: np.ndarray  # standard deviation of each row
    latent: np.ndarray | None  # each paper's latent vector


class RowStore:
    """Closeness rows of signal papers in one array, the least recently used making room first."""

    def __init__(self, width: int, capacity: int) -> None:
        self.capacity = capacity
        self.rows = np.empty((0, width), dtype=np.float32)
        self.means = np.empty(0, dtype=np.float32)
        self.spreads = np.empty(0, dtype=np.float32)
        self.latent: np.ndarray | None = None
        self.lexical: list[sparse.csr_matrix | None] = []
        self.slot: OrderedDict[str, int] = OrderedDict()

    def touch(self, ids: list[str]) -> list[str]:
        """Mark ``ids`` as just used; return those not stored."""
        missing = []
        for paper_id in ids:
            if paper_id in self.slot:
                self.slot.move_to_end(paper_id)
            else:
                missing.append(paper_id)
        return missing

    def add(
        self, papers: list[Text], close: np.ndarray, lexical: sparse.csr_matrix, latent: np.ndarray | None
    ) -> None:
        free = self._free(len(papers))
        self.rows[free] = close
        self.means[free] = close.mean(axis=1)
        self.spreads[free] = np.maximum(close.std(axis=1), 1e-6)
        if latent is not None:
            if self.latent is None or self.latent.shape[0] < len(self.rows):
                grown = np.zeros((len(self.rows), latent.shape[1]), dtype=np.float32)
                if self.latent is not None:
                    grown[: len(self.latent)] = self.latent
                self.latent = grown
            self.latent[free] = latent
        for i, (paper, slot) in enumerate(zip(papers, free.tolist(), strict=True)):
            self.slot[paper.id] = slot
            self.lexical[slot] = lexical[i]

    def _free(self, count: int) -> np.ndarray:
        """``count`` slots: unused ones first, then those of the least recently used papers (never those of
        the batch being prepared, which were touched last and fit in the capacity)."""
        used = len(self.slot)
        grow = min(self.capacity, max(used + count, 2 * len(self.rows))) - len(self.rows)
        if grow > 0 and used + count > len(self.rows):
            self.rows = np.concatenate([self.rows, np.empty((grow, self.rows.shape[1]), np.float32)])
            self.means = np.concatenate([self.means, np.empty(grow, np.float32)])
            self.spreads = np.concatenate([self.spreads, np.empty(grow, np.float32)])
            self.lexical.extend([None] * grow)
        taken = set(self.slot.values())
        free = [slot for slot in range(len(self.rows)) if slot not in taken][:count]
        while len(free) < count:
            _, slot = self.slot.popitem(last=False)
            free.append(slot)
        return np.array(free, dtype=np.intp)


class PaperSpace:
    """The lexical and latent spaces of one edition."""

    def __init__(self, papers: Sequence[Text]) -> None:
        n = len(papers)
        self.vectorizer = CountVectorizer(
            ngram_range=NGRAMS,
            stop_words=_STOP,
            token_pattern=TOKEN_PATTERN,
            min_df=MIN_DF if n >= 20 else 1,
            max_df=0.5 if n >= 20 else 1.0,
            dtype=np.float32,
        )
        try:
            self.counts = self.vectorizer.fit_transform(_text(p) for p in papers).tocsr()
            self.vocabulary = self.vectorizer.get_feature_names_out()
        except ValueError:  # nothing but stop words
            self.counts = sparse.csr_matrix((n, 0), dtype=np.float32)
            self.vocabulary = np.array([], dtype=object)
            self.vectorizer = None
        document_frequency = np.bincount(self.counts.indices, minlength=self.counts.shape[1])
        self.idf = np.log((1 + n) / (1 + document_frequency)) + 1.0
        self.unseen_idf = math.log(1 + n) + 1.0  # a term no paper of the edition has
        self.lexical = _unit(_weigh(self.counts, self.idf))
        self.latent: np.ndarray | None = None
        self.svd: TruncatedSVD | None = None
        # The latent space is fitted on the most widespread terms only: rare terms barely move its leading
        # directions, and leaving them out keeps the fit's time and memory small on a large edition.
        self.latent_columns = np.sort(np.argsort(-document_frequency, kind="stable")[:LATENT_TERMS])
        dimensions = min(MAX_LATENT_DIMENSIONS, n // 4, len(self.latent_columns) - 1)
        if n >= MIN_LATENT_PAPERS and dimensions >= 2:
            # Three power iterations (not scikit-learn's seven): the leading directions are what counts.
            self.svd = TruncatedSVD(dimensions, algorithm="randomized", n_iter=3, random_state=SEED)
            self.latent = _unit_dense(self.svd.fit_transform(self._latent_input(self.lexical)))

    def _latent_input(self, lexical: sparse.csr_matrix) -> sparse.csr_matrix:
        return _unit(lexical[:, self.latent_columns])

    def project(self, papers: Sequence[Text]) -> tuple[sparse.csr_matrix, np.ndarray | None]:
        """Signal papers in the edition's spaces; terms the edition lacks still count in their length."""
        if self.vectorizer is None:
            return sparse.csr_matrix((len(papers), 0), dtype=np.float32), None
        analyse = self.vectorizer.build_analyzer()
        vocabulary = self.vectorizer.vocabulary_
        rows, columns, values, unseen = [], [], [], []
        for r, paper in enumerate(papers):
            missing = 0.0
            for term, count in Counter(analyse(_text(paper))).items():
                column = vocabulary.get(term)
                weight = 1.0 + math.log(count)
                if column is None:
                    # An unseen word says the paper is partly about something the edition lacks; an
                    # unseen two-word phrase says little (most phrases are rare, and the edition's own
                    # papers lost theirs to the minimum document frequency).
                    if " " not in term:
                        missing += (weight * self.unseen_idf) ** 2
                else:
                    rows.append(r)
                    columns.append(column)
                    values.append(weight)
            unseen.append(missing)
        matrix = sparse.csr_matrix(
            (np.asarray(values, dtype=np.float64), (rows, columns)),
            shape=(len(papers), len(self.vocabulary)),
        )
        matrix.sum_duplicates()
        matrix = matrix.multiply(self.idf[None, :]).tocsr()
        seen_norm = np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel()
        norm = np.sqrt(seen_norm + np.asarray(unseen))
        lexical = sparse.diags(1.0 / np.where(norm > 0, norm, 1.0)) @ matrix
        latent = None
        if self.svd is not None:
            # The latent direction of what the edition can see of the paper, shortened by the share of
            # the paper the edition cannot see: a paper mostly about unseen things is close to nothing.
            visible = np.sqrt(seen_norm) / np.where(norm > 0, norm, 1.0)
            latent = _unit_dense(self.svd.transform(self._latent_input(matrix))) * visible[:, None]
        return lexical.tocsr().astype(np.float32), latent


def _text(paper: Text) -> str:
    # The title says what the paper is about more densely than the abstract: count it twice.
    return f"{paper.title}. {paper.title}. {paper.abstract}"


def _weigh(counts: sparse.csr_matrix, idf: np.ndarray) -> sparse.csr_matrix:
    weighted = counts.astype(np.float32).tocsr(copy=True)
    weighted.data = 1.0 + np.log(weighted.data)
    return weighted.multiply(idf[None, :].astype(np.float32)).tocsr()


def _unit(matrix: sparse.csr_matrix) -> sparse.csr_matrix:
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    scale = (1.0 / np.where(norms > 0, norms, 1.0)).astype(matrix.dtype)
    return (sparse.diags(scale) @ matrix).tocsr()


def _unit_dense(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)
