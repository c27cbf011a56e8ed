"""The summary picker: sentences that say what a paper does or finds, on abstracts labelled by hand
(tests/fixtures/summary_labels.jsonl, see README "How the summaries were measured"), and on a built
edition's cards."""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.compose import build_edition
from newsletter.fetch import Fetcher
from newsletter.ingest import run_ingest
from newsletter.render import Renderer, RenderSettings
from newsletter.settings import DigestSettings, SourceConfig
from newsletter.summaries import pick_summary, split_sentences, summarize
from tests.support.feedserver import Reply

LABELS = Path(__file__).resolve().parent / "fixtures" / "summary_labels.jsonl"
GOOD = {"idea", "result"}


def labelled() -> dict[str, tuple[list[str], list[str]]]:
    """Each labelled paper's sentences and their labels, in order."""
    papers: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for line in LABELS.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        sentences, labels = papers[row["paper"]]
        assert row["index"] == len(sentences)
        sentences.append(row["sentence"])
        labels.append(row["label"])
    return dict(papers)


PAPERS = labelled()


def abstract_of(paper: str) -> str:
    return " ".join(PAPERS[paper][0])


def labels_of_summary(paper: str) -> list[str]:
    return [PAPERS[paper][1][i] for i in pick_summary(abstract_of(paper)).indexes]


# --- the labelled set -----------------------------------------------------------------------------------


def test_the_labelled_set_is_what_the_readme_says():
    assert len(PAPERS) == 89
    halves = defaultdict(set)
    for line in LABELS.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        assert row["label"] in {"problem", "task", "idea", "result", "other"}
        halves[row["split"]].add(row["paper"])
    assert {name: len(papers) for name, papers in halves.items()} == {"dev": 45, "test": 44}
    assert not halves["dev"] & halves["test"]


def test_the_labels_line_up_with_the_splitter():
    """Joining a paper's labelled sentences and splitting again gives the same sentences."""
    for paper, (sentences, _) in PAPERS.items():
        assert split_sentences(" ".join(sentences)) == sentences, paper


@pytest.mark.parametrize("half", ["dev", "test"])
def test_most_summaries_are_made_of_idea_and_result_sentences(half):
    papers = {json.loads(line)["paper"] for line in LABELS.read_text().splitlines() if f'"{half}"' in line}
    good = [paper for paper in papers if set(labels_of_summary(paper)) <= GOOD]
    assert len(good) >= 0.8 * len(papers), sorted(papers - set(good))
    # The opening sentences, as cards had them, rarely are.
    first = [paper for paper in papers if PAPERS[paper][1][0] in GOOD]
    assert len(first) < 0.3 * len(papers)


@pytest.mark.parametrize(
    ("paper", "starts"),
    [
        # background first, then "In this work, we propose DistinctAD ..."
        ("arxiv:2411.18180", "In this work, we propose DistinctAD"),
        # four sentences of problem, then the method and its results
        ("arxiv:2411.17773", "In this paper, we introduce VisToG, a novel grouping mechanism"),
        # "Inverse folding is a core step"-style opening: "Multispectral pedestrian detection is a crucial"
        ("arxiv:2411.17995", "This paper introduces a new framework for multispectral pedestrian detection"),
        # a mathematics abstract: a theorem, not the definitions
        ("arxiv:2411.17948", "Finally, we show that neither LOCATING-DOMINATING SET nor TEST COVER"),
        # physics: the finding, not the setting
        ("arxiv:2411.18332", "We demonstrate that out of plane strain gradient"),
        # a systems paper with a results sentence full of numbers
        ("arxiv:2606.13501", "Compared with fixed-pipeline execution"),
    ],
)
def test_the_picker_chooses_what_the_paper_does_or_finds(paper, starts):
    summary = summarize(abstract_of(paper))
    assert summary.startswith(starts)
    assert set(labels_of_summary(paper)) <= GOOD
    assert not summary.startswith(PAPERS[paper][0][0][:40])


def test_code_links_and_asides_are_never_the_summary():
    for paper in PAPERS:
        assert "other" not in labels_of_summary(paper), paper


def test_an_abstract_without_a_contribution_still_gets_a_sentence():
    # A position paper: three sentences about the field, none about the paper's own work.
    summary = pick_summary(abstract_of("arxiv:2411.17981"))
    assert summary.text and len(summary.indexes) == 1


# --- sentences ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        (
            "Models (e.g. GPT-4) scale, i.e. they improve. See Fig. 2 and Eq. 3 for details.",
            ["Models (e.g. GPT-4) scale, i.e. they improve.", "See Fig. 2 and Eq. 3 for details."],
        ),
        (
            "Smith et al. (2009) tackled this. We extend Smith et al. We show more.",
            ["Smith et al. (2009) tackled this.", "We extend Smith et al.", "We show more."],
        ),
        (
            "It improves accuracy by 3.5 points to 91.2%. Code follows.",
            ["It improves accuracy by 3.5 points to 91.2%.", "Code follows."],
        ),
        ("Recently A. Wires proved it. We go on.", ["Recently A. Wires proved it.", "We go on."]),
        ("This holds for type A. Moreover, we prove B.", ["This holds for type A.", "Moreover, we prove B."]),
        (
            "As in [Phys. Rev. Lett. 105, 190502 (2010)]. We extend it.",
            ["As in [Phys. Rev. Lett. 105, 190502 (2010)].", "We extend it."],
        ),
        ("For p in [0,1) constant. Our results hold.", ["For p in [0,1) constant.", "Our results hold."]),
        (
            "Our contributions: 1. We propose A. 2. We show B.",
            ["Our contributions: 1. We propose A.", "2. We show B."],
        ),
        (
            "We use images, text, etc. Experiments show gains.",
            ["We use images, text, etc.", "Experiments show gains."],
        ),
        (
            "A simple model.The system is a map.However, it works.",
            ["A simple model.", "The system is a map.", "However, it works."],
        ),
        ("It runs in $O(n \\log n)$ time. We prove it.", ["It runs in $O(n \\log n)$ time.", "We prove it."]),
        ('They call it "fast." Is it? Yes!', ['They call it "fast."', "Is it?", "Yes!"]),
        (
            "the U.S. Department of Defense funds it. We ask why.",
            ["the U.S. Department of Defense funds it.", "We ask why."],
        ),
        (
            "The codex Paris, BnF, fr. 2813 is old. We read it.",
            ["The codex Paris, BnF, fr. 2813 is old.", "We read it."],
        ),
        ("One sentence without a full stop", ["One sentence without a full stop"]),
        ("  \n ", []),
    ],
)
def test_sentences_are_split_where_they_end(text, sentences):
    assert split_sentences(text) == sentences


# --- the summary ----------------------------------------------------------------------------------------


def test_the_budget_is_kept_and_no_sentence_is_cut_mid_word():
    for paper in PAPERS:
        abstract = abstract_of(paper)
        sentences = PAPERS[paper][0]
        for budget in (300, 200, 120, 60):
            summary = pick_summary(abstract, max_chars=budget)
            assert len(summary.text) <= budget
            if summary.cut:
                assert summary.text.endswith("…") and len(summary.indexes) == 1
                kept = summary.text[:-1]
                sentence = sentences[summary.indexes[0]]
                assert sentence.startswith(kept)
                assert re.match(r"[,;:\-–—]*\s", sentence[len(kept) :]), (kept, sentence)
            else:
                assert summary.text == " ".join(sentences[i] for i in summary.indexes)


def test_two_sentences_keep_their_order_in_the_abstract():
    pairs = [pick_summary(abstract_of(paper)) for paper in PAPERS]
    two = [s for s in pairs if len(s.indexes) == 2]
    assert two, "no summary of two sentences in the labelled set"
    assert all(s.indexes[0] < s.indexes[1] for s in two)


def test_the_same_abstract_always_gives_the_same_summary():
    papers = sorted(PAPERS)
    first = {paper: pick_summary(abstract_of(paper)) for paper in papers}
    random.Random(7).shuffle(papers)
    assert {paper: pick_summary(abstract_of(paper)) for paper in papers} == first


def test_an_abstract_of_one_sentence():
    assert summarize("We prove that every planar graph is four-colourable.") == (
        "We prove that every planar graph is four-colourable."
    )
    long = "We show that " + ", ".join(f"property {n} holds for every graph" for n in range(30)) + "."
    summary = pick_summary(long, max_chars=100)
    assert summary.cut and summary.text.endswith("…") and len(summary.text) <= 100
    assert long.startswith(summary.text[:-1]) and not summary.text[:-1].endswith((" ", ","))


@pytest.mark.parametrize("abstract", ["", "   ", "\n\t"])
def test_an_empty_abstract_has_no_summary(abstract):
    assert pick_summary(abstract).text == "" and pick_summary(abstract).indexes == ()


def test_hostile_and_latex_text_stays_text():
    abstract = (
        "Cross-site scripting is a core problem of web security. "
        "We propose <script>alert(1)</script> &amp; a filter with $\\mathcal{O}(n \\log n)$ cost. "
        "It blocks 99% of attacks {\\em in the wild}."
    )
    summary = summarize(abstract)
    assert (
        "We propose <script>alert(1)</script> &amp; a filter with $\\mathcal{O}(n \\log n)$ cost." in summary
    )
    assert "Cross-site scripting" not in summary
    # The picker only ever chooses and joins the abstract's own text; escaping is the templates' work.
    for piece in summary.removesuffix("…").split(" "):
        assert piece in abstract


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=600), st.integers(20, 400))
def test_any_text_gives_a_summary_within_the_budget_from_its_own_words(text, budget):
    summary = pick_summary(text, max_chars=budget)
    assert len(summary.text) <= budget
    words = set(text.split())
    for word in summary.text.removesuffix("…").split():
        assert word in words or any(w.startswith(word) for w in words)


# --- a built edition ------------------------------------------------------------------------------------

EDITION_PAPERS = ["arxiv:2411.18180", "arxiv:2411.17773", "arxiv:2411.17995", "arxiv:2606.13501"]
NOW = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


def feed_of(papers: list[str]) -> bytes:
    items = []
    for paper in papers:
        number = paper.removeprefix("arxiv:")
        items.append(
            f"<item><title>Paper {number}</title><link>https://arxiv.org/abs/{number}</link>"
            f"<description>arXiv:{number}v1 Announce Type: new\nAbstract: {xml_escape(abstract_of(paper))}"
            f'</description><guid isPermaLink="false">oai:arXiv.org:{number}v1</guid>'
            "<category>cs.CV</category><pubDate>Mon, 30 Nov 2026 00:00:00 -0500</pubDate>"
            "<arxiv:announce_type>new</arxiv:announce_type><dc:creator>Ada One, Bo Two</dc:creator></item>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" xmlns:arxiv="http://arxiv.org/schemas/atom" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>cs.CV updates on arXiv.org</title>'
        "<link>http://rss.arxiv.org/rss/cs.CV</link><description>cs.CV</description>"
        + "".join(items)
        + "</channel></rss>"
    ).encode()


def test_a_built_editions_cards_carry_the_picked_summaries(db, feed_server):
    url = feed_server.route("/rss", Reply(body=feed_of(EDITION_PAPERS)))
    with Fetcher() as fetcher:
        reports = run_ingest(db, [SourceConfig(name="labelled", kind="arxiv_rss", url=url)], fetcher, now=NOW)
    assert [r.status for r in reports] == ["ok"]
    edition = build_edition(db, DigestSettings(), now=NOW + timedelta(hours=1))
    papers = {paper.key: paper for section in edition.sections for paper in section.papers}
    assert set(papers) == set(EDITION_PAPERS)
    cards = Renderer(RenderSettings("Research Digest", "https://news.example.org")).digest_cards(edition)
    for key, paper in papers.items():
        assert paper.summary == summarize(paper.abstract)
        assert paper.summary == summarize(abstract_of(key))
        assert set(labels_of_summary(key)) <= GOOD
        assert not paper.abstract.startswith(paper.summary[:40])  # not the opening background
        card = cards.cards[cards.index[key]]
        assert escape(paper.summary, quote=False)[:60] in "".join(card.html)
        assert paper.summary.split()[0] in "".join(card.text)
