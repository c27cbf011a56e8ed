"""Every captured feed in the shared corpus parses to the right number of entries and the right values."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from newsletter.errors import SourceError
from newsletter.models import AnnounceType
from newsletter.sources import arxiv_api, arxiv_rss, feed, hf_daily

ARXIV_RSS = "arxiv_rss2_all-archives_2024-11-28__aioarxiv.xml"


def read(corpus_feeds, name):
    return (corpus_feeds / name).read_bytes()


def by_id(papers):
    return {p.arxiv_id: p for p in papers}


# --- rss.arxiv.org ----------------------------------------------------------------------------------------


def test_arxiv_rss_all_archives_counts(corpus_feeds):
    parsed = arxiv_rss.parse(read(corpus_feeds, ARXIV_RSS))
    assert parsed.entries_seen == 1504
    assert len(parsed.papers) == 1504
    assert parsed.problems == []
    kinds = [p.announce_type for p in parsed.papers]
    assert kinds.count(AnnounceType.NEW) == 926
    assert kinds.count(AnnounceType.REPLACE) == 569
    assert kinds.count(AnnounceType.CROSS) == 9
    assert len({p.arxiv_id for p in parsed.papers}) == 1504
    assert all(p.title and p.abstract and p.authors and p.categories for p in parsed.papers)


def test_arxiv_rss_all_archives_values(corpus_feeds):
    papers = arxiv_rss.parse(read(corpus_feeds, ARXIV_RSS)).papers
    first = papers[0]
    assert first.arxiv_id == "2411.17700"
    assert first.version == 1
    assert first.title.startswith("Exploring the Impact of Generative AI on Cross-Border E-Commerce")
    assert first.abstract.startswith("This study investigates the influence of generative artificial")
    assert "Announce Type" not in first.abstract and "arXiv:" not in first.abstract[:20]
    assert first.authors == ["Jun Cui"]
    assert first.categories == ["cs.CY"]
    assert first.primary_category == "cs.CY"
    assert first.url == "https://arxiv.org/abs/2411.17700"
    assert first.pdf_url == "https://arxiv.org/pdf/2411.17700v1"
    assert first.published == datetime(2024, 11, 28, 5, 0, tzinfo=UTC)

    ecg = by_id(papers)["2411.17702"]
    assert ecg.authors == ["Hyewon Jeong", "Suyeol Yun", "Hammaad Adam"]
    assert ecg.categories == ["eess.SP", "cs.LG"]

    eeg = by_id(papers)["2411.17709"]
    assert "Przemysław Olbratowski" in eeg.authors
    assert eeg.authors[-1] == "Jarosław Żygierewicz"
    assert len(eeg.authors) == 8

    cross = papers[926]
    assert cross.arxiv_id == "2202.06515"
    assert cross.version == 3
    assert cross.announce_type is AnnounceType.CROSS
    assert cross.categories == ["astro-ph.CO", "astro-ph.GA", "physics.flu-dyn"]

    replace = papers[935]
    assert (replace.arxiv_id, replace.version, replace.announce_type) == (
        "1401.3665",
        4,
        AnnounceType.REPLACE,
    )
    assert replace.title == "The existence of designs"
    assert replace.authors == ["Peter Keevash"]

    last = papers[-1]
    assert last.arxiv_id == "2411.17697"
    assert last.title == "StableAnimator: High-Quality Identity-Preserving Human Image Animation"
    assert last.categories == ["cs.CV", "cs.AI"]


def test_arxiv_rss_latex_in_abstracts_is_readable(corpus_feeds):
    papers = arxiv_rss.parse(read(corpus_feeds, ARXIV_RSS)).papers
    texts = [p.abstract for p in papers] + [p.title for p in papers]
    assert not any("\\emph" in t or "\\textbf" in t or "\\frac" in t for t in texts)
    assert not any(re.search(r"\$[^$]*\\[a-zA-Z]", t) for t in texts)  # no maths left unconverted
    assert any("costing under $3" in t for t in texts)  # a lone dollar is money, not maths
    assert any("20%" in t for t in texts)  # "$20\%$" in a real abstract


def test_arxiv_atom_flavour(corpus_feeds):
    parsed = arxiv_rss.parse(read(corpus_feeds, "arxiv_rss_atom_cs.AI_2025-08-20__zotero-arxiv-daily.xml"))
    assert len(parsed.papers) == 7
    kinds = [p.announce_type for p in parsed.papers]
    assert kinds.count(AnnounceType.CROSS) == 5
    assert kinds.count(AnnounceType.NEW) == 2
    align = parsed.papers[0]
    assert align.arxiv_id == "2508.13426"
    assert align.title.startswith("ALIGN: Word Association Learning")
    assert align.authors == ["Chunhua Liu", "Kabir Manandhar Shrestha", "Sukai Huang"]
    assert align.categories == ["cs.CL", "cs.AI"]
    assert align.primary_category == "cs.CL"
    assert align.abstract.startswith("As large language models (LLMs) increasingly mediate")
    alphax = by_id(parsed.papers)["2508.13429"]
    assert alphax.authors == ["Paulo André Lima de Castro"]


def test_arxiv_rss_empty_feed_is_not_an_error(corpus_feeds):
    parsed = arxiv_rss.parse(read(corpus_feeds, "arxiv_rss2_empty-feed__aioarxiv.xml"))
    assert parsed.papers == [] and parsed.problems == []


def test_arxiv_rss_error_feed_is_an_error_with_arxivs_reason(corpus_feeds):
    with pytest.raises(SourceError, match="Bad archive 'astroph'"):
        arxiv_rss.parse(read(corpus_feeds, "arxiv_rss2_error-feed__aioarxiv.xml"))


# --- export.arxiv.org API -----------------------------------------------------------------------------------


def test_arxiv_api_search_pages(corpus_feeds):
    first = arxiv_api.parse(
        read(corpus_feeds, "arxiv_api_atom_2026_search_testing_start0_max10__arxiv.py.xml")
    )
    second = arxiv_api.parse(
        read(corpus_feeds, "arxiv_api_atom_2026_search_testing_start10_max10__arxiv.py.xml")
    )
    assert (len(first.papers), first.total_results, first.start_index) == (10, 214881, 0)
    assert (len(second.papers), second.total_results) == (10, 214881)
    paper = first.papers[0]
    assert paper.arxiv_id == "2202.12139"
    assert paper.version == 1
    assert (
        paper.title
        == "Testing Deep Learning Models: A First Comparative Study of Multiple Testing Techniques"
    )
    assert paper.authors == ["Mohit Kumar Ahuja", "Arnaud Gotlieb", "Helge Spieker"]
    assert paper.categories == ["cs.SE", "cs.LG"]
    assert paper.primary_category == "cs.SE"
    assert paper.doi == "10.1109/icstw55395.2022.00035"
    assert paper.pdf_url == "https://arxiv.org/pdf/2202.12139v1"
    assert paper.comment == "Artificial Intelligence in Software Testing 2022 workshop @ ICST 2022"
    assert paper.journal_ref.startswith("Artificial Intelligence in Software Testing @ 2022 IEEE")
    assert paper.published == datetime(2022, 2, 24, 15, 5, 19, tzinfo=UTC)
    assert not {p.arxiv_id for p in first.papers} & {p.arxiv_id for p in second.papers}


def test_arxiv_api_current_format_with_primary_category(corpus_feeds):
    parsed = arxiv_api.parse(
        read(corpus_feeds, "arxiv_api_atom_query_transformer-cs.LG_2026-06-14__sotawhat.xml")
    )
    assert (len(parsed.papers), parsed.total_results) == (5, 28946)
    mana = parsed.papers[0]
    assert mana.arxiv_id == "2606.13677"
    assert mana.title == "Mana: Dexterous Manipulation of Articulated Tools"
    assert mana.primary_category == "cs.RO"
    assert mana.categories == ["cs.RO", "cs.AI", "cs.CV", "cs.LG"]
    assert mana.authors == ["Zhao-Heng Yin", "Guanya Shi", "Pieter Abbeel", "C. Karen Liu"]
    assert "(<1 minute per tool)" in mana.abstract  # "&lt;" in the XML is a real less-than sign
    assert mana.comment == "Project Page: https://zhaohengyin.github.io/mana"


def test_arxiv_api_legacy_format_and_old_style_ids(corpus_feeds):
    parsed = arxiv_api.parse(
        read(corpus_feeds, "arxiv_api_atom_legacy-format_search_au-del_maestro_2016-10-09__arxiv.py.xml")
    )
    assert (len(parsed.papers), parsed.total_results) == (10, 31)
    papers = by_id(parsed.papers)
    helium = papers["1201.4869"]
    assert helium.title == "A Luttinger Liquid Core Inside Helium-4 Filled Nanopores"
    assert helium.doi == "10.1142/s021797921244002x"
    assert helium.primary_category == "cond-mat.mes-hall"
    assert helium.journal_ref == "Int. J. Mod. Phys. B, 26, 1244002 (2012)"
    assert "\n" not in helium.abstract and "  " not in helium.abstract  # hard-wrapped lines joined
    old = papers["cond-mat/0412498"]
    assert old.version == 1
    assert old.title == "Thermal melting of density waves on the square lattice"
    assert old.authors == ["Adrian Del Maestro", "Subir Sachdev"]
    assert old.doi == "10.1103/physrevb.71.184511"
    assert '"p x p" density wave' in old.abstract and "(p >= 3, integer)" in old.abstract
    assert sum("/" in p.arxiv_id for p in parsed.papers) >= 2


def test_arxiv_api_id_list_error_and_empty_results(corpus_feeds):
    found = arxiv_api.parse(
        read(corpus_feeds, "arxiv_api_atom_2026_id_list_0808.05394+1707.08567__arxiv.py.xml")
    )
    assert [p.arxiv_id for p in found.papers] == ["1707.08567"]
    assert found.papers[0].primary_category == "cs.IT"
    empty = arxiv_api.parse(read(corpus_feeds, "arxiv_api_atom_2026_empty_result_id_0000.0000__arxiv.py.xml"))
    assert (empty.papers, empty.total_results, empty.problems) == ([], 0, [])
    with pytest.raises(SourceError, match="arXiv API error: incorrect id format for abc"):
        arxiv_api.parse(read(corpus_feeds, "arxiv_api_atom_2026_error_invalid_id__arxiv.py.xml"))


# --- Hugging Face daily papers ----------------------------------------------------------------------------------


def test_hf_daily_papers(corpus_feeds):
    parsed = hf_daily.parse(read(corpus_feeds, "hf_api_daily_papers_2026-06-12__sotawhat.json"))
    assert len(parsed.papers) == 30 and parsed.problems == []
    first = parsed.papers[0]
    assert first.arxiv_id == "2606.00467"
    assert first.title.startswith("On the Limits of LLM Adaptability")
    assert first.authors == ["Etienne Casanova", "Rafal Kocielnik", "R. Michael Alvarez"]
    assert first.upvotes == 0
    assert first.ai_summary.startswith("Large language models exhibit limited ability to correct zero-shot")
    assert "zero-shot annotation" in first.keywords
    assert first.published == datetime(2026, 5, 30, tzinfo=UTC)
    assert first.url == "https://arxiv.org/abs/2606.00467"
    assert all(p.upvotes is not None for p in parsed.papers)
    assert sum(p.github_repo is not None for p in parsed.papers) >= 1
    assert max(p.upvotes for p in parsed.papers) > 0


def test_hf_daily_papers_pretty_with_github_repo(corpus_feeds):
    parsed = hf_daily.parse(read(corpus_feeds, "hf_api_daily_papers_2026-08-03_pretty__NewsAssistant.json"))
    assert len(parsed.papers) == 3
    midtraining = parsed.papers[0]
    assert midtraining.arxiv_id == "2607.26654"
    assert midtraining.title == "Constitutional Midtraining: Content Presence Drives Alignment Gains"
    assert midtraining.upvotes == 3
    assert midtraining.github_repo == "https://github.com/desBugger/constitutional-mt"
    assert midtraining.authors[0] == "Desiree Cho" and len(midtraining.authors) == 7


# --- journals and generic feeds -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("journal_rss091_pensoft_zookeys_abstracts_2021-12-21__biorss.xml", 100),
        ("journal_rss1_rdf_tandf_prism_2021-12-21__biorss.xml", 13),
        ("journal_rss2_oup_zoolinnean_abstracts_2021-12-21__biorss.xml", 14),
        ("journal_rss2_pubmed_search_2021-12-21__biorss.xml", 15),
        ("journal_rss2_wiley_taxon_toc_2021-12-21__biorss.xml", 66),
        ("generic_atom_feedburner_allthingsrss_2012-10-04__rss2email.atom", 3),
        ("generic_rss1_rdf_gmane_etag_2012-11-18__rss2email.rdf", 5),
    ],
)
def test_generic_feeds_parse_every_entry(corpus_feeds, name, count):
    parsed = feed.parse(read(corpus_feeds, name))
    assert len(parsed.papers) == count
    assert parsed.problems == []
    assert all(p.title and p.url and p.url.startswith("http") for p in parsed.papers)
    assert all(p.canonical_key for p in parsed.papers)


def test_pensoft_rss091_abstract_doi_and_byline(corpus_feeds):
    papers = feed.parse(
        read(corpus_feeds, "journal_rss091_pensoft_zookeys_abstracts_2021-12-21__biorss.xml")
    ).papers
    first = papers[0]
    assert (
        first.title
        == "Checklist and keys to Deltocephalinae leafhoppers (Hemiptera, Cicadellidae) from Pakistan"
    )
    assert first.doi == "10.3897/zookeys.1078.47616"
    assert first.authors[:2] == ["Hassan Naveed", "Bismillah Shah"] and len(first.authors) == 6
    assert first.abstract.startswith("Keys to all levels of the subfamily Deltocephalinae")
    assert first.abstract.endswith("syn. nov.")
    assert "ZooKeys 1078" not in first.abstract and "PDF" not in first.abstract
    assert first.venue == "Latest Articles from ZooKeys"
    assert sum(p.doi is not None for p in papers) == 100


def test_oup_pubmed_wiley_tandf_values(corpus_feeds):
    oup = feed.parse(
        read(corpus_feeds, "journal_rss2_oup_zoolinnean_abstracts_2021-12-21__biorss.xml")
    ).papers[0]
    assert oup.doi == "10.1093/zoolinnean/zlab078"
    assert oup.abstract.startswith("The Southern Ocean (SO) is the least understood environment on earth")
    assert "low oxygen for Cytherella, could not be confirmed" in oup.abstract
    assert oup.authors == ["Brandão S", "Saeedi H", "Brandt A."]

    pubmed = feed.parse(read(corpus_feeds, "journal_rss2_pubmed_search_2021-12-21__biorss.xml")).papers[0]
    assert pubmed.doi == "10.1016/j.parint.2021.102531"
    assert pubmed.abstract.startswith("A new species of Gyrodactylus was described")
    assert pubmed.abstract.endswith("named Gyrodactylus banmae.")
    assert pubmed.url.startswith("https://pubmed.ncbi.nlm.nih.gov/34929406/")
    assert len(pubmed.authors) == 7

    wiley = feed.parse(read(corpus_feeds, "journal_rss2_wiley_taxon_toc_2021-12-21__biorss.xml")).papers[0]
    assert wiley.doi == "10.1002/tax.12650"
    assert wiley.abstract.startswith("Leptospermum is an ecologically and economically important genus")
    assert wiley.authors == ["Rachel M. Binks", "Margaret Heslewood", "Peter G. Wilson", "Margaret Byrne"]
    assert wiley.venue == "TAXON"

    tandf = feed.parse(read(corpus_feeds, "journal_rss1_rdf_tandf_prism_2021-12-21__biorss.xml")).papers[0]
    assert tandf.doi == "10.1080/09397140.2021.1992835"
    assert tandf.authors == ["Şafak Bulut", "Gül Olgun Karacan"]
    assert tandf.venue == "Zoology in the Middle East"


def test_generic_atom_and_rdf(corpus_feeds):
    atom = feed.parse(
        read(corpus_feeds, "generic_atom_feedburner_allthingsrss_2012-10-04__rss2email.atom")
    ).papers
    assert atom[0].title == "How to Read RSS Feeds in Emacs"
    assert atom[0].authors == ["Lindsey Smith"]
    rdf = feed.parse(read(corpus_feeds, "generic_rss1_rdf_gmane_etag_2012-11-18__rss2email.rdf")).papers
    assert rdf[0].title == "split massive package into modules"
    assert rdf[0].url == "http://permalink.gmane.org/gmane.mail.rss2email/5"
    assert rdf[0].published == datetime(2012, 11, 13, 14, 36, 22, tzinfo=UTC)
