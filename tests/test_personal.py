"""The personal ranker on small editions written here: topics with their own vocabularies."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from newsletter.cluster import PaperText
from newsletter.personal import DISLIKE, LIBRARY, LIKE, PersonalRanker, Reader, Signal
from tests.support.topics import BEETLES, edition, paper


def topic_of(paper_id: str) -> str:
    return paper_id.split("-")[0]


NOW = datetime(2025, 6, 1, tzinfo=UTC)


def liked(topic: str, number: int, kind: str = LIKE, days_ago: float = 1) -> Signal:
    """A signal about a paper that is not in the edition (numbers from 500 on)."""
    return Signal(paper(topic, 500 + number), kind, NOW - timedelta(days=days_ago))


@pytest.fixture(scope="module")
def papers() -> list[PaperText]:
    return edition()


@pytest.fixture(scope="module")
def ranker(papers: list[PaperText]) -> PersonalRanker:
    return PersonalRanker(papers, now=NOW)


def test_cold_start_keeps_the_editions_order_and_proposes_nothing(ranker, papers):
    view = ranker.rank([])
    assert view.ranked == [p.id for p in papers]
    assert set(view.scores.values()) == {0.0}
    assert view.for_you == []


def test_one_liked_paper_brings_its_topic_first(ranker):
    view = ranker.rank([liked("astro", 1)])
    assert {topic_of(i) for i in view.ranked[:5]} == {"astro"}
    assert view.for_you, "one clearly related paper is enough for a For-you section"
    assert {topic_of(pick.id) for pick in view.for_you} == {"astro"}


def test_many_signals(ranker):
    signals = [liked("nlp", i) for i in range(6)] + [liked("nlp", 10 + i, LIBRARY) for i in range(6)]
    view = ranker.rank(signals)
    assert {topic_of(i) for i in view.ranked[:5]} == {"nlp"}
    assert 0 < len(view.for_you) <= 8
    assert all(topic_of(pick.id) == "nlp" for pick in view.for_you)


def test_for_you_is_capped(papers):
    many = PersonalRanker(edition(per_topic=20), now=NOW, limit=3)
    view = many.rank([liked("bio", i) for i in range(5)])
    assert len(view.for_you) == 3
    assert [pick.score for pick in view.for_you] == sorted(
        (pick.score for pick in view.for_you), reverse=True
    )


def test_same_input_same_answer_in_any_order(papers):
    signals = [liked("robot", 1), liked("quantum", 2, LIBRARY), liked("econ", 3, DISLIKE, days_ago=30)]
    first = PersonalRanker(papers, now=NOW).rank(signals)
    shuffled = list(papers)
    random.Random(7).shuffle(shuffled)
    second = PersonalRanker(shuffled, now=NOW).rank(list(reversed(signals)))
    assert first.scores == second.scores
    assert first.ranked == second.ranked  # no ties once a reader has signals
    assert [(p.id, p.score, p.why.text) for p in first.for_you] == [
        (p.id, p.score, p.why.text) for p in second.for_you
    ]
    again = PersonalRanker(papers, now=NOW).rank(signals)
    assert again.scores == first.scores


def test_a_batch_gives_each_reader_what_they_get_alone(ranker):
    readers = [
        Reader("a", [liked("astro", 1)]),
        Reader("b", []),
        Reader("c", [liked("climate", i) for i in range(4)] + [liked("fluids", 1, DISLIKE)]),
        Reader("d", [liked("crypto", 2, DISLIKE)]),
    ]
    together = list(ranker.rank_many(readers))
    assert [view.reader for view in together] == ["a", "b", "c", "d"]
    for reader, view in zip(readers, together, strict=True):
        alone = ranker.rank(reader.signals)
        assert view.scores == alone.scores
        assert [p.id for p in view.for_you] == [p.id for p in alone.for_you]


def test_disliked_papers_push_their_neighbours_down(ranker):
    likes = [liked("graphs", 1), liked("graphs", 2)]
    before = ranker.rank(likes)
    after = ranker.rank([*likes, liked("crypto", 3, DISLIKE)])
    crypto = [i for i in ranker.ids if topic_of(i) == "crypto"]
    for paper_id in crypto:
        assert after.scores[paper_id] < before.scores[paper_id]
    # Papers far from the hidden one keep their scores.
    assert after.scores["graphs-000"] == before.scores["graphs-000"]
    assert {topic_of(i) for i in after.ranked[-5:]} == {"crypto"}


def test_only_dislikes_give_no_for_you_and_sink_their_topic(ranker):
    view = ranker.rank([liked("econ", 1, DISLIKE), liked("econ", 2, DISLIKE)])
    assert view.for_you == []
    assert {topic_of(i) for i in view.ranked[-5:]} == {"econ"}


def test_recent_signals_weigh_more_than_old_ones(ranker):
    def first_topic(astro_age: float, nlp_age: float) -> str:
        view = ranker.rank([liked("astro", 1, days_ago=astro_age), liked("nlp", 1, days_ago=nlp_age)])
        return topic_of(view.ranked[0])

    assert first_topic(astro_age=2, nlp_age=900) == "astro"
    assert first_topic(astro_age=900, nlp_age=2) == "nlp"


def test_the_latest_signal_about_a_paper_wins(ranker):
    liked_then_hidden = [liked("bio", 1, LIKE, days_ago=10), liked("bio", 1, DISLIKE, days_ago=1)]
    view = ranker.rank(liked_then_hidden)
    assert view.for_you == []
    assert {topic_of(i) for i in view.ranked[-5:]} == {"bio"}


def test_two_unrelated_interests_both_reach_for_you():
    papers = edition(per_topic=12)
    ranker = PersonalRanker(papers, now=NOW)
    # Mostly astronomy, a little biology: one centroid would leave biology out.
    signals = [liked("astro", i) for i in range(6)] + [liked("bio", 1)]
    topics = {topic_of(pick.id) for pick in ranker.rank(signals).for_you}
    assert topics == {"astro", "bio"}


def test_nothing_close_means_no_for_you(ranker):
    beetles = [Signal(paper("beetles", i, BEETLES), LIBRARY, NOW) for i in range(5)]
    view = ranker.rank(beetles)
    assert view.for_you == []
    assert len(view.ranked) == len(ranker.ids)


def test_a_paper_the_reader_already_has_is_not_proposed(papers):
    ranker = PersonalRanker(papers, now=NOW)
    in_edition = papers[0]
    view = ranker.rank([Signal(in_edition, LIBRARY, NOW), liked(topic_of(in_edition.id), 1)])
    assert view.for_you
    assert in_edition.id not in {pick.id for pick in view.for_you}


def test_a_hidden_paper_of_the_edition_goes_last(papers, ranker):
    hidden = papers[3]
    view = ranker.rank([liked("astro", 1), Signal(hidden, DISLIKE, NOW)])
    assert view.ranked[-1] == hidden.id


def test_why_names_the_closest_liked_paper_and_shared_terms(ranker):
    signals = [liked("quantum", 1), liked("climate", 2, LIBRARY)]
    view = ranker.rank(signals)
    assert view.for_you
    by_id = {s.paper.id: s.paper for s in signals}
    texts = {p.id: f"{p.title} {p.abstract}".lower() for p in ranker._texts}
    for pick in view.for_you:
        why = pick.why
        assert why.paper_id in by_id and topic_of(why.paper_id) == topic_of(pick.id)
        assert by_id[why.paper_id].title in why.text
        assert why.terms, "a proposed paper shares terms with the paper it is close to"
        liked_text = f"{by_id[why.paper_id].title} {by_id[why.paper_id].abstract}".lower()
        for term in why.terms:
            assert term.lower() in texts[pick.id] and term.lower() in liked_text
    library_pick = next(p for p in view.for_you if topic_of(p.id) == "climate")
    assert "in your library" in library_pick.why.text


def test_the_threshold_means_the_same_in_a_larger_edition():
    small = edition(per_topic=6)
    large = edition(per_topic=6) + edition(per_topic=18, first=6)  # the same topics, four times the papers
    signals = [liked("fluids", i) for i in range(3)]
    small_ranker = PersonalRanker(small, now=NOW, limit=100)
    large_ranker = PersonalRanker(large, now=NOW, limit=100)
    small_picks = {p.id for p in small_ranker.rank(signals).for_you}
    large_picks = {p.id for p in large_ranker.rank(signals).for_you}
    assert {topic_of(i) for i in small_picks | large_picks} == {"fluids"}
    # The same share of the topic's papers is proposed, whatever the edition's size.
    assert len(small_picks) / 6 == pytest.approx(len(large_picks) / 24, abs=0.2)
    assert small_picks <= large_picks


def test_tiny_and_empty_editions():
    assert PersonalRanker([], now=NOW).rank([liked("astro", 1)]).ranked == []
    one = PersonalRanker([paper("astro", 1)], now=NOW).rank([liked("astro", 1)])
    assert one.ranked == ["astro-001"] and one.for_you == []
    words_only = PersonalRanker([PaperText("x", "The", "and of the")], now=NOW)
    assert words_only.rank([liked("astro", 1)]).ranked == ["x"]


def test_unknown_signal_kind_is_refused():
    with pytest.raises(ValueError, match="unknown signal kind 'love'"):
        Signal(paper("astro", 1), "love")


def test_ranked_scores_are_best_first(ranker):
    view = ranker.rank([liked("econ", 1), liked("econ", 2)])
    values = [score for _, score in view.ranked_scores()]
    assert values == sorted(values, reverse=True)
    assert [paper_id for paper_id, _ in view.ranked_scores()] == view.ranked
    assert np.isfinite(view.score_array).all()


# --- on a real announcement day ------------------------------------------------------------------------


def test_readers_of_cross_listed_categories_on_a_real_day(corpus_feeds):
    """The benchmark's setting in small: the ranker sees no category, yet brings each category's papers up
    at least as well as the library's TF-IDF centroid, and a library from another field gets no For-you."""
    import hashlib
    from collections import Counter

    import feedparser
    from sklearn.feature_extraction.text import TfidfVectorizer

    from newsletter.sources import arxiv_rss

    week = arxiv_rss.parse((corpus_feeds / "arxiv_rss2_all-archives_2024-11-28__aioarxiv.xml").read_bytes())
    papers = [p for p in week.papers if p.abstract]
    side = {p.arxiv_id: int(hashlib.sha256(p.arxiv_id.encode()).hexdigest(), 16) % 2 for p in papers}
    library_half = [p for p in papers if side[p.arxiv_id] == 0]
    edition_papers = [p for p in papers if side[p.arxiv_id] == 1]
    listed = Counter(c for p in papers for c in p.categories)
    primary = Counter(p.primary_category for p in papers)
    followed = sorted(c for c, count in listed.items() if count >= 20 and 2 * primary[c] < count)
    assert len(followed) >= 5

    texts = [PaperText(p.arxiv_id, p.title, p.abstract) for p in edition_papers]
    ranker = PersonalRanker(texts, now=NOW)
    tfidf = TfidfVectorizer(sublinear_tf=True, stop_words="english").fit(
        f"{p.title} {p.abstract}" for p in papers
    )
    edition_vectors = tfidf.transform(f"{p.title} {p.abstract}" for p in edition_papers)

    def ndcg(order: list[int], relevant: np.ndarray) -> float:
        gains = relevant[order[:10]] / np.log2(np.arange(2, 12))
        return float(gains.sum() / (1 / np.log2(np.arange(2, 12)))[: min(10, relevant.sum())].sum())

    project, centroid = [], []
    for category in followed:
        library = [p for p in library_half if category in p.categories][:10]
        relevant = np.array([category in p.categories for p in edition_papers])
        if len(library) < 10 or relevant.sum() < 3:
            continue
        view = ranker.rank(
            [Signal(PaperText(p.arxiv_id, p.title, p.abstract), LIBRARY, NOW) for p in library]
        )
        project.append(ndcg([ranker.ids.index(i) for i in view.ranked], relevant))
        profile = np.asarray(tfidf.transform(f"{p.title} {p.abstract}" for p in library).mean(axis=0)).ravel()
        centroid.append(ndcg(np.argsort(-(edition_vectors @ profile), kind="stable").tolist(), relevant))
    assert len(project) >= 5
    assert np.mean(project) >= np.mean(centroid)

    zoology = feedparser.parse(
        (corpus_feeds / "journal_rss091_pensoft_zookeys_abstracts_2021-12-21__biorss.xml").read_bytes()
    )
    beetles = [
        Signal(PaperText(entry.link, entry.title, entry.get("summary", "")), LIBRARY, NOW)
        for entry in zoology.entries[:10]
    ]
    assert ranker.rank(beetles).for_you == []


# --- follows: authors always shown, keywords never -------------------------------------------------------

AUTHORS = {
    "astro-002": ["Jane Doe", "Ann Lee"],
    "nlp-004": ["Bo Chen", "JANE DOE"],
    "robot-001": ["José Pérez"],
    "econ-003": ["Ann Lee", "Jane Doe"],
}


@pytest.fixture(scope="module")
def by_authors(papers: list[PaperText]) -> PersonalRanker:
    return PersonalRanker(papers, authors=AUTHORS, now=NOW)


def test_a_followed_authors_papers_come_first_in_for_you_with_their_why(by_authors):
    view = by_authors.rank([liked("quantum", 1)], follow_authors=["jane doe"])
    followed = [pick for pick in view.for_you if pick.followed]
    assert [pick.id for pick in view.for_you[: len(followed)]] == [pick.id for pick in followed]
    assert {pick.id for pick in followed} == {"astro-002", "nlp-004", "econ-003"}
    assert {pick.why.text for pick in followed} == {
        "By Jane Doe, whom you follow",
        "By JANE DOE, whom you follow",  # the name as the paper writes it
    }
    assert all(pick.why.terms == () and pick.why.paper_id is None for pick in followed)
    learned = view.for_you[len(followed) :]
    assert learned and {topic_of(pick.id) for pick in learned} == {"quantum"}
    assert all(pick.why.text.startswith("Close to “") for pick in learned)
    # Without the follow, the learned picks are the same reader's first picks.
    alone = by_authors.rank([liked("quantum", 1)])
    assert [p.id for p in learned] == [p.id for p in alone.for_you][: len(learned)]


def test_followed_and_learned_picks_share_the_places(papers):
    ranker = PersonalRanker(papers, authors=AUTHORS, now=NOW, limit=3)
    view = ranker.rank([liked("quantum", i) for i in range(3)], follow_authors=["Ann Lee"])
    assert len(view.for_you) == 3
    assert [pick.followed for pick in view.for_you] == [True, True, False]
    assert {pick.id for pick in view.for_you[:2]} == {"astro-002", "econ-003"}
    assert "By Ann Lee, whom you follow" in {pick.why.text for pick in view.for_you}
    crowded = ranker.rank([liked("quantum", 1)], follow_authors=["Ann Lee", "Jane Doe", "Jose Perez"])
    assert len(crowded.for_you) == 3 and all(pick.followed for pick in crowded.for_you)
    two = next(pick for pick in crowded.for_you if pick.id == "econ-003")
    assert two.why.text == "By Ann Lee and Jane Doe, whom you follow"


def test_an_excluded_paper_is_never_picked_and_goes_last(by_authors):
    signals = [liked("astro", i) for i in range(3)]
    before = by_authors.rank(signals)
    picked = [pick.id for pick in before.for_you]
    assert len(picked) >= 2
    excluded = {picked[0], picked[1], "robot-001"}
    view = by_authors.rank(signals, follow_authors=["José Pérez"], excluded=excluded)
    assert excluded.isdisjoint(pick.id for pick in view.for_you)  # even the followed author's paper
    assert view.for_you and all(topic_of(pick.id) == "astro" for pick in view.for_you)
    assert set(view.ranked[-3:]) == excluded
    assert all(view.scores[i] < min(view.scores[j] for j in view.ids if j not in excluded) for i in excluded)
    assert len(view.ranked) == len(by_authors.ids)  # ranked still holds every paper
    assert by_authors.rank(signals, excluded={"not-in-this-edition"}).scores == before.scores


def test_cold_start_with_follows(by_authors, papers):
    view = by_authors.rank([], follow_authors=["jose perez", "Ann Lee"], excluded={"econ-003", "bio-001"})
    assert [(pick.id, pick.why.text) for pick in view.for_you] == [
        ("astro-002", "By Ann Lee, whom you follow"),  # the edition's order among equals
        ("robot-001", "By José Pérez, whom you follow"),
    ]
    order = [p.id for p in papers]
    assert view.ranked == [i for i in order if i not in {"econ-003", "bio-001"}] + ["bio-001", "econ-003"]
    nobody = by_authors.rank([], follow_authors=["Nobody Known"])
    assert nobody.for_you == [] and nobody.ranked == order


def test_a_followed_authors_paper_the_reader_hid_is_not_proposed(by_authors, papers):
    hidden = next(p for p in papers if p.id == "robot-001")
    view = by_authors.rank([Signal(hidden, DISLIKE, NOW)], follow_authors=["José Pérez"])
    assert view.for_you == [] and view.ranked[-1] == "robot-001"


def test_follows_are_deterministic_and_the_same_in_a_batch(papers, by_authors):
    readers = [
        Reader("a", [liked("astro", 1)], ("Jane Doe",), frozenset({"astro-000"})),
        Reader("b", [], ("Ann Lee",)),
        Reader("c", [liked("climate", i) for i in range(4)], (), frozenset({"climate-001", "nlp-004"})),
        Reader("d"),
    ]
    together = list(by_authors.rank_many(readers))
    shuffled = list(papers)
    random.Random(3).shuffle(shuffled)
    other = PersonalRanker(shuffled, authors=dict(reversed(AUTHORS.items())), now=NOW)
    for reader, view in zip(readers, together, strict=True):
        for alone in (
            by_authors.rank(reader.signals, follow_authors=reader.follow_authors, excluded=reader.excluded),
            other.rank(
                reader.signals,
                follow_authors=tuple(reversed(reader.follow_authors)),
                excluded=reader.excluded,
            ),
        ):
            assert view.scores == alone.scores
            assert [(p.id, p.score, p.why.text) for p in view.for_you] == [
                (p.id, p.score, p.why.text) for p in alone.for_you
            ]
    assert [p.id for p in together[1].for_you] == ["astro-002", "econ-003"]
