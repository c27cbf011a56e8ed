"""What a reader taught, stored: signals (latest choice wins, refused for papers no longer stored, read in
bulk in a few queries), pending items, follows, erasure, retention and the library's papers in the
digests, on a real SQLite file."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from newsletter.db import write_transaction
from newsletter.erasure import forget_subscriber
from newsletter.errors import LibraryError, PaperNotFound, PreferenceError
from newsletter.library import (
    DISLIKE,
    LIBRARY,
    LIKE,
    READERS_PER_QUERY,
    PendingItem,
    export_jsonl,
    forget,
    keep_papers,
    keep_pending,
    pending_items,
    promote_pending,
    reader_signals,
    record_signal,
    signals_by_reader,
)
from newsletter.models import AnnounceType, Paper
from newsletter.preferences import Follows, Preferences
from newsletter.retention import prune
from newsletter.settings import RetentionSettings
from newsletter.signups import SignupRequest, enqueue
from newsletter.store import READER_ADDED, new_papers_between, paper_ids_by_key, store_papers
from newsletter.subscribers import add_subscriber, change_follows, export_csv, find_subscriber, import_rows

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def paper(arxiv_id: str, title: str, **extra: object) -> Paper:
    return Paper(
        title=title,
        abstract=f"We study {title.lower()}.",
        authors=["Ada Lovelace", "Alan Turing"],
        arxiv_id=arxiv_id,
        **extra,  # type: ignore[arg-type]
    )


def stored(db, *papers: Paper, source: str = "arxiv", now: datetime = NOW) -> list[int]:
    with write_transaction(db):
        store_papers(db, list(papers), source=source, now=now)
    found = paper_ids_by_key(db, [f"arxiv:{p.arxiv_id}" for p in papers])
    return [found[f"arxiv:{p.arxiv_id}"] for p in papers]


def reader(db, email: str = "ada@example.org") -> int:
    return add_subscriber(db, email).subscriber.id


def test_the_latest_choice_about_a_paper_wins(db):
    ada = reader(db)
    stored(db, paper("2401.00001", "Robot grasping with tactile sensing"))
    first = record_signal(db, ada, "arxiv:2401.00001", LIKE, now=NOW)
    assert first.paper_id > 0 and first.changed
    assert record_signal(db, ada, "arxiv:2401.00001", DISLIKE, now=NOW + timedelta(hours=1)).changed
    [signal] = reader_signals(db, ada)
    assert (signal.id, signal.kind, signal.created_at) == (
        "arxiv:2401.00001",
        DISLIKE,
        NOW + timedelta(hours=1),
    )
    assert signal.title == "Robot grasping with tactile sensing"
    assert signal.abstract == "We study robot grasping with tactile sensing."
    assert signal.authors == ("Ada Lovelace", "Alan Turing")
    assert db.execute("SELECT count(*) FROM reader_signals").fetchone()[0] == 1


def test_the_same_choice_again_changes_nothing_not_even_its_time(db):
    ada, bo = reader(db), reader(db, "bo@example.org")
    stored(db, paper("2401.00001", "Robot grasping with tactile sensing"))
    record_signal(db, ada, "arxiv:2401.00001", LIKE, now=NOW)
    record_signal(db, bo, "arxiv:2401.00001", LIKE, now=NOW)
    again = record_signal(db, ada, "arxiv:2401.00001", LIKE, now=NOW + timedelta(days=3))
    assert not again.changed
    [signal] = reader_signals(db, ada)
    assert (signal.kind, signal.created_at) == (LIKE, NOW)
    # A library add of a paper already kept writes nothing either; another kind replaces the row.
    with write_transaction(db):
        assert keep_papers(db, ada, [again.paper_id], LIKE, now=NOW + timedelta(days=4)) == 0
        assert keep_papers(db, ada, [again.paper_id], LIBRARY, now=NOW + timedelta(days=5)) == 1
    [signal] = reader_signals(db, ada)
    assert (signal.kind, signal.created_at) == (LIBRARY, NOW + timedelta(days=5))
    assert [(s.kind, s.created_at) for s in reader_signals(db, bo)] == [(LIKE, NOW)]


def test_feedback_for_a_paper_that_is_not_stored_is_refused_and_changes_nothing(db):
    ada = reader(db)
    with pytest.raises(
        PaperNotFound, match=r"no stored paper is arxiv:2401\.99999 \(it may have been pruned"
    ):
        record_signal(db, ada, "arxiv:2401.99999", LIKE)
    with pytest.raises(LibraryError, match="unknown kind 'love'"):
        record_signal(db, ada, "arxiv:2401.99999", "love")
    assert reader_signals(db, ada) == []


def test_a_paper_is_found_under_any_of_its_keys(db):
    ada = reader(db)
    stored(db, paper("2401.00002", "Speech enhancement with diffusion", doi="10.1000/speech.1"))
    record_signal(db, ada, "doi:10.1000/speech.1", LIKE)
    assert [s.id for s in reader_signals(db, ada)] == ["arxiv:2401.00002"]


def test_signals_of_many_readers_take_a_few_queries_and_share_each_paper(db):
    ids = stored(db, *(paper(f"2401.{n:05d}", f"Paper number {n} about things") for n in range(1, 6)))
    readers = [reader(db, f"r{n}@example.org") for n in range(READERS_PER_QUERY + 3)]
    with write_transaction(db):
        for position, subscriber_id in enumerate(readers):
            keep_papers(db, subscriber_id, ids[: 1 + position % 5], LIBRARY, now=NOW)
    queries: list[str] = []
    db.conn.set_trace_callback(queries.append)
    got = dict(signals_by_reader(db))
    db.conn.set_trace_callback(None)
    assert len([q for q in queries if q.lstrip().upper().startswith("SELECT")]) == 3  # readers, 2 batches
    assert sorted(got) == readers
    assert [len(got[subscriber_id]) for subscriber_id in readers[:6]] == [1, 2, 3, 4, 5, 1]
    first = got[readers[0]][0]
    assert all(signals[0].title is first.title for signals in got.values())  # one copy of each text
    assert dict(signals_by_reader(db, [readers[4], 999_999])) == {readers[4]: got[readers[4]]}


def test_pending_items_join_the_library_once_their_paper_is_stored(db):
    ada, bo = reader(db), reader(db, "bo@example.org")
    doi = PendingItem(key="doi:10.1000/later.1", item="10.1000/LATER.1", reason="not stored yet")
    with write_transaction(db):
        keep_pending(db, ada, [doi], now=NOW)
        keep_pending(db, bo, [doi], now=NOW)
    assert [(p.key, p.item, p.reason, p.created_at) for p in pending_items(db, ada)] == [
        ("doi:10.1000/later.1", "10.1000/LATER.1", "not stored yet", NOW)
    ]
    with write_transaction(db):
        assert promote_pending(db, ada) == 0
    [paper_id] = stored(db, paper("2402.00001", "A journal paper arriving later", doi="10.1000/later.1"))
    with write_transaction(db):
        keep_papers(db, bo, [paper_id], DISLIKE, now=NOW)  # bo hid it since: that choice stays
        assert promote_pending(db) == 2
    assert [(s.id, s.kind) for s in reader_signals(db, ada)] == [("arxiv:2402.00001", LIBRARY)]
    assert [(s.id, s.kind) for s in reader_signals(db, bo)] == [("arxiv:2402.00001", DISLIKE)]
    assert pending_items(db, ada) == pending_items(db, bo) == []


def test_forget_removes_papers_and_pending_items_of_that_reader_only(db):
    ada, bo = reader(db), reader(db, "bo@example.org")
    [paper_id] = stored(db, paper("2401.00003", "Graph neural networks for molecules"))
    with write_transaction(db):
        keep_papers(db, ada, [paper_id], now=NOW)
        keep_papers(db, bo, [paper_id], now=NOW)
        keep_pending(db, ada, [PendingItem(key="title:a title only paper", item="x", reason="r")], now=NOW)
    assert forget(db, ada, ["arxiv:2401.00003", "title:a title only paper", "arxiv:2401.09999"]) == [
        "arxiv:2401.09999"
    ]
    assert reader_signals(db, ada) == [] and pending_items(db, ada) == []
    assert len(reader_signals(db, bo)) == 1


def test_forgetting_a_reader_deletes_everything_they_taught(db):
    ada, bo = reader(db), reader(db, "bo@example.org")
    [paper_id] = stored(db, paper("2401.00004", "Sparse attention for long documents"))
    with write_transaction(db):
        for subscriber_id in (ada, bo):
            keep_papers(db, subscriber_id, [paper_id], LIKE, now=NOW)
            keep_pending(db, subscriber_id, [PendingItem(key="doi:10.1/x", item="10.1/x", reason="r")])
    for address in ("Ada@Example.org", "bo@example.org"):  # each asks again through the form
        enqueue(db, SignupRequest(address, "", Preferences.create([], [], "weekly")), now=NOW)
    assert forget_subscriber(db, ada)
    assert db.execute("SELECT DISTINCT subscriber_id FROM reader_signals").fetchall() == [(bo,)]
    assert db.execute("SELECT DISTINCT subscriber_id FROM library_pending").fetchall() == [(bo,)]
    assert db.execute("SELECT email FROM signup_requests").fetchall() == [("bo@example.org",)]


def test_retention_keeps_the_papers_readers_keep(db):
    ada = reader(db)
    kept, old = stored(
        db, paper("2401.00005", "A paper a reader keeps forever"), paper("2401.00006", "A paper nobody keeps")
    )
    with write_transaction(db):
        keep_papers(db, ada, [kept], now=NOW)
    counts = prune(db, RetentionSettings(), now=NOW + timedelta(days=365))
    assert counts["papers"] == 1
    assert paper_ids_by_key(db, ["arxiv:2401.00005", "arxiv:2401.00006"]) == {"arxiv:2401.00005": kept}
    assert old not in {row[0] for row in db.execute("SELECT id FROM papers")}


def test_papers_a_reader_added_are_new_only_once_a_source_announces_them(db):
    window = (NOW - timedelta(days=1), NOW + timedelta(days=1))
    stored(db, paper("2401.00007", "An old paper from a reader's library"), source=READER_ADDED)
    stored(db, paper("2401.00008", "A new paper a reader saw first"), source=READER_ADDED)
    assert new_papers_between(db, *window) == []
    later = NOW + timedelta(days=3)
    with write_transaction(db):
        counts = store_papers(
            db,
            [paper("2401.00008", "A new paper a reader saw first", announce_type=AnnounceType.NEW)],
            source="arxiv",
            now=later,
        )
    assert (counts.new, counts.updated, counts.duplicates) == (1, 0, 0)
    assert [row["key"] for row in new_papers_between(db, later, later + timedelta(days=1))] == [
        "arxiv:2401.00008"
    ]
    with write_transaction(db):  # seen again: no longer new
        counts = store_papers(
            db, [paper("2401.00008", "A new paper a reader saw first")], source="hf", now=later
        )
    assert counts.new == 0


def test_follows_are_stored_on_the_reader_and_compared_as_they_match(db):
    ada = reader(db)
    follows = change_follows(
        db, ada, lambda f: Follows.create(["José  Pérez", "jose perez", "Li Wei"], ["Quantum ", "LLM"])
    )
    assert follows.authors == ("José Pérez", "Li Wei")
    assert follows.exclude_keywords == ("llm", "quantum")
    assert find_subscriber(db, "ada@example.org").follows == follows
    assert follows.follows_an_author(["J. Doe", "Jose Perez"]) and not follows.follows_an_author(["Wei Li"])
    assert follows.excluded("LLMs are not this", "Quantum error correction")
    assert not follows.excluded("Large language models", "quantumness")
    fewer = change_follows(db, ada, lambda f: f.without(authors=["JOSE PEREZ"], keywords=["llm"]))
    assert (fewer.authors, fewer.exclude_keywords) == (("Li Wei",), ("quantum",))
    with pytest.raises(PreferenceError, match="follow at most 50 authors"):
        change_follows(db, ada, lambda f: Follows.create([f"Author {n}" for n in range(51)]))
    with pytest.raises(PreferenceError, match="control characters"):
        Follows.create(["Evil\nBcc: x"])
    assert find_subscriber(db, "ada@example.org").follows == fewer


def test_the_export_holds_what_readers_taught_and_imports_back(db):
    ada, bo = reader(db), reader(db, "bo@example.org")
    [paper_id] = stored(db, paper("2401.00009", "Self-supervised speech representations"))
    with write_transaction(db):
        keep_papers(db, ada, [paper_id], LIKE, now=NOW)
        keep_pending(
            db, ada, [PendingItem(key="doi:10.1/y", item="10.1/Y", reason="why", title="T")], now=NOW
        )
    change_follows(db, bo, lambda f: Follows.create(["=cmd|' /C calc'!A0"], ["-1+1"]))
    lines = io.StringIO()
    assert export_jsonl(db, lines) == 1
    assert json.loads(lines.getvalue()) == {
        "email": "ada@example.org",
        "papers": [
            {
                "id": "arxiv:2401.00009",
                "title": "Self-supervised speech representations",
                "kind": "like",
                "created_at": "2026-03-02T12:00:00.000000+00:00",
            }
        ],
        "pending": [
            {
                "item": "10.1/Y",
                "key": "doi:10.1/y",
                "title": "T",
                "reason": "why",
                "created_at": "2026-03-02T12:00:00.000000+00:00",
            }
        ],
    }
    table = io.StringIO()
    export_csv(db, table)
    text = table.getvalue()
    assert text.splitlines()[0].endswith(",follow_authors,exclude_keywords")
    assert "'[" not in text.splitlines()[1]  # JSON lists start with [, nothing a spreadsheet runs
    report = import_rows(db, text)
    assert (report.added, report.existing, report.rejected) == (0, 2, 0)
