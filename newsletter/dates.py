"""How moments are written: every timestamp in the database goes through ``iso``, every date a reader
sees (emails, web pages, the feed's titles) through ``day`` and ``day_range``: "1 Dec 2026",
"24 Nov – 1 Dec 2026"."""

from __future__ import annotations

from datetime import UTC, date, datetime


def iso(moment: datetime | None) -> str | None:
    """Timestamps are stored as ISO 8601 text with microseconds, always in the same shape, so that
    comparing the strings compares the moments (all are UTC)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds") if moment else None


def _date(moment: datetime | date | str) -> date:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if isinstance(moment, datetime):
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC)
        return moment.date()
    return moment


def day(moment: datetime | date | str) -> str:
    """A day as readers see it: "1 Dec 2026" (UTC; a stored ISO timestamp is read first)."""
    when = _date(moment)
    return f"{when.day} {when:%b %Y}"


def day_range(start: datetime | date | str, end: datetime | date | str) -> str:
    """Two days as one span, saying the month and year once where they are shared: "24–30 Nov 2026",
    "24 Nov – 1 Dec 2026", "29 Dec 2026 – 4 Jan 2027"; one day when both are the same."""
    first, last = _date(start), _date(end)
    if first == last:
        return day(last)
    if (first.year, first.month) == (last.year, last.month):
        return f"{first.day}–{day(last)}"
    if first.year == last.year:
        return f"{first.day} {first:%b} – {day(last)}"
    return f"{day(first)} – {day(last)}"
