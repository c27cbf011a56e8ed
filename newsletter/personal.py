"""Rank an edition's papers for each reader from the papers the reader liked, hid and saved.

An engine: it works on the texts and times it is given, reads no table and no clock, and gives the same
answer for the same input in any order. ``PersonalRanker(edition, authors=...)`` is built once per
edition; ``rank(signals)`` gives one reader's ``ReaderView`` (a score for every paper, the ranked order,
the For-you picks with their why-lines) and ``rank_many(readers)`` a stream of them, computed in batches.
Besides their signals, a ``Reader`` brings the authors they follow and the edition's papers their
excluded keywords remove (the caller decides which: ``preferences.Follows.excluded``).

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
* **Follows.** A paper of the edition by an author the reader follows (names compared as
  ``ids.author_key`` compares them: case, accents and punctuation aside) is always a For-you pick,
  ahead of the learned ones and sharing the ``limit`` places with them (followed papers first, best
  scored first, ties in the edition's order), with the why-line "By Jane Doe, whom you follow". A paper
  the reader already signalled is not proposed again. An excluded paper is never a pick and stays in
  ``ranked``, at the very end (below papers the reader hid): the caller leaves it out of the digest.
* **Cold start.** A reader without signals gets every score 0, the edition's own order and no learned
  For-you picks; the papers of the authors they follow are their For-you, their excluded papers last.
* **Scale.** The edition is vectorised once; each distinct signal paper's closeness row is computed once
  and kept in a bounded cache (``CACHE_BYTES``); readers are scored in batches of at most ``CHUNK_ROWS``
  signal rows on ``WORKERS`` threads, so memory does not grow with the number of readers. A reader's full
  ranked order is sorted only when asked for, the why-line's words only when read. The edition's papers
  are indexed by author once: a reader's followed authors are looked up, never searched for.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from newsletter.closeness import LATENT_WEIGHT, SEED, BatchRows, PaperSpace, RowStore, Text
from newsletter.ids import author_key
from newsletter.text import spelling_in

LIKE = "like"
DISLIKE = "dislike"
LIBRARY = "library"
KINDS = (LIKE, DISLIKE, LIBRARY)
POSITIVE = frozenset({LIKE, LIBRARY})
FOLLOW = "follow"  # a why-line's kind: the paper is by an author the reader follows

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
    """A reader to rank for: any key the caller uses (a subscriber id, an address), their signals, the
    authors they follow (names as they wrote them) and the ids of the edition's papers their excluded
    keywords remove (ids the edition does not hold are ignored)."""

    key: str
    signals: Sequence[Signal] = ()
    follow_authors: Sequence[str] = ()
    excluded: Collection[str] = frozenset()


class Why:
    """Why a paper is proposed: by authors the reader follows (``kind`` FOLLOW, their names in
    ``authors`` as the paper writes them), or the positive paper it is closest to (``paper_id``,
    ``title``, ``kind`` of the signal) and the terms they share (worked out when first asked for: most
    readers' picks are never explained twice)."""

    __slots__ = ("_paper", "_position", "_ranker", "_terms", "authors", "kind", "paper_id", "title")

    def __init__(
        self,
        paper: Text | None,
        kind: str,
        ranker: PersonalRanker | None = None,
        position: int = -1,
        authors: tuple[str, ...] = (),
    ) -> None:
        self.paper_id = paper.id if paper is not None else None
        self.title = paper.title if paper is not None else None
        self.kind = kind
        self.authors = authors
        self._ranker = ranker
        self._position = position
        self._terms: tuple[str, ...] | None = None if ranker is not None and paper is not None else ()
        self._paper = paper

    @classmethod
    def follow(cls, authors: tuple[str, ...]) -> Why:
        """The why of a paper by ``authors``, whom the reader follows."""
        return cls(None, FOLLOW, authors=authors)

    @property
    def terms(self) -> tuple[str, ...]:
        if self._terms is None:
            assert self._ranker is not None and self._paper is not None
            self._terms = self._ranker.shared_terms(self._position, self._paper)
        return self._terms

    @property
    def text(self) -> str:
        if self.kind == FOLLOW:
            return f"By {_names(self.authors)}, whom you follow"
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

    @property
    def followed(self) -> bool:
        """Whether the paper is there because the reader follows one of its authors."""
        return self.why.kind == FOLLOW


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
        authors: Mapping[str, Sequence[str]] | None = None,
        signal_papers: Iterable[Text] = (),
        now: datetime | None = None,
        limit: int = FOR_YOU,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        """``authors``: the names of each edition paper's authors, by paper id (for followed authors)."""
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
        self._in_edition = np.argsort(self._to_edition)  # canonical position -> place in the edition
        self._authors, self._author_keys, self._by_author = _author_index(self._canonical, authors or {})
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

    def rank(
        self,
        signals: Iterable[Signal],
        *,
        reader: str | None = None,
        follow_authors: Sequence[str] = (),
        excluded: Collection[str] = frozenset(),
    ) -> ReaderView:
        [view] = self.rank_many([Reader(reader or "", tuple(signals), tuple(follow_authors), excluded)])
        view.reader = reader
        return view

    def rank_many(self, readers: Iterable[Reader]) -> Iterator[ReaderView]:
        """One view per reader, in the readers' order, computed in batches of bounded memory.

        Batches are scored on ``WORKERS`` threads (the heavy part is numpy, which runs outside the
        interpreter lock); at most that many batches are in memory at once.
        """
        if not self.ids:
            for reader in readers:
                yield ReaderView(reader.key, self.ids, np.zeros(0), [], np.arange(0))
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

    def _batches(self, readers: Iterable[Reader]) -> Iterator[list[_Entry]]:
        batch: list[_Entry] = []
        rows = 0
        for reader in readers:
            weighted = self._weighted(reader.signals)
            if batch and rows + len(weighted) > CHUNK_ROWS:
                yield batch
                batch, rows = [], 0
            excluded = self._excluded(reader.excluded)
            batch.append(
                _Entry(reader.key, weighted, self._followed(reader.follow_authors, excluded), excluded)
            )
            rows += len(weighted)
        if batch:
            yield batch

    # --- follows ---------------------------------------------------------------------------------------

    def _excluded(self, ids: Collection[str]) -> list[int]:
        """The positions of the edition's papers among ``ids``."""
        if not ids:
            return []
        return sorted(self._position[paper_id] for paper_id in ids if paper_id in self._position)

    def _followed(self, names: Sequence[str], excluded: list[int]) -> dict[int, tuple[str, ...]]:
        """The positions of the papers by any of the authors named (excluded ones aside), each with the
        followed authors' names as the paper writes them."""
        if not names or not self._by_author:
            return {}
        keys = {_author_key(name) for name in names}
        found = {position for key in keys for position in self._by_author.get(key, ())}
        found.difference_update(excluded)
        return {
            position: tuple(
                name
                for name, key in zip(self._authors[position], self._author_keys[position], strict=True)
                if key in keys
            )
            for position in sorted(found)
        }

    def _follow_picks(self, entry: _Entry, row: np.ndarray, signalled: set[int]) -> list[Pick]:
        """The For-you picks the reader's followed authors give: best scored first, ties in the
        edition's order, at most ``limit``."""
        positions = [position for position in entry.followed if position not in signalled]
        positions.sort(key=lambda position: (-row[position], self._in_edition[position]))
        return [
            Pick(self._canonical[position], float(row[position]), Why.follow(entry.followed[position]))
            for position in positions[: self.limit]
        ]

    def _put_excluded_last(self, entry: _Entry, row: np.ndarray) -> None:
        """The reader's excluded papers go last, below everything (hidden papers included)."""
        if entry.excluded:
            row[entry.excluded] = min(float(row.min()), 0.0) - 1.0

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

    def _batch_rows(self, batch: list[_Entry]) -> BatchRows:
        """The closeness rows of every distinct signal paper of a batch (copied out of the cache, so a
        batch being scored never sees the cache change), computing the missing ones."""
        papers: dict[str, Text] = {}
        for entry in batch:
            for signal, _ in entry.weighted:
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

    def _score_batch(self, batch: list[_Entry], prepared: BatchRows) -> list[ReaderView]:
        if not self.ids or not any(entry.weighted for entry in batch):
            return [self._cold(entry) for entry in batch]
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
            self._view(entry, scores[r], like_close[r], hide_close[r], signals, r, prepared)
            for r, entry in enumerate(batch)
        ]

    def _view(
        self,
        entry: _Entry,
        row: np.ndarray,
        like_close: np.ndarray,
        hide_close: np.ndarray,
        signals: _SignalArrays,
        r: int,
        prepared: BatchRows,
    ) -> ReaderView:
        weighted = entry.weighted
        own = [(self._position.get(s.paper.id), s.kind) for s, _ in weighted]
        gone = [position for position, kind in own if position is not None and kind == DISLIKE]
        if gone:
            row[gone] = min(float(row.min()), 0.0) - 1.0  # a hidden paper of this edition goes last
        self._put_excluded_last(entry, row)
        signalled = {position for position, _ in own if position is not None}
        picks = self._follow_picks(entry, row, signalled) if entry.followed else []
        mine = signals.liked[r][: len(weighted)]
        if mine.any() and len(picks) < self.limit:
            eligible = (like_close >= self._close) & (like_close > hide_close) & (row > 0)
            if entry.excluded:
                eligible[entry.excluded] = False  # below zero already; said here too
            if picks:
                eligible[[self._position[pick.id] for pick in picks]] = False
            liked_rows = signals.which[r][: len(weighted)][mine]
            latent = None if prepared.latent is None else prepared.latent[liked_rows]
            picks += self._picks(
                row,
                eligible,
                signalled,
                prepared.rows[liked_rows],
                latent,
                weighted,
                mine,
                self.limit - len(picks),
            )
        return ReaderView(entry.key, self.ids, row[self._to_edition], picks)

    def _picks(
        self,
        scores: np.ndarray,
        eligible: np.ndarray,
        signalled: set[int],
        liked_rows: np.ndarray,
        liked_latent: np.ndarray | None,
        weighted: list[tuple[Signal, float]],
        liked: np.ndarray,
        limit: int,
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
            chosen = list(range(min(limit, len(candidates))))
        else:
            interest = self._interests([signal.paper for signal, _ in positives], liked_latent)
            weights = np.bincount(interest, weights=[weight for _, weight in positives])
            chosen = _share_out(interest[nearest], weights, limit)
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

    def _cold(self, entry: _Entry) -> ReaderView:
        """A reader without signals: the edition's order, their excluded papers last, their followed
        authors' papers as For-you."""
        row = np.zeros(len(self.ids))
        if not entry.followed and not entry.excluded:
            return ReaderView(entry.key, self.ids, row, [], np.arange(len(self.ids)))
        self._put_excluded_last(entry, row)
        picks = self._follow_picks(entry, row, set()) if entry.followed else []
        return ReaderView(entry.key, self.ids, row[self._to_edition], picks)

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
            spelled = self._spellings[key] = spelling_in(term, text)
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


@dataclass(slots=True)
class _Entry:
    """A reader as a batch holds them: their weighted signals, and the positions (canonical order) of
    their followed authors' papers (with those authors' names) and of their excluded papers."""

    key: str
    weighted: list[tuple[Signal, float]]
    followed: dict[int, tuple[str, ...]]
    excluded: list[int]


@lru_cache(maxsize=65536)
def _author_key(name: str) -> str:
    return author_key(name)  # readers follow the same few authors: each name is folded once


def _author_index(
    canonical: list[str], authors: Mapping[str, Sequence[str]]
) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]], dict[str, tuple[int, ...]]]:
    """Each paper's authors (canonical order) and their keys, and the papers of each author key."""
    names = [tuple(authors.get(paper_id, ())) for paper_id in canonical]
    keys = [tuple(_author_key(name) for name in paper) for paper in names]
    by_author: dict[str, list[int]] = {}
    for position, paper in enumerate(keys):
        for key in dict.fromkeys(paper):
            if key:
                by_author.setdefault(key, []).append(position)
    return names, keys, {key: tuple(positions) for key, positions in by_author.items()}


def _names(names: tuple[str, ...]) -> str:
    """ "Ann", "Ann and Bo", "Ann, Bo and Cy"."""
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} and {names[-1]}"


class _SignalArrays:
    """A batch's signals as arrays (readers x signals, padded): which row, weight, liked or hidden."""

    def __init__(self, batch: list[_Entry], index: dict[str, int]) -> None:
        shape = (len(batch), max(len(entry.weighted) for entry in batch))
        self.which = np.zeros(shape, dtype=np.intp)
        self.weights = np.zeros(shape, dtype=np.float32)
        self.liked = np.zeros(shape, dtype=bool)
        self.hidden = np.zeros(shape, dtype=bool)
        for r, entry in enumerate(batch):
            for k, (signal, weight) in enumerate(entry.weighted):
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
