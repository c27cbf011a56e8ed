"""Turn feed text (HTML fragments, arXiv LaTeX, entities) into clean plain text.

Everything stored about a paper is plain text: markup is dropped (the content of ``script``, ``style`` and
similar elements with it), entities are decoded, LaTeX is made readable and whitespace collapsed. Later
stages escape this text wherever it is shown, so nothing a feed says can ever become markup.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from collections import Counter
from html.parser import HTMLParser

from pylatexenc import latexwalker as latexwalker_ctx
from pylatexenc.latex2text import LatexNodes2Text, MacroTextSpec, get_default_latex_context_db
from pylatexenc.latexwalker import LatexWalkerError
from pylatexenc.macrospec import MacroSpec

# Elements whose content is never text a reader should see.
_DROPPED_ELEMENTS = frozenset(
    {"script", "style", "template", "noscript", "iframe", "object", "embed", "svg", "head", "title"}
)
# Elements that separate words; everything else is inline and joins its text to its neighbours.
_BLOCK_ELEMENTS = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption", "figure",
        "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre",
        "section", "table", "td", "th", "tr", "ul",
    }
)  # fmt: skip

# Known HTML element names: text such as "a<b and c>d" in an abstract is maths, not a tag.
_HTML_ELEMENTS = (
    _DROPPED_ELEMENTS
    | _BLOCK_ELEMENTS
    | {
        "a", "abbr", "b", "base", "basefont", "bdi", "bdo", "big", "body", "button", "caption", "center",
        "cite", "code", "col", "colgroup", "data", "del", "details", "dfn", "dialog", "em", "fieldset",
        "font", "form", "frame", "frameset", "html", "i", "img", "input", "ins", "kbd", "label", "legend",
        "link", "map", "mark", "marquee", "menu", "meta", "meter", "output", "param", "picture", "portal",
        "progress", "q", "rp", "rt", "ruby", "s", "samp", "select", "slot", "small", "source", "span",
        "strike", "strong", "sub", "summary", "sup", "tbody", "textarea", "tfoot", "thead", "time", "track",
        "tt", "u", "var", "video", "audio", "canvas", "wbr", "xmp", "plaintext", "listing", "image", "math",
    }
)  # fmt: skip
_ELEMENT_NAMES = "|".join(sorted(_HTML_ELEMENTS, key=len, reverse=True))
_DROPPED_NAMES = "|".join(sorted(_DROPPED_ELEMENTS))
_DROPPED_BLOCK = re.compile(
    rf"<\s*({_DROPPED_NAMES})\b[^>]*>.*?(?:<\s*/\s*\1\s*>|$)", re.IGNORECASE | re.DOTALL
)
_TAG = re.compile(rf"<\s*/?\s*(?:{_ELEMENT_NAMES})(?:\s[^<>]*)?/?\s*>", re.IGNORECASE)
_COMMENT = re.compile(
    r"<!--.*?(?:-->|$)|<!\[CDATA\[|\]\]>|<![a-z][^>]*>|<\?[^>]*>", re.IGNORECASE | re.DOTALL
)
_MARKUP_HINT = re.compile(r"<\s*[a-z/!?]|&[#a-z0-9]+;", re.IGNORECASE)

_WHITESPACE = re.compile(r"\s+")
# Invisible characters that break matching and display (BOM, zero-width space, soft hyphen).
_INVISIBLE = dict.fromkeys(map(ord, "\ufeff\u200b\u00ad\u2060"), None)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._dropping: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROPPED_ELEMENTS:
            self._dropping.append(tag)
        elif tag in _BLOCK_ELEMENTS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_ELEMENTS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if self._dropping and tag == self._dropping[-1]:
            self._dropping.pop()
        elif tag in _BLOCK_ELEMENTS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._dropping:
            self.parts.append(data)


def html_to_text(fragment: str) -> str:
    """Text content of an HTML fragment, one line per block element, entities decoded."""
    extractor = _TextExtractor()
    extractor.feed(fragment)
    extractor.close()
    return "".join(extractor.parts)


def strip_tags(text: str) -> str:
    """Remove anything that is still HTML markup in text, without touching maths such as ``a<b``.

    Run after entity decoding so that markup smuggled in escaped (``&lt;script&gt;``) goes too; repeated
    until nothing changes because removing one tag can join the pieces of another.
    """
    for _ in range(5):
        stripped = _TAG.sub(" ", _COMMENT.sub(" ", _DROPPED_BLOCK.sub(" ", text)))
        if stripped == text:
            break
        text = stripped
    return text


# --- LaTeX ----------------------------------------------------------------------------------------------

# Islands of LaTeX inside otherwise plain text: display and inline maths, \(..\), \[..\], text macros with
# up to two levels of braces, accent commands and escaped specials. Only these go through pylatexenc,
# which is slow on long strings; the rest of the text is left alone.
_BRACES = r"\{(?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*\}"
_LATEX_ISLAND = re.compile(
    r"\$\$(?:[^$]|\\\$){1,2000}?\$\$"
    r"|(?<!\\)\$(?:[^$\\]|\\.){1,1000}?\$"
    r"|\\\((?:.){1,1000}?\\\)"
    r"|\\\[(?:.){1,2000}?\\\]"
    r"|\\[a-zA-Z]+\*?(?:\s*\[[^\]]{0,100}\])?(?:\s*" + _BRACES + r")*"
    r"|\\[`'^\"~=.](?:" + _BRACES + r"|[a-zA-Z])"
    r"|\\[&%$#_{} ,;:!]"
    r"|\{\\[a-zA-Z]+\}"  # {\l}, {\ae}, {\i}
    r"|\{\\[`'^\"~=.][a-zA-Z]\}",
    re.DOTALL,
)


@functools.cache
def _latex_parser_context() -> latexwalker_ctx.LatexContextDb:
    context = latexwalker_ctx.get_default_latex_context_db()
    context.add_context_category(
        "newsletter",
        macros=[MacroSpec("href", "{{"), MacroSpec("citep", "[[{"), MacroSpec("citet", "[[{")],
        prepend=True,
    )
    return context


@functools.cache
def _latex_converter() -> LatexNodes2Text:
    context = get_default_latex_context_db()
    # Citations and references carry no meaning in a digest; links keep their visible text.
    context.add_context_category(
        "newsletter",
        macros=[
            MacroTextSpec(name, discard=True)
            for name in ("cite", "citep", "citet", "ref", "eqref", "label", "footnote")
        ]
        + [MacroTextSpec("url", simplify_repl="%(1)s"), MacroTextSpec("href", simplify_repl="%(2)s")],
        prepend=True,
    )
    return LatexNodes2Text(latex_context=context, math_mode="text", strict_latex_spaces=False)


_BACKSLASH_MACRO = re.compile(r"\\([a-zA-Z]+)")
_LATEX_LEFTOVER = re.compile(r"[{}$]|\\(?=[^a-zA-Z])")


_PLAIN_MATH = re.compile(r"\$([^\\{}$]*)\$")


@functools.lru_cache(maxsize=8192)
def _convert_island(island: str) -> str:
    plain = _PLAIN_MATH.fullmatch(island)
    if plain:  # "$L$", "$n=3$": nothing to translate, and pylatexenc costs ~0.2 ms a call
        return plain.group(1)
    try:
        text = _latex_converter().latex_to_text(island, latex_context=_latex_parser_context())
    except (LatexWalkerError, IndexError, KeyError, ValueError, TypeError):
        # pylatexenc gives up on some real-world LaTeX; a readable approximation beats losing the text.
        text = _BACKSLASH_MACRO.sub(r"\1", island)
    return _LATEX_LEFTOVER.sub("", text)


def latex_to_text(text: str) -> str:
    """Make LaTeX in arXiv titles, abstracts and author names readable: ``$\\alpha$`` -> ``α``."""
    if "\\" not in text and "$" not in text and "{" not in text:
        return text
    return _LATEX_ISLAND.sub(lambda m: _convert_island(m.group(0)), text)


# --- the one entry point --------------------------------------------------------------------------------


def clean_text(value: str | None, *, html_input: bool = True, latex: bool = False) -> str:
    """Plain, single-spaced text from a feed field.

    ``html_input``: the field is an HTML fragment (RSS descriptions, Atom html content), so it is parsed as
    HTML; otherwise it is plain text that may still carry stray markup, which is stripped all the same.
    ``latex``: the field comes from arXiv and may contain LaTeX.
    """
    if not value:
        return ""
    text = value
    if html_input and _MARKUP_HINT.search(text):
        text = html_to_text(text)
    if "&" in text:
        text = html.unescape(text)
    if "<" in text:
        text = strip_tags(text)
    if latex:
        text = latex_to_text(text)
    text = _WHITESPACE.sub(" ", text.translate(_INVISIBLE))
    if not text.isprintable():  # control characters would corrupt headers and terminals later
        text = _WHITESPACE.sub(" ", "".join(ch if ch.isprintable() else " " for ch in text))
    return unicodedata.normalize("NFC", text).strip()


# --- authors --------------------------------------------------------------------------------------------

_AUTHOR_SEPARATOR = re.compile(r"\s*(?:,|;|\band\b|&)\s*")


def split_authors(value: str) -> list[str]:
    """Names from a byline such as ``A. One (Univ X, Dept Y), B. Two and C. Three``.

    Commas inside parentheses belong to affiliations, which are dropped: a digest shows names.
    """
    names: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in value:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif depth == 0:
            current.append(ch)
    for name in _AUTHOR_SEPARATOR.split("".join(current)):
        name = _WHITESPACE.sub(" ", name).strip()
        if name:
            names.append(name)
    return names


def clean_authors(names: list[str], *, latex: bool = False) -> list[str]:
    cleaned = (clean_text(name, html_input=False, latex=latex) for name in names)
    return [name for name in cleaned if name]


# --- summaries ------------------------------------------------------------------------------------------

# A sentence ends at ., ! or ? followed by a space and a capital letter, digit or opening bracket, unless
# the word before the full stop is an abbreviation ("et al.", "e.g.", "Fig.") or a single letter ("J.").
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[\"'])")
_ABBREVIATION = re.compile(
    r"(?:\b(?:al|e\.g|i\.e|etc|vs|cf|fig|figs|eq|eqs|ref|refs|sec|no|approx|resp|dr|prof|st|mr|ms)\.|\b[A-Za-z]\.)$",
    re.IGNORECASE,
)


def sentences(text: str) -> list[str]:
    parts: list[str] = []
    for piece in _SENTENCE_END.split(text.strip()):
        if parts and _ABBREVIATION.search(parts[-1]):
            parts[-1] = f"{parts[-1]} {piece}"
        else:
            parts.append(piece)
    return [part.strip() for part in parts if part.strip()]


def extract_summary(abstract: str, *, max_chars: int = 300) -> str:
    """The first one or two sentences of a text, within ``max_chars`` (cut at a word, with an ellipsis).

    A one-off message's summary; a paper's is :func:`newsletter.summaries.summarize`."""
    found = sentences(abstract)
    if not found:
        return ""
    summary = found[0]
    if len(found) > 1 and len(summary) + 1 + len(found[1]) <= max_chars and len(summary) < max_chars // 2:
        summary = f"{summary} {found[1]}"
    if len(summary) > max_chars:
        cut = summary[: max_chars - 1].rsplit(" ", 1)[0].rstrip(",;:-–—")
        summary = cut + "…"
    return summary


def spelling_in(term: str, text: str) -> str:
    """``term`` (lower case, words separated by spaces) as ``text`` writes it most often ("LLMs", not
    "llms"; "Gaussian splatting"); on a tie the lower-case form, since a sentence's first capital is not
    the term's spelling. The term itself when the text never writes it."""
    pattern = r"\b" + r"\s+".join(re.escape(word) for word in term.split()) + r"\b"
    found = Counter(" ".join(m.group(0).split()) for m in re.finditer(pattern, text, re.IGNORECASE))
    if not found:
        return term
    return max(found.items(), key=lambda item: (item[1], item[0].islower()))[0]
