"""Rank an edition's papers for each reader from the papers the reader liked, hid and saved.

An engine: it works on the texts and times it is given, reads no table and no clock, and gives the same
answer for the same input in any order. ``PersonalRanker(edition)`` is built once per edition;
``rank(signals)`` gives one reader's ``ReaderView`` (a score for every paper, the ranked order, the For-you
picks with their why-lines) and ``rank_many(readers)`` a stream of them, computed in batches.

The model, model-free and deterministic:

* **Space.** Words of title (counted twice) and abstract, with the clusterer's token pattern (hyphenated
  compounds kept whole), its stop words and its generic research words ("propose", "results") left out;
  sublinear TF-IDF, unit length. Document frequencies come from the edition and the signal papers the
  caller knows of (``signal_papers``: ``newsletter.reader_digest`` passes the papers the list's readers taught). Having the reader's own papers
  in the fit is worth about 4% of nDCG@10 in the benchmark (their words and their topic's directions
  enter the space); a space fitted on the edition alone ranks a little worse. Two-word phrases were
  measured and left out: they made rankings slightly worse. A latent space (truncated SVD of the same matrix,
  up to 150 dimensions) adds what words alone miss: "quasar" and "active galactic nuclei" land close.
  A signal paper the space was not fitted on is projected into it; a word the edition lacks still counts
  in that paper's length, so a paper about something absent from the edition is far from everything
  instead of close to whatever its few shared words touch. The closeness of two papers is the mean of
  their lexical and latent cosines.
* **Scores.** Each signal paper gives a row: its closeness to every paper of the edition, standardised
  over the edition ("how much closer than this paper's typical closeness"). A reader's score for a paper
  is 3/4 the recency-weighted mean of the positive signals' standardised rows (likes and library papers),
  standardised again, and 1/4 its best standardised closeness to any single positive paper: the centroid
  ranks one coherent interest best, the nearest paper keeps a second, smaller interest from drowning.
  Averaging standardised rows rather than raw closeness gives every liked paper the same voice: a paper
  at the edge of the edition's fields, whose closeness spreads narrow, counts as much as one in its main
  field (measured: two-interest readers gain, one-interest readers are unchanged). Hidden
  papers ("dislike") give the same kind of score and the part of it above zero is subtracted: papers close
  to something the reader hid go down, the rest stays. The scores are then smoothed over the edition's
  own neighbourhoods (each paper takes 30% from its 10 closest papers): papers of a topic the reader reads
  lift each other. A signal's weight halves every ``HALF_LIFE_DAYS`` days before ``now``; the latest
  signal about a paper replaces earlier ones.
* **For you.** A candidate is close to a liked paper by this edition's standard: ``CLOSE_SPREADS`` robust
  standard deviations above the median closeness of random pairs of the edition's papers (median and
  MAD describe the unrelated pairs, the bulk of any edition, whatever its size or breadth), closer to a
  liked paper than to a hidden one, above the reader's average score, and not a paper the reader already
  signalled. The reader's liked papers fall into interests (papers linked by a closeness of at least
  ``LINK_SPREADS`` robust SDs above unrelated pairs, directly or through others); the ``limit`` places are
  shared out between interests in proportion to their weight (Sainte-Laguë), each interest's candidates
  best first, so a second interest gets a place once the first has had its share. None when nothing is
  close.
* **Why.** Each proposed paper names the positive paper it is closest to and the words the two share that
  weigh most in both, in the spelling the paper uses.
* **Cold start.** A reader without signals gets every score 0, the edition's own order and no For-you.
* **Scale.** The edition is vectorised once; each distinct signal paper's closeness row is computed once
  and kept in a bounded cache (``CACHE_BYTES``); readers are scored in batches of at most ``CHUNK_ROWS``
  signal rows on ``WORKERS`` threads, so memory does not grow with the number of readers. A reader's full
  ranked order is sorted only when asked for, the why-line's words only when read.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from newsletter.closeness import LATENT_WEIGHT, SEED, BatchRows, PaperSpace, RowStore, Text

LIKE = "like"
DISLIKE = "dislike"
LIBRARY = "library"
KINDS = (LIKE, DISLIKE, LIBRARY)
POSITIVE = frozenset({LIKE, LIBRARY})

FOR_YOU = 8  # papers in the "For you" section at most ([digest] for_you)
HALF_LIFE_DAYS = 180.0  # a signal's weight halves every half-year: interests drift slowly
NEAREST_WEIGHT = 0.25  # share of the score from the single nearest positive paper (the rest: the centroid)
DISLIKE_WEIGHT = 1.0  # how hard a hidden paper pushes its neighbours down
CLOSE_SPREADS = 6.0  # For you: this many robust SDs closer to a liked paper than unrelated pairs are
LINK_SPREADS = 1.0  # two liked papers are one interest when this many robust SDs closer than unrelated pairs
MAX_SIGNALS = 1000  # the most recent signals of a reader count; older ones are ignored
NULL_PAIRS = 20_000  # random pairs of edition papers measured for the closeness threshold
CHUNK_ROWS = 2048  # signal rows scored at once (bounds the memory of a batch)
CACHE_BYTES = 64 * 1024 * 1024  # closeness rows of signal papers kept between batches
WORKERS = 2  # threads scoring batches: the machines this runs on have two cores or more
GRAPH_WEIGHT = 0.3  # share of a paper's score taken from its neighbours in the edition
GRAPH_NEIGHBOURS = 10

TERM_CACHE = 4096  # signal papers whose terms are kept for why-lines

_ROUND = 6  # scores are rounded so that batching cannot change the last bits of an answer


@dataclass(frozen=True, slots=True)
class Signal:
    """One thing a reader taught: a paper they liked, hid ("dislike") or keep in their library."""

    paper: Text
    kind: str
    at: datetime | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown signal kind {self.kind!r} (expected one of {', '.join(KINDS)})")


@dataclass(frozen=True, slots=True)
class Reader:
    """A reader to rank for: any key the caller uses (a subscriber id, an address) and their signals."""

    key: str
    signals: Sequence[Signal] = ()


class Why:
    """Why a paper is proposed: the positive paper it is closest to and the terms they share (worked
    out when first asked for: most readers' picks are never explained twice)."""

    __slots__ = ("_paper", "_position", "_ranker", "_terms", "kind", "paper_id", "title")

    def __init__(self, paper: Text, kind: str, ranker: PersonalRanker, position: int) -> None:
        self.paper_id = paper.id
        self.title = paper.title
        self.kind = kind
        self._ranker = ranker
        self._position = position
        self._terms: tuple[str, ...] | None = None
        self._paper = paper

    @property
    def terms(self) -> tuple[str, ...]:
        if self._terms is None:
            self._terms = self._ranker.shared_terms(self._position, self._paper)
        return self._terms

    @property
    def text(self) -> str:
        saved = "in your library" if self.kind == LIBRARY else "you liked"
        line = f"Close to “{self.title}”, {saved}"
        if self.terms:
            line += f": {', '.join(self.terms)}"
        return line

    def __repr__(self) -> str:
        return f"Why({self.text!r})"


@dataclass(frozen=True, slots=True)
class Pick:
    """A paper of the "For you" section."""

    id: str
    score: float
    why: Why


@dataclass(slots=True)
class ReaderView:
    """One reader's view of the edition: a score for every paper, the ranked order, the For-you picks."""

    reader: str | None
    ids: tuple[str, ...]  # the edition's papers, in the edition's order
    score_array: np.ndarray  # scores in ``ids`` order
    for_you: list[Pick]
    _order: np.ndarray | None = field(default=None, repr=False)

    @property
    def order(self) -> np.ndarray:
        """Positions in ``ids``, best first; ties keep the edition's order."""
        if self._order is None:
            self._order = np.lexsort((np.arange(len(self.ids)), -self.score_array))
        return self._order

    @property
    def ranked(self) -> list[str]:
        return [self.ids[i] for i in self.order.tolist()]

    @property
    def scores(self) -> dict[str, float]:
        return dict(zip(self.ids, self.score_array.tolist(), strict=True))

    def ranked_scores(self) -> list[tuple[str, float]]:
        values = self.score_array.tolist()
        return [(self.ids[i], values[i]) for i in self.order.tolist()]


class PersonalRanker:
    """Built once per edition; ``rank`` scores one reader, ``rank_many`` a stream of readers in batches."""

    def __init__(
        self,
        papers: Sequence[Text],
        *,
        signal_papers: Iterable[Text] = (),
        now: datetime | None = None,
        limit: int = FOR_YOU,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        seen: dict[str, Text] = {}
        for paper in papers:
            seen.setdefault(paper.id, paper)
        self.ids: tuple[str, ...] = tuple(seen)  # the edition's order
        self.now = now
        self.limit = limit
        # Inside, papers are in the order of their ids: no number depends on the order of the input.
        self._canonical = sorted(self.ids)
        self._position = {paper_id: i for i, paper_id in enumerate(self._canonical)}
        self._to_edition = np.array([self._position[paper_id] for paper_id in self.ids], dtype=np.intp)
        self._texts = [seen[paper_id] for paper_id in self._canonical]
        others = {p.id: p for p in signal_papers if p.id not in seen}
        self._space = PaperSpace(self._texts + [others[paper_id] for paper_id in sorted(others)])
        n = len(self.ids)
        self._edition_lexical = self._space.lexical[:n].tocsr()
        self._edition_latent = None if self._space.latent is None else self._space.latent[:n]
        self._close, self._link_lexical, self._link_latent = self._calibrate()
        self._neighbours = self._neighbour_graph()
        self._store = RowStore(n, max(CHUNK_ROWS, cache_bytes // max(1, 4 * n)))
        self._terms: dict[tuple[int, str], tuple[str, ...]] = {}
        self._row_terms: dict[int, dict[int, float]] = {}
        self._paper_terms: dict[str, dict[int, float]] = {}
        self._spellings: dict[tuple[int, str], str] = {}

    # --- public ----------------------------------------------------------------------------------------

    @property
    def closeness_threshold(self) -> float:
        """Closeness a For-you paper must reach to one of the reader's liked or library papers."""
        return self._close

    def rank(self, signals: Iterable[Signal], *, reader: str | None = None) -> ReaderView:
        [view] = self.rank_many([Reader(reader or "", tuple(signals))])
        view.reader = reader
        return view

    def rank_many(self, readers: Iterable[Reader]) -> Iterator[ReaderView]:
        """One view per reader, in the readers' order, computed in batches of bounded memory.

        Batches are scored on ``WORKERS`` threads (the heavy part is numpy, which runs outside the
        interpreter lock); at most that many batches are in memory at once.
        """
        if not self.ids:
            for reader in readers:
                yield self._cold(reader.key)
            return
        batches = self._batches(readers)
        first, second = next(batches, None), next(batches, None)
        if second is None:  # a single batch (a send's handful of readers): no threads to start
            if first is not None:
                yield from self._score_batch(first, self._batch_rows(first))
            return
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            pending: deque[Future[list[ReaderView]]] = deque()
            for batch in itertools.chain((first, second), batches):
                pending.append(pool.submit(self._score_batch, batch, self._batch_rows(batch)))
                while len(pending) >= WORKERS:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()

    def _batches(self, readers: Iterable[Reader]) -> Iterator[list[tuple[str, list[tuple[Signal, float]]]]]:
        batch: list[tuple[str, list[tuple[Signal, float]]]] = []
        rows = 0
        for reader in readers:
            weighted = self._weighted(reader.signals)
            if batch and rows + len(weighted) > CHUNK_ROWS:
                yield batch
                batch, rows = [], 0
            batch.append((reader.key, weighted))
            rows += len(weighted)
        if batch:
            yield batch

    # --- signals ---------------------------------------------------------------------------------------

    def _weighted(self, signals: Iterable[Signal]) -> list[tuple[Signal, float]]:
        """One signal per paper (the latest wins), the most recent ``MAX_SIGNALS``, each with its weight."""
        latest: dict[str, tuple[tuple[float, str], Signal]] = {}
        for signal in signals:
            order = (_seconds(signal.at), signal.kind)
            known = latest.get(signal.paper.id)
            if known is None or order > known[0]:
                latest[signal.paper.id] = (order, signal)
        kept = sorted(latest.items())
        if len(kept) > MAX_SIGNALS:
            newest = sorted(kept, key=lambda item: (item[1][0], item[0]))[-MAX_SIGNALS:]
            kept = sorted(newest)
        if self.now is not None:
            now = _seconds(self.now)
        else:
            now = max((order[0] for _, (order, _) in kept), default=-math.inf)
        weighted = []
        for _, ((at, _), signal) in kept:
            weight = 1.0
            if at > -math.inf and now > -math.inf:
                weight = 0.5 ** (max(0.0, now - at) / (HALF_LIFE_DAYS * 86400))
            weighted.append((signal, weight))
        return weighted

    # --- closeness rows ----------------------------------------------------------------------------------

    def _batch_rows(self, batch: list[tuple[str, list[tuple[Signal, float]]]]) -> BatchRows:
        """The closeness rows of every distinct signal paper of a batch (copied out of the cache, so a
        batch being scored never sees the cache change), computing the missing ones."""
        papers: dict[str, Text] = {}
        for _, weighted in batch:
            for signal, _ in weighted:
                papers.setdefault(signal.paper.id, signal.paper)
        order = sorted(papers)
        missing = self._store.touch(order)
        if missing:
            self._store.add([papers[paper_id] for paper_id in missing], *self._closeness(missing, papers))
        slots = np.array([self._store.slot[paper_id] for paper_id in order], dtype=np.intp)
        return BatchRows(
            {paper_id: i for i, paper_id in enumerate(order)},
            np.take(self._store.rows, slots, axis=0),
            self._store.means[slots],
            self._store.spreads[slots],
            None if self._store.latent is None else self._store.latent[slots],
        )

    def _closeness(
        self, ids: list[str], papers: dict[str, Text]
    ) -> tuple[np.ndarray, sparse.csr_matrix, np.ndarray | None]:
        lexical, latent = self._space.project([papers[paper_id] for paper_id in ids])
        close = np.asarray((lexical @ self._edition_lexical.T).todense(), dtype=np.float32)
        if latent is not None and self._edition_latent is not None:
            close *= 1 - LATENT_WEIGHT
            close += LATENT_WEIGHT * (latent @ self._edition_latent.T).astype(np.float32)
        return close, lexical, latent

    # --- scoring -------------------------------------------------------------------------------------------

    def _score_batch(
        self, batch: list[tuple[str, list[tuple[Signal, float]]]], prepared: BatchRows
    ) -> list[ReaderView]:
        if not self.ids or not any(weighted for _, weighted in batch):
            return [self._cold(key) for key, _ in batch]
        signals = _SignalArrays(batch, prepared.index)
        gathered = prepared.rows[signals.which]  # (readers, signals, papers): the one large array
        like_close = _best(gathered, signals.liked)
        hide_close = _best(gathered, signals.hidden)
        # From here on ``gathered`` holds each signal's standardised, recency-weighted closeness.
        scale = signals.weights / prepared.spreads[signals.which]
        gathered *= scale[..., None]
        gathered -= (scale * prepared.means[signals.which])[..., None]
        like_centroid = _centroid(gathered, signals.weights * signals.liked, signals.liked)
        hide_centroid = _centroid(gathered, signals.weights * signals.hidden, signals.hidden)
        scores = _mix(like_centroid, gathered, signals.liked)
        if signals.hidden.any():
            hide = _mix(hide_centroid, gathered, signals.hidden)
            scores = scores - DISLIKE_WEIGHT * np.maximum(hide, 0.0)
        if self._neighbours is not None:
            scores = (1 - GRAPH_WEIGHT) * scores + GRAPH_WEIGHT * (self._neighbours @ scores.T).T
        scores = np.round(scores.astype(np.float64), _ROUND)
        return [
            self._view(key, weighted, scores[r], like_close[r], hide_close[r], signals, r, prepared)
            for r, (key, weighted) in enumerate(batch)
        ]

    def _view(
        self,
        key: str,
        weighted: list[tuple[Signal, float]],
        row: np.ndarray,
        like_close: np.ndarray,
        hide_close: np.ndarray,
        signals: _SignalArrays,
        r: int,
        prepared: BatchRows,
    ) -> ReaderView:
        own = [(self._position.get(s.paper.id), s.kind) for s, _ in weighted]
        gone = [position for position, kind in own if position is not None and kind == DISLIKE]
        if gone:
            row[gone] = min(float(row.min()), 0.0) - 1.0  # a hidden paper of this edition goes last
        picks: list[Pick] = []
        mine = signals.liked[r][: len(weighted)]
        if mine.any():
            signalled = {position for position, _ in own if position is not None}
            eligible = (like_close >= self._close) & (like_close > hide_close) & (row > 0)
            liked_rows = signals.which[r][: len(weighted)][mine]
            latent = None if prepared.latent is None else prepared.latent[liked_rows]
            picks = self._picks(row, eligible, signalled, prepared.rows[liked_rows], latent, weighted, mine)
        return ReaderView(key, self.ids, row[self._to_edition], picks)

    def _picks(
        self,
        scores: np.ndarray,
        eligible: np.ndarray,
        signalled: set[int],
        liked_rows: np.ndarray,
        liked_latent: np.ndarray | None,
        weighted: list[tuple[Signal, float]],
        liked: np.ndarray,
    ) -> list[Pick]:
        """The For-you papers: the best eligible ones, shared out between the reader's interests."""
        candidates = np.flatnonzero(eligible)
        if signalled:
            candidates = candidates[~np.isin(candidates, list(signalled))]
        if not len(candidates):
            return []
        candidates = candidates[np.argsort(-scores[candidates], kind="stable")]  # ties: canonical order
        positives = [
            (signal, weight) for (signal, weight), good in zip(weighted, liked.tolist(), strict=True) if good
        ]
        nearest = liked_rows[:, candidates].argmax(axis=0)
        if (nearest == nearest[0]).all():
            chosen = list(range(min(self.limit, len(candidates))))
        else:
            interest = self._interests([signal.paper for signal, _ in positives], liked_latent)
            weights = np.bincount(interest, weights=[weight for _, weight in positives])
            chosen = _share_out(interest[nearest], weights, self.limit)
        chosen.sort()  # candidates are best first
        return [
            Pick(
                self._canonical[candidates[c]],
                float(scores[candidates[c]]),
                Why(positives[nearest[c]][0].paper, positives[nearest[c]][0].kind, self, int(candidates[c])),
            )
            for c in chosen
        ]

    def _interests(self, papers: list[Text], latent: np.ndarray | None) -> np.ndarray:
        """A number per liked paper: papers linked by closeness (directly or through others) share one."""
        if latent is not None:
            linked = latent @ latent.T >= self._link_latent
        else:
            vectors = sparse.vstack([self._space.project([paper])[0] for paper in papers]).tocsr()
            linked = (vectors @ vectors.T).toarray() >= self._link_lexical
        return _components(linked)

    def _cold(self, key: str) -> ReaderView:
        return ReaderView(key, self.ids, np.zeros(len(self.ids)), [], np.arange(len(self.ids)))

    def shared_terms(self, position: int, paper: Text, count: int = 3) -> tuple[str, ...]:
        """The terms of the edition's paper at ``position`` and ``paper`` that weigh most in both."""
        memo_key = (position, paper.id)
        if memo_key in self._terms:
            return self._terms[memo_key]
        mine = self._edition_terms(position)
        theirs = self._signal_terms(paper)
        if len(theirs) < len(mine):
            mine, theirs = theirs, mine
        ranked = sorted(
            (-weight * theirs[column], column) for column, weight in mine.items() if column in theirs
        )
        terms: list[str] = []
        for _, column in ranked:
            term = str(self._space.vocabulary[column])
            if any(_same_family(term, other) for other in terms):
                continue  # "galaxies" adds nothing after "galaxy"
            terms.append(term)
            if len(terms) == count:
                break
        found = tuple(self._spelling(position, term) for term in terms)
        if len(self._terms) > 100_000:
            self._terms.clear()
        self._terms[memo_key] = found
        return found

    # Why-lines are asked for every pick of every reader of a send: each paper's terms are read out of
    # the sparse matrices once, and each spelling is looked up once.
    def _edition_terms(self, position: int) -> dict[int, float]:
        terms = self._row_terms.get(position)
        if terms is None:
            terms = self._row_terms[position] = _row_dict(self._edition_lexical[position])
        return terms

    def _signal_terms(self, paper: Text) -> dict[int, float]:
        terms = self._paper_terms.get(paper.id)
        if terms is None:
            slot = self._store.slot.get(paper.id)
            row = self._store.lexical[slot] if slot is not None else None
            terms = _row_dict(row if row is not None else self._space.project([paper])[0])
            if len(self._paper_terms) > TERM_CACHE:  # a dict per paper: a few KB each
                self._paper_terms.clear()
            self._paper_terms[paper.id] = terms
        return terms

    def _spelling(self, position: int, term: str) -> str:
        key = (position, term)
        spelled = self._spellings.get(key)
        if spelled is None:
            text = f"{self._texts[position].title} {self._texts[position].abstract}"
            spelled = self._spellings[key] = _spelling(term, text)
        return spelled

    def _neighbour_graph(self) -> sparse.csr_matrix | None:
        """Each paper's ``GRAPH_NEIGHBOURS`` closest papers of the edition, weights summing to one."""
        n = len(self.ids)
        k = min(GRAPH_NEIGHBOURS, n - 1)
        if k < 1 or GRAPH_WEIGHT <= 0:
            return None
        rows, columns, values = [], [], []
        for start in range(0, n, 512):
            stop = min(n, start + 512)
            close = np.asarray((self._edition_lexical[start:stop] @ self._edition_lexical.T).todense())
            if self._edition_latent is not None:
                close = (1 - LATENT_WEIGHT) * close + LATENT_WEIGHT * (
                    self._edition_latent[start:stop] @ self._edition_latent.T
                )
            close[np.arange(stop - start), np.arange(start, stop)] = -np.inf
            nearest = np.argpartition(-close, k - 1, axis=1)[:, :k]
            weight = np.maximum(np.take_along_axis(close, nearest, axis=1), 0.0)
            weight /= np.maximum(weight.sum(axis=1, keepdims=True), 1e-12)
            rows.append(np.repeat(np.arange(start, stop), k))
            columns.append(nearest.ravel())
            values.append(weight.ravel())
        graph = sparse.csr_matrix(
            (np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))), shape=(n, n)
        )
        return graph.astype(np.float32)

    def _calibrate(self) -> tuple[float, float, float]:
        """How close a For-you paper must be to a liked one: ``CLOSE_SPREADS`` robust standard deviations
        above the median closeness of random pairs of the edition's papers; and how close two liked
        papers must be to count as one interest (``LINK_SPREADS``), in the lexical and latent spaces.

        Most pairs of an edition are unrelated, so the median and the median absolute deviation describe
        unrelated papers whatever the share of related pairs (which a plain quantile would mix in: in an
        edition of few topics, the top 5% of pairs are all related).
        """
        n = len(self.ids)
        if n < 2:
            return math.inf, math.inf, math.inf  # nothing to measure "close" against: no For-you papers
        if n * (n - 1) // 2 <= NULL_PAIRS:
            first, second = np.triu_indices(n, 1)
        else:
            rng = np.random.default_rng(SEED)
            first = rng.integers(0, n, NULL_PAIRS * 2)
            second = rng.integers(0, n, NULL_PAIRS * 2)
            distinct = first != second
            first, second = first[distinct][:NULL_PAIRS], second[distinct][:NULL_PAIRS]
        lexical = np.asarray(
            self._edition_lexical[first].multiply(self._edition_lexical[second]).sum(axis=1)
        ).ravel()
        close, link_latent = lexical, math.inf
        if self._edition_latent is not None:
            latent = np.einsum("ij,ij->i", self._edition_latent[first], self._edition_latent[second])
            close = (1 - LATENT_WEIGHT) * lexical + LATENT_WEIGHT * latent
            link_latent = _above_unrelated(latent, LINK_SPREADS)
        return (
            _above_unrelated(close, CLOSE_SPREADS),
            _above_unrelated(lexical, LINK_SPREADS),
            link_latent,
        )


def _above_unrelated(close: np.ndarray, spreads: float) -> float:
    """``spreads`` robust standard deviations above the median: the median absolute deviation, scaled
    to a normal distribution's, measures the spread of the bulk of the pairs, the unrelated ones."""
    middle = float(np.median(close))
    spread = 1.4826 * float(np.median(np.abs(close - middle)))
    return middle + spreads * max(spread, 1e-3)


def _components(linked: np.ndarray) -> np.ndarray:
    """Connected components of a symmetric boolean matrix, numbered in order of first member."""
    if len(linked) > 64:
        _, labels = connected_components(sparse.csr_matrix(linked), directed=False)
    else:
        reach = linked | np.eye(len(linked), dtype=bool)
        while True:  # transitive closure by squaring: a few steps for a handful of papers
            wider = (reach.astype(np.uint8) @ reach.astype(np.uint8)) > 0
            if (wider == reach).all():
                break
            reach = wider
        labels = reach.argmax(axis=1)  # each paper's component is named by its first member
        return np.unique(labels, return_inverse=True)[1]
    _, first = np.unique(labels, return_index=True)
    renumber = np.empty(len(first), dtype=np.intp)
    renumber[np.argsort(np.argsort(first))] = np.arange(len(first))
    return renumber[labels]


def _share_out(interest: np.ndarray, weights: np.ndarray, limit: int) -> list[int]:
    """Which candidates (indices, best first within each interest) fill ``limit`` places, shared out
    between interests in proportion to their weights (Sainte-Laguë): a small second interest still gets
    a place once the first has had its share."""
    counts = np.bincount(interest, minlength=len(weights))
    grouped = np.argsort(interest, kind="stable")  # by interest, best first within each
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    queues = [
        grouped[start : start + min(count, limit)].tolist()
        for start, count in zip(starts, counts, strict=True)
    ]
    taken = [0] * len(weights)
    chosen: list[int] = []
    while len(chosen) < limit:
        open_interests = [g for g in range(len(weights)) if taken[g] < len(queues[g])]
        if not open_interests:
            break
        g = max(open_interests, key=lambda g: (weights[g] / (2 * taken[g] + 1), -g))
        chosen.append(queues[g][taken[g]])
        taken[g] += 1
    return chosen


class _SignalArrays:
    """A batch's signals as arrays (readers x signals, padded): which row, weight, liked or hidden."""

    def __init__(self, batch: list[tuple[str, list[tuple[Signal, float]]]], index: dict[str, int]) -> None:
        shape = (len(batch), max(len(weighted) for _, weighted in batch))
        self.which = np.zeros(shape, dtype=np.intp)
        self.weights = np.zeros(shape, dtype=np.float32)
        self.liked = np.zeros(shape, dtype=bool)
        self.hidden = np.zeros(shape, dtype=bool)
        for r, (_, weighted) in enumerate(batch):
            for k, (signal, weight) in enumerate(weighted):
                self.which[r, k] = index[signal.paper.id]
                self.weights[r, k] = weight
                self.liked[r, k] = signal.kind in POSITIVE
                self.hidden[r, k] = signal.kind == DISLIKE


def _best(gathered: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The best raw closeness to any of the signals in ``mask`` (-inf where a reader has none)."""
    if not mask.any():
        return np.full(gathered.shape[::2], -np.inf)
    return np.max(gathered, axis=1, where=mask[..., None], initial=-np.inf)


def _centroid(standard: np.ndarray, weights: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Standardised closeness to the weighted centroid of the signals in ``mask``, from each signal's
    own standardised, weighted row: every paper of the library speaks with the same voice, whether its
    closeness to the edition spreads wide (a paper in the edition's main field) or narrow (a paper at
    its margin, such as a second interest)."""
    if not mask.any():
        return np.zeros(standard.shape[::2], dtype=np.float32)
    total = weights.sum(axis=1)
    # Summed signal by signal rather than by a matrix product: the same reader gets the same bits
    # whatever the batch it is in (padding adds exact zeros at the end).
    centroid = np.zeros(standard.shape[::2], dtype=np.float32)
    term = np.empty_like(centroid)
    chosen = mask.astype(np.float32)
    for k in range(standard.shape[1]):
        np.multiply(standard[:, k, :], chosen[:, k, None], out=term)
        centroid += term
    centroid /= np.where(total > 0, total, 1)[:, None]
    centroid -= centroid.mean(axis=1, keepdims=True)
    centroid /= np.maximum(centroid.std(axis=1, keepdims=True), 1e-6)
    centroid[total <= 0] = 0.0
    return centroid


def _mix(centroid: np.ndarray, standard: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The centroid's part and the single nearest signal's part of a score; 0 for a reader without any."""
    nearest = np.max(standard, axis=1, where=mask[..., None], initial=-np.inf)
    has = mask.any(axis=1)
    nearest[~has] = 0.0
    return (1 - NEAREST_WEIGHT) * centroid + NEAREST_WEIGHT * nearest


def _seconds(moment: datetime | None) -> float:
    """A moment as seconds since the epoch (a naive one read as UTC); no moment is the oldest."""
    if moment is None:
        return -math.inf
    return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment).timestamp()


def _row_dict(row: sparse.csr_matrix) -> dict[int, float]:
    """A one-row sparse matrix as {column: weight}."""
    row = row.tocsr()
    return dict(zip(row.indices.tolist(), row.data.tolist(), strict=True))


def _same_family(first: str, second: str) -> bool:
    """Spellings of one word ("galaxy", "galaxies"; "graph", "graphs"), or a phrase and its part."""
    if first in second.split() or second in first.split():
        return True
    return len(first) >= 5 and len(second) >= 5 and first[:5] == second[:5]


def _spelling(term: str, text: str) -> str:
    """The term as the paper writes it ("LLMs", not "llms")."""
    pattern = r"\b" + r"\s+".join(re.escape(word) for word in term.split()) + r"\b"
    found = Counter(" ".join(m.group(0).split()) for m in re.finditer(pattern, text, re.IGNORECASE))
    if not found:
        return term
    return max(found.items(), key=lambda item: (item[1], item[0].islower()))[0]
