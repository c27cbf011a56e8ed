"""Plain records that flow through the pipeline."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from newsletter import ids


class AnnounceType(enum.StrEnum):
    """How arXiv announced an entry: a new paper, a cross-list, or a revision of an older one."""

    NEW = "new"
    CROSS = "cross"
    REPLACE = "replace"
    REPLACE_CROSS = "replace-cross"

    @property
    def is_revision(self) -> bool:
        return self in (AnnounceType.REPLACE, AnnounceType.REPLACE_CROSS)


@dataclass(slots=True)
class Paper:
    """One paper as a source describes it; text fields are already clean plain text."""

    title: str
    abstract: str = ""
    authors: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    primary_category: str | None = None
    url: str | None = None
    pdf_url: str | None = None
    arxiv_id: str | None = None
    version: int | None = None
    doi: str | None = None
    published: datetime | None = None
    updated: datetime | None = None
    announce_type: AnnounceType | None = None
    upvotes: int | None = None
    ai_summary: str | None = None
    keywords: list[str] = field(default_factory=list)
    github_repo: str | None = None
    comment: str | None = None
    journal_ref: str | None = None
    venue: str | None = None
    # Any other identifier the source gave (a guid, a permalink) for matching later sightings.
    extra_keys: list[str] = field(default_factory=list)

    @property
    def strong_keys(self) -> list[str]:
        """Keys that identify exactly one paper: its arXiv id, then its DOI."""
        keys = []
        if self.arxiv_id:
            keys.append(ids.ARXIV_PREFIX + self.arxiv_id)
        if self.doi:
            keys.append(ids.doi_key(self.doi))
        return keys

    @property
    def weak_keys(self) -> list[str]:
        """Keys that may match a paper only when it has no strong key: title, then links and guids."""
        keys = []
        title = ids.title_key(self.title)
        if title:
            keys.append(title)
        keys.extend(key for key in self.extra_keys if key not in keys)
        return keys

    @property
    def canonical_key(self) -> str:
        keys = self.strong_keys or self.weak_keys
        if not keys:
            raise ValueError(f"paper has no identifier, DOI, usable title or link: {self.title!r}")
        return keys[0]

    @property
    def all_keys(self) -> list[str]:
        return self.strong_keys + [key for key in self.weak_keys if key not in self.strong_keys]


@dataclass(slots=True)
class ParsedFeed:
    """What a source's document yielded: papers, problems with single entries, paging information."""

    papers: list[Paper] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    total_results: int | None = None
    start_index: int | None = None
    entries_seen: int = 0


BOUNCE_KINDS = ("hard", "soft", "complaint", "auto_reply", "unknown")


@dataclass(frozen=True, slots=True)
class BounceEvent:
    """One report that a message did not arrive, or that its reader complained: a message from the bounce
    mailbox (a DSN, an ARF report, an auto-reply...) or one event of a relay's webhook.

    ``source_id`` is unique within ``source``, so that the same report taken twice counts once: the
    provider's event id, or for a mailbox message the SHA-256 of its bytes."""

    source: str  # "mailbox", "ses", "postmark", "mailgun", "sendgrid"
    source_id: str
    kind: str  # one of BOUNCE_KINDS
    addresses: tuple[str, ...] = ()  # the readers' addresses it names: failed recipients, the complainant
    report_to: tuple[str, ...] = ()  # where the report was delivered (Delivered-To, X-Original-To, To): VERP
    message_id: str | None = None  # the Message-ID of our message it is about, "<...>"
    status: str = ""  # enhanced status code, "5.1.1"; a provider's code where it has no other
    detail: str = ""  # one line: the diagnostic, the feedback type, the provider's reason
    occurred_at: datetime | None = None  # aware; when the report says it happened

    def __post_init__(self) -> None:
        if self.kind not in BOUNCE_KINDS:
            raise ValueError(f"unknown bounce kind {self.kind!r}")
