"""Where in a TOML text each table and key is defined: ``tomllib`` parses values but keeps no positions.

``key_lines(text)`` maps paths such as ``("smtp",)``, ``("smtp", "port")``, ``("sources", 0, "url")``
(the first ``[[sources]]`` entry) to their 1-based line. It reads headers and ``key =`` lines, skipping the
inside of multi-line strings and arrays; it is only used to point at a line in an error message, so a
construct it does not follow just leaves that message without a line number.
"""

from __future__ import annotations

import re

KeyPath = tuple[str | int, ...]

_PART = r"""(?:"(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)"""
_DOTTED = rf"{_PART}(?:\s*\.\s*{_PART})*"
_HEADER = re.compile(rf"^\s*(\[\[|\[)\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(rf"^\s*({_DOTTED})\s*=")
_STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'[^']*'""")


def key_lines(text: str) -> dict[KeyPath, int]:
    lines: dict[KeyPath, int] = {}
    table: KeyPath = ()
    entries: dict[KeyPath, int] = {}  # [[array]] entries seen so far, per array
    open_brackets = 0  # inside a multi-line array or inline table
    closing_quotes: str | None = None  # inside a multi-line string
    for number, line in enumerate(text.splitlines(), start=1):
        if closing_quotes is not None:
            if line.count(closing_quotes) % 2 == 1:
                closing_quotes = None
            continue
        if open_brackets > 0:
            open_brackets += _bracket_balance(line)
            continue
        header = _HEADER.match(line)
        if header:
            path = _split(header[2])
            if header[1] == "[[":
                index = entries.get(path, 0)
                entries[path] = index + 1
                table = (*path, index)
            else:
                table = path
            lines.setdefault(path, number)
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key is None:
            continue
        dotted = _split(key[1])
        for length in range(1, len(dotted) + 1):  # a.b.c = 1 also defines tables a and a.b
            lines.setdefault((*table, *dotted[:length]), number)
        value = line[key.end() :]
        for quotes in ('"""', "'''"):
            if value.count(quotes) % 2 == 1:
                closing_quotes = quotes
        if closing_quotes is None:
            open_brackets = max(_bracket_balance(value), 0)
    return lines


def _split(dotted: str) -> tuple[str, ...]:
    return tuple(part.strip("\"'") for part in re.findall(_PART, dotted))


def _bracket_balance(value: str) -> int:
    bare = _STRING.sub("", value).split("#", 1)[0]
    return bare.count("[") + bare.count("{") - bare.count("]") - bare.count("}")
