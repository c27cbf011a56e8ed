"""Adding items to a reader's library: the service behind ``newsletter library add`` and the reader's page.

Each item (read by ``newsletter.library_items``) is looked for among the stored papers under every key it
has. arXiv papers that are not stored are fetched by id through the arXiv API source (``id_list``, at most
``BATCH`` ids a request, with the source's spacing between requests and the configured user agent) and
stored as papers a reader added (never new in a digest). What cannot be found now is kept as pending with
its reason: a DOI or a title no source has brought (it joins the library when a source brings the paper),
an arXiv id the API could not be asked for (adding it again retries). An id arXiv answers nothing for is
refused, with the item it came from. The reader's choices are written in one transaction at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import sqlite_utils

from newsletter.db import write_transaction
from newsletter.errors import SourceError
from newsletter.fetch import Fetcher
from newsletter.fetched import FetchError
from newsletter.library import LIBRARY, PendingItem, drop_pending, keep_papers, keep_pending, promote_pending
from newsletter.library_items import Item
from newsletter.settings import LibrarySettings, SourceConfig
from newsletter.sources import arxiv_api
from newsletter.sources.base import SourceState
from newsletter.store import READER_ADDED, paper_ids_by_key, paper_titles, store_papers

BATCH = 100  # arXiv ids asked for in one API request

WAITING_FOR_A_SOURCE = (
    "not stored yet; only arXiv papers are fetched by id, so it joins the library when a source brings it"
)
TITLE_ONLY = "no arXiv id or DOI; it joins the library when a source brings a paper with this title"


@dataclass(slots=True)
class AddReport:
    """What an add did: the papers now in the library (key, title), how many of them were fetched from
    arXiv now, the items kept pending, and one line per problem."""

    added: list[tuple[str, str]] = field(default_factory=list)
    fetched: int = 0
    pending: list[PendingItem] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    unreachable: bool = False  # the arXiv API could not be reached: adding the same items again retries


def arxiv_source(settings: LibrarySettings) -> SourceConfig:
    """The arXiv API source papers are fetched by id from, as [library] configures it."""
    return SourceConfig(
        name="library",
        kind="arxiv_api",
        url=settings.arxiv_api,
        min_interval=settings.min_interval,
        page_size=BATCH,
        max_results=BATCH,
    )


def add_to_library(
    db: sqlite_utils.Database,
    subscriber_id: int,
    items: Sequence[Item],
    fetcher: Fetcher,
    source: SourceConfig,
    *,
    now: datetime | None = None,
) -> AddReport:
    """Add ``items`` to the reader's library: found, fetched from arXiv, or kept pending (see the module)."""
    moment = now or datetime.now(UTC)
    report = AddReport()
    known = paper_ids_by_key(db, [key for item in items for key in item.keys])
    missing = [item for item in items if not any(key in known for key in item.keys)]
    failed = _fetch_arxiv(db, [item for item in missing if item.arxiv_id], fetcher, source, moment, report)
    with write_transaction(db):
        # Looked up again under the write lock: what was fetched is found now, and a paper pruned since
        # the first look is not written as a signal.
        known = paper_ids_by_key(db, [key for item in items for key in item.keys])
        found = {item.key: _paper_of(item, known) for item in items}
        paper_ids = [paper_id for paper_id in found.values() if paper_id is not None]
        keep_papers(db, subscriber_id, paper_ids, LIBRARY, now=moment)
        drop_pending(db, subscriber_id, [key for item in items if found[item.key] for key in item.keys])
        report.pending = [_pending(item, failed) for item in items if _waits(item, found, failed)]
        keep_pending(db, subscriber_id, report.pending, now=moment)
        promote_pending(db, subscriber_id)
        titles = paper_titles(db, paper_ids)
    report.added = [titles[paper_id] for paper_id in dict.fromkeys(paper_ids) if paper_id in titles]
    return report


def _paper_of(item: Item, known: dict[str, int]) -> int | None:
    return next((known[key] for key in item.keys if key in known), None)


def _waits(item: Item, found: dict[str, int | None], failed: dict[str, str]) -> bool:
    """An item not found waits when it may be found later: not an arXiv id arXiv said it does not have."""
    return found[item.key] is None and (item.arxiv_id is None or item.key in failed)


def _pending(item: Item, failed: dict[str, str]) -> PendingItem:
    if item.key in failed:
        reason = failed[item.key]
    elif item.doi:
        reason = WAITING_FOR_A_SOURCE
    else:
        reason = TITLE_ONLY
    return PendingItem(key=item.key, item=item.given, reason=reason, title=item.title)


def _fetch_arxiv(
    db: sqlite_utils.Database,
    items: list[Item],
    fetcher: Fetcher,
    source: SourceConfig,
    now: datetime,
    report: AddReport,
) -> dict[str, str]:
    """Fetch and store the papers of ``items`` (all with an arXiv id), a batch a request; returns, by
    item key, why the items that could not be asked for wait."""
    failed: dict[str, str] = {}
    for start in range(0, len(items), BATCH):
        batch = items[start : start + BATCH]
        wanted = tuple(dict.fromkeys(item.arxiv_id for item in batch if item.arxiv_id))
        config = replace(source, id_list=wanted, page_size=len(wanted), max_results=len(wanted))
        try:
            collected = arxiv_api.collect(config, fetcher, SourceState())
        except (FetchError, SourceError) as error:
            reason = f"the arXiv API could not be asked ({error}); add it again later"
            report.unreachable = isinstance(error, FetchError) and error.unreachable
            # An API that cannot be reached is not asked again for the other batches of this add.
            left = items[start:] if report.unreachable else batch
            report.problems.append(f"{len(left)} arXiv ids not fetched: {reason}")
            failed.update((item.key, reason) for item in left)
            if report.unreachable:
                break
            continue
        report.problems.extend(f"arXiv API: {problem}" for problem in collected.problems)
        with write_transaction(db):
            store_papers(db, collected.papers, source=READER_ADDED, now=now)
        answered = {paper.arxiv_id for paper in collected.papers}
        report.fetched += len(answered & set(wanted))
        for item in batch:
            if item.arxiv_id not in answered:
                report.problems.append(f"{item.given}: arXiv has no paper {item.arxiv_id}")
    return failed
