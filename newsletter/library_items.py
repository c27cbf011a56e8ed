"""What a reader gives to start their library from, read into items: arXiv ids and URLs, DOIs, and the
files reference managers write (BibTeX, RIS, a Zotero CSV export, a text file of ids, one a line).

An ``Item`` names one paper: by its arXiv id (without version: a library keeps papers, not versions),
else its DOI (arXiv's own DOIs, 10.48550/arXiv.ID, are read as the arXiv id), else its title. The formats
are read by well-kept parsers (bibtexparser, rispy, the csv module), the identifiers by ``newsletter.ids``.
Reading never stops at a bad entry: every good item is kept, and every bad one is said with where it is
(file and line, entry key) and what is wrong. Limits: a file of at most ``MAX_FILE_BYTES``, at most
``MAX_ITEMS`` items in one add (what is past that is not read, and that is said too).
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path, PurePath
from typing import BinaryIO

import bibtexparser
import rispy
from bibtexparser.exceptions import BlockAbortedException
from bibtexparser.model import DuplicateBlockKeyBlock, Entry, ParsingFailedBlock
from pylatexenc.latex2text import LatexNodes2Text
from pylatexenc.latexwalker import LatexWalkerError

from newsletter import ids
from newsletter.text import clean_text

MAX_FILE_BYTES = 10_000_000
MAX_ITEMS = 1000
# Problems kept with their text; past that they are only counted, so a file of garbage cannot fill the
# memory or the screen with its report.
MAX_PROBLEMS = 200
FILE_KINDS = (".bib", ".ris", ".csv", ".txt")
SHOWN = 80  # characters of a bad value quoted in a message

# bibtexparser logs each broken block as a warning; the reader's report says the same, once.
logging.getLogger("bibtexparser").setLevel(logging.ERROR)


@dataclass(frozen=True, slots=True)
class Item:
    """One paper a reader named. ``given`` says where and what it was, for messages."""

    given: str
    arxiv_id: str | None = None
    doi: str | None = None
    title: str = ""

    @property
    def keys(self) -> list[str]:
        """The keys its paper may be stored under, strongest first."""
        keys = []
        if self.arxiv_id:
            keys.append(ids.ARXIV_PREFIX + self.arxiv_id)
        if self.doi:
            keys.append(ids.doi_key(self.doi))
        title = ids.title_key(self.title)
        if title:
            keys.append(title)
        return keys

    @property
    def key(self) -> str:
        return self.keys[0]


@dataclass(slots=True)
class Parsed:
    """The items read so far (each paper once), the problems met, and whether the item limit was reached."""

    limit: int = MAX_ITEMS
    items: list[Item] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    full: bool = False
    _seen: set[str] = field(default_factory=set)

    def add(self, item: Item, where: str) -> bool:
        """Keep ``item`` unless its paper is already there; False once the limit is reached (``where``
        then names what was not read)."""
        keys = item.keys
        if not keys:
            self.problem(f"{where}: no arXiv id, DOI or title that names one paper")
            return True
        if any(key in self._seen for key in keys):
            return True
        if len(self.items) >= self.limit:
            if not self.full:
                self.full = True
                self.problem(
                    f"{where}: an add takes at most {self.limit:,} items; this one and the rest were not "
                    "read (add them in another run)"
                )
            return False
        self._seen.update(keys)
        self.items.append(item)
        return True

    def problem(self, message: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(message)


# --- what a reader types -----------------------------------------------------------------------------------


def parse_arguments(arguments: Sequence[str], *, limit: int = MAX_ITEMS) -> Parsed:
    """Items from the command line: each argument an arXiv id or URL, a DOI (bare or a doi.org URL), or
    a .bib, .ris, .csv (Zotero export) or .txt (ids, one a line) file."""
    parsed = Parsed(limit=limit)
    for argument in arguments:
        if parsed.full:
            parsed.problem(f"{_shown(argument)}: not read (the limit of {limit:,} items per add was reached)")
            continue
        if PurePath(argument).suffix.lower() in FILE_KINDS or Path(argument).is_file():
            data = _read_file(Path(argument), parsed)
            if data is not None:
                parse_upload(argument, data, parsed)
        else:
            item = reference_item(argument)
            if item is None:
                parsed.problem(f"'{_shown(argument)}' {_not_an_item(argument, files=True)}")
            else:
                parsed.add(item, _shown(argument))
    return parsed


def parse_text(text: str, origin: str = "line", parsed: Parsed | None = None) -> Parsed:
    """Items from text holding one arXiv id, arXiv URL or DOI a line (a .txt file, a form's text area);
    blank lines and lines starting with # are skipped."""
    parsed = parsed if parsed is not None else Parsed()
    for number, line in enumerate(text.splitlines(), start=1):
        value = line.strip()
        if not value or value.startswith("#"):
            continue
        where = f"{origin} {number}"
        item = reference_item(value, given=f"{where} ({_shown(value)})")
        if item is None:
            parsed.problem(f"{where}: '{_shown(value)}' {_not_an_item(value)}")
        elif not parsed.add(item, where):
            break
    return parsed


def reference_item(text: str, *, given: str | None = None) -> Item | None:
    """The item an arXiv id, arXiv URL or DOI names, or None when ``text`` is none of these."""
    arxiv = arxiv_id_in(text)
    if arxiv is not None:
        return Item(given or text.strip(), arxiv_id=arxiv)
    doi = doi_in(text)
    if doi is not None:
        return Item(given or text.strip(), doi=doi)
    return None


def paper_key(text: str) -> str | None:
    """The key a paper is stored under, from what names it: a key as ``digest build --json`` writes it
    (``arxiv:...``, ``doi:...``, ``title:...``), an arXiv id or URL, or a DOI; None for anything else."""
    value = text.strip()
    for prefix in (ids.TITLE_PREFIX, ids.URL_PREFIX):
        if value.lower().startswith(prefix) and len(value) > len(prefix):
            return prefix + value[len(prefix) :]
    if value.lower().startswith(ids.ARXIV_PREFIX):
        # A key as written is taken as it is, even one arXiv never gave (the shipped sample papers').
        found = ids.parse_arxiv_id(value)
        if found is not None:
            return ids.ARXIV_PREFIX + found.id
    item = reference_item(value)
    return item.key if item is not None else None


def arxiv_id_in(text: str | None, *, labelled: bool = False) -> str | None:
    """The arXiv id (without version) that ``text`` presents, if it is one arXiv could have given. With
    ``labelled``, only text that says arXiv counts (a report number in a note is not an arXiv id)."""
    if labelled and "arxiv" not in (text or "").lower():
        return None
    found = ids.parse_arxiv_id(text)
    return found.id if found is not None and plausible_arxiv_id(found.id) else None


def plausible_arxiv_id(arxiv_id: str, today: date | None = None) -> bool:
    """Whether arXiv could have given this id by ``today``: old-style ids (archive/YYMMNNN) ran from
    August 1991 to March 2007, new-style ids (YYMM.NNNN) from April 2007, with five digits since 2015."""
    if "/" in arxiv_id:
        number = arxiv_id.split("/", 1)[1]
        year, month = int(number[:2]), int(number[2:4])
        after_start = year > 91 or (year == 91 and month >= 8)
        return 1 <= month <= 12 and int(number[4:]) > 0 and (after_start or (year, month) <= (7, 3))
    stamp, number = arxiv_id.split(".", 1)
    year, month = int(stamp[:2]), int(stamp[2:])
    now = today or datetime.now(UTC).date()
    if not 1 <= month <= 12 or not (7, 4) <= (year, month) <= (now.year % 100, now.month) or int(number) == 0:
        return False
    return len(number) == (5 if year >= 15 else 4)


def doi_in(text: str | None) -> str | None:
    """The DOI in ``text``, unless it is one of arXiv's own (those name the arXiv id, read apart)."""
    doi = ids.normalise_doi(text)
    return None if doi is None or doi.startswith(_ARXIV_DOI) else doi


def _not_an_item(value: str, *, files: bool = False) -> str:
    if ids.parse_arxiv_id(value) is not None:
        return (
            "is no id arXiv has given (YYMM.NNNNN since 2015, YYMM.NNNN from April 2007, archive/YYMMNNN "
            "before)"
        )
    if files:
        return "is not an arXiv id or URL, a DOI, or a .bib, .ris, .csv or .txt file"
    return "is not an arXiv id or URL or a DOI"


_ARXIV_DOI = "10.48550/arxiv."


# --- files ---------------------------------------------------------------------------------------------------


def parse_upload(name: str, data: bytes, parsed: Parsed | None = None) -> Parsed:
    """Items from a file's bytes (a path read, an upload), read as its name's kind: .bib, .ris, .csv
    (a Zotero export) or .txt."""
    parsed = parsed if parsed is not None else Parsed()
    kind = PurePath(name).suffix.lower()
    shown = _shown(name)
    if kind not in FILE_KINDS:
        parsed.problem(f"{shown}: a library file is a .bib, .ris, .csv (Zotero export) or .txt file")
        return parsed
    if len(data) > MAX_FILE_BYTES:
        parsed.problem(_too_large(shown, len(data)))
        return parsed
    if b"\x00" in data:
        parsed.problem(f"{shown}: not a text file")
        return parsed
    text = _decode(data)
    if kind == ".txt":
        parse_text(text, f"{shown} line", parsed)
    elif kind == ".bib":
        _parse_bibtex(shown, text, parsed)
    elif kind == ".ris":
        _parse_ris(shown, text, parsed)
    else:
        _parse_csv(shown, text, parsed)
    return parsed


def parse_file(name: str, file: BinaryIO, size: int, parsed: Parsed | None = None) -> Parsed:
    """Items from an open file of ``size`` bytes (a web upload, spooled to disk), read as its name's kind;
    one larger than ``MAX_FILE_BYTES`` is refused unread, and no more than that is ever read."""
    parsed = parsed if parsed is not None else Parsed()
    if size > MAX_FILE_BYTES:
        parsed.problem(_too_large(_shown(name), size))
        return parsed
    return parse_upload(name, file.read(MAX_FILE_BYTES + 1), parsed)


def _read_file(path: Path, parsed: Parsed) -> bytes | None:
    shown = _shown(str(path))
    try:
        if not path.is_file():
            parsed.problem(f"{shown}: {'not a regular file' if path.exists() else 'no such file'}")
            return None
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            parsed.problem(_too_large(shown, size))
            return None
        with path.open("rb") as file:
            return file.read(MAX_FILE_BYTES + 1)  # one that grows while it is read still stops at the cap
    except OSError as exc:
        parsed.problem(f"{shown}: cannot read it: {exc.strerror or exc}")
        return None


def _too_large(shown: str, size: int) -> str:
    return (
        f"{shown}: {size / 1_000_000:.1f} MB is more than a library file may have "
        f"({MAX_FILE_BYTES / 1_000_000:g} MB): split it"
    )


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # what older reference managers wrote; every byte is a character


# --- BibTeX ----------------------------------------------------------------------------------------------------

# Fields that may hold an arXiv id, bare or as a URL or arXiv DOI; fields that may mention one with a label
# ("arXiv preprint arXiv:1706.03762"); fields that may hold a DOI.
_BIBTEX_ARXIV = ("eprint", "arxivid", "arxiv", "url", "doi")
_BIBTEX_ARXIV_LABELLED = ("journal", "note", "howpublished", "booktitle")
_BIBTEX_DOI = ("doi", "url")


def _parse_bibtex(shown: str, text: str, parsed: Parsed) -> None:
    library = bibtexparser.parse_string(text)
    for block in sorted([*library.entries, *library.failed_blocks], key=_line):
        where = f"{shown} line {_line(block) + 1}"
        if isinstance(block, ParsingFailedBlock):
            parsed.problem(f"{where}: {_broken_block(block)}")
            continue
        if isinstance(block, Entry) and not parsed.add(_bibtex_item(block, f"{where} ({block.key})"), where):
            return
    if not library.entries and not library.failed_blocks:
        parsed.problem(f"{shown}: no BibTeX entries")


def _line(block: object) -> int:
    return getattr(block, "start_line", None) or 0


def _broken_block(block: ParsingFailedBlock) -> str:
    if isinstance(block, DuplicateBlockKeyBlock):
        return f"a second entry with the key {block.key!r}, skipped"
    head = (block.raw or "").split(",", 1)[0].strip()
    reason = block.error.abort_reason if isinstance(block.error, BlockAbortedException) else str(block.error)
    return f"broken entry '{_shown(head)}' skipped: {' '.join(reason.split())}"


def _bibtex_item(entry: Entry, given: str) -> Item:
    values = {name.lower(): f.value for name, f in entry.fields_dict.items() if isinstance(f.value, str)}
    # An eprint of another archive (eprinttype = {hdl}) is no arXiv id.
    archive = (values.get("archiveprefix") or values.get("eprinttype") or "arxiv").strip().lower()
    arxiv = [
        arxiv_id_in(values.get(name)) for name in _BIBTEX_ARXIV if name != "eprint" or archive == "arxiv"
    ]
    arxiv += [arxiv_id_in(values.get(name), labelled=True) for name in _BIBTEX_ARXIV_LABELLED]
    return Item(
        given,
        arxiv_id=_first(arxiv),
        doi=_first(doi_in(values.get(name)) for name in _BIBTEX_DOI),
        title=_bibtex_text(values.get("title")),
    )


_LATEX = LatexNodes2Text()
_UNESCAPED_PERCENT = re.compile(r"(?<!\\)%")


def _bibtex_text(value: str | None) -> str:
    """A BibTeX value as plain text: its braces and LaTeX (accents, math) turned into characters."""
    if not value:
        return ""
    try:
        # % starts a comment in LaTeX; in a title it is a per cent sign.
        text = _LATEX.latex_to_text(_UNESCAPED_PERCENT.sub(r"\\%", value))
    except LatexWalkerError:
        text = value
    return clean_text(text, html_input=False)


# --- RIS ---------------------------------------------------------------------------------------------------------


def _parse_ris(shown: str, text: str, parsed: Parsed) -> None:
    """Each record (from its TY line to its ER line) is read by rispy on its own, so a broken record is
    said with its line and the others are kept."""
    records = 0
    for start, lines, closed in _ris_records(text):
        records += 1
        where = f"{shown} line {start}"
        if not closed:
            parsed.problem(f"{where}: a record that never ends (no 'ER  -' line before the next), skipped")
            continue
        try:
            entries = rispy.loads("\n".join(lines))
        except (ValueError, KeyError, TypeError) as exc:
            parsed.problem(f"{where}: a record rispy cannot read ({exc}), skipped")
            continue
        for entry in entries:
            if not parsed.add(_ris_item(entry, f"{where} ({_shown(str(entry.get('title') or ''))})"), where):
                return
    if not records:
        parsed.problem(f"{shown}: no RIS records (each starts with a 'TY  - ' line)")


def _ris_records(text: str) -> Iterator[tuple[int, list[str], bool]]:
    """(first line number, lines, whether it ended with ER) of each record."""
    start, lines = 0, list[str]()
    for number, line in enumerate(text.splitlines(), start=1):
        tag = line[:6].rstrip()
        if tag == "TY  -":
            if lines:
                yield start, lines, False
            start, lines = number, [line]
        elif lines:
            lines.append(line)
            if tag == "ER  -":
                yield start, lines, True
                lines = []
    if lines:
        yield start, lines, False


# rispy's names of the fields that may hold an arXiv id, that may mention one with a label, and a DOI.
_RIS_ARXIV = ("doi", "urls")
_RIS_ARXIV_LABELLED = ("notes", "number", "journal_name", "secondary_title", "alternate_title3", "custom1")
_RIS_DOI = ("doi", "urls")


def _ris_item(entry: dict[str, object], given: str) -> Item:
    def texts(names: Iterable[str]) -> Iterator[str]:
        for name in names:
            value = entry.get(name)
            if isinstance(value, str):
                yield value
            elif isinstance(value, list):
                yield from (part for part in value if isinstance(part, str))

    title = next(texts(("title", "primary_title", "translated_title")), "")
    return Item(
        given,
        arxiv_id=_first(
            [
                *(arxiv_id_in(text) for text in texts(_RIS_ARXIV)),
                *(arxiv_id_in(text, labelled=True) for text in texts(_RIS_ARXIV_LABELLED)),
            ]
        ),
        doi=_first(doi_in(text) for text in texts(_RIS_DOI)),
        title=clean_text(title, html_input=False),
    )


# --- Zotero CSV ----------------------------------------------------------------------------------------------

# Zotero's columns that may hold an arXiv id, that may mention one with a label ("Extra" holds one
# "Name: value" a line, such as "arXiv: 2401.00001"), and that may hold a DOI.
_CSV_ARXIV = ("url", "doi")
_CSV_ARXIV_LABELLED = ("extra", "archive location", "number", "publication title")
_CSV_DOI = ("doi", "url")


def _parse_csv(shown: str, text: str, parsed: Parsed) -> None:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [cell.strip().lower() for cell in next(reader, [])]
    except csv.Error as exc:
        parsed.problem(f"{shown} line 1: not a CSV header ({exc})")
        return
    columns = {name: position for position, name in enumerate(header)}
    if not {"title", "doi", "url", "extra"} & columns.keys():
        parsed.problem(f"{shown}: not a Zotero CSV export (no Title, DOI, Url or Extra column)")
        return
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            parsed.problem(f"{shown} line {reader.line_num}: not a CSV record ({exc}), skipped")
            continue
        if not any(cell.strip() for cell in row):
            continue
        where = f"{shown} line {reader.line_num}"

        def cell(name: str, row: list[str] = row) -> str:
            position = columns.get(name)
            return row[position] if position is not None and position < len(row) else ""

        title = clean_text(cell("title"), html_input=False)
        item = Item(
            f"{where} ({_shown(title)})" if title else where,
            arxiv_id=_first(
                [
                    *(arxiv_id_in(cell(name)) for name in _CSV_ARXIV),
                    *(_labelled_lines(cell(name)) for name in _CSV_ARXIV_LABELLED),
                ]
            ),
            doi=_first(doi_in(cell(name)) for name in _CSV_DOI),
            title=title,
        )
        if not parsed.add(item, where):
            return


def _labelled_lines(value: str) -> str | None:
    return _first(arxiv_id_in(line, labelled=True) for line in value.splitlines())


# --- helpers -------------------------------------------------------------------------------------------------


def _first(values: Iterable[str | None]) -> str | None:
    return next((value for value in values if value), None)


def _shown(value: str) -> str:
    flat = " ".join(value.split())
    return flat if len(flat) <= SHOWN else flat[: SHOWN - 3] + "..."
