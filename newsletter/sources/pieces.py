"""A large feed cut into smaller well-formed feeds of whole entries, for feedparser.

feedparser reads a document whole: it decodes it into one string (four bytes a character as soon as one
emoji appears), re-encodes it, and builds dictionaries for every entry, so a 45 MB feed can cost more
than half a gigabyte. Cut at entry boundaries, each piece repeats the document's beginning (declaration,
root and channel elements, namespaces), every other child of the channel (wherever it stood among the
entries: a title after the items is still the feed's title) and the document's end, and is parsed and
let go of before the next.

Only documents that parse as well-formed XML without a DOCTYPE, in an encoding the XML parser reads
itself, are cut; any other is handed over whole, exactly as before, so feedparser's tolerance for broken
feeds and its own encoding detection are unchanged.
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
    starts, others, parent_end = layout
    view = memoryview(body)
    ends = [*starts[1:], parent_end]  # each child of the entries' parent reaches to the next one
    head = view[: starts[0]]
    tail = b"".join(
        [*(view[s:e] for s, e in zip(starts, ends, strict=True) if s in others), view[parent_end:]]
    )
    entries: list[memoryview] = []
    size = 0
    for start, end in zip(starts, ends, strict=True):
        if start in others:
            continue
        if size >= piece_bytes:
            yield b"".join([head, *entries, tail])
            entries, size = [], 0
        entries.append(view[start:end])
        size += end - start
    yield b"".join([head, *entries, tail])


def _entry_layout(body: bytes) -> tuple[list[int], set[int], int] | None:
    """Where each child of the element that holds the entries starts, from the first entry on, which of
    them are not entries, and where that element's end tag is (byte offsets); or None."""
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    open_starts: list[int] = []  # byte offset of each open element's start tag
    starts: list[int] = []
    others: set[int] = set()
    parent: int | None = None  # start offset of the element that holds the entries
    parent_end: int | None = None
    inside_entry = 0  # depth of the open entry, 0 outside entries

    def start_element(name: str, _attributes: object) -> None:
        nonlocal parent, inside_entry
        offset = parser.CurrentByteIndex
        open_starts.append(offset)
        depth = len(open_starts)  # the root is at depth 1
        if inside_entry:
            return
        is_entry = depth in (2, 3) and name.rsplit(" ", 1)[-1] in _ENTRY_NAMES
        if is_entry and parent is None:
            parent = open_starts[-2]
        elif is_entry and open_starts[-2] != parent:
            raise _NotCuttable  # entries in more than one place: not a layout worth guessing about
        if parent is not None and depth >= 2 and open_starts[-2] == parent:
            starts.append(offset)
            if not is_entry:
                others.add(offset)
        if is_entry:
            inside_entry = depth

    def end_element(_name: str) -> None:
        nonlocal parent_end, inside_entry
        if inside_entry == len(open_starts):
            inside_entry = 0
        if open_starts.pop() == parent:
            parent_end = parser.CurrentByteIndex  # the parent's end tag

    def refuse_doctype(*_args: object) -> None:
        raise _NotCuttable  # declared entities would have to be repeated and trusted in every piece

    parser.StartElementHandler = start_element
    parser.EndElementHandler = end_element
    parser.StartDoctypeDeclHandler = refuse_doctype
    try:
        parser.Parse(body, True)
    except (expat.ExpatError, _NotCuttable):
        return None
    except (ValueError, LookupError):  # an encoding expat cannot read (Shift_JIS, GB2312...): feedparser can
        return None
    if len(starts) - len(others) < 2 or parent_end is None:
        return None
    return starts, others, parent_end
