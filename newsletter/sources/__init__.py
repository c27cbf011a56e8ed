"""Source kinds: each turns one configured source into papers. ``KINDS`` maps a kind name to its module."""

from __future__ import annotations

from newsletter.errors import SourceError
from newsletter.settings import SourceConfig
from newsletter.sources import arxiv_api, arxiv_rss, feed, hf_daily
from newsletter.sources.base import Collected, Collector, SourceState

KINDS: dict[str, Collector] = {
    "arxiv_rss": arxiv_rss.collect,
    "arxiv_api": arxiv_api.collect,
    "hf_daily": hf_daily.collect,
    "feed": feed.collect,
}

__all__ = ["KINDS", "Collected", "Collector", "SourceConfig", "SourceError", "SourceState"]
