"""Sending as the operator sees it: an edition (digest or one-off) to its recipients, test copies,
previews. Glues rendering, the message template, the ledger and the SMTP workers together; the CLI, the
web app and the scheduler call these functions and nothing below them.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime

import sqlite_utils

from newsletter.db import open_database
from newsletter.deliver import DeliveryReport, Plan, Progress, deliver
from newsletter.devsmtp import EmbeddedSMTPServer
from newsletter.dkim_sign import Signer
from newsletter.editions import Edition, is_ledger_pruned, load_edition, store_one_off
from newsletter.errors import SendError, SubscriberError
from newsletter.ledger import Variant, create_ledger, stored_variants
from newsletter.message import (
    COLD,
    DigestTemplate,
    MessageTemplate,
    ReaderLayout,
    Recipient,
    SharedCards,
    new_message_id,
    personalise_html,
)
from newsletter.preferences import Preferences
from newsletter.reader_digest import ReaderDigests
from newsletter.render import DigestCards, DigestKit, RenderedEmail, Renderer, RenderSettings
from newsletter.settings import Settings, SmtpSettings
from newsletter.smtp import send_single
from newsletter.subscribers import (
    CONFIRMATION_DAYS,
    Subscriber,
    find_subscriber,
    first_active_subscriber,
    normalise_email,
    preference_sets,
)
from newsletter.tokens import Links, ReturnPaths, Tokens, site_secret


def renderer(settings: Settings) -> Renderer:
    return Renderer(RenderSettings(newsletter_name=settings.name, base_url=settings.web.base_url))


def links(settings: Settings, db: sqlite_utils.Database) -> Links:
    return Links(settings.web.base_url, Tokens(site_secret(db, settings.web.secret_key)))


def return_paths(settings: Settings, db: sqlite_utils.Database) -> ReturnPaths:
    """Each delivery's envelope sender: with [bounces] address and VERP, one that names the delivery."""
    return ReturnPaths(
        Tokens(site_secret(db, settings.web.secret_key)),
        settings.sender.envelope_from,
        bounce_address=settings.bounces.address,
        verp=settings.bounces.verp,
    )


def render_edition(
    settings: Settings, edition: Edition, preferences: Preferences | None = None
) -> RenderedEmail | DigestKit:
    """The email of an edition; a digest as the kit each reader's email with ``preferences`` is
    assembled from."""
    if edition.kind == "one-off":
        return renderer(settings).one_off(edition.subject or "", edition.body or "")
    return _digest_kit(settings, edition, preferences)


def _digest_kit(
    settings: Settings, edition: Edition, preferences: Preferences | None, cards: DigestCards | None = None
) -> DigestKit:
    sections = edition.sections if preferences is None else preferences.sections(edition.sections)
    topics = () if preferences is None else (*preferences.categories, *preferences.keywords)
    return renderer(settings).digest(
        edition, sections, cards=cards, for_you=settings.digest.for_you, topics=topics
    )


def message_template(
    settings: Settings,
    edition: Edition,
    preferences: Preferences | None = None,
    *,
    cards: DigestCards | None = None,
    shared: SharedCards | None = None,
    dkim: Signer | None = None,
) -> MessageTemplate:
    """The message of an edition as readers with ``preferences`` get it: a one-off's, or a digest's
    (``cards`` and ``shared``: what the variants of one digest have in common, when already made);
    signed by ``dkim`` if given."""
    if edition.kind == "one-off":
        rendered = render_edition(settings, edition)
        return MessageTemplate(rendered, settings.sender, dkim=dkim)  # type: ignore[arg-type]
    kit = _digest_kit(settings, edition, preferences, cards)
    return DigestTemplate(
        kit, settings.sender, f"{settings.web.base_url.rstrip('/')}/feedback/", shared=shared, dkim=dkim
    )


def dkim_signer(settings: Settings) -> Signer | None:
    """The signer of every message sent ([dkim]); None when signing is off. A key that cannot be used
    is a ``DkimKeyError`` naming the file, before anything is sent."""
    return Signer.from_settings(settings.dkim)


class VariantTemplates:
    """The message template of each preference set, rendered on first use; the most recent few are kept
    (the ledger is sent in variant order, so each is rendered about once). A digest's cards are rendered
    and encoded once for all its variants."""

    def __init__(
        self,
        settings: Settings,
        edition: Edition,
        variants: dict[str, Preferences | None],
        dkim: Signer | None = None,
    ) -> None:
        self._settings = settings
        self._dkim = dkim
        self._edition = edition
        self._variants = variants
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, MessageTemplate] = OrderedDict()
        self._cards: DigestCards | None = None
        self._shared: SharedCards = {}

    def __call__(self, variant: str) -> MessageTemplate:
        with self._lock:
            if variant in self._cache:
                self._cache.move_to_end(variant)
                return self._cache[variant]
            if self._edition.kind != "one-off" and self._cards is None:
                self._cards = renderer(self._settings).digest_cards(self._edition)
            template = message_template(
                self._settings,
                self._edition,
                self._variants.get(variant),
                cards=self._cards,
                shared=self._shared,
                dkim=self._dkim,
            )
            self._cache[variant] = template
            if len(self._cache) > TEMPLATE_CACHE:
                self._cache.popitem(last=False)
            return template


TEMPLATE_CACHE = 32


def plan_variants(db: sqlite_utils.Database, edition: Edition) -> dict[str, Variant] | None:
    """The distinct preference sets among a digest's recipients and what each gets; None for one-offs."""
    if edition.kind == "one-off":
        return None
    variants: dict[str, Variant] = {}
    for categories, keywords, empty_digest, excluded in preference_sets(db, edition.frequency):
        preferences = Preferences.from_row(
            categories, keywords, empty_digest=empty_digest, exclude_keywords=excluded
        )
        papers = sum(len(section.papers) for section in preferences.sections(edition.sections))
        variants[preferences.variant] = Variant(categories, keywords, empty_digest, papers, excluded)
    return variants


def variant_preferences(db: sqlite_utils.Database, edition_id: int) -> dict[str, Preferences | None]:
    """The preferences each variant of the edition's ledger is rendered for (None: the whole edition)."""
    return {
        key: Preferences.from_row(
            v.categories_json,
            v.keywords_json,
            empty_digest=v.empty_digest,
            exclude_keywords=v.exclude_keywords_json,
        )
        if key
        else None
        for key, v in stored_variants(db, edition_id).items()
    }


@contextmanager
def smtp_target(settings: Settings) -> Iterator[SmtpSettings]:
    """The SMTP settings to send with; for ``host = "embedded"`` the built-in server runs meanwhile."""
    if not settings.smtp.embedded:
        yield settings.smtp
        return
    server = EmbeddedSMTPServer(settings.smtp.maildir, port=settings.smtp.port).start()
    try:
        yield replace(
            settings.smtp, host=server.host, port=server.port, starttls=False, tls=False, username=""
        )
    finally:
        server.stop()


def send_edition(
    settings: Settings,
    edition_id: int,
    *,
    progress: Progress | None = None,
    resend_unknown: bool = False,
    interrupt: threading.Event | None = None,
) -> DeliveryReport:
    """Send an edition to its recipients; a re-run (or ``resume``) sends only what is not final."""
    signer = dkim_signer(settings)  # a key that cannot be used stops the send before it starts
    db = open_database(settings.database, create=False)  # no database: nothing to send, say so
    try:
        edition = _edition(db, edition_id)
        if is_ledger_pruned(db, edition_id):
            raise SendError(
                f"edition {edition_id} went out long ago and its delivery records were pruned: "
                "sending it again could reach readers twice"
            )
        if edition.kind == "digest":
            create_ledger(
                db,
                edition_id,
                message_domain=settings.sender.domain,
                variants=plan_variants(db, edition),
                frequency=edition.frequency,
            )
        # One-off messages got their ledger (their segment) when they were created.
        templates = VariantTemplates(settings, edition, variant_preferences(db, edition_id), signer)
        link_maker = links(settings, db)
        envelopes = return_paths(settings, db)
    finally:
        db.close()
    plan = None
    if edition.kind == "digest":
        plan = _planner(reader_digests(settings, edition), edition_id, templates, progress)
    with smtp_target(settings) as smtp, _long_lived():
        return deliver(
            settings.database,
            edition_id,
            templates,
            link_maker,
            smtp,
            progress=progress,
            resend_unknown=resend_unknown,
            interrupt=interrupt,
            plan=plan,
            return_paths=envelopes,
        )


def reader_digests(settings: Settings, edition: Edition, now: datetime | None = None) -> ReaderDigests:
    """What each reader's copy of a digest holds; signals weigh by their age at ``now`` (the send)."""
    return ReaderDigests(edition, limit=settings.digest.for_you, now=now or datetime.now(UTC))


@contextmanager
def _long_lived() -> Iterator[None]:
    """A send builds large structures that live as long as it does (the edition's cards and their
    encodings, the ranker) and then makes many short-lived objects: Python's cyclic garbage collector
    would scan the former again and again, which costs half the time of laying out readers' copies.
    They are frozen out of its sight once built, and given back at the end."""
    try:
        yield
    finally:
        gc.unfreeze()


def _planner(
    digests: ReaderDigests, edition_id: int, templates: VariantTemplates, progress: Progress | None
) -> Plan:
    def plan(db: sqlite_utils.Database, stop: threading.Event) -> None:
        def kit_of(variant: str) -> DigestKit:
            template = templates(variant)
            assert isinstance(template, DigestTemplate)
            return template.kit

        def planned(count: int) -> None:
            gc.freeze()  # the ranker and the cards are built by now: see _long_lived
            if progress is not None:
                for _ in range(count):
                    progress("planned")

        digests.plan(db, edition_id, kit_of, planned, stop)
        gc.freeze()

    return plan


def send_test_copy(settings: Settings, edition_id: int, address: str) -> str:
    """One copy to ``address``, outside the ledger: what the edition will look like in a real inbox."""
    email, message = copy_message(settings, edition_id, address)
    with smtp_target(settings) as smtp:
        return send_single(smtp, settings.sender.envelope_from, email, message)


def copy_message(settings: Settings, edition_id: int, address: str) -> tuple[str, bytes]:
    """The whole message ``address`` gets of the edition (as a subscriber with their "For you", or as
    someone who is not one, signed as every message is), and the address as normalised."""
    try:
        email = normalise_email(address)
    except SubscriberError as exc:
        raise SendError(str(exc)) from None
    signer = dkim_signer(settings)
    db = open_database(settings.database, create=False)  # no database: nothing to send, say so
    try:
        edition = _edition(db, edition_id)
        subscriber = find_subscriber(db, email)
        template, recipient, layout = _copy_for(settings, db, edition, email, subscriber, signer)
        if isinstance(template, DigestTemplate):
            return email, template.render(recipient, layout=layout)
        return email, template.render(recipient)
    finally:
        db.close()


def preview_html(settings: Settings, edition_id: int, address: str | None = None) -> str:
    """The HTML a subscriber gets: ``address``'s if given, else the first active subscriber's."""
    db = open_database(settings.database, create=False)  # no database: nothing to send, say so
    try:
        edition = _edition(db, edition_id)
        subscriber = None
        if address:
            subscriber = find_subscriber(db, address)
            if subscriber is None:
                raise SendError(f"{address} is not a subscriber")
        else:
            subscriber = first_active_subscriber(db)
        email = subscriber.email if subscriber else "reader@example.org"
        template, recipient, layout = _copy_for(settings, db, edition, email, subscriber)
        if isinstance(template, DigestTemplate):
            return template.html(recipient, layout)
        return personalise_html(render_edition(settings, edition), recipient)  # type: ignore[arg-type]
    finally:
        db.close()


def create_one_off(settings: Settings, subject: str, body: str, segment: str = "all") -> int:
    """Store a one-off message as an edition whose ledger holds the segment's active subscribers."""
    subject = " ".join(subject.split())
    if not subject:
        raise SendError("the subject is empty")
    if not body.strip():
        raise SendError("the message body is empty")
    renderer(settings).one_off(subject, body)  # fails now, not halfway through a send
    db = open_database(settings.database, create=False)  # no database: nothing to send, say so
    try:
        target = _segment(db, segment)
        edition_id = store_one_off(db, subject, body, segment)
        create_ledger(db, edition_id, message_domain=settings.sender.domain, only=target)  # all in variant ""
        return edition_id
    finally:
        db.close()


def _segment(db: sqlite_utils.Database, segment: str) -> list[int] | None:
    if segment == "all":
        return None
    try:
        subscriber = find_subscriber(db, segment)
    except SubscriberError:
        raise SendError(f"unknown segment {segment!r}: use 'all' or a subscriber's address") from None
    if subscriber is None or subscriber.status != "active":
        raise SendError(f"{segment} is not an active subscriber")
    return [subscriber.id]


def _edition(db: sqlite_utils.Database, edition_id: int) -> Edition:
    try:
        return load_edition(db, edition_id)
    except LookupError as exc:
        raise SendError(str(exc)) from None


def _copy_for(
    settings: Settings,
    db: sqlite_utils.Database,
    edition: Edition,
    email: str,
    subscriber: Subscriber | None,
    dkim: Signer | None = None,
) -> tuple[MessageTemplate, Recipient, ReaderLayout]:
    """The edition as ``subscriber`` (or someone at ``email`` who is not one) gets it, outside the ledger:
    their preferences, their "For you" and order, their links."""
    preferences = subscriber.preferences if subscriber else None
    template = message_template(settings, edition, preferences, dkim=dkim)
    link_maker = links(settings, db)
    recipient = _recipient(settings, link_maker, email, subscriber, "test")
    layout = COLD
    if isinstance(template, DigestTemplate) and subscriber is not None:
        recipient = replace(
            recipient, feedback_token=link_maker.feedback_token(subscriber.id, email, edition.id)
        )
        layouts = reader_digests(settings, edition).layouts(db, [(subscriber.id, template.kit)])
        layout = layouts.get(subscriber.id, COLD)
    return template, recipient, layout


def _recipient(
    settings: Settings, link_maker: Links, email: str, subscriber: Subscriber | None, purpose: str
) -> Recipient:
    subscriber_id = subscriber.id if subscriber else 0
    return Recipient(
        email=email,
        name=subscriber.name if subscriber else "",
        preferences_url=link_maker.preferences(subscriber_id, email),
        unsubscribe_url=link_maker.unsubscribe(subscriber_id, email),
        message_id=new_message_id(settings.sender.domain, purpose, subscriber_id),
    )


def send_signup_email(settings: Settings, subscriber: Subscriber, kind: str) -> str:
    """The email a sign-up leads to: the confirmation link, or, for a reader who is already subscribed,
    a note with their preferences link (the web page says the same in both cases).

    Anybody can type any address and name into the form, so these emails carry no name: not in the
    greeting, not in the To header."""
    signer = dkim_signer(settings)
    db = open_database(settings.database, create=False)  # no database: nothing to send, say so
    try:
        link_maker = links(settings, db)
    finally:
        db.close()
    recipient = replace(_recipient(settings, link_maker, subscriber.email, subscriber, "signup"), name="")
    if kind == "confirm":
        rendered = renderer(settings).confirmation(
            name="",
            confirm_url=link_maker.confirm(subscriber.id, subscriber.email),
            expires_in=f"{CONFIRMATION_DAYS} days",
        )
        message = MessageTemplate(rendered, settings.sender, dkim=signer).render(recipient)
    else:
        body = (
            f"Someone, hopefully you, asked to subscribe this address to {settings.name}. It already "
            "receives it, so nothing changed.\n\nTo choose your topics or how often you hear from us, use "
            "the preferences link below."
        )
        rendered = renderer(settings).one_off(f"You already receive {settings.name}", body)
        message = MessageTemplate(rendered, settings.sender, dkim=signer).render(recipient)
    with smtp_target(settings) as smtp:
        return send_single(smtp, settings.sender.envelope_from, subscriber.email, message)
