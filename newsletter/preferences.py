"""What a reader follows, and the part of an edition that is theirs.

A reader follows arXiv categories (``cs.LG``, or a whole archive such as ``cs``; only codes of arXiv's
taxonomy, see ``newsletter.taxonomy``) and/or keywords, and
chooses weekly or daily digests and whether an edition with nothing for them sends a short notice or
nothing at all. Following nothing means everything. A paper matches when one of its categories is
followed or a keyword appears in its title or abstract (whole words, any case). The personal digest keeps
the edition's sections with matching papers, the sections with most matches first.

``Follows`` are the reader's other choices, made by hand and never learned: authors whose papers they
always want to see, keywords whose papers they never want. They are stored on the reader's row too. The
excluded keywords are part of the reader's ``Preferences`` (``exclude_keywords``): a paper that mentions
one, by the same rule as a followed keyword, is left out of their digest, whatever else it matches. The
followed authors go to the personal ranking (``newsletter.personal``), which puts their papers first in
the reader's "For you" section.

Preferences are stored canonically (sorted, de-duplicated, compact JSON), so readers with the same
choices (exclusions included) share one rendered email.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from newsletter.editions import EditionPaper, Section
from newsletter.errors import PreferenceError
from newsletter.ids import author_key
from newsletter.taxonomy import canonical_category, closest_category

FREQUENCIES = ("weekly", "daily")
EMPTY_DIGEST = ("notice", "skip")
MAX_KEYWORDS = 20
MAX_CATEGORIES = 50
MAX_FOLLOWED_AUTHORS = 50
MAX_EXCLUDED_KEYWORDS = 20
MAX_AUTHOR_NAME = 100
MAX_KEYWORD = 60

# Names for the arXiv categories most readers of a machine-learning digest follow.
CATEGORY_NAMES = {
    "cs": "Computer science (all)",
    "cs.AI": "Artificial intelligence",
    "cs.CL": "Computation and language",
    "cs.CR": "Cryptography and security",
    "cs.CV": "Computer vision",
    "cs.CY": "Computers and society",
    "cs.DB": "Databases",
    "cs.DC": "Distributed computing",
    "cs.DS": "Data structures and algorithms",
    "cs.GR": "Graphics",
    "cs.HC": "Human-computer interaction",
    "cs.IR": "Information retrieval",
    "cs.IT": "Information theory",
    "cs.LG": "Machine learning",
    "cs.MA": "Multiagent systems",
    "cs.NE": "Neural and evolutionary computing",
    "cs.NI": "Networking",
    "cs.PL": "Programming languages",
    "cs.RO": "Robotics",
    "cs.SD": "Sound",
    "cs.SE": "Software engineering",
    "eess.AS": "Audio and speech processing",
    "eess.IV": "Image and video processing",
    "eess.SP": "Signal processing",
    "math.OC": "Optimization and control",
    "math.ST": "Statistics theory",
    "physics.comp-ph": "Computational physics",
    "q-bio.BM": "Biomolecules",
    "q-bio.NC": "Neurons and cognition",
    "quant-ph": "Quantum physics",
    "stat.ME": "Statistics methodology",
    "stat.ML": "Machine learning (statistics)",
}


@dataclass(frozen=True, slots=True)
class Preferences:
    categories: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    frequency: str = "weekly"
    empty_digest: str = "notice"
    exclude_keywords: tuple[str, ...] = ()  # the reader's excluded keywords (their ``Follows``)
    _patterns: tuple[re.Pattern[str], ...] = field(default=(), compare=False, repr=False)
    _exclusions: tuple[re.Pattern[str], ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def create(
        cls,
        categories: list[str] | tuple[str, ...] = (),
        keywords: list[str] | tuple[str, ...] = (),
        frequency: str = "weekly",
        empty_digest: str = "notice",
        exclude_keywords: Iterable[str] = (),
    ) -> Preferences:
        clean_categories = tuple(sorted({_arxiv_category(c) for c in categories if c.strip()}))
        if len(clean_categories) > MAX_CATEGORIES:
            raise PreferenceError(f"follow at most {MAX_CATEGORIES} categories")
        clean_keywords = tuple(sorted({" ".join(k.lower().split()) for k in keywords if k.strip()}))
        if len(clean_keywords) > MAX_KEYWORDS:
            raise PreferenceError(f"follow at most {MAX_KEYWORDS} keywords")
        for keyword in clean_keywords:
            _check_keyword(keyword)
        if frequency not in FREQUENCIES:
            raise PreferenceError(f"frequency must be one of {', '.join(FREQUENCIES)}")
        if empty_digest not in EMPTY_DIGEST:
            raise PreferenceError(f"empty_digest must be one of {', '.join(EMPTY_DIGEST)}")
        excluded = _excluded_keywords(exclude_keywords)
        return cls(
            clean_categories,
            clean_keywords,
            frequency,
            empty_digest,
            excluded,
            _keyword_patterns(clean_keywords),
            _keyword_patterns(excluded),
        )

    @classmethod
    def from_row(
        cls,
        categories: str,
        keywords: str,
        frequency: str = "weekly",
        empty_digest: str = "notice",
        exclude_keywords: str = "[]",
    ) -> Preferences:
        """Stored choices; ones that can no longer be read mean the whole edition rather than nothing
        (and excluded keywords that can no longer be read, no exclusions)."""
        try:
            stored = json.loads(exclude_keywords or "[]")
            excluded = _excluded_keywords(stored) if isinstance(stored, list) else ()
        except (ValueError, TypeError, AttributeError):
            excluded = ()
        try:
            return cls.create(
                json.loads(categories or "[]"),
                json.loads(keywords or "[]"),
                frequency,
                empty_digest,
                excluded,
            )
        except (ValueError, TypeError, AttributeError):  # a PreferenceError, or not a JSON list of strings
            return cls.create(exclude_keywords=excluded)

    @property
    def follows_everything(self) -> bool:
        """Whether the reader follows no category and no keyword (excluded keywords aside)."""
        return not self.categories and not self.keywords

    @property
    def categories_json(self) -> str:
        return canonical_json(self.categories)

    @property
    def keywords_json(self) -> str:
        return canonical_json(self.keywords)

    @property
    def exclude_keywords_json(self) -> str:
        return canonical_json(self.exclude_keywords)

    @property
    def variant(self) -> str:
        """One id per distinct choice of content: the readers who share it share a rendered email. A
        reader who excludes nothing keeps the id the choices had before exclusions existed."""
        basis = f"{self.categories_json}|{self.keywords_json}|{self.empty_digest}"
        if self.exclude_keywords:
            basis += f"|{self.exclude_keywords_json}"
        return hashlib.sha256(basis.encode()).hexdigest()[:16]

    def excludes(self, paper: EditionPaper) -> bool:
        """Whether one of the reader's excluded keywords appears in the paper's title or abstract."""
        return bool(self._exclusions) and _mentions(self._exclusions, paper.title, paper.abstract)

    def matches(self, paper: EditionPaper) -> bool:
        if self.excludes(paper):
            return False
        if self.follows_everything:
            return True
        for category in paper.categories:
            archive = category.split(".", 1)[0]
            if category in self.categories or archive in self.categories:
                return True
        return bool(self._patterns) and _mentions(self._patterns, paper.title, paper.abstract)

    def sections(self, sections: list[Section]) -> list[Section]:
        """The reader's part of an edition: matching papers only, their best sections first (a reader
        who follows everything keeps the edition's order, less the papers they exclude); sections left
        without papers are left out."""
        if self.follows_everything and not self.exclude_keywords:
            return list(sections)
        kept = []
        for position, section in enumerate(sections):
            papers = [paper for paper in section.papers if self.matches(paper)]
            if papers:
                kept.append(
                    (
                        len(papers),
                        position,
                        Section(section.label, section.keywords, papers, section.is_other),
                    )
                )
        if not self.follows_everything:
            # Most matches first; "Other papers" stays last; ties keep the edition's order.
            kept.sort(key=lambda item: (item[2].is_other, -item[0], item[1]))
        return [section for _, _, section in kept]


@dataclass(frozen=True, slots=True)
class Follows:
    """Authors a reader always wants to see and keywords they never want, as they chose them.

    Author names are kept as written (cleaned) and compared folded: case, accents, punctuation and
    spacing do not matter, so "José  Pérez" follows "Jose Perez". Keywords are compared like the
    preferences' keywords: whole words or phrases in the title or abstract, any case.
    """

    authors: tuple[str, ...] = ()
    exclude_keywords: tuple[str, ...] = ()
    _author_keys: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    _patterns: tuple[re.Pattern[str], ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def create(cls, authors: Iterable[str] = (), exclude_keywords: Iterable[str] = ()) -> Follows:
        by_key: dict[str, str] = {}
        for raw in authors:
            name = _author_name(raw)
            if name:
                by_key.setdefault(author_key(name), name)
        if len(by_key) > MAX_FOLLOWED_AUTHORS:
            raise PreferenceError(f"follow at most {MAX_FOLLOWED_AUTHORS} authors")
        keywords = _excluded_keywords(exclude_keywords)
        names = tuple(sorted(by_key.values(), key=author_key))
        return cls(names, keywords, frozenset(by_key), _keyword_patterns(keywords))

    @classmethod
    def from_row(cls, authors: str, exclude_keywords: str) -> Follows:
        """Stored follows; ones that can no longer be read are none."""
        try:
            return cls.create(json.loads(authors or "[]"), json.loads(exclude_keywords or "[]"))
        except (ValueError, TypeError, AttributeError):
            return cls()

    @property
    def authors_json(self) -> str:
        return canonical_json(self.authors)

    @property
    def exclude_keywords_json(self) -> str:
        return canonical_json(self.exclude_keywords)

    @property
    def empty(self) -> bool:
        return not self.authors and not self.exclude_keywords

    def without(self, *, authors: Iterable[str] = (), keywords: Iterable[str] = ()) -> Follows:
        """These follows less the given authors and excluded keywords (compared as they match)."""
        gone_authors = {author_key(name) for name in authors}
        gone_keywords = {_keyword(keyword) for keyword in keywords}
        return Follows.create(
            [name for name in self.authors if author_key(name) not in gone_authors],
            [keyword for keyword in self.exclude_keywords if keyword not in gone_keywords],
        )

    def follows(self, author: str) -> bool:
        return author_key(author) in self._author_keys

    def excludes(self, keyword: str) -> bool:
        return _keyword(keyword) in self.exclude_keywords

    def follows_an_author(self, authors: Iterable[str]) -> bool:
        """Whether one of ``authors`` is a followed author."""
        return bool(self._author_keys) and any(author_key(name) in self._author_keys for name in authors)

    def excluded(self, title: str, abstract: str) -> bool:
        """Whether an excluded keyword appears in the title or abstract."""
        return bool(self._patterns) and _mentions(self._patterns, title, abstract)


def _author_name(raw: str) -> str:
    text = unicodedata.normalize("NFC", raw or "").strip()
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text):
        raise PreferenceError("an author's name cannot contain line breaks or control characters")
    name = " ".join(text.split())
    if not name:
        return ""
    if len(name) > MAX_AUTHOR_NAME or not author_key(name):
        raise PreferenceError(f"{name[:MAX_AUTHOR_NAME]!r} is not a usable author name")
    return name


def _keyword(text: str) -> str:
    return " ".join(text.lower().split())


def _excluded_keywords(keywords: Iterable[str]) -> tuple[str, ...]:
    """Excluded keywords as stored: cleaned, sorted, de-duplicated, checked."""
    clean = tuple(sorted({_keyword(k) for k in keywords if k.strip()}))
    if len(clean) > MAX_EXCLUDED_KEYWORDS:
        raise PreferenceError(f"exclude at most {MAX_EXCLUDED_KEYWORDS} keywords")
    for keyword in clean:
        _check_keyword(keyword)
    return clean


def _keyword_patterns(keywords: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    """How a keyword is found in a paper, followed or excluded: as whole words or a phrase, any case."""
    return tuple(re.compile(rf"(?<!\w){re.escape(k)}(?!\w)", re.IGNORECASE) for k in keywords)


def _mentions(patterns: tuple[re.Pattern[str], ...], title: str, abstract: str) -> bool:
    text = f"{title}\n{abstract}"
    return any(pattern.search(text) for pattern in patterns)


def _check_keyword(keyword: str) -> None:
    if len(keyword) > MAX_KEYWORD or not any(ch.isalnum() for ch in keyword):
        raise PreferenceError(f"{keyword[:MAX_KEYWORD]!r} is not a usable keyword")


def _arxiv_category(code: str) -> str:
    """arXiv's spelling of a category or archive code; anything else is refused, with a suggestion."""
    canonical = canonical_category(code)
    if canonical is not None:
        return canonical
    shown = code.strip()[:40]
    close = closest_category(shown)
    hint = f" (did you mean {close}?)" if close else ""
    raise PreferenceError(f"{shown!r} is not an arXiv category or archive such as cs.LG or math{hint}")


def canonical_json(values: Any) -> str:
    return json.dumps(list(values), ensure_ascii=False, separators=(",", ":"))


def parse_list(text: str) -> list[str]:
    """Comma- or line-separated values from a form field or the command line."""
    return [part.strip() for part in re.split(r"[,\n;]", text or "") if part.strip()]
