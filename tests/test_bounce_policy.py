"""Whom a bounce or complaint is about, and what it does: VERP envelope senders on a real send through
aiosmtpd, then reports attributed by VERP, Message-ID or address and the [bounces] policy, on a real
SQLite file."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from newsletter.bounce_policy import take
from newsletter.bounces import list_bounces
from newsletter.config import load_settings
from newsletter.db import open_database
from newsletter.errors import ConfigError
from newsletter.models import BounceEvent
from newsletter.outbox import return_paths, send_edition
from newsletter.subscribers import find_subscriber, is_suppressed
from newsletter.tokens import ReturnPaths, Tokens
from tests.test_deliver import edition_with_sample_papers, make_settings, subscribe

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def with_bounces(tmp_path: Path, port: int, *lines: str):
    """The delivery tests' settings plus a [bounces] section."""
    make_settings(tmp_path, port)  # writes newsletter.toml
    path = tmp_path / "newsletter.toml"
    path.write_text(path.read_text() + "[bounces]\n" + "\n".join(lines) + "\n")
    return load_settings(path, environ={})


def received(smtp_server, address: str) -> email.message.EmailMessage:
    [message] = smtp_server.messages(address)
    return email.message_from_bytes(message.as_bytes(), policy=email.policy.default)


@pytest.fixture
def sent(tmp_path, smtp_server):
    """An edition sent to four readers with VERP on: (settings, {address: received message})."""
    settings = with_bounces(
        tmp_path, smtp_server.port, 'address = "bounces@example.org"', "soft_limit = 3", "soft_days = 10"
    )
    edition_id = edition_with_sample_papers(settings)
    addresses = subscribe(settings, 4)
    assert send_edition(settings, edition_id).counts == {"sent": 4}
    return settings, {address: received(smtp_server, address) for address in addresses}


def state(settings, address: str) -> tuple[str, bool]:
    db = open_database(settings.database)
    try:
        subscriber = find_subscriber(db, address)
        assert subscriber is not None
        return subscriber.status, is_suppressed(db, address)
    finally:
        db.close()


def take_event(settings, event: BounceEvent, now: datetime = NOW):
    db = open_database(settings.database)
    try:
        return take(db, settings, event, now=now)
    finally:
        db.close()


def event(kind: str, source_id: str, **fields) -> BounceEvent:
    return BounceEvent(source="mailbox", source_id=source_id, kind=kind, **fields)


# --- VERP ---------------------------------------------------------------------------------------------------


def test_each_message_goes_out_with_an_envelope_sender_that_names_its_delivery(sent):
    settings, messages = sent
    db = open_database(settings.database)
    try:
        paths = return_paths(settings, db)
        deliveries = dict(db.execute("SELECT email, id FROM deliveries").fetchall())
    finally:
        db.close()
    senders = {address: message["Return-Path"].strip("<>") for address, message in messages.items()}
    assert len(set(senders.values())) == 4
    for address, sender in senders.items():
        local, domain = sender.split("@")
        assert domain == "example.org" and local.startswith("bounces+")
        assert paths.delivery_of(sender) == deliveries[address]
        assert paths.delivery_of(sender.upper()) == deliveries[address]  # a server that shouts it back
    one = next(iter(senders.values()))
    assert paths.delivery_of(one.replace("@example.org", "@elsewhere.example")) is None
    tampered = one[:-13] + ("a" if one[-13] != "a" else "b") + one[-12:]
    assert paths.delivery_of(tampered) is None
    other_site = ReturnPaths(
        Tokens("another-site-secret-key"), "x@example.org", bounce_address="bounces@example.org", verp=True
    )
    assert other_site.delivery_of(one) is None  # signed with this site's secret only
    assert messages[next(iter(messages))]["From"] == "Research Digest <digest@example.org>"  # From unchanged


def test_without_verp_every_message_goes_out_with_the_bounce_address_or_the_from_address(
    tmp_path, smtp_server
):
    settings = with_bounces(tmp_path, smtp_server.port, 'address = "bounces@example.org"', "verp = false")
    edition_id = edition_with_sample_papers(settings)
    [address] = subscribe(settings, 1)
    send_edition(settings, edition_id)
    assert received(smtp_server, address)["Return-Path"] == "<bounces@example.org>"

    (tmp_path / "plain").mkdir()
    plain = make_settings(tmp_path / "plain", smtp_server.port)  # no [bounces]: the from address
    edition_id = edition_with_sample_papers(plain)
    [other] = subscribe(plain, 1, prefix="plain")
    send_edition(plain, edition_id)
    assert received(smtp_server, other)["Return-Path"] == "<digest@example.org>"


@pytest.mark.parametrize(
    "address", ["bounces+x@example.org", "Bounces <bounces@example.org>", "bounces", "a@b@c"]
)
def test_a_bounce_address_that_cannot_carry_verp_is_refused_with_its_location(tmp_path, address):
    path = tmp_path / "newsletter.toml"
    path.write_text(f'[bounces]\naddress = "{address}"\n')
    with pytest.raises(ConfigError) as refused:
        load_settings(path, environ={})
    assert str(refused.value).startswith(f"{path}:2: [bounces] address must be a bare address")


# --- the policy -----------------------------------------------------------------------------------------------


def test_a_hard_bounce_suppresses_exactly_the_reader_its_verp_address_names(sent):
    settings, messages = sent
    first, second, *_ = messages
    verp = messages[first]["Return-Path"].strip("<>")
    # The bounce names a forwarded address, and quotes another reader's Message-ID: VERP decides.
    taken = take_event(
        settings,
        event(
            "hard",
            "sha-1",
            addresses=("forwarded@elsewhere.example",),
            report_to=(verp,),
            message_id=messages[second]["Message-ID"],
            status="5.1.1",
            detail="user unknown",
        ),
    )
    assert taken.new and [(r.email, r.action, r.by) for r in taken.readers] == [(first, "suppressed", "verp")]
    assert state(settings, first) == ("bounced", True)
    assert all(state(settings, other) == ("active", False) for other in messages if other != first)
    [row] = open_bounces(settings)
    assert (row.email, row.kind, row.status, row.delivery_id is not None) == (first, "hard", "5.1.1", True)

    again = take_event(settings, event("hard", "sha-1", report_to=(verp,)))
    assert not again.new and len(open_bounces(settings)) == 1


def test_without_verp_the_message_id_then_the_address_decide(sent):
    settings, messages = sent
    _, second, third, _ = messages
    by_id = take_event(
        settings, event("hard", "a", message_id=messages[second]["Message-ID"], addresses=(third,))
    )
    assert [(r.email, r.by) for r in by_id.readers] == [(second, "message-id")]
    by_address = take_event(settings, event("hard", "b", addresses=(third.upper(), "stranger@example.net")))
    assert [(r.email, r.by) for r in by_address.readers] == [(third, "address")]
    assert state(settings, third) == ("bounced", True)


def test_a_forged_verp_address_and_strangers_suppress_nobody(sent):
    settings, messages = sent
    verp = next(iter(messages.values()))["Return-Path"].strip("<>")
    forged = verp.split("-")[0] + "-aaaaaaaaaaaaaaaa@example.org"
    strangers = ("stranger@example.net", "nobody@example.test", "not an address")
    taken = take_event(settings, event("hard", "f", report_to=(forged,), addresses=strangers))
    assert [(r.email, r.action) for r in taken.readers] == [("", "unmatched")]
    assert all(state(settings, address) == ("active", False) for address in messages)


def test_a_complaint_suppresses_and_unsubscribes(sent):
    settings, messages = sent
    first = next(iter(messages))
    taken = take_event(settings, BounceEvent("ses", "evt-1", "complaint", addresses=(first,), detail="abuse"))
    assert [r.action for r in taken.readers] == ["unsubscribed"]
    assert state(settings, first) == ("unsubscribed", True)


def test_auto_replies_and_unknown_messages_change_nothing(sent):
    settings, messages = sent
    first = next(iter(messages))
    verp = messages[first]["Return-Path"].strip("<>")
    for kind in ("auto_reply", "unknown"):
        taken = take_event(settings, event(kind, kind, report_to=(verp,)))
        assert [r.action for r in taken.readers] == ["ignored"]
    assert state(settings, first) == ("active", False)


def test_soft_bounces_suppress_after_the_limit_of_days_within_the_window(sent):
    settings, messages = sent  # soft_limit = 3, soft_days = 10
    first, second, *_ = messages
    verp = messages[first]["Return-Path"].strip("<>")

    def soft(n: int, day: datetime) -> str:
        taken = take_event(settings, event("soft", f"soft-{n}", report_to=(verp,), occurred_at=day), now=day)
        return taken.readers[0].action

    assert soft(1, NOW - timedelta(days=30)) == "counted"  # long ago: it will have decayed
    assert soft(2, NOW) == "counted"
    assert soft(3, NOW + timedelta(hours=2)) == "counted"  # the same day counts once
    assert state(settings, first) == ("active", False)
    assert soft(4, NOW + timedelta(days=1)) == "counted"
    assert soft(5, NOW + timedelta(days=2)) == "suppressed"  # three different days within ten
    assert state(settings, first) == ("bounced", True)
    assert state(settings, second) == ("active", False)
    assert open_bounces(settings, kind="soft")[0].action == "suppressed"  # the newest


def test_a_refusal_for_policy_reasons_counts_like_a_soft_bounce(sent):
    settings, messages = sent  # soft_limit = 3
    first = next(iter(messages))
    verp = messages[first]["Return-Path"].strip("<>")
    actions = []
    for n, kind in enumerate(("hard", "soft", "hard")):
        day = NOW + timedelta(days=n)
        blocked = event(kind, f"b{n}", report_to=(verp,), status="5.7.1" if kind == "hard" else "4.2.2",
                        detail="message blocked as spam", occurred_at=day)  # fmt: skip
        actions.append(take_event(settings, blocked, now=day).readers[0].action)
        if n < 2:
            assert state(settings, first) == ("active", False)
    assert actions == ["counted", "counted", "suppressed"]
    assert state(settings, first) == ("bounced", True)


def test_bounces_are_listed_newest_first_by_kind_and_date(sent):
    settings, messages = sent
    first, second, *_ = messages
    take_event(settings, event("soft", "1", addresses=(first,)), now=NOW - timedelta(days=3))
    take_event(settings, event("hard", "2", addresses=(second,)), now=NOW)
    assert [row.kind for row in open_bounces(settings)] == ["hard", "soft"]
    assert [row.email for row in open_bounces(settings, kind="soft")] == [first]
    assert [row.kind for row in open_bounces(settings, since=NOW - timedelta(days=1))] == ["hard"]


def open_bounces(settings, **filters):
    db = open_database(settings.database)
    try:
        return list_bounces(db, **filters)
    finally:
        db.close()


def test_forgetting_a_reader_forgets_the_bounces_about_them_and_retention_prunes_old_ones(sent):
    from newsletter.erasure import forget_subscriber
    from newsletter.retention import prune

    settings, messages = sent
    first, second, *_ = messages
    take_event(settings, event("soft", "1", addresses=(first,)), now=datetime.now(UTC))
    take_event(settings, event("soft", "2", addresses=(second,)), now=datetime.now(UTC) - timedelta(days=500))
    db = open_database(settings.database)
    try:
        forget_subscriber(db, find_subscriber(db, first).id)
        assert [row.email for row in list_bounces(db)] == [second]
        assert prune(db, settings.retention)["bounces"] == 1  # older than [retention] deliveries_days
        assert list_bounces(db) == []
    finally:
        db.close()


def test_the_admin_subscribers_page_shows_each_readers_bounce_history(tmp_path, request):
    from newsletter.devsmtp import free_port
    from newsletter.subscribers import add_subscriber
    from newsletter.web import create_app
    from tests.support.browser import Browser, screenshot_dir
    from tests.support.webserver import RunningApp
    from tests.test_signup import ADMIN_PASSWORD, web_settings

    port = free_port()
    settings = web_settings(tmp_path, free_port(), port)
    db = open_database(settings.database)
    try:
        bouncing = add_subscriber(db, "bouncing@example.org").subscriber
        add_subscriber(db, "quiet@example.org")
        hostile = '<img src=x onerror="document.title=1">{{ 7*7 }}'
        take(
            db,
            settings,
            event("soft", "s1", addresses=(bouncing.email,), status="4.2.2", detail="mailbox full"),
            now=NOW,
        )
        take(
            db,
            settings,
            event("hard", "h1", addresses=(bouncing.email,), status="5.1.1", detail=hostile),
            now=NOW + timedelta(days=1),
        )
    finally:
        db.close()
    app = RunningApp(create_app(settings), port=port)
    try:
        with Browser() as chromium:
            page = chromium.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{app.url}/admin/subscribers")
            page.fill("input[name=password]", ADMIN_PASSWORD)
            page.click("button:has-text('Log in')")
            page.wait_for_selector("h1:has-text('Subscribers')")
            row = page.locator("tr", has_text="bouncing@example.org")
            assert row.locator("summary").inner_text() == "2 · last: hard, 2 Dec 2026"
            row.locator("summary").click()
            items = row.locator("details li").all_inner_texts()
            assert items[0].startswith("2 Dec 2026 · hard · suppressed · mailbox") and hostile in items[0]
            assert (
                items[1].startswith("1 Dec 2026 · soft · counted · mailbox")
                and "4.2.2 mailbox full" in items[1]
            )
            assert page.title() != "1" and page.locator("img[src=x]").count() == 0
            assert (
                page.locator("tr", has_text="quiet@example.org").locator("td.bounces").inner_text() == "none"
            )
            page.screenshot(
                path=str(screenshot_dir(Path(request.config.rootpath)) / "admin-bounces.png"), full_page=True
            )
    finally:
        app.stop()


def test_bounces_list_and_status_show_what_came_back(sent, tmp_path):
    from tests.test_cli import run

    settings, messages = sent
    first, second, *_ = messages
    now = datetime.now(UTC)
    take_event(settings, event("soft", "1", addresses=(first,), status="4.2.2"), now=now - timedelta(days=3))
    take_event(settings, BounceEvent("postmark", "2", "complaint", addresses=(second,)), now=now)
    listed = run("bounces", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert (
        "complaint" in lines[2]
        and second in lines[2]
        and "unsubscribed" in lines[2]
        and "postmark" in lines[2]
    )
    assert "soft" in lines[3] and first in lines[3] and "counted" in lines[3] and "4.2.2" in lines[3]
    assert lines[-1] == "2 reports"
    recent = run("bounces", "list", "--since", "1d", "--kind", "complaint", cwd=tmp_path)
    assert recent.stdout.splitlines()[-1] == "1 report" and second in recent.stdout
    assert run("bounces", "list", "--kind", "hard", cwd=tmp_path).stdout.splitlines()[-1] == "0 reports"
    refused = run("bounces", "list", "--since", "last week", cwd=tmp_path)
    assert refused.returncode == 2 and "--since 'last week' is not a date" in refused.stderr
    status = run("status", cwd=tmp_path)
    assert "bounces in the last 30 days: 1 soft, 1 complaint" in status.stdout


def test_an_operator_can_lift_a_suppression_a_bounce_made(sent, tmp_path):
    from tests.test_cli import run

    settings, messages = sent
    first, second, *_ = messages
    take_event(settings, event("hard", "h", addresses=(first,), status="5.1.1", detail="user unknown"))
    take_event(settings, BounceEvent("ses", "c", "complaint", addresses=(second,)))
    lifted = run("subscribers", "unsuppress", first.upper(), cwd=tmp_path)
    assert lifted.returncode == 0, lifted.stderr
    assert (
        lifted.stdout.strip()
        == f"{first.upper()}: no longer suppressed (was: hard bounce (mailbox): 5.1.1 user unknown); active"
    )
    assert state(settings, first) == ("active", False)
    assert "; unsubscribed" in run("subscribers", "unsuppress", second, cwd=tmp_path).stdout
    assert state(settings, second) == ("unsubscribed", False)  # they may sign up again
    again = run("subscribers", "unsuppress", first, cwd=tmp_path)
    assert again.returncode == 2 and "is not suppressed" in again.stderr
