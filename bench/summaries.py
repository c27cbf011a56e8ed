"""How often a card's summary says what the paper does or finds, on hand-labelled abstracts.

tests/fixtures/summary_labels.jsonl holds the sentences of 89 abstracts from the shared corpus, each
labelled problem, task, idea, result or other (README: "How the summaries were measured"), split into a
development half and a held-out half. For each abstract this prints, before (the first sentence or two,
as cards had them) and after (the sentence picker of newsletter/summaries.py):

- the share of summaries made only of idea or result sentences (the target: at least 80 %),
- the share with at least one idea or result sentence,
- how often the 300-character budget forced a sentence to be cut.

    python3 run.py bench summaries [--split dev|test|all] [--show]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from newsletter.summaries import pick_summary
from newsletter.text import extract_summary

LABELS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "summary_labels.jsonl"
GOOD = frozenset({"idea", "result"})
BUDGET = 300


@dataclass
class Abstract:
    paper: str
    split: str
    sentences: list[str]
    labels: list[str]

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


def load(path: Path = LABELS) -> list[Abstract]:
    abstracts: dict[str, Abstract] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        entry = abstracts.setdefault(row["paper"], Abstract(row["paper"], row["split"], [], []))
        assert row["index"] == len(entry.sentences), f"{row['paper']}: sentences out of order"
        entry.sentences.append(row["sentence"])
        entry.labels.append(row["label"])
    return list(abstracts.values())


def first_sentences(abstract: Abstract) -> tuple[list[int], bool]:
    """The sentences the first-sentences summary is made of (by where they start), and whether it was cut."""
    summary = extract_summary(abstract.text, max_chars=BUDGET)
    cut = summary.endswith("…")
    covered = len(summary.removesuffix("…"))
    indexes, offset = [], 0
    for index, sentence in enumerate(abstract.sentences):
        if offset < covered:
            indexes.append(index)
        offset += len(sentence) + 1
    return indexes, cut


def picked(abstract: Abstract) -> tuple[list[int], bool]:
    summary = pick_summary(abstract.text, max_chars=BUDGET)
    return list(summary.indexes), summary.cut


def measure(abstracts: list[Abstract], summarize) -> dict[str, float]:
    only = some = cuts = 0
    for abstract in abstracts:
        indexes, cut = summarize(abstract)
        labels = [abstract.labels[i] for i in indexes]
        only += bool(labels) and all(label in GOOD for label in labels)
        some += any(label in GOOD for label in labels)
        cuts += cut
    count = len(abstracts) or 1
    return {"n": len(abstracts), "only": only / count, "some": some / count, "cut": cuts / count}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split", choices=("dev", "test", "all"), default=None, help="one half only")
    parser.add_argument("--show", action="store_true", help="print each abstract's pick that misses")
    args = parser.parse_args()
    abstracts = load()
    halves: dict[str, list[Abstract]] = defaultdict(list)
    for abstract in abstracts:
        halves[abstract.split].append(abstract)
    halves["all"] = abstracts
    names = [args.split] if args.split else ["dev", "test", "all"]
    print(
        f"{'half':<5} {'abstracts':>9}  {'':<22}{'only idea/result':>17} {'some idea/result':>17} {'cut':>6}"
    )
    for name in names:
        for title, how in (("before: first sentences", first_sentences), ("after: picked", picked)):
            m = measure(halves[name], how)
            print(f"{name:<5} {m['n']:>9}  {title:<22}{m['only']:>16.0%} {m['some']:>17.0%} {m['cut']:>6.0%}")
    if args.show:
        for abstract in (a for name in names for a in halves[name]):
            indexes, _ = picked(abstract)
            if not all(abstract.labels[i] in GOOD for i in indexes):
                print(
                    f"\n{abstract.paper} ({abstract.split}): " + " ".join(abstract.labels[i] for i in indexes)
                )
                for i in indexes:
                    print(f"  [{i} {abstract.labels[i]}] {abstract.sentences[i]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
