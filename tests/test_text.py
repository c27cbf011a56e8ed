from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.text import clean_text, html_to_text, latex_to_text, split_authors, strip_tags


@pytest.mark.parametrize(
    ("latex", "text"),
    [
        (r"an improvement of at least $20\%$ over", "an improvement of at least 20% over"),
        (r"$\alpha$-divergence", "α-divergence"),
        (r"the $L^{\infty}(0,T; L^{2})$-norm", "the L^∞(0,T; L^2)-norm"),
        (r"in $O(n \log n)$ time", "in O(n log n) time"),
        (r"a $10\times$ speed-up", "a 10× speed-up"),
        (r"we \emph{robustly} show \textbf{bold} claims", "we robustly show bold claims"),
        (r"as shown \cite{smith2020} before", "as shown before"),
        (r"see \href{https://example.org}{our page}", "see our page"),
        (r"i.i.d.\ samples", "i.i.d. samples"),
        (r"the rank of the $Q$-walk matrix of $A_n$", "the rank of the Q-walk matrix of A_n"),
    ],
)
def test_latex_is_made_readable(latex, text):
    assert clean_text(latex, html_input=False, latex=True) == text


@pytest.mark.parametrize(
    ("name", "clean"),
    [
        (r"Przemys{\l}aw Olbratowski", "Przemysław Olbratowski"),
        (r"Jaros{\l}aw \.Zygierewicz", "Jarosław Żygierewicz"),
        (r"V\'aclav Vavry\v{c}uk", "Václav Vavryčuk"),
        (r"Serdar Kad{\i}o\u{g}lu", "Serdar Kadıoğlu"),
        (r"Sofie Castro Holb{\ae}k", "Sofie Castro Holbæk"),
        (r"Fran\c{c}ois M\"uller", "François Müller"),
    ],
)
def test_latex_accents_in_names(name, clean):
    assert clean_text(name, html_input=False, latex=True) == clean


def test_latex_that_pylatexenc_cannot_parse_still_gives_text():
    # An unterminated group makes the LaTeX parser give up; the words must survive anyway.
    assert "robust" in latex_to_text(r"\textbf{robust")


def test_html_fragment_becomes_text_with_word_breaks_between_blocks():
    fragment = '<div class="boxTitle">Abstract</div><p>First&nbsp;para.</p><p>Second <i>Italic</i>.</p>'
    assert clean_text(fragment) == "Abstract First para. Second Italic."
    assert html_to_text("<p>a</p><p>b</p>").split() == ["a", "b"]


@pytest.mark.parametrize(
    "hostile",
    [
        "<script>alert(1)</script>",
        "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
        "<style>body{display:none}</style>",
        '<a href="javascript:alert(1)">',
        "<img src=x onerror=alert(1)>",
        '<iframe src="https://evil.example"></iframe>',
        "<svg onload=alert(1)>",
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "&amp;lt;script&amp;gt;alert(1)&amp;lt;/script&amp;gt;",
        "<scr<script>ipt>alert(1)</script>",
        "<!-- comment --><![CDATA[x]]>",
    ],
)
@pytest.mark.parametrize("html_input", [True, False])
def test_hostile_markup_never_survives(hostile, html_input):
    text = clean_text(f"before {hostile} after", html_input=html_input, latex=True)
    lowered = text.lower()
    for marker in ("<script", "<style", "<a ", "<img", "<iframe", "<svg", "onerror=", "<!--", "cdata"):
        assert marker not in lowered, text
    assert text.startswith("before")
    swallows_rest = any(tag in hostile.lower() for tag in ("<svg", "<scr<script>"))  # opened, never closed
    if not swallows_rest:
        assert text.endswith("after")


def test_script_content_is_dropped_not_shown():
    assert clean_text("a<script>var secret = 1;</script> b") == "a b"
    assert clean_text("a<style>p { color: red }</style> b") == "a b"
    assert clean_text("unclosed <script>evil()") == "unclosed"


@pytest.mark.parametrize("maths", ["p < 0.05", "x<y and y>z", "a <= b", "$p < 0.05$"])
def test_comparisons_in_plain_text_are_not_mistaken_for_tags(maths):
    assert "<" in clean_text(maths, html_input=False, latex=False) or "&lt;" in maths


def test_entities_invisible_characters_and_whitespace():
    assert clean_text("\ufeffChecklist  of\n\tspecies &amp; keys\u200b") == "Checklist of species & keys"
    assert clean_text("control\x07chars\x00here") == "control chars here"


@given(st.text(max_size=300))
def test_clean_text_is_plain_single_spaced_and_stable(raw):
    cleaned = clean_text(raw, html_input=True, latex=True)
    assert cleaned == cleaned.strip()
    assert "  " not in cleaned
    assert cleaned.isprintable()
    assert strip_tags(cleaned) == cleaned  # no markup left for a second pass to remove


def test_author_bylines_drop_affiliations_and_split_names():
    byline = "Debo Cheng (University of South Australia), Ziqi Xu (RMIT University, Melbourne), Lin Liu and B. Chen"
    assert split_authors(byline) == ["Debo Cheng", "Ziqi Xu", "Lin Liu", "B. Chen"]
    assert split_authors("Rachel M. Binks, \nMargaret Heslewood") == ["Rachel M. Binks", "Margaret Heslewood"]
