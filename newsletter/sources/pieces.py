"""A large feed cut into smaller well-formed feeds of whole entries, for feedparser.

feedparser reads a document whole: it decodes it into one string (four bytes a character as soon as one
emoji appears), re-encodes it, and builds dictionaries for every entry, so a 45 MB feed can cost more
than half a gigabyte. Cut at entry boundaries, each piece repeats the document's beginning (declaration,
root and channel elements, namespaces) and end, and is parsed and let go of before the next.

Only documents that parse as well-formed XML without a DOCTYPE are cut; any other is handed over whole,
exactly as before, so feedparser's tolerance for broken feeds is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from xml.parsers import expat

PIECE_BYTES = 1_000_000
_ENTRY_NAMES = frozenset({"item", "entry"})  # RSS 0.9x / 1.0 / 2.0 items, Atom entries


class _NotCuttable(Exception):
    pass


def feed_pieces(body: bytes, piece_bytes: int = PIECE_BYTES) -> Iterator[bytes]:
    """``body`` itself when it is small or cannot be cut safely, else feeds of about ``piece_bytes`` of
    consecutive entries each, which together hold every entry once, in order."""
    layout = _entry_layout(body) if len(body) > 2 * piece_bytes else None
    if layout is None:
        yield body
        return
    starts, entries_end = layout
    head, tail = body[: starts[0]], body[entries_end:]
    begin = starts[0]
    for start in starts[1:]:
        if start - begin >= piece_bytes:
            yield head + body[begin:start] + tail
            begin = start
    yield head + body[begin:entries_end] + tail


def _entry_layout(body: bytes) -> tuple[list[int], int] | None:
    """Where each top-level entry starts, and where their common parent closes (byte offsets), or None."""
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    open_starts: list[int] = []  # byte offset of each open element's start tag
    starts: list[int] = []
    parent: int | None = None  # start offset of the element that holds the entries
    entries_end: int | None = None
    inside_entry = 0  # depth of the open entry, 0 outside entries

    def start_element(name: str, _attributes: object) -> None:
        nonlocal parent, inside_entry
        open_starts.append(parser.CurrentByteIndex)
        depth = len(open_starts)  # the root is at depth 1
        if inside_entry or depth not in (2, 3) or name.rsplit(" ", 1)[-1] not in _ENTRY_NAMES:
            return
        if parent is None:
            parent = open_starts[-2]
        elif open_starts[-2] != parent:
            raise _NotCuttable  # entries in more than one place: not a layout worth guessing about
        starts.append(parser.CurrentByteIndex)
        inside_entry = depth

    def end_element(_name: str) -> None:
        nonlocal entries_end, inside_entry
        if inside_entry == len(open_starts):
            inside_entry = 0
        if open_starts.pop() == parent:
            entries_end = parser.CurrentByteIndex  # the parent's end tag

    def refuse_doctype(*_args: object) -> None:
        raise _NotCuttable  # declared entities would have to be repeated and trusted in every piece

    parser.StartElementHandler = start_element
    parser.EndElementHandler = end_element
    parser.StartDoctypeDeclHandler = refuse_doctype
    try:
        parser.Parse(body, True)
    except (expat.ExpatError, _NotCuttable):
        return None
    if len(starts) < 2 or entries_end is None:
        return None
    return starts, entries_end
