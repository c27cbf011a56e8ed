"""What each reader's digest holds: the edition ranked for the reader, laid out for their email.

One ``ReaderDigests`` serves a whole send (and the previews, test copies and ``digest for``, which must
show the same thing): it builds the edition's ranker (``newsletter.personal``) the first time a reader
with signals needs it, reads each batch of readers' signals in a few queries, ranks them together and
turns each view into a ``ReaderLayout``: the "For you" picks with their why-lines, and each topic's
papers best first for that reader, as many as the digest shows. The reader's follows count: the papers
of the authors they follow come first in "For you", and a paper with a keyword they exclude is never
proposed (their variant's topics leave it out already). A reader who taught nothing and follows nobody
gets the edition's order and no "For you", without the ranker.

A send plans beside its sending workers (``plan``): every queued reader's layout is worked out in large
batches, ahead of the workers, and kept in their ledger row, so the workers only assemble pieces, a
resumed send gives each reader what was planned for them, and memory does not grow with the list.

The ranker's space is fitted on the edition's papers and the papers the list's active readers taught
(``FIT_TAUGHT`` at most, those taught by most readers first): the same set whoever is in the send, so a
reader's digest does not depend on who else is in it, and ``digest for`` shows what their email holds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import sqlite_utils

from newsletter.editions import Edition
from newsletter.ledger import store_layouts, unplanned
from newsletter.library import ReaderSignal, signals_by_reader, taught_papers
from newsletter.message import COLD, ReaderLayout
from newsletter.preferences import Follows
from newsletter.render import CLIP_LIMIT, WHY_ALLOWANCE, DigestKit
from newsletter.subscribers import follows_by_reader

HTML_LIMIT = CLIP_LIMIT - 2000  # a reader's HTML at most, room kept for the greeting and links
# The ranker's space is fitted on the edition and on the papers readers taught (the library papers in
# the fit are worth about 4% of nDCG@10): the same set for a send, a preview and `digest for`, whoever is
# in them, at most this many, those taught by most readers first.
FIT_TAUGHT = 20_000
PLAN_CHUNK = 1000  # readers laid out at once: enough for the ranker's threads, soon ready to send
NO_FOLLOWS = Follows()

if TYPE_CHECKING:
    from newsletter.personal import PersonalRanker, ReaderView


class ReaderDigests:
    """The layouts of one edition's digests, reader by reader; safe to share between sending threads."""

    def __init__(self, edition: Edition, *, limit: int, now: datetime) -> None:
        self.edition = edition
        self.limit = limit
        self.now = now
        self._ranker: PersonalRanker | None = None
        self._lock = threading.Lock()
        # Each topic's card positions and the cards' sizes, by the kit's identity (the kit is kept, so the
        # identity stays its).
        self._arrays: dict[int, tuple[DigestKit, list[np.ndarray], np.ndarray]] = {}
        # The edition's papers each set of excluded keywords removes: readers share a few sets.
        self._excluded: dict[tuple[str, ...], frozenset[str]] = {}

    def ranker(self, db: sqlite_utils.Database) -> PersonalRanker:
        """The edition's ranker, built on first use (a few seconds for a large edition and list)."""
        from newsletter.cluster import PaperText
        from newsletter.personal import PersonalRanker

        if self._ranker is None:
            papers = [
                PaperText(paper.key, paper.title, paper.abstract)
                for section in self.edition.sections
                for paper in section.papers
            ]
            taught = [PaperText(*row) for row in taught_papers(db, FIT_TAUGHT)]
            authors = {
                paper.key: paper.authors for section in self.edition.sections for paper in section.papers
            }
            self._ranker = PersonalRanker(
                papers, authors=authors, signal_papers=taught, now=self.now, limit=self.limit
            )
        return self._ranker

    def views(
        self,
        db: sqlite_utils.Database,
        signals: Iterable[tuple[int, Sequence[ReaderSignal]]],
        follows: Mapping[int, Follows] | None = None,
    ) -> dict[int, ReaderView]:
        """Each reader's view, for readers with signals or followed authors (by subscriber id)."""
        from newsletter.personal import Reader, Signal

        follows = follows or {}
        taught = {subscriber_id: chosen for subscriber_id, chosen in signals if chosen}
        # A reader who taught nothing and follows no author gets the edition's order: no need to rank.
        following = {subscriber_id for subscriber_id, chosen in follows.items() if chosen.authors}
        with self._lock:  # the ranker's cache of closeness rows is not shared between threads
            readers = [
                Reader(
                    str(subscriber_id),
                    tuple(Signal(s, s.kind, s.created_at) for s in taught.get(subscriber_id, ())),
                    follows.get(subscriber_id, NO_FOLLOWS).authors,
                    self.excluded_by(follows.get(subscriber_id, NO_FOLLOWS)),
                )
                for subscriber_id in sorted(taught.keys() | following)
            ]
            if not readers:
                return {}
            return {int(view.reader or 0): view for view in self.ranker(db).rank_many(readers)}

    def excluded_by(self, follows: Follows) -> frozenset[str]:
        """The keys of the edition's papers that mention one of the excluded keywords."""
        if not follows.exclude_keywords:
            return frozenset()
        found = self._excluded.get(follows.exclude_keywords)
        if found is None:
            found = frozenset(
                paper.key
                for section in self.edition.sections
                for paper in section.papers
                if follows.excluded(paper.title, paper.abstract)
            )
            if len(self._excluded) > 10_000:
                self._excluded.clear()
            self._excluded[follows.exclude_keywords] = found
        return found

    def plan(
        self,
        db: sqlite_utils.Database,
        edition_id: int,
        kit_of: Callable[[str], DigestKit],
        progress: Callable[[int], None] | None = None,
        stop: threading.Event | None = None,
    ) -> int:
        """Lay out the digest of every queued reader of the edition not laid out yet, ``PLAN_CHUNK`` readers
        at a time (ranked together, on the ranker's threads), in the order the workers send them, and
        store each layout in the ledger, where the sending workers find it. Stops early when ``stop`` is
        set. Returns how many readers were laid out."""
        planned = 0
        while not (stop is not None and stop.is_set()) and (rows := unplanned(db, edition_id, PLAN_CHUNK)):
            layouts = self.layouts(db, [(row.subscriber_id, kit_of(row.variant)) for row in rows])
            store_layouts(
                db, [(row.delivery_id, layouts.get(row.subscriber_id, COLD).encode()) for row in rows]
            )
            planned += len(rows)
            if progress is not None:
                progress(len(rows))
        return planned

    def layouts(
        self, db: sqlite_utils.Database, readers: Iterable[tuple[int, DigestKit]]
    ) -> dict[int, ReaderLayout]:
        """The layout of each reader's digest (subscriber id, the kit of their variant) that differs from
        the edition's order; a reader missing from the answer gets the cold layout."""
        kits = dict(readers)
        views = self.views(db, signals_by_reader(db, list(kits)), follows_by_reader(db, kits))
        by_kit: dict[int, list[int]] = {}
        for subscriber_id in views:
            by_kit.setdefault(id(kits[subscriber_id]), []).append(subscriber_id)
        layouts: dict[int, ReaderLayout] = {}
        for subscribers in by_kit.values():
            kit = kits[subscribers[0]]
            for subscriber_id, layout in zip(
                subscribers, self._kit_layouts([views[s] for s in subscribers], kit), strict=True
            ):
                if layout is not COLD:
                    layouts[subscriber_id] = layout
        return layouts

    def layout(self, view: ReaderView, kit: DigestKit) -> ReaderLayout:
        [layout] = self._kit_layouts([view], kit)
        return layout

    def _kit_layouts(self, views: list[ReaderView], kit: DigestKit) -> list[ReaderLayout]:
        """Each reader's layout in one variant: every topic's cards sorted, and the HTML sized, for all
        readers at once."""
        if any(tuple(ids) != kit.cards.keys for ids in {id(view.ids): view.ids for view in views}.values()):
            raise ValueError("the readers' views and the digest hold different papers")
        members, sizes = self._kit_arrays(kit)
        scores = -np.vstack([view.score_array for view in views])  # best first; stable: edition order on ties
        chosen = [
            np.take(member, np.argsort(scores[:, member], axis=1, kind="stable")[:, : kit.per_section])
            for member in members
        ]
        html_sizes = (len(kit.email.html) + sum(sizes[cards].sum(axis=1) for cards in chosen)).tolist()
        per_section = [cards.tolist() for cards in chosen]
        index = kit.cards.index
        default = kit.default_cards()
        pick_room = len(kit.cards.for_you_html) + WHY_ALLOWANCE
        layouts = []
        for row, view in enumerate(views):
            sections = [cards[row] for cards in per_section]
            picks = [(index[pick.id], pick.why.text) for pick in view.for_you[: kit.for_you]]
            if not picks and sections == default:
                layouts.append(COLD)
                continue
            size = html_sizes[row] + sum(int(sizes[position]) + pick_room for position, _ in picks)
            if size > HTML_LIMIT:
                # Picks and papers all unusually long: the last pick goes first, then the last paper
                # of the topic showing most.
                while kit.html_size([p for p, _ in picks], sections) > HTML_LIMIT:
                    if picks:
                        picks.pop()
                    else:
                        max(sections, key=len).pop()
            layouts.append(ReaderLayout(tuple(picks), sections))
        return layouts

    def _kit_arrays(self, kit: DigestKit) -> tuple[list[np.ndarray], np.ndarray]:
        """Each topic's card positions and every card's HTML size, as arrays."""
        known = self._arrays.get(id(kit))
        if known is None or known[0] is not kit:
            members = [np.array(section, dtype=np.intp) for section in kit.sections]
            sizes = np.array([card.size for card in kit.cards.cards], dtype=np.int64)
            known = (kit, members, sizes)
            self._arrays[id(kit)] = known
        return known[1], known[2]
