"""The commented configuration file ``newsletter init`` writes, made from the keys declared in settings.

Each key of each section is written with its default under the comment lines declared with it, or
commented out with its example when it is optional. The [[sources]] part says what each kind takes
(``newsletter.sources``), then holds the sources of a fresh install and commented-out examples. Without a
file, the built-in defaults are this text, read like any other.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from newsletter.config_keys import keys_of
from newsletter.settings import SECTIONS
from newsletter.sources import EXAMPLES, KINDS, STARTERS

HEADER = (
    "Configuration of the research-paper newsletter.",
    "Any scalar setting can be overridden from the environment as NEWSLETTER_<SECTION>_<KEY>,",
    "e.g. NEWSLETTER_SMTP_PASSWORD; keep secrets there rather than in this file.",
)
SOURCES_INTRO = "Each [[sources]] entry is one feed. kind is one of:"
SOURCES_OUTRO = "Set enabled = false to keep a source without fetching it."


def render() -> str:
    lines = _comments(HEADER)
    for section, cls in SECTIONS.items():
        lines += ["", f"[{section}]"]
        for name, key in keys_of(cls).items():
            lines += _comments(key.comment)
            if key.optional:
                lines.append(f"# {name} = {toml_value(key.example)}")
            else:
                lines.append(f"{name} = {toml_value(key.default)}")
    lines += ["", *_comments([SOURCES_INTRO, *_kinds(), SOURCES_OUTRO])]
    for entry in STARTERS:
        lines += ["", *_entry(entry)]
    for entry in EXAMPLES:
        lines += ["", *(f"# {line}" for line in _entry(entry))]
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """``value`` as TOML, written the way a person would: ``30`` for 30.0, ``50_000_000``, 'quoted "text"'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 1_000_000 else str(value)
    if isinstance(value, float):
        return toml_value(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        if '"' in value and "'" not in value and value.isprintable():
            return f"'{value}'"  # a literal string: no backslashes in front of the quotes
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def _comments(lines: Iterable[str]) -> list[str]:
    return [f"# {line}" for line in lines]


def _kinds() -> list[str]:
    width = max(map(len, KINDS)) + 2
    lines = []
    for name, kind in KINDS.items():
        first, *rest = kind.about
        lines.append(f"  {name:<{width}}{first}")
        lines += [f"  {'':<{width}}{line}" for line in rest]
    return lines


def _entry(entry: Mapping[str, Any]) -> list[str]:
    return ["[[sources]]", *(f"{key} = {toml_value(value)}" for key, value in entry.items())]


DEFAULT_CONFIG = render()


def write_default_config(path: Path, *, overwrite: bool = False) -> bool:
    """Write the commented default configuration; False when a file is already there."""
    if path.exists() and not overwrite:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DEFAULT_CONFIG, encoding="utf-8")
    return True
