"""Reading what a reader gives into items: ids, URLs and DOIs, BibTeX, RIS, Zotero CSV and text files,
bad entries said with their place while the good ones are kept, and the limits."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from newsletter.library_items import (
    MAX_FILE_BYTES,
    Item,
    arxiv_id_in,
    paper_key,
    parse_arguments,
    parse_text,
    parse_upload,
    plausible_arxiv_id,
)


def items_of(parsed) -> list[tuple[str | None, str | None, str]]:
    return [(item.arxiv_id, item.doi, item.title) for item in parsed.items]


def test_arxiv_ids_and_urls_of_every_kind_name_the_paper_without_its_version():
    parsed = parse_arguments(
        [
            "2401.00001v2",
            "arXiv:2401.00002",
            "https://arxiv.org/abs/2401.00003v4",
            "http://arxiv.org/pdf/2401.00004v1.pdf",
            "https://arxiv.org/pdf/2401.00005",
            "https://arxiv.org/html/2401.00006v2",
            "https://export.arxiv.org/abs/2401.00007",
            "hep-th/9901001v3",
            "math.GT/0309136",
            "https://arxiv.org/abs/cond-mat/0207270v1",
            "0704.0001",
            "10.48550/arXiv.2401.00008",
            "https://doi.org/10.48550/arXiv.2401.00009",
            "2401.00001",  # the same paper as the first: kept once
        ]
    )
    assert [item.arxiv_id for item in parsed.items] == [
        "2401.00001", "2401.00002", "2401.00003", "2401.00004", "2401.00005", "2401.00006", "2401.00007",
        "hep-th/9901001", "math/0309136", "cond-mat/0207270", "0704.0001", "2401.00008", "2401.00009",
    ]  # fmt: skip
    assert parsed.problems == []
    assert [item.doi for item in parsed.items] == [None] * 13


def test_dois_bare_or_as_links_are_kept_lower_cased():
    parsed = parse_arguments(
        ["10.1145/3292500.3330701", "https://doi.org/10.1038/S41586-021-03819-2", "doi:10.1000/x"]
    )
    assert [item.doi for item in parsed.items] == [
        "10.1145/3292500.3330701",
        "10.1038/s41586-021-03819-2",
        "10.1000/x",
    ]
    assert parsed.items[0].keys == ["doi:10.1145/3292500.3330701"]


def test_what_is_no_item_is_said_and_the_rest_kept():
    parsed = parse_arguments(
        ["nonsense", "9912.12345", "2401.00001", "https://example.org/paper", "1503.1234"]
    )
    assert items_of(parsed) == [("2401.00001", None, "")]
    assert parsed.problems == [
        "'nonsense' is not an arXiv id or URL, a DOI, or a .bib, .ris, .csv or .txt file",
        "'9912.12345' is no id arXiv has given (YYMM.NNNNN since 2015, YYMM.NNNN from April 2007, "
        "archive/YYMMNNN before)",
        "'https://example.org/paper' is not an arXiv id or URL, a DOI, or a .bib, .ris, .csv or .txt file",
        "'1503.1234' is no id arXiv has given (YYMM.NNNNN since 2015, YYMM.NNNN from April 2007, "
        "archive/YYMMNNN before)",
    ]


def test_plausible_arxiv_ids():
    today = date(2026, 3, 1)
    assert plausible_arxiv_id("0704.0001", today) and plausible_arxiv_id("1412.9999", today)
    assert plausible_arxiv_id("2603.00001", today) and not plausible_arxiv_id("2604.00001", today)
    assert not plausible_arxiv_id("0703.0001", today) and not plausible_arxiv_id("1501.0001", today)
    assert not plausible_arxiv_id("2401.00000", today) and not plausible_arxiv_id("2413.00001", today)
    assert plausible_arxiv_id("hep-th/9108001", today) and plausible_arxiv_id("math/0703001", today)
    assert not plausible_arxiv_id("hep-th/9107001", today) and not plausible_arxiv_id("math/0704001", today)


@given(
    year=st.integers(15, 25),
    month=st.integers(1, 12),
    number=st.integers(1, 99999),
    version=st.one_of(st.none(), st.integers(1, 20)),
    form=st.sampled_from(
        [
            "{id}{v}",
            "arXiv:{id}{v}",
            "https://arxiv.org/abs/{id}{v}",
            "https://arxiv.org/pdf/{id}{v}",
            "https://arxiv.org/pdf/{id}{v}.pdf",
            "http://www.arxiv.org/html/{id}{v}",
            "https://doi.org/10.48550/arXiv.{id}",
        ]
    ),
)
def test_every_form_of_a_new_style_id_gives_the_same_paper(year, month, number, version, form):
    arxiv_id = f"{year:02d}{month:02d}.{number:05d}"
    text = form.format(id=arxiv_id, v=f"v{version}" if version else "")
    assert arxiv_id_in(text) == arxiv_id
    assert paper_key(text) == f"arxiv:{arxiv_id}"


def test_paper_keys_as_digest_build_writes_them():
    assert paper_key("arxiv:2401.00001") == "arxiv:2401.00001"
    assert paper_key(" doi:10.1000/ABC ") == "doi:10.1000/abc"
    assert paper_key("title:attention is all you need") == "title:attention is all you need"
    assert paper_key("url:https://example.org/a") == "url:https://example.org/a"
    assert paper_key("https://arxiv.org/abs/2401.00001v3") == "arxiv:2401.00001"
    assert paper_key("title:") is None and paper_key("hello") is None


BIBTEX = r"""@article{vaswani2017,
  title = {Attention {Is} All You Need},
  author = {Vaswani, Ashish and Shazeer, Noam},
  eprint = {1706.03762},
  archivePrefix = {arXiv},
}

@article{broken,
  title = {A brace that is never closed,
  doi = {10.1/broken}

@inproceedings{doi2019,
  title = {Caf\'{e} Recommendations at 50% Off},
  doi = {https://doi.org/10.1145/3292500.3330701},
}
@misc{doi2019, title = {The same key again}}
@misc{preprint, title = {Labelled in the Journal Field}, journal = {arXiv preprint arXiv:2305.12345}}
@misc{urlonly, url = {http://arxiv.org/abs/2306.00001v2}}
@misc{titleonly, title = {A Paper Known Only By Its Title}}
@misc{nothing, author = {Somebody}}
@misc{handle, eprint = {2345.67890}, eprinttype = {hdl}, title = {Archived Under a Handle Elsewhere}}
"""


def test_bibtex_keeps_good_entries_and_names_broken_ones_by_line_and_key():
    parsed = parse_upload("refs.bib", BIBTEX.encode())
    assert items_of(parsed) == [
        ("1706.03762", None, "Attention Is All You Need"),
        (None, "10.1145/3292500.3330701", "Café Recommendations at 50% Off"),
        ("2305.12345", None, "Labelled in the Journal Field"),
        ("2306.00001", None, ""),
        (None, None, "A Paper Known Only By Its Title"),
        (None, None, "Archived Under a Handle Elsewhere"),
    ]
    assert parsed.items[0].given == "refs.bib line 1 (vaswani2017)"
    assert parsed.problems[0].startswith("refs.bib line 8: broken entry '@article{broken' skipped: ")
    assert "field-value closing" in parsed.problems[0]
    assert parsed.problems[1:] == [
        "refs.bib line 16: a second entry with the key 'doi2019', skipped",
        "refs.bib line 20: no arXiv id, DOI or title that names one paper",
    ]


def test_a_file_that_is_no_bibtex_says_so():
    assert parse_upload("refs.bib", b"just some words\n").problems == ["refs.bib: no BibTeX entries"]


RIS = """TY  - JOUR
TI  - Deep Residual Learning
DO  - 10.48550/arXiv.1512.03385
ER  -

TY  - JOUR
TI  - A record that never ends
TY  - PREP
T1  - Zotero Preprint Export
UR  - https://arxiv.org/pdf/2402.00002v3
N1  - arXiv:2402.00002 [cs]
ER  -
TY  - JOUR
TI  - A Journal Article
DO  - 10.1000/JOURNAL.7
UR  - https://example.org/article
ER  -
TY  - JOUR
AU  - Nobody, N.
ER  -
"""


def test_ris_records_are_read_one_by_one():
    parsed = parse_upload("refs.ris", RIS.encode())
    assert items_of(parsed) == [
        ("1512.03385", None, "Deep Residual Learning"),
        ("2402.00002", None, "Zotero Preprint Export"),
        (None, "10.1000/journal.7", "A Journal Article"),
    ]
    assert parsed.problems == [
        "refs.ris line 6: a record that never ends (no 'ER  -' line before the next), skipped",
        "refs.ris line 18: no arXiv id, DOI or title that names one paper",
    ]


ZOTERO = """\ufeff"Key","Item Type","Publication Year","Author","Title","Publication Title","DOI","Url","Abstract Note","Extra","Archive Location"
"A1","preprint","2024","Doe, Jane","Robots That Learn","","","http://arxiv.org/abs/2403.01234v1","An abstract, with a comma.","arXiv:2403.01234 [cs]",""
"A2","journalArticle","2020","Roe, R.","A Journal Thing","Journal","10.1000/XYZ.1","","",""
"A3","preprint","2023","","Only In Extra","","","","","Citation Key: x
arXiv: 2301.00042",""
"A4","book","2020","","","","","","","",""
"A5","preprint","2025","","Archive Id Column","","","","","","arXiv:2501.00077"
"""


def test_zotero_csv_exports_give_arxiv_ids_dois_and_titles():
    parsed = parse_upload("My Library.csv", ZOTERO.encode())
    assert items_of(parsed) == [
        ("2403.01234", None, "Robots That Learn"),
        (None, "10.1000/xyz.1", "A Journal Thing"),
        ("2301.00042", None, "Only In Extra"),
        ("2501.00077", None, "Archive Id Column"),
    ]
    assert parsed.problems == ["My Library.csv line 6: no arXiv id, DOI or title that names one paper"]
    assert parsed.items[0].given == "My Library.csv line 2 (Robots That Learn)"


def test_a_csv_that_is_no_zotero_export_says_so():
    parsed = parse_upload("people.csv", b"email,name\nada@example.org,Ada\n")
    assert parsed.problems == ["people.csv: not a Zotero CSV export (no Title, DOI, Url or Extra column)"]


def test_text_files_of_ids_skip_blank_and_comment_lines():
    text = "# my reading list\n\n2401.00001\n  https://arxiv.org/abs/2401.00002v2  \nnot an id\n10.1000/abc\n"
    parsed = parse_upload("ids.txt", text.encode("utf-8"))
    assert items_of(parsed) == [("2401.00001", None, ""), ("2401.00002", None, ""), (None, "10.1000/abc", "")]
    assert parsed.problems == ["ids.txt line 5: 'not an id' is not an arXiv id or URL or a DOI"]
    assert items_of(parse_text("2401.00003\r\n2401.00004")) == [
        ("2401.00003", None, ""),
        ("2401.00004", None, ""),
    ]


def test_files_are_read_from_disk_by_their_kind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("refs.bib").write_text(BIBTEX, encoding="latin-1")  # not UTF-8: read all the same
    Path("ids.txt").write_text("2401.00011\n")
    Path("notes").write_text("2401.00012\n")
    parsed = parse_arguments(["ids.txt", "refs.bib", "missing.ris", "notes", str(tmp_path)])
    assert parsed.items[0].arxiv_id == "2401.00011" and parsed.items[1].arxiv_id == "1706.03762"
    assert parsed.items[2].title == "Café Recommendations at 50% Off"
    assert "missing.ris: no such file" in parsed.problems
    assert "notes: a library file is a .bib, .ris, .csv (Zotero export) or .txt file" in parsed.problems
    assert any(
        problem.endswith(": a library file is a .bib, .ris, .csv (Zotero export) or .txt file")
        for problem in parsed.problems
    )
    assert parse_upload("x.txt", b"\x00\x01binary").problems == ["x.txt: not a text file"]


def test_a_50_mb_file_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "library.bib"
    with big.open("wb") as file:
        file.truncate(50_000_000)  # sparse: no 50 MB is written or read
    parsed = parse_arguments([str(big), "2401.00001"])
    assert parsed.problems == [
        f"{big}: 50.0 MB is more than a library file may have ({MAX_FILE_BYTES / 1_000_000:g} MB): split it"
    ]
    assert items_of(parsed) == [("2401.00001", None, "")]
    assert (
        parse_upload("upload.ris", b" " * (MAX_FILE_BYTES + 1))
        .problems[0]
        .startswith("upload.ris: 10.0 MB is more than a library file may have")
    )


def test_an_id_list_of_100000_lines_stops_at_the_limit_and_says_where(tmp_path):
    lines = "\n".join(f"2401.{n:05d}" for n in range(1, 100_001))
    path = tmp_path / "many.txt"
    path.write_text(lines)
    parsed = parse_arguments([str(path), "2402.00001"], limit=1000)
    assert len(parsed.items) == 1000 and parsed.full
    assert parsed.items[-1] == Item(f"{path} line 1000 (2401.01000)", arxiv_id="2401.01000")
    assert parsed.problems == [
        f"{path} line 1001: an add takes at most 1,000 items; this one and the rest were not read "
        "(add them in another run)",
        "2402.00001: not read (the limit of 1,000 items per add was reached)",
    ]


def test_garbage_problems_are_counted_but_only_the_first_ones_kept():
    parsed = parse_text("\n".join(f"junk {n}" for n in range(5000)))
    assert parsed.problem_count == 5000 and len(parsed.problems) == 200 and parsed.items == []
