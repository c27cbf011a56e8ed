from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter import ids

new_style_ids = st.builds(
    lambda yymm, number, width: f"{yymm:04d}.{number:0{width}d}",
    st.integers(min_value=701, max_value=9912),
    st.integers(min_value=1, max_value=9999),
    st.sampled_from([4, 5]),
)
old_style_ids = st.builds(
    lambda archive, number: f"{archive}/{number:07d}",
    st.sampled_from(["hep-th", "hep-ph", "math", "cond-mat", "astro-ph", "quant-ph", "gr-qc", "nlin"]),
    st.integers(min_value=9101001, max_value=9999999),
)
any_id = st.one_of(new_style_ids, old_style_ids)
versions = st.one_of(st.none(), st.integers(min_value=1, max_value=30))
presentations = st.sampled_from(
    [
        "{id}{v}",
        "arXiv:{id}{v}",
        "ARXIV:{id}{v}",
        "oai:arXiv.org:{id}{v}",
        "http://arxiv.org/abs/{id}{v}",
        "https://arxiv.org/abs/{id}{v}",
        "https://export.arxiv.org/abs/{id}{v}",
        "https://arxiv.org/pdf/{id}{v}",
        "https://arxiv.org/pdf/{id}{v}.pdf",
        "  arXiv:{id}{v}  ",
        "https://doi.org/10.48550/arXiv.{id}{v}",
    ]
)


@given(any_id, versions, presentations)
def test_every_presentation_of_an_arxiv_id_gives_the_id_without_version(paper_id, version, template):
    text = template.format(id=paper_id, v=f"v{version}" if version else "")
    parsed = ids.parse_arxiv_id(text)
    assert parsed is not None
    assert parsed.id == paper_id
    assert parsed.version == version
    assert parsed.key == "arxiv:" + paper_id


@given(any_id, versions)
def test_parsing_is_idempotent(paper_id, version):
    once = ids.parse_arxiv_id(f"arXiv:{paper_id}v{version}" if version else paper_id)
    assert once is not None
    assert ids.parse_arxiv_id(once.id) == ids.ArxivId(once.id, None)


@given(st.integers(min_value=9101001, max_value=9999999), st.sampled_from(["GT", "AG", "CO"]))
def test_old_style_subject_class_is_not_part_of_the_id(number, subject):
    parsed = ids.parse_arxiv_id(f"math.{subject}/{number:07d}v2")
    assert parsed == ids.ArxivId(f"math/{number:07d}", 2)


@pytest.mark.parametrize(
    "text",
    ["", "not an id", "10.1103/PhysRevB.71.184511", "12345", "2411.177", "https://example.org/abs/x", "v2"],
)
def test_non_ids_are_rejected(text):
    assert ids.parse_arxiv_id(text) is None


@pytest.mark.parametrize(
    ("text", "doi"),
    [
        ("10.1103/PhysRevB.71.184511", "10.1103/physrevb.71.184511"),
        ("doi:10.1016/j.parint.2021.102531", "10.1016/j.parint.2021.102531"),
        ("https://doi.org/10.1093/zoolinnean/zlab078", "10.1093/zoolinnean/zlab078"),
        ("http://dx.doi.org/10.1142/S021797921244002X.", "10.1142/s021797921244002x"),
        ("DOI: 10.3897/zookeys.1078.47616)", "10.3897/zookeys.1078.47616"),
        ("no doi here", None),
    ],
)
def test_doi_normalisation(text, doi):
    assert ids.normalise_doi(text) == doi


@given(st.from_regex(r"10\.[0-9]{4,6}/[A-Za-z0-9.\-_;()]{1,30}[A-Za-z0-9]", fullmatch=True))
def test_doi_normalisation_ignores_case_and_presentation(doi):
    plain = ids.normalise_doi(doi)
    assert plain == doi.lower()
    assert ids.normalise_doi(f"https://doi.org/{doi.upper()}") == plain
    assert ids.normalise_doi(f"doi:{doi}") == plain


title_words = st.lists(
    st.text(alphabet=string.ascii_letters + "éüøñ", min_size=2, max_size=10), min_size=3, max_size=12
)


def _vary(words, data):
    separators = data.draw(
        st.lists(
            st.sampled_from([" ", "  ", " - ", ": ", ", ", "\n", "\t"]),
            min_size=len(words) - 1,
            max_size=len(words) - 1,
        )
    )
    cased = [w.upper() if data.draw(st.booleans()) else w.lower() for w in words]
    out = cased[0]
    for separator, word in zip(separators, cased[1:], strict=True):
        out += separator + word
    return out + data.draw(st.sampled_from(["", ".", "?", "  "]))


@given(title_words, st.data())
def test_title_key_ignores_case_spacing_and_punctuation(words, data):
    assert ids.title_key(_vary(words, data)) == ids.title_key(_vary(words, data))


@given(title_words)
def test_title_key_ignores_accents(words):
    accented = " ".join(words)
    folded = accented.translate(str.maketrans("éüøñ", "euon"))
    # ø has no decomposition in Unicode, so only the decomposable accents are expected to fold.
    if "ø" not in accented:
        assert ids.title_key(accented) == ids.title_key(folded)


@given(st.text(max_size=200))
def test_title_key_is_idempotent_on_its_own_output(title):
    key = ids.title_key(title)
    if key is not None:
        assert ids.title_key(key.removeprefix("title:")) == key


@pytest.mark.parametrize("title", ["Editorial", "Erratum", "Book review", "", "A B"])
def test_generic_short_titles_get_no_key(title):
    assert ids.title_key(title) is None
