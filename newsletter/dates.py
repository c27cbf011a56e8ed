"""How moments are written: every timestamp in the database goes through ``iso``."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(moment: datetime | None) -> str | None:
    """Timestamps are stored as ISO 8601 text with microseconds, always in the same shape, so that
    comparing the strings compares the moments (all are UTC)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds") if moment else None
