"""Readers' topics: matching papers, personal digests, one rendering per distinct preference set."""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from datetime import timedelta

import pytest

from newsletter.compose import build_edition
from newsletter.db import open_database
from newsletter.editions import EditionPaper, Section, load_edition
from newsletter.errors import PreferenceError
from newsletter.ledger import create_ledger, stored_variants
from newsletter.outbox import plan_variants, render_edition, send_edition, variant_preferences
from newsletter.preferences import Follows, Preferences
from newsletter.settings import DigestSettings
from newsletter.subscribers import add_subscriber, change_follows
from tests.test_deliver import MONDAY, edition_with_sample_papers, make_settings


def paper(title: str, categories: list[str], abstract: str = "") -> EditionPaper:
    return EditionPaper(0, f"arxiv:{title}", title, 1.0, "", categories=categories, abstract=abstract)


def test_matching_by_category_archive_and_keyword():
    prefs = Preferences.create(categories=["cs.RO", "math"], keywords=["Diffusion Model", "GNN"])
    assert prefs.matches(paper("A", ["cs.RO"]))
    assert prefs.matches(paper("B", ["math.AP", "math-ph"]))  # "math" follows the whole archive
    assert not prefs.matches(paper("C", ["math-ph"]))  # math-ph is another archive
    assert prefs.matches(paper("D", ["cs.CV"], "We train a latent diffusion model on faces."))
    assert prefs.matches(paper("Scaling GNNs? No: a GNN for molecules", ["cs.LG"]))
    assert not prefs.matches(paper("E", ["cs.CV"], "Diffusion models everywhere."))  # whole words only
    assert Preferences().matches(paper("F", ["astro-ph.GA"]))  # following nothing means everything


def test_preferences_are_canonical_and_validated():
    first = Preferences.create(["cs.LG", "cs.CL", "cs.LG"], ["  Graph  Neural ", "graph neural"])
    second = Preferences.create(["cs.CL", "cs.LG"], ["graph neural"])
    assert first.variant == second.variant
    assert first.categories_json == '["cs.CL","cs.LG"]' and first.keywords == ("graph neural",)
    assert first.variant != Preferences.create(["cs.CL"]).variant
    for bad in (["cs.LG<script>"], ["DROP TABLE"], ["a" * 80]):
        with pytest.raises(PreferenceError):
            Preferences.create(categories=bad)
    with pytest.raises(PreferenceError):
        Preferences.create(keywords=[f"k{n}" for n in range(30)])
    with pytest.raises(PreferenceError):
        Preferences.create(frequency="hourly")


def test_stored_choices_that_cannot_be_read_mean_the_whole_edition():
    assert Preferences.from_row('["cs.LG"]', '["diffusion"]').categories == ("cs.LG",)
    for categories in ("not json", '["<script>"]', "[1]"):
        assert Preferences.from_row(categories, "[]") == Preferences(), categories


def test_personal_sections_keep_matches_best_first_and_other_last():
    sections = [
        Section("Vision", [], [paper("v1", ["cs.CV"]), paper("v2", ["cs.CV", "cs.RO"])]),
        Section("Robots", [], [paper("r1", ["cs.RO"]), paper("r2", ["cs.RO"]), paper("r3", ["cs.RO"])]),
        Section("Other papers", [], [paper("o1", ["cs.RO"])], is_other=True),
        Section("Speech", [], [paper("s1", ["eess.AS"])]),
    ]
    mine = Preferences.create(["cs.RO"]).sections(sections)
    assert [s.label for s in mine] == ["Robots", "Vision", "Other papers"]
    assert [p.title for p in mine[1].papers] == ["v2"]
    assert Preferences.create(["q-bio"]).sections(sections) == []


def body_of(server, address):
    [stored] = server.messages(address)
    message = email.message_from_bytes(stored.as_bytes(), policy=email.policy.default)
    return message, message.get_body(("html",)).get_content(), message.get_body(("plain",)).get_content()


def test_each_reader_gets_their_topics_and_each_preference_set_is_rendered_once(
    tmp_path, smtp_server, monkeypatch
):
    settings = make_settings(tmp_path, smtp_server.port)
    edition_id = edition_with_sample_papers(settings)
    db = open_database(settings.database)
    add_subscriber(db, "all@example.org", "All")
    add_subscriber(db, "robots1@example.org", preferences=Preferences.create(["cs.RO"]))
    add_subscriber(db, "robots2@example.org", preferences=Preferences.create(["cs.RO"]))
    add_subscriber(db, "speech@example.org", preferences=Preferences.create(keywords=["speech recognition"]))
    add_subscriber(db, "void@example.org", preferences=Preferences.create(["astro-ph"]))
    add_subscriber(db, "quiet@example.org", preferences=Preferences.create(["astro-ph"], empty_digest="skip"))
    add_subscriber(db, "daily@example.org", preferences=Preferences.create(frequency="daily"))
    db.close()

    from newsletter import outbox

    rendered: list[str] = []
    real = outbox.message_template

    def counting(
        settings_, edition_, preferences=None, **shared
    ):  # a spy: counts renderings, renders for real
        rendered.append(preferences.variant if preferences else "all")
        return real(settings_, edition_, preferences, **shared)

    monkeypatch.setattr(outbox, "message_template", counting)
    report = send_edition(settings, edition_id)

    assert report.counts == {"sent": 5, "skipped": 1}  # the daily reader is not a weekly recipient
    assert sorted(rendered) == sorted(set(rendered)) and len(rendered) == 4  # all, robots, speech, astro
    assert "daily@example.org" not in smtp_server.counts() and "quiet@example.org" not in smtp_server.counts()

    _, _, robots_text = body_of(smtp_server, "robots1@example.org")
    _, _, robots_text_2 = body_of(smtp_server, "robots2@example.org")
    db = open_database(settings.database)
    edition = load_edition(db, edition_id)
    db.close()
    robot_titles = {p.title for s in edition.sections for p in s.papers if "cs.RO" in p.categories}
    other_titles = {p.title for s in edition.sections for p in s.papers if "cs.RO" not in p.categories}
    flat = " ".join(robots_text.split())  # the text part wraps long titles
    assert robot_titles and all(title in flat for title in robot_titles)
    assert not any(title in flat for title in other_titles)
    # One rendering: the same text but for each reader's own feedback links.
    same = [
        re.sub(r"/feedback/[^/]+/", "/feedback/TOKEN/", text.split("Preferences:")[0])
        for text in (robots_text, robots_text_2)
    ]
    assert same[0] == same[1] and "/feedback/TOKEN/more/" in same[0]

    message, _, _ = body_of(smtp_server, "all@example.org")
    assert message["Subject"].startswith("Research Digest: 38 new papers")
    speech_message, _, speech_text = body_of(smtp_server, "speech@example.org")
    assert "speech recognition" in speech_text.lower() and speech_message["Subject"] != message["Subject"]
    void_message, _, void_text = body_of(smtp_server, "void@example.org")
    void_html = void_message.get_body(("html",)).get_content()
    # One sentence that names what the reader follows, in both parts; a subject without a count of 0.
    assert "Nothing new in astro-ph this week." in void_text and "in your topics" not in void_text
    assert void_html.count("Nothing new in astro-ph this week.") == 2  # the preview and the body
    assert void_message["Subject"] == "Research Digest: nothing new in astro-ph, 16–23 Nov 2026"


def test_daily_readers_get_daily_editions(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port)
    edition_with_sample_papers(settings)
    db = open_database(settings.database)
    add_subscriber(db, "weekly@example.org")
    add_subscriber(db, "daily@example.org", preferences=Preferences.create(frequency="daily"))
    daily = build_edition(db, DigestSettings(), now=MONDAY + timedelta(hours=2), frequency="daily")
    db.close()
    assert daily.frequency == "daily" and daily.paper_count == 38
    report = send_edition(settings, daily.id)
    assert report.counts == {"sent": 1}
    assert smtp_server.counts() == {"daily@example.org": 1}


# --- excluded keywords: part of the preference set ------------------------------------------------------


def test_excluded_keywords_remove_papers_and_make_their_own_variant():
    plain = Preferences.create(["cs.CV"], ["diffusion"])
    basis = '["cs.CV"]|["diffusion"]|notice'
    assert plain.variant == hashlib.sha256(basis.encode()).hexdigest()[:16]  # the key before exclusions
    first = Preferences.create(["cs.CV"], ["diffusion"], exclude_keywords=["Video ", "video", "GAN"])
    second = Preferences.create(["cs.CV"], ["diffusion"], exclude_keywords=["gan", "VIDEO"])
    assert first.exclude_keywords == ("gan", "video") and first.exclude_keywords_json == '["gan","video"]'
    assert first.variant == second.variant != plain.variant
    video = paper("Video diffusion at scale", ["cs.CV"])
    assert plain.matches(video) and not first.matches(video)
    assert first.matches(paper("Videos, not the word", ["cs.CV"]))  # whole words, as Follows.excluded
    assert Follows.create(exclude_keywords=["video"]).excluded(video.title, video.abstract)

    sections = [
        Section("Video", [], [paper("Video one", ["cs.CV"]), paper("Video two", ["cs.CV"])]),
        Section("Robots", [], [paper("r1", ["cs.RO"])]),
        Section("Vision", [], [paper("v1", ["cs.CV"]), paper("A video", ["cs.CV"]), paper("v2", ["cs.CV"])]),
    ]
    everything = Preferences.create(exclude_keywords=["video"])
    assert everything.follows_everything  # no topics: the whole edition, less what it excludes
    kept = everything.sections(sections)
    assert [s.label for s in kept] == ["Robots", "Vision"]  # the edition's order; the empty section goes
    assert [p.title for p in kept[1].papers] == ["v1", "v2"]


def test_stored_exclusions_are_read_apart_from_the_topics():
    assert Preferences.from_row('["cs.LG"]', "[]", exclude_keywords='["gan"]').exclude_keywords == ("gan",)
    assert Preferences.from_row("not json", "[]", exclude_keywords='["gan"]') == Preferences.create(
        exclude_keywords=["gan"]
    )
    for unreadable in ("not json", '"gan"', "[1]", '["<>"]'):
        read = Preferences.from_row('["cs.LG"]', "[]", exclude_keywords=unreadable)
        assert read == Preferences.create(["cs.LG"]), unreadable


def exclude(db, address: str, *keywords: str) -> None:
    reader = add_subscriber(db, address).subscriber
    change_follows(db, reader.id, lambda follows: Follows.create(follows.authors, keywords))


def test_readers_with_the_same_exclusions_share_a_variant_that_lacks_the_excluded_papers(tmp_path):
    settings = make_settings(tmp_path, 2525)
    edition_id = edition_with_sample_papers(settings)
    db = open_database(settings.database)
    add_subscriber(db, "all@example.org")
    follows_only = add_subscriber(db, "follower@example.org").subscriber
    change_follows(db, follows_only.id, lambda _: Follows.create(["Lena Müller"]))
    exclude(db, "first@example.org", "Speech Recognition")
    exclude(db, "second@example.org", "speech  recognition")
    exclude(db, "other@example.org", "diffusion", "speech recognition")
    edition = load_edition(db, edition_id)
    create_ledger(db, edition_id, message_domain="example.org", variants=plan_variants(db, edition))
    variant_of = dict(db.execute("SELECT email, variant FROM deliveries WHERE edition_id = ?", [edition_id]))
    stored = stored_variants(db, edition_id)
    preferences = variant_preferences(db, edition_id)
    db.close()

    today = hashlib.sha256(b"[]|[]|notice").hexdigest()[:16]
    assert variant_of["all@example.org"] == variant_of["follower@example.org"] == today
    assert variant_of["first@example.org"] == variant_of["second@example.org"] != today
    assert len(set(variant_of.values())) == 3 and len(stored) == 3
    shared = variant_of["first@example.org"]
    assert stored[shared].exclude_keywords_json == '["speech recognition"]'
    assert stored[today].exclude_keywords_json == "[]"

    def about_speech_recognition(p: EditionPaper) -> bool:
        return "speech recognition" in f"{p.title} {p.abstract}".lower()

    everything = [p for s in edition.sections for p in s.papers]
    gone = {p.title for p in everything if about_speech_recognition(p)}
    assert gone and stored[shared].papers == len(everything) - len(gone)
    whole = render_edition(settings, edition, preferences[today])
    mine = render_edition(settings, edition, preferences[shared])
    assert f": {len(everything)} new papers" in whole.email.subject
    assert f": {len(everything) - len(gone)} new papers" in mine.email.subject

    def shown(kit) -> set[str]:  # the titles of the papers the kit's topics hold
        titles = {p.key: p.title for p in everything}
        return {titles[kit.cards.keys[i]] for section in kit.sections for i in section}

    assert shown(whole) == {p.title for p in everything}
    assert shown(mine) == {p.title for p in everything} - gone


def test_a_send_gives_each_reader_their_exclusions_rendered_once_per_set(tmp_path, smtp_server, monkeypatch):
    settings = make_settings(tmp_path, smtp_server.port)
    edition_id = edition_with_sample_papers(settings)
    db = open_database(settings.database)
    add_subscriber(db, "all@example.org")
    exclude(db, "first@example.org", "diffusion")
    exclude(db, "second@example.org", "Diffusion")
    edition = load_edition(db, edition_id)
    db.close()

    from newsletter import outbox

    rendered: list[str] = []
    real = outbox.message_template

    def counting(settings_, edition_, preferences=None, **shared):  # a spy: counts renderings
        rendered.append(preferences.variant if preferences else "all")
        return real(settings_, edition_, preferences, **shared)

    monkeypatch.setattr(outbox, "message_template", counting)
    assert send_edition(settings, edition_id).counts == {"sent": 3}
    assert len(rendered) == 2
    diffusion = [p.title for s in edition.sections for p in s.papers if "diffusion" in p.title.lower()]
    assert diffusion
    for address in ("first@example.org", "second@example.org"):
        _, _, text = body_of(smtp_server, address)
        assert not any(title in " ".join(text.split()) for title in diffusion)
    _, _, everything = body_of(smtp_server, "all@example.org")
    assert all(title in " ".join(everything.split()) for title in diffusion)
