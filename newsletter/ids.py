"""Identifiers that decide when two records are the same paper, and when two names the same author.

A paper's canonical key is, in order of preference, its arXiv id without version (``arxiv:2403.01234``,
``arxiv:hep-th/9901001``), its DOI (``doi:10.1103/physrevb.71.184511``) or a normalised-title key
(``title:attention is all you need``). Every key a paper was ever seen under is kept as an alias. An
author's key (``author_key``) is their name folded like a title: how a followed author is recognised.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

ARXIV_PREFIX = "arxiv:"
DOI_PREFIX = "doi:"
TITLE_PREFIX = "title:"
URL_PREFIX = "url:"

# New-style ids (April 2007 on): YYMM.NNNN until 2014, YYMM.NNNNN since 2015.
_NEW_STYLE = r"(?P<new>\d{4}\.\d{4,5})"
# Old-style ids: archive[.SUBJECT-CLASS]/YYMMNNN, e.g. hep-th/9901001, math.GT/0309136.
_OLD_STYLE = r"(?P<archive>[a-z]+(?:-[a-z]+)?)(?:\.[A-Za-z]{2})?/(?P<number>\d{7})"
_VERSION = r"(?:v(?P<version>\d+))?"

_ARXIV_ID = re.compile(
    rf"(?:{_NEW_STYLE}|{_OLD_STYLE}){_VERSION}(?:\.pdf)?(?=$|[\s)\].,;?#&/])",
    re.IGNORECASE,
)
_ARXIV_HOST = re.compile(r"arxiv\.org/(?:abs|pdf|html|format)/", re.IGNORECASE)
# "arXiv:", the OAI identifier prefix, or arXiv's DataCite DOI prefix (10.48550/arXiv.2403.01234).
_ARXIV_LABEL = re.compile(r"(?:oai:arxiv\.org:|arxiv:|10\.48550/arxiv\.)", re.IGNORECASE)

_DOI = re.compile(r"\b(10\.\d{4,9}/[^\s\"'<>]+)", re.IGNORECASE)
_DOI_TRAILING = ".,;:)]}>'\""

# Short or generic titles ("Editorial", "Erratum") would merge unrelated items.
MIN_TITLE_KEY_LENGTH = 12
MIN_TITLE_KEY_WORDS = 3


@dataclass(frozen=True, slots=True)
class ArxivId:
    id: str
    version: int | None

    @property
    def key(self) -> str:
        return ARXIV_PREFIX + self.id


def parse_arxiv_id(text: str | None) -> ArxivId | None:
    """Find an arXiv identifier in an id, a label (``arXiv:...``, ``oai:arXiv.org:...``) or an arXiv URL.

    Returns the id without version (old-style ids lose their subject class, which is not part of the id)
    and the version when one was given. Only text that presents itself as arXiv (a label or an arxiv.org
    URL) or that is a bare id is accepted, so a DOI or a random number is never mistaken for one.
    """
    if not text:
        return None
    text = text.strip()
    host = _ARXIV_HOST.search(text)
    if host:
        candidate = text[host.end() :]
    else:
        label = _ARXIV_LABEL.search(text)
        candidate = text[label.end() :] if label else text
    match = _ARXIV_ID.match(candidate.strip())
    if not match:
        return None
    if match.group("new"):
        paper_id = match.group("new")
    else:
        paper_id = f"{match.group('archive').lower()}/{match.group('number')}"
    version = match.group("version")
    return ArxivId(paper_id, int(version) if version else None)


def normalise_doi(text: str | None) -> str | None:
    """The DOI in ``text`` (bare, ``doi:...`` or a doi.org URL), lower-cased, or None."""
    if not text:
        return None
    match = _DOI.search(text)
    if not match:
        return None
    doi = match.group(1).rstrip(_DOI_TRAILING)
    # DOIs are case-insensitive by definition (ISO 26324), so lower case gives one key per DOI.
    return doi.lower() if "/" in doi and len(doi.split("/", 1)[1]) > 0 else None


def doi_key(doi: str) -> str:
    return DOI_PREFIX + doi


_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)
_UNDERSCORE = re.compile(r"_+")


def normalise_title(title: str) -> str:
    """Title reduced to lower-case ASCII-folded words: case, accents, punctuation and spacing vanish."""
    decomposed = unicodedata.normalize("NFKD", title)
    without_marks = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    words = _UNDERSCORE.sub(" ", _NON_WORD.sub(" ", without_marks.casefold()))
    return " ".join(words.split())


def author_key(name: str) -> str:
    """An author's name as followed authors are compared: folded like a title key ("José  Pérez" and
    "jose perez" are one author)."""
    return normalise_title(name)


def title_key(title: str | None) -> str | None:
    """A key for matching papers that have no arXiv id and no DOI, or None when the title is too generic."""
    if not title:
        return None
    normal = normalise_title(title)
    if len(normal) < MIN_TITLE_KEY_LENGTH or len(normal.split()) < MIN_TITLE_KEY_WORDS:
        return None
    return TITLE_PREFIX + normal[:300]


def url_key(url: str | None) -> str | None:
    if not url:
        return None
    return URL_PREFIX + url.strip().split("#", 1)[0]
