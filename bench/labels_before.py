"""The section labels as they were before labels became researcher-style subjects, kept only so that
bench/labels.py can print them beside today's (same sections, same counts; only the labelling differs).
The previous ``newsletter/cluster.py`` labelling functions; the word lists and the helpers they share with
today's (unchanged) are imported."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

from newsletter.cluster import (
    GENERIC_RESEARCH_WORDS,
    HEAD_NOUNS,
    OTHER_LABEL,
    PaperText,
    Topic,
    _stem,
    _stem_key,
    _surface_forms,
    _term_counts,
)


def labels(documents: Sequence[PaperText], topics: list[Topic]) -> list[tuple[str, list[str]]]:
    """(label, keywords) of each of ``topics`` (members: indices into ``documents``) as they were named."""
    order = sorted(range(len(documents)), key=lambda i: documents[i].id)
    position = {index: rank for rank, index in enumerate(order)}
    ordered = [documents[i] for i in order]
    counts, vocabulary = _term_counts(ordered)
    groups = [[position[m] for m in topic.members] for topic in topics]
    keyword_lists = _keywords(counts, vocabulary, groups, ordered)
    names = _unique_labels(keyword_lists, [topic.is_other for topic in topics])
    return list(zip(names, keyword_lists, strict=True))


def _keywords(
    counts: sparse.csr_matrix, vocabulary: np.ndarray, groups: list[list[int]], documents: Sequence[PaperText]
) -> list[list[str]]:
    """Class-based TF-IDF: a term's weight in a section against how common it is in all sections."""
    if counts.shape[1] == 0:
        return [[] for _ in groups]
    per_topic = np.vstack([np.asarray(counts[members].sum(axis=0)).ravel() for members in groups])
    words_per_topic = per_topic.sum(axis=1, keepdims=True)
    term_frequency = per_topic / np.maximum(words_per_topic, 1)
    average_words = float(words_per_topic.mean())
    idf = np.log1p(average_words / np.maximum(per_topic.sum(axis=0), 1))
    scores = term_frequency * idf
    usable = np.array([_label_worthy(str(term)) for term in vocabulary])
    result = []
    for row, members in zip(scores, groups, strict=True):
        row = np.where(usable, row, 0.0)
        ranked = np.argsort(-row, kind="stable")[:200]
        scored = [(str(vocabulary[i]), float(row[i])) for i in ranked if row[i] > 0]
        chosen = _distinct_terms(_prefer_phrases(scored), limit=8)
        result.append(_surface_forms(chosen, [documents[m] for m in members]))
    return result


def _label_worthy(term: str) -> bool:
    """A word must be topical. A phrase must start with a topical word and end with a topical word or a
    head noun ("language models", "reinforcement learning"), not with "using" or "proposed"."""
    words = term.split()
    if len(words) == 1:
        return term not in GENERIC_RESEARCH_WORDS
    first, last = words[0], words[-1]
    return first not in GENERIC_RESEARCH_WORDS and (last not in GENERIC_RESEARCH_WORDS or last in HEAD_NOUNS)


def _prefer_phrases(scored: list[tuple[str, float]]) -> list[str]:
    """Replace a term by the best longer phrase containing it when that phrase is nearly as distinctive:
    "black holes" says more than "black", "graph neural networks" more than "graph neural". Singular and
    plural spellings count together ("black hole" + "black holes")."""
    variants: dict[str, float] = {}
    for term, term_score in scored:
        variants[_stem_key(term)] = variants.get(_stem_key(term), 0.0) + term_score
    containing: dict[str, list[str]] = {}
    for term, _ in scored:
        words = term.split()
        for length in range(1, len(words)):
            for start in range(len(words) - length + 1):
                containing.setdefault(" ".join(words[start : start + length]), []).append(term)

    def extend(term: str) -> str:
        while containing.get(term):
            phrase = max(containing[term], key=lambda option: variants[_stem_key(option)])
            if variants[_stem_key(phrase)] < 0.6 * variants[_stem_key(term)]:
                break
            term = phrase
        return term

    terms: list[str] = []
    for term, _ in scored:
        longest = extend(term)
        if longest not in terms:
            terms.append(longest)
    return terms


def _abbreviates(short: str, phrase: str) -> bool:
    """ "llms" abbreviates "large language models", "gnn" abbreviates "graph neural networks"."""
    words = phrase.split()
    return len(words) > 1 and _stem(short) == "".join(word[0] for word in words)


def _distinct_terms(terms: list[str], limit: int) -> list[str]:
    """Drop a term that repeats a chosen one: "diffusion" after "diffusion models", "images" after "image"."""
    chosen: list[str] = []
    chosen_stems: list[set[str]] = []
    for term in terms:
        stems = set(_stem_key(term).split())
        if any(stems <= other or other <= stems for other in chosen_stems):
            continue
        if any(_abbreviates(term, other) or _abbreviates(other, term) for other in chosen):
            continue
        chosen.append(term)
        chosen_stems.append(stems)
        if len(chosen) == limit:
            break
    return chosen


def _unique_labels(keyword_lists: list[list[str]], is_other: list[bool]) -> list[str]:
    labels: list[str] = []
    used: set[str] = set()
    for keywords, other in zip(keyword_lists, is_other, strict=True):
        label = OTHER_LABEL if other else _label_from(keywords, used)
        base, suffix = label, 2
        while label.casefold() in used:  # identical keyword lists: number them rather than merge them
            label = f"{base} ({suffix})"
            suffix += 1
        used.add(label.casefold())
        labels.append(label)
    return labels


def _label_from(keywords: list[str], used: set[str]) -> str:
    if not keywords:
        return "Miscellaneous"
    # Two or three terms read at a glance; a fourth only when the first three are single words.
    size = 3 if sum(" " in k for k in keywords[:3]) else min(4, len(keywords))
    for start in range(max(1, len(keywords) - size + 1)):
        candidate = _join(keywords[start : start + max(2, min(size, len(keywords)))])
        if candidate.casefold() not in used:
            return candidate
    return _join(keywords[: max(2, min(size, len(keywords)))])


def _join(terms: list[str]) -> str:
    text = ", ".join(terms)
    return text[:1].upper() + text[1:]
