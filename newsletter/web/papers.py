"""The reader's papers: where a digest's "More like this" / "Less like this" links land, and the "Your
papers" page (``/preferences/{token}/papers``, from the preferences page, with the same signed token).

Mail scanners and link previewers open every link in an email, so opening a feedback link records
nothing: the page shows the paper and a button that POSTs (with the session's CSRF token) to the same
address. The token names the reader and the edition the link came with; the paper must be one of that
edition's. The same choice sent again changes nothing. "Your papers" lists what the reader liked, hid and
keeps and what waits, removes any of it, and adds papers from ids, URLs and DOIs typed in or from a
BibTeX, RIS, Zotero CSV or text file: the arXiv API fetch behind it is slow and polite, so it runs in a
worker thread through one fetcher that spaces every request to the API, whoever asked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import sqlite_utils
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter import ids
from newsletter.dates import day
from newsletter.editions import EditionPaper, edition_paper
from newsletter.errors import EditionNotFound, PaperNotFound, SubscriberError
from newsletter.fetch import Fetcher
from newsletter.library import (
    DISLIKE,
    LIBRARY,
    LIKE,
    PendingItem,
    ReaderSignal,
    Recorded,
    forget,
    pending_items,
    reader_signals,
    record_signal,
    signal_kind,
)
from newsletter.library_import import AddReport, add_to_library, arxiv_source
from newsletter.library_items import MAX_FILE_BYTES, MAX_ITEMS, Parsed, parse_file, parse_text
from newsletter.render import paper_view
from newsletter.subscribers import Subscriber
from newsletter.web.pages import Site, mask_email

CHOICES = {"more": LIKE, "less": DISLIKE}
OTHER = {"more": "less", "less": "more"}
LABELS = {"more": "More like this", "less": "Less like this"}
# The add form: a text area of ids (a long list is read up to MAX_ITEMS and the rest said) and one file.
TEXT_BYTES = 4_000_000
ADD_BYTES = MAX_FILE_BYTES + TEXT_BYTES + 64 * 1024
# Adds running at once: each may wait seconds per arXiv API request; the others wait their turn without
# holding a database thread.
CONCURRENT_ADDS = 2
SHOWN_ADDED = 50  # added papers listed one by one after an add; the rest are counted


def is_add_path(path: str) -> bool:
    """The address the add form posts to: ``/preferences/{token}/papers/add``."""
    parts = path.split("/")
    return len(parts) == 5 and parts[1] == "preferences" and parts[3:] == ["papers", "add"]


def too_large(path: str, limit: int) -> str | None:
    """What a reader is told when the add form's body is over its cap (413, before anything reads it)."""
    if not is_add_path(path):
        return None
    return (
        f"This is too large: a library file may have at most {MAX_FILE_BYTES / 1_000_000:g} MB. "
        "Split it and add the parts one after the other."
    )


async def feedback_reader(site: Site, token: str, edition_id: int) -> Subscriber | None:
    """The subscribed reader a feedback token names, when it came with edition ``edition_id``; else None."""
    found = await site.link_target("feedback", token)
    if found is None:
        return None
    subject, subscriber = found
    if subject.edition_id != edition_id or subscriber.status != "active":
        return None
    return subscriber


@dataclass(frozen=True, slots=True)
class FeedbackTarget:
    reader: Subscriber
    edition_id: int
    paper: EditionPaper
    choice: str


@dataclass(slots=True)
class AddOutcome:
    """What one add from the page did: the items read and their problems, and the library's report."""

    parsed: Parsed
    report: AddReport | None = None
    problems: list[str] = field(default_factory=list)


class Papers:
    def __init__(self, site: Site) -> None:
        self.site = site
        # One fetcher for every add: its throttle spaces the requests to the arXiv API across threads.
        self.fetcher = Fetcher(site.settings.fetch)
        self.source = arxiv_source(site.settings.library)
        self.adds = anyio.CapacityLimiter(CONCURRENT_ADDS)

    def routes(self) -> list[Route]:
        return [
            Route("/feedback/{token}/{choice}/{paper:path}", self.feedback_page, methods=["GET"]),
            Route("/feedback/{token}/{choice}/{paper:path}", self.feedback, methods=["POST"]),
            Route("/preferences/{token}/papers", self.papers_page, methods=["GET"]),
            Route("/preferences/{token}/papers/add", self.add, methods=["POST"]),
            Route("/preferences/{token}/papers/remove", self.remove, methods=["POST"]),
        ]

    @asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        try:
            yield
        finally:
            self.fetcher.close()

    # --- feedback -----------------------------------------------------------------------------------------

    async def feedback_page(self, request: Request) -> Response:
        """The paper and the buttons. Opening it (a scanner, a preview) records nothing."""
        target = await self._feedback_target(request)
        if isinstance(target, Response):
            return target
        reader, paper = target.reader, target.paper
        current = await self.site.call(lambda db: signal_kind(db, reader.id, paper.paper_id))
        return self._feedback(request, target, already=current == CHOICES[target.choice])

    async def feedback(self, request: Request) -> Response:
        form = await request.form()
        if refused := self.site.refused_form(request, form):
            return refused
        target = await self._feedback_target(request)
        if isinstance(target, Response):
            return target
        edition_id, key, kind = target.edition_id, target.paper.key, CHOICES[target.choice]

        def record(db: sqlite_utils.Database) -> Recorded:
            # Asked again with the write: the paper may have gone since the check above.
            if edition_paper(db, edition_id, key) is None:
                raise PaperNotFound(f"{key} is not in edition {edition_id}")
            return record_signal(db, target.reader.id, key, kind)

        try:
            recorded = await self.site.call(record)
        except (EditionNotFound, PaperNotFound):
            return self._gone(request)
        except SubscriberError:  # removed from the list meanwhile
            return self._invalid_link(request)
        return self._feedback(request, target, done=True, already=not recorded.changed)

    async def _feedback_target(self, request: Request) -> FeedbackTarget | Response:
        """The reader, the edition, the paper and the choice a feedback link names, or the page that says
        what is wrong with it (nothing is recorded either way)."""
        found = await self.site.link_target("feedback", request.path_params["token"])
        if found is None or found[0].edition_id is None:
            return self._invalid_link(request)
        subject, reader = found
        edition_id, choice, key = (
            subject.edition_id,
            request.path_params["choice"],
            request.path_params["paper"],
        )
        if choice not in CHOICES:
            return self.site.message(
                request,
                "This link is not complete",
                "A feedback link says “more” or “less” before the paper. Use the link from the email.",
                404,
            )
        if reader.status != "active":
            return self.site.message(
                request,
                "Not subscribed",
                f"{mask_email(reader.email)} receives no digests now, so nothing is recorded.",
                403,
            )
        try:
            paper = await self.site.call(lambda db: edition_paper(db, edition_id, key)) if key else None
        except (EditionNotFound, PaperNotFound):
            return self._gone(request)
        if paper is None:
            return self.site.message(
                request,
                "Not in this edition",
                "This paper is not in the edition this link came with. Use the link from the email.",
                404,
            )
        return FeedbackTarget(reader, edition_id, paper, choice)

    def _feedback(
        self, request: Request, target: FeedbackTarget, *, done: bool = False, already: bool = False
    ) -> Response:
        token, key, choice = request.path_params["token"], target.paper.key, target.choice
        other = OTHER[choice]
        links = self.site.page_links
        return self.site.page(
            request,
            "web/feedback.html.j2",
            choice=choice,
            label=LABELS[choice],
            other_label=LABELS[other],
            paper=paper_view(target.paper),
            done=done,
            already=already,
            action=links.feedback(token, key, choice),
            other_action=links.feedback(token, key, other),
            papers_url=links.preferences(target.reader.id, target.reader.email) + "/papers",
        )

    def _gone(self, request: Request) -> Response:
        return self.site.message(
            request,
            "No longer kept",
            "This paper or its edition is no longer kept here, so nothing was recorded.",
            410,
        )

    def _invalid_link(self, request: Request) -> Response:
        return self.site.message(
            request,
            "This link is not valid",
            "It may have been altered or cut short, or the address is no longer on the list. "
            "Use the link from the most recent email.",
            400,
        )

    # --- your papers ----------------------------------------------------------------------------------------

    async def papers_page(self, request: Request) -> Response:
        subscriber = await self.site.subscriber_for("preferences", request.path_params["token"])
        if subscriber is None:
            return self._invalid_link(request)
        return await self._papers(request, subscriber)

    async def remove(self, request: Request) -> Response:
        form = await request.form()
        if refused := self.site.refused_form(request, form):
            return refused
        subscriber = await self.site.subscriber_for("preferences", request.path_params["token"])
        if subscriber is None:
            return self._invalid_link(request)
        key = str(form.get("key", ""))
        missing = await self.site.call(lambda db: forget(db, subscriber.id, [key])) if key else [key]
        if missing:
            return await self._papers(
                request,
                subscriber,
                error="That paper is not among your papers: nothing changed.",
                status_code=404,
            )
        return await self._papers(
            request, subscriber, notice="Removed. It no longer counts from the next edition."
        )

    async def add(self, request: Request) -> Response:
        subscriber = await self.site.subscriber_for("preferences", request.path_params["token"])
        if subscriber is None:
            return self._invalid_link(request)
        try:
            form = await request.form(max_files=1, max_fields=4, max_part_size=TEXT_BYTES)
        except HTTPException as exc:
            return await self._papers(
                request,
                subscriber,
                error=f"The form could not be read ({exc.detail}): the list takes at most "
                f"{TEXT_BYTES / 1_000_000:g} MB of text and {MAX_ITEMS:,} papers an add.",
                status_code=400,
            )
        if refused := self.site.refused_form(request, form):
            return refused
        text = str(form.get("items", ""))
        upload = form.get("file")
        upload = upload if isinstance(upload, UploadFile) and upload.filename else None
        if not text.strip() and upload is None:
            return await self._papers(
                request, subscriber, error="Type arXiv ids, URLs or DOIs, or choose a file.", status_code=400
            )

        def work() -> AddOutcome:
            parsed = Parsed()
            if text.strip():
                parse_text(text, "line", parsed)
            if upload is not None and parsed.full:
                parsed.problem(f"{upload.filename}: not read (the list above reached {MAX_ITEMS:,} items)")
            elif upload is not None:
                parse_file(upload.filename or "file", upload.file, upload.size or 0, parsed)
            outcome = AddOutcome(parsed, problems=list(parsed.problems))
            if parsed.items:
                with self.site.database() as db:
                    outcome.report = add_to_library(
                        db, subscriber.id, parsed.items, self.fetcher, self.source
                    )
                outcome.problems += outcome.report.problems
            return outcome

        try:
            outcome = await anyio.to_thread.run_sync(work, limiter=self.adds)
        except SubscriberError:  # removed from the list meanwhile
            return self._invalid_link(request)
        finally:
            if upload is not None:
                await upload.close()
        report = outcome.report
        more = outcome.parsed.problem_count - len(outcome.parsed.problems)
        status_code = 200 if report is not None and (report.added or report.pending) else 400
        return await self._papers(
            request,
            subscriber,
            added=_added(report),
            problems=outcome.problems,
            more_problems=more,
            status_code=status_code,
        )

    async def _papers(
        self,
        request: Request,
        subscriber: Subscriber,
        *,
        notice: str = "",
        error: str = "",
        added: dict[str, Any] | None = None,
        problems: list[str] | None = None,
        more_problems: int = 0,
        status_code: int = 200,
    ) -> Response:
        signals, pending = await self.site.call(
            lambda db: (reader_signals(db, subscriber.id), pending_items(db, subscriber.id))
        )
        newest = sorted(signals, key=lambda s: s.created_at, reverse=True)
        base = self.site.page_links.preferences(subscriber.id, subscriber.email)
        return self.site.page(
            request,
            "web/papers.html.j2",
            status_code,
            masked_email=mask_email(subscriber.email),
            groups=[
                {
                    "kind": kind,
                    "heading": heading,
                    "empty": empty,
                    "papers": [_signal(s) for s in newest if s.kind == kind],
                }
                for kind, heading, empty in GROUPS
            ],
            pending=[_pending(item) for item in pending],
            notice=notice,
            error=error,
            added=added,
            problems=problems or [],
            more_problems=more_problems,
            preferences_url=base,
            add_action=f"{base}/papers/add",
            remove_action=f"{base}/papers/remove",
            max_items=MAX_ITEMS,
            max_megabytes=f"{MAX_FILE_BYTES / 1_000_000:g}",
        )


GROUPS = (
    (LIKE, "More like these", "Nothing yet: “More like this” under a paper in your digest puts it here."),
    (DISLIKE, "Less like these", "Nothing yet: “Less like this” under a paper in your digest puts it here."),
    (LIBRARY, "Your library", "Nothing yet: add papers you like below, and the digest ranks by them."),
)


def _signal(signal: ReaderSignal) -> dict[str, Any]:
    authors = ", ".join(signal.authors[:3]) + (" et al." if len(signal.authors) > 3 else "")
    return {
        "key": signal.id,
        "title": signal.title,
        "authors": authors,
        "url": _paper_url(signal.id),
        "ident": _ident(signal.id),
        "date": day(signal.created_at),
    }


def _ident(key: str) -> str:
    """How a card names a paper by its key: "arXiv:2412.01234", "doi:10.1000/xyz"; "" for other keys."""
    if key.startswith(ids.ARXIV_PREFIX):
        return f"arXiv:{key.removeprefix(ids.ARXIV_PREFIX)}"
    if key.startswith(ids.DOI_PREFIX):
        return f"doi:{key.removeprefix(ids.DOI_PREFIX)}"
    return ""


def _pending(item: PendingItem) -> dict[str, Any]:
    return {"key": item.key, "item": item.item, "title": item.title, "reason": item.reason}


def _paper_url(key: str) -> str:
    """A paper's page from its key, where the key says where it is (arXiv, a DOI)."""
    if key.startswith(ids.ARXIV_PREFIX):
        return f"https://arxiv.org/abs/{key.removeprefix(ids.ARXIV_PREFIX)}"
    if key.startswith(ids.DOI_PREFIX):
        return f"https://doi.org/{key.removeprefix(ids.DOI_PREFIX)}"
    return ""


def _added(report: AddReport | None) -> dict[str, Any] | None:
    if report is None:
        return None
    return {
        "count": len(report.added),
        "fetched": report.fetched,
        "papers": [title for _, title in report.added[:SHOWN_ADDED]],
        "more": max(0, len(report.added) - SHOWN_ADDED),
        "pending": [_pending(item) for item in report.pending],
    }
