"""One reader's view of an edition: what they liked, hid and keep, ranked against the edition's papers.

The service between the reader's library (``newsletter.library``) and the ranking engine
(``newsletter.personal``): it gives ``newsletter digest for`` its answer, as values and as the JSON the
command writes. The reader's follows count: papers by the authors they follow come first in "For you",
papers that mention a keyword they exclude are never proposed and end the ranked list. The ranker and
the clusterer's paper texts (scikit-learn) are loaded only when a view is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlite_utils

from newsletter.editions import Edition, load_edition
from newsletter.errors import SubscriberError
from newsletter.library import ReaderSignal, reader_signals
from newsletter.reader_digest import ReaderDigests
from newsletter.subscribers import Subscriber, find_subscriber

if TYPE_CHECKING:
    from newsletter.personal import ReaderView


@dataclass(slots=True)
class ReaderEdition:
    edition: Edition
    reader: Subscriber
    signals: list[ReaderSignal]
    view: ReaderView
    excluded: frozenset[str]  # the ids of the papers the reader's excluded keywords remove

    def to_json(self) -> dict[str, Any]:
        titles = {paper.key: paper.title for section in self.edition.sections for paper in section.papers}
        return {
            "edition": self.edition.id,
            "reader": self.reader.email,
            "for_you": [
                {"id": pick.id, "title": titles[pick.id], "score": pick.score, "why": pick.why.text}
                for pick in self.view.for_you
            ],
            "ranked": [{"id": paper_id, "score": score} for paper_id, score in self.view.ranked_scores()],
            "excluded": [paper_id for paper_id in self.view.ranked if paper_id in self.excluded],
        }


def reader_edition(
    db: sqlite_utils.Database, edition_id: int, email: str, *, limit: int, now: datetime | None = None
) -> ReaderEdition:
    """The edition as ``email`` would get it ranked: every paper scored (the papers their excluded keywords
    remove last), the For-you picks (at most ``limit``, the followed authors' papers first). Raises
    EditionNotFound, or SubscriberError for an address that is not on the list."""
    from newsletter.personal import Signal

    reader = find_subscriber(db, email)
    if reader is None:
        raise SubscriberError(f"{email} is not on the list")
    edition = load_edition(db, edition_id)
    signals = reader_signals(db, reader.id)
    # The ranker a send uses: what this shows is what the reader's email holds.
    digests = ReaderDigests(edition, limit=limit, now=now or datetime.now(UTC))
    excluded = digests.excluded_by(reader.follows)
    view = digests.ranker(db).rank(
        [Signal(signal, signal.kind, signal.created_at) for signal in signals],
        reader=email,
        follow_authors=reader.follows.authors,
        excluded=excluded,
    )
    return ReaderEdition(edition, reader, signals, view, excluded)
