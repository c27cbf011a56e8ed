"""Source kinds: each turns one configured source into papers.

``KINDS`` maps a kind's name to its ``SourceKind``: how its [[sources]] entry is completed and checked
(``configure``, which ``newsletter.config`` calls through ``configure`` below) and how it is collected
(``collect``, which ``newsletter.ingest`` calls). One module per kind (arxiv_rss, arxiv_api, hf_daily, feed);
``base`` holds what they share, ``pieces`` cuts large feeds for the feed kind.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from newsletter.config_keys import SettingError
from newsletter.settings import SourceConfig
from newsletter.sources import arxiv_api, arxiv_rss, feed, hf_daily
from newsletter.sources.base import SourceKind

KINDS: dict[str, SourceKind] = {
    "arxiv_rss": arxiv_rss.KIND,
    "arxiv_api": arxiv_api.KIND,
    "hf_daily": hf_daily.KIND,
    "feed": feed.KIND,
}
# The sources `newsletter init` writes, which the built-in defaults therefore follow, then the examples it
# writes commented out.
STARTERS: tuple[dict[str, Any], ...] = (
    {"name": "arxiv", "kind": "arxiv_rss", "categories": ("cs.LG", "cs.CL", "cs.CV")},
    {"name": "huggingface", "kind": "hf_daily", "url": hf_daily.DEFAULT_URL},
)
EXAMPLES: tuple[dict[str, Any], ...] = (
    {
        "name": "arxiv-search",
        "kind": "arxiv_api",
        "query": 'cat:cs.CL AND abs:"retrieval augmented"',
        "page_size": 100,
        "max_results": 500,
        "lookback_days": 8,
    },
    {"name": "nature-mi", "kind": "feed", "url": "https://www.nature.com/natmachintell.rss"},
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def configure(entry: Mapping[str, Any]) -> SourceConfig:
    """A [[sources]] entry (the checked values it sets) as the SourceConfig its kind makes of it; a
    SettingError names the key at fault."""
    name, kind = entry.get("name"), entry.get("kind")
    if name is None or not _NAME.match(name):
        raise SettingError("name", "name must be 1-64 letters, digits, '.', '_' or '-'")
    if kind not in KINDS:
        raise SettingError("kind", f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
    source = KINDS[kind].configure(entry)
    if not source.url:
        raise SettingError("url", f"a {kind} source needs a url")
    if urlsplit(source.url).scheme.lower() not in ("http", "https", "file"):
        raise SettingError("url", f"url must be http(s):// or file://, not {source.url!r}")
    # arXiv's own rule, whatever the kind that reaches it.
    arxiv = (urlsplit(source.url).hostname or "").endswith("arxiv.org")
    if "min_interval" in entry and arxiv and source.min_interval < arxiv_api.DEFAULT_INTERVAL:
        raise SettingError(
            "min_interval", f"arXiv asks for at least {arxiv_api.DEFAULT_INTERVAL:g} seconds between requests"
        )
    return source
