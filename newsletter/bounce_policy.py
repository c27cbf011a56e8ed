"""What a bounce or complaint does, from whichever source it came: whom it is about, and the policy.

Whom: the delivery its envelope sender names (VERP, signed, so that a forged bounce cannot name a
reader), else the delivery whose Message-ID it quotes, else the readers among the addresses it names.
Then ``[bounces]``'s policy: a hard bounce suppresses the address at once, except a refusal for policy
reasons (status 5.7.x: blocked as spam, the sender not authorised), which says something about the list's
mail rather than the address and counts like a soft bounce; a complaint suppresses it and
unsubscribes the reader; soft bounces suppress it once they fall on ``soft_limit`` different days within
``soft_days`` days (older ones no longer count, so an address that bounced now and then stays); auto-replies
and unknown messages are kept for the record and change nothing. A report is taken once: taking it again
finds it stored and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlite_utils

from newsletter import bounces
from newsletter.bounces import Attribution
from newsletter.db import write_transaction
from newsletter.errors import SubscriberError
from newsletter.ledger import DeliveryRef, delivery_by_id, delivery_by_message_id, latest_delivery_to
from newsletter.models import BounceEvent
from newsletter.outbox import return_paths
from newsletter.settings import Settings
from newsletter.subscribers import Subscriber, complained, find_subscriber, suppress
from newsletter.tokens import ReturnPaths

REASON_CHARS = 200  # of a suppression's reason, which the admin pages show


@dataclass(frozen=True, slots=True)
class TakenReader:
    email: str  # "" when the report named nobody the newsletter mails
    action: str  # one of bounces.ACTIONS
    by: str  # how it was attributed: verp | message-id | address | ""


@dataclass(frozen=True, slots=True)
class Taken:
    """What taking one report did; ``new`` is False when it had been taken before (nothing changed)."""

    event: BounceEvent
    new: bool
    readers: tuple[TakenReader, ...] = ()

    @property
    def kind(self) -> str:
        return self.event.kind


def take(
    db: sqlite_utils.Database,
    settings: Settings,
    event: BounceEvent,
    *,
    paths: ReturnPaths | None = None,
    now: datetime | None = None,
) -> Taken:
    """Attribute ``event``, apply the policy and record it, all in one transaction."""
    now = now or datetime.now(UTC)
    paths = paths or return_paths(settings, db)
    with write_transaction(db):
        if bounces.already_taken(db, event.source, event.source_id):
            return Taken(event, new=False)
        readers = tuple(_apply(db, settings, event, whom, now) for whom in attribute(db, paths, event))
        if not readers:
            bounces.record(db, event, Attribution(email=""), "unmatched", now)
            readers = (TakenReader("", "unmatched", ""),)
    return Taken(event, new=True, readers=readers)


def attribute(db: sqlite_utils.Database, paths: ReturnPaths, event: BounceEvent) -> list[Attribution]:
    """The readers a report is about, each with the delivery it bounced where that is known."""
    for address in event.report_to:
        delivery_id = paths.delivery_of(address)
        if delivery_id is not None and (ref := delivery_by_id(db, delivery_id)) is not None:
            return [_attribution(ref, "verp")]
    if event.message_id and (ref := delivery_by_message_id(db, event.message_id)) is not None:
        return [_attribution(ref, "message-id")]
    found: dict[str, Attribution] = {}
    for address in event.addresses:
        if (ref := latest_delivery_to(db, address)) is not None:
            found.setdefault(ref.email.lower(), _attribution(ref, "address"))
        elif (subscriber := _subscriber(db, address)) is not None:
            found.setdefault(
                subscriber.email.lower(), Attribution(subscriber.email, subscriber.id, by="address")
            )
    return list(found.values())


def _subscriber(db: sqlite_utils.Database, address: str) -> Subscriber | None:
    """The reader with this address; None also for text no sign-up would take as an address."""
    try:
        return find_subscriber(db, address)
    except SubscriberError:
        return None


def _attribution(ref: DeliveryRef, by: str) -> Attribution:
    return Attribution(ref.email, ref.subscriber_id, ref.id, ref.edition_id, by)


def _apply(
    db: sqlite_utils.Database, settings: Settings, event: BounceEvent, whom: Attribution, now: datetime
) -> TakenReader:
    policy = settings.bounces
    what = " ".join(part for part in (event.status, event.detail) if part)
    if event.kind == "hard" and not event.status.startswith("5.7."):
        action = "suppressed"
        suppress(db, whom.email, _reason(f"hard bounce ({event.source})", what), now=now)
    elif event.kind == "complaint":
        action = "unsubscribed"
        complained(db, whom.email, _reason(f"complaint ({event.source})", what), now=now)
    elif event.kind in ("soft", "hard"):  # a hard bounce here is a policy refusal (5.7.x)
        action = "counted"
        bounces.record(db, event, whom, action, now)
        moment = event.occurred_at or now
        days = bounces.soft_bounce_days(db, whom.email, moment - timedelta(days=policy.soft_days))
        if days >= policy.soft_limit:
            suppress(
                db,
                whom.email,
                _reason(f"soft bounces or refusals on {days} days within {policy.soft_days:g}", what),
                now=now,
            )
            bounces.set_action(db, event, whom.email, "suppressed")
            action = "suppressed"
        return TakenReader(whom.email, action, whom.by)
    else:  # auto-replies and the unknown are kept for the record only
        action = "ignored"
    bounces.record(db, event, whom, action, now)
    return TakenReader(whom.email, action, whom.by)


def _reason(what_happened: str, detail: str) -> str:
    text = f"{what_happened}: {detail}" if detail else what_happened
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"
