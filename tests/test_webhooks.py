"""Relay webhooks: each provider's signed events are read into bounce events, and forged, altered or replayed
requests are refused. The keys are made by each test; the SNS signing certificate is served over HTTPS from
127.0.0.1 (tests/support/relays.py), whose host the test's [webhooks] allows explicitly."""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path

import httpx
import pytest

from newsletter.bounces import list_bounces
from newsletter.config import load_settings
from newsletter.db import open_database
from newsletter.errors import ConfigError
from newsletter.relay_events import Received, Refused, RelayEvents
from newsletter.settings import Settings
from newsletter.subscribers import add_subscriber
from newsletter.web import create_app
from tests.support.relays import (
    TOPIC,
    CertServer,
    SendGridKey,
    basic_auth,
    cert_server,
    mailgun_body,
    mailgun_failed,
    postmark_bounce,
    sendgrid_event,
    sendgrid_events,
    ses_bounce,
    ses_complaint,
    signing_certificate,
    sns_notification,
    sns_sign,
    sns_timestamp,
)
from tests.support.webserver import RunningApp
from tests.test_bounce_policy import state as reader_state

MAILGUN_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
POSTMARK = ("postmark-hook", "correct horse battery staple")
READER = "gone@example.net"


def settings_with(tmp_path: Path, webhooks: str, environ: dict[str, str] | None = None) -> Settings:
    config = tmp_path / "newsletter.toml"
    config.write_text(
        '[newsletter]\ndatabase = "news.db"\n[web]\nbase_url = "http://127.0.0.1:8000"\n'
        f'secret_key = "test-secret-key-0123456789"\n[webhooks]\n{webhooks}\n'
    )
    return load_settings(config, environ=environ or {})


@pytest.fixture
def certs(tmp_path: Path):
    """The HTTPS server with an SNS signing certificate at /SimpleNotificationService.pem."""
    directory = tmp_path / "tls"
    directory.mkdir()
    with cert_server(directory) as server:
        key, pem = signing_certificate()
        server.files["/SimpleNotificationService.pem"] = pem
        server.files["/confirm"] = b"<ConfirmSubscriptionResponse/>"
        server.signing_key = key  # type: ignore[attr-defined]
        yield server


def ses_config(certs: CertServer) -> str:
    return (
        f'ses_topic_arns = ["{TOPIC}"]\nses_certificate_hosts = ["{certs.host}"]\n'
        f'ses_ca_file = "{certs.ca_file}"\n'
    )


def signed(
    certs: CertServer, message: dict, version: str = "1", path: str = "/SimpleNotificationService.pem"
):
    return json.dumps(sns_sign(message, certs.signing_key, certs.url(path), version)).encode()


# --- configuration --------------------------------------------------------------------------------------------


def test_every_provider_is_off_until_configured(tmp_path: Path) -> None:
    relay = RelayEvents(settings_with(tmp_path, "").webhooks)
    for provider in ("ses", "postmark", "mailgun", "sendgrid", "other"):
        assert not relay.configured(provider)
        with pytest.raises(Refused) as refused:
            relay.read(provider, {}, b"{}")
        assert refused.value.status == 404


def test_secrets_come_from_the_environment(tmp_path: Path) -> None:
    key = SendGridKey()
    settings = settings_with(
        tmp_path,
        f'postmark_username = "{POSTMARK[0]}"',
        environ={
            "NEWSLETTER_WEBHOOKS_POSTMARK_PASSWORD": POSTMARK[1],
            "NEWSLETTER_WEBHOOKS_MAILGUN_SIGNING_KEY": MAILGUN_KEY,
            "NEWSLETTER_WEBHOOKS_SENDGRID_PUBLIC_KEY": key.public_key,
        },
    )
    hooks = settings.webhooks
    assert (hooks.postmark_password, hooks.mailgun_signing_key, hooks.sendgrid_public_key) == (
        POSTMARK[1],
        MAILGUN_KEY,
        key.public_key,
    )
    assert [hooks.configured(p) for p in ("ses", "postmark", "mailgun", "sendgrid")] == [
        False,
        True,
        True,
        True,
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('ses_topic_arns = ["arn:aws:s3:::bucket"]', "is not an SNS topic ARN"),
        ('ses_certificate_hosts = ["https://example.org/"]', "is not a host name or host:port"),
        ('postmark_username = "hook"', "postmark_password is not"),
        ('postmark_password = "secret-password"', "postmark_username is not"),
        ('sendgrid_public_key = "bm90IGEga2V5"', "ECDSA P-256"),
        ("replay_window = 0", "at least 1"),
    ],
)
def test_mistakes_in_webhooks_are_refused_with_their_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        settings_with(tmp_path, text)
    assert "newsletter.toml:7" in str(error.value)
    assert "secret-password" not in str(error.value)


def test_a_sendgrid_key_in_pem_armour_is_accepted(tmp_path: Path) -> None:
    key = SendGridKey()
    pem = f"-----BEGIN PUBLIC KEY-----\\n{key.public_key[:40]}\\n{key.public_key[40:]}\\n-----END PUBLIC KEY-----"
    assert (
        settings_with(tmp_path, f'sendgrid_public_key = "{pem}"').webhooks.sendgrid_public_key
        == key.public_key
    )


# --- Amazon SES through SNS -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_signed_ses_bounce_is_read(tmp_path: Path, certs: CertServer, version: str) -> None:
    relay = RelayEvents(settings_with(tmp_path, ses_config(certs)).webhooks)
    notification = ses_bounce(READER, message_id="<digest.42@example.org>")
    received = relay.read("ses", {}, signed(certs, sns_notification(notification), version))
    (event,) = received.events
    assert (event.source, event.kind, event.addresses) == ("ses", "hard", (READER,))
    assert event.source_id == notification["bounce"]["feedbackId"]
    assert (event.message_id, event.status) == ("<digest.42@example.org>", "5.1.1")
    assert event.detail == "smtp; 550 5.1.1 user unknown"
    assert event.occurred_at is not None and event.occurred_at.year == 2026


def test_ses_kinds_and_the_certificate_fetched_once(tmp_path: Path, certs: CertServer) -> None:
    relay = RelayEvents(settings_with(tmp_path, ses_config(certs)).webhooks)
    kinds = []
    for ses in (
        ses_bounce(READER, bounce_type="Transient"),
        ses_bounce(READER, bounce_type="Undetermined"),
        ses_complaint(READER),
    ):
        kinds += [event.kind for event in relay.read("ses", {}, signed(certs, sns_notification(ses))).events]
    assert kinds == ["soft", "unknown", "complaint"]
    delivery = {"notificationType": "Delivery", "delivery": {"recipients": [READER]}, "mail": {}}
    assert relay.read("ses", {}, signed(certs, sns_notification(delivery))) == Received("ses", ignored=1)
    assert certs.requests == ["/SimpleNotificationService.pem"]


def test_an_ses_event_publishing_bounce_is_read(tmp_path: Path, certs: CertServer) -> None:
    relay = RelayEvents(settings_with(tmp_path, ses_config(certs)).webhooks)
    event = ses_bounce(READER)
    event["eventType"] = event.pop("notificationType")
    (read,) = relay.read("ses", {}, signed(certs, sns_notification(event))).events
    assert (read.kind, read.addresses) == ("hard", (READER,))


def subscription(certs: CertServer, subscribe_url: str) -> dict:
    return {
        "Type": "SubscriptionConfirmation",
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3beb71854e285d6ad02428b09ceece29417f1f02d609c582afbacc99c583a916b9981dd2728f4ae6fdb82efd087cc3b7849e05798d2d2785c03b0879594eeac82c01f235d0e717736",
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
        "SubscribeURL": subscribe_url,
        "Timestamp": sns_timestamp(),
    }


def test_a_signed_subscription_is_confirmed_by_fetching_its_subscribe_url(
    tmp_path: Path, certs: CertServer
) -> None:
    relay = RelayEvents(settings_with(tmp_path, ses_config(certs)).webhooks)
    received = relay.read("ses", {}, signed(certs, subscription(certs, certs.url("/confirm"))))
    assert received.note == f"subscription to {TOPIC} confirmed"
    assert received.events == ()
    assert certs.requests == ["/SimpleNotificationService.pem", "/confirm"]


def test_a_subscribe_url_elsewhere_or_unsigned_is_never_fetched(tmp_path: Path, certs: CertServer) -> None:
    relay = RelayEvents(settings_with(tmp_path, ses_config(certs)).webhooks)
    elsewhere = signed(certs, subscription(certs, f"https://localhost:{certs.port}/confirm"))
    with pytest.raises(Refused, match="SubscribeURL is not https on an allowed host"):
        relay.read("ses", {}, elsewhere)
    altered = json.loads(signed(certs, subscription(certs, certs.url("/confirm"))))
    altered["SubscribeURL"] = certs.url("/confirm?again")
    with pytest.raises(Refused, match="does not verify"):
        relay.read("ses", {}, json.dumps(altered).encode())
    assert "/confirm" not in certs.requests and "/confirm?again" not in certs.requests


def flipped(signature: str) -> str:
    raw = bytearray(base64.b64decode(signature))
    raw[10] ^= 0xFF
    return base64.b64encode(raw).decode()


def forged_sns(tmp_path: Path, certs: CertServer) -> dict[str, tuple[bytes, str]]:
    """Requests that must be refused, and the words of the refusal."""
    message = sns_notification(ses_bounce(READER))
    good = json.loads(signed(certs, message))
    altered = good | {"Message": json.dumps(ses_bounce("someone.else@example.net"))}
    other_key, other_pem = signing_certificate()
    certs.files["/other.pem"] = other_pem
    wrong_key = sns_sign(message, other_key, certs.url("/SimpleNotificationService.pem"))
    return {
        "altered body": (json.dumps(altered).encode(), "does not verify"),
        "bad signature": (
            json.dumps(good | {"Signature": flipped(good["Signature"])}).encode(),
            "does not verify",
        ),
        "wrong key": (json.dumps(wrong_key).encode(), "does not verify"),
        "cert host not allowed": (
            signed(certs, message).replace(certs.host.encode(), f"localhost:{certs.port}".encode()),
            "SigningCertURL is not https on an allowed host",
        ),
        "aws-looking host on another port": (
            json.dumps(
                sns_sign(message, certs.signing_key, "https://sns.us-east-1.amazonaws.com:8443/x.pem")
            ).encode(),
            "SigningCertURL is not https on an allowed host",
        ),
        "http cert url": (
            json.dumps(
                sns_sign(message, certs.signing_key, f"http://{certs.host}/SimpleNotificationService.pem")
            ).encode(),
            "SigningCertURL is not https",
        ),
        "wrong topic": (
            signed(certs, sns_notification(ses_bounce(READER), topic=TOPIC.replace("bounces", "other"))),
            "not one of [webhooks] ses_topic_arns",
        ),
        "old timestamp": (
            signed(certs, sns_notification(ses_bounce(READER), seconds_ago=2 * 3600)),
            "too far",
        ),
        "signature version 3": (json.dumps(good | {"SignatureVersion": "3"}).encode(), "is not 1 or 2"),
    }


def test_forged_sns_messages_are_refused(tmp_path: Path, certs: CertServer) -> None:
    relay = RelayEvents(settings_with(tmp_path, ses_config(certs)).webhooks)
    for name, (body, words) in forged_sns(tmp_path, certs).items():
        with pytest.raises(Refused) as refused:
            relay.read("ses", {}, body)
        assert refused.value.status == 403, name
        assert words in refused.value.reason, name
    # Only the allowed host was ever asked, and only for the certificate.
    assert set(certs.requests) == {"/SimpleNotificationService.pem"}


def test_raw_message_delivery_and_broken_bodies_are_refused(tmp_path: Path, certs: CertServer) -> None:
    relay = RelayEvents(settings_with(tmp_path, ses_config(certs)).webhooks)
    with pytest.raises(Refused, match="raw message delivery is not signed") as refused:
        relay.read("ses", {"X-Amz-Sns-Rawdelivery": "true"}, json.dumps(ses_bounce(READER)).encode())
    assert refused.value.status == 403
    for body in (b"{not json", b"[]", b'{"Type": "Notification"}', b'{"Type": ["x"]}'):
        with pytest.raises(Refused) as refused:
            relay.read("ses", {}, body)
        assert refused.value.status == 400
    assert certs.requests == []


# --- Postmark -------------------------------------------------------------------------------------------------


def postmark_relay(tmp_path: Path) -> RelayEvents:
    return RelayEvents(
        settings_with(
            tmp_path, f'postmark_username = "{POSTMARK[0]}"\npostmark_password = "{POSTMARK[1]}"'
        ).webhooks
    )


def test_postmark_bounces_and_complaints_with_basic_auth(tmp_path: Path) -> None:
    relay = postmark_relay(tmp_path)
    record = postmark_bounce(READER, record_id=4323372036854775807)
    (event,) = relay.read("postmark", basic_auth(*POSTMARK), json.dumps(record).encode()).events
    assert (event.source, event.source_id, event.kind, event.addresses) == (
        "postmark",
        "4323372036854775807",
        "hard",
        (READER,),
    )
    assert event.status == "5.1.1" and event.occurred_at is not None
    kinds = {}
    for kind in ("SoftBounce", "Transient", "AutoResponder", "SpamNotification", "ManuallyDeactivated"):
        body = json.dumps(postmark_bounce(READER, kind=kind)).encode()
        kinds[kind] = relay.read("postmark", basic_auth(*POSTMARK), body).events[0].kind
    assert kinds == {
        "SoftBounce": "soft",
        "Transient": "soft",
        "AutoResponder": "auto_reply",
        "SpamNotification": "soft",
        "ManuallyDeactivated": "unknown",
    }
    complaint = postmark_bounce(READER, kind="SpamComplaint") | {"RecordType": "SpamComplaint"}
    assert (
        relay.read("postmark", basic_auth(*POSTMARK), json.dumps(complaint).encode()).events[0].kind
        == "complaint"
    )
    delivery = {"RecordType": "Delivery", "Recipient": READER, "MessageID": "x"}
    assert relay.read("postmark", basic_auth(*POSTMARK), json.dumps(delivery).encode()) == Received(
        "postmark", ignored=1
    )


def test_postmark_without_the_right_password_is_refused(tmp_path: Path) -> None:
    relay = postmark_relay(tmp_path)
    body = json.dumps(postmark_bounce(READER)).encode()
    for headers in (
        {},
        basic_auth(POSTMARK[0], "wrong"),
        basic_auth("other", POSTMARK[1]),
        basic_auth(POSTMARK[0], POSTMARK[1] + "x"),
        {"authorization": "Bearer " + POSTMARK[1]},
        {"authorization": "Basic %%%"},
    ):
        with pytest.raises(Refused) as refused:
            relay.read("postmark", headers, body)
        assert refused.value.status == 401
        assert POSTMARK[1] not in refused.value.reason
    with pytest.raises(Refused) as refused:
        relay.read("postmark", basic_auth(*POSTMARK), b"\xff not json")
    assert refused.value.status == 400


# --- Mailgun --------------------------------------------------------------------------------------------------


def mailgun_relay(tmp_path: Path) -> RelayEvents:
    return RelayEvents(settings_with(tmp_path, f'mailgun_signing_key = "{MAILGUN_KEY}"').webhooks)


def test_mailgun_failures_and_complaints(tmp_path: Path) -> None:
    relay = mailgun_relay(tmp_path)
    failed = mailgun_failed(READER)
    (event,) = relay.read("mailgun", {}, mailgun_body(MAILGUN_KEY, failed)).events
    assert (event.source, event.source_id, event.kind, event.addresses) == (
        "mailgun",
        failed["id"],
        "hard",
        (READER,),
    )
    assert (event.message_id, event.status) == ("<20260127.1.abc@example.org>", "5.1.1")
    assert "does not exist" in event.detail
    soft = relay.read("mailgun", {}, mailgun_body(MAILGUN_KEY, mailgun_failed(READER, severity="temporary")))
    complained = {"event": "complained", "id": "c-1", "recipient": READER, "timestamp": time.time()}
    complaint = relay.read("mailgun", {}, mailgun_body(MAILGUN_KEY, complained))
    delivered = {"event": "delivered", "id": "d-1", "recipient": READER}
    other = relay.read("mailgun", {}, mailgun_body(MAILGUN_KEY, delivered))
    assert [soft.events[0].kind, complaint.events[0].kind, other.events, other.ignored] == [
        "soft",
        "complaint",
        (),
        1,
    ]


def test_forged_and_replayed_mailgun_requests_are_refused(tmp_path: Path) -> None:
    relay = mailgun_relay(tmp_path)
    failed = mailgun_failed(READER)
    token = "b" * 50
    good = mailgun_body(MAILGUN_KEY, failed, token=token)
    altered = json.loads(good)
    altered["signature"]["timestamp"] = str(int(altered["signature"]["timestamp"]) + 1)
    cases = {
        "wrong key": (mailgun_body("key-someone-else", failed), "does not verify"),
        "altered timestamp": (json.dumps(altered).encode(), "does not verify"),
        "old timestamp": (
            mailgun_body(MAILGUN_KEY, failed, timestamp=int(time.time()) - 301),
            "replay window",
        ),
        "future timestamp": (
            mailgun_body(MAILGUN_KEY, failed, timestamp=int(time.time()) + 301),
            "replay window",
        ),
        "no signature": (json.dumps({"event-data": failed}).encode(), "signature"),
    }
    for name, (body, words) in cases.items():
        with pytest.raises(Refused) as refused:
            relay.read("mailgun", {}, body)
        assert refused.value.status in (400, 403), name
        assert words in refused.value.reason, name
    assert relay.read("mailgun", {}, good).events
    with pytest.raises(Refused, match="used before") as refused:
        relay.read("mailgun", {}, good)
    assert refused.value.status == 403


def test_a_mailgun_token_given_back_may_be_used_again(tmp_path: Path) -> None:
    relay = mailgun_relay(tmp_path)
    body = mailgun_body(MAILGUN_KEY, mailgun_failed(READER))
    received = relay.read("mailgun", {}, body)
    relay.release(received)
    assert relay.read("mailgun", {}, body).events == received.events


# --- SendGrid -------------------------------------------------------------------------------------------------


def test_a_signed_sendgrid_batch_is_read(tmp_path: Path) -> None:
    key = SendGridKey()
    relay = RelayEvents(settings_with(tmp_path, f'sendgrid_public_key = "{key.public_key}"').webhooks)
    records = [
        sendgrid_event("a@example.net"),
        sendgrid_event("b@example.net", type="blocked"),
        sendgrid_event("c@example.net", "deferred"),
        sendgrid_event("d@example.net", "dropped", reason="Bounced Address"),
        sendgrid_event("e@example.net", "dropped", reason="Unsubscribed Address"),
        sendgrid_event("f@example.net", "spamreport"),
        sendgrid_event("g@example.net", "delivered"),
        sendgrid_event("h@example.net", "open"),
    ]
    body = sendgrid_events(*records)
    received = relay.read("sendgrid", key.headers(body), body)
    assert [(e.addresses[0][0], e.kind) for e in received.events] == [
        ("a", "hard"),
        ("b", "soft"),
        ("c", "soft"),
        ("d", "hard"),
        ("e", "unknown"),
        ("f", "complaint"),
    ]
    assert received.ignored == 2
    first = received.events[0]
    assert (first.source, first.source_id) == ("sendgrid", records[0]["sg_event_id"])
    assert (first.message_id, first.status) == ("<14c5d75ce93.dfd.64b469@ismtpd-555>", "5.0.0")


def test_forged_and_old_sendgrid_requests_are_refused(tmp_path: Path) -> None:
    key = SendGridKey()
    relay = RelayEvents(settings_with(tmp_path, f'sendgrid_public_key = "{key.public_key}"').webhooks)
    body = sendgrid_events(sendgrid_event(READER))
    headers = key.headers(body)
    cases = {
        "altered body": (headers, body.replace(READER.encode(), b"someone@example.net")),
        "wrong key": (SendGridKey().headers(body), body),
        "altered timestamp": (
            headers | {"x-twilio-email-event-webhook-timestamp": str(int(time.time()) + 1)},
            body,
        ),
        "old timestamp": (key.headers(body, timestamp=int(time.time()) - 301), body),
        "no signature": ({}, body),
        "signature not base64": (headers | {"x-twilio-email-event-webhook-signature": "%%%"}, body),
    }
    for name, (sent_headers, sent_body) in cases.items():
        with pytest.raises(Refused) as refused:
            relay.read("sendgrid", sent_headers, sent_body)
        assert refused.value.status == 403, name
    not_json = b"[{"
    with pytest.raises(Refused) as refused:
        relay.read("sendgrid", key.headers(not_json), not_json)
    assert refused.value.status == 400


def test_event_fields_from_outside_are_checked_and_kept_on_one_line(tmp_path: Path) -> None:
    key = SendGridKey()
    relay = RelayEvents(settings_with(tmp_path, f'sendgrid_public_key = "{key.public_key}"').webhooks)
    record = sendgrid_event(
        "x@example.net\r\nBcc: all@example.net",
        reason="550 no\r\nX-Injected: yes" + "z" * 5000,
        **{"smtp-id": "<a>\r\nX: y", "timestamp": "not a time", "status": ["5.1.1"]},
    )
    body = sendgrid_events(record, sendgrid_event(["list"], type=["x"]), sendgrid_event(READER, reason=7))
    events = relay.read("sendgrid", key.headers(body), body).events
    assert events[0].addresses == () and events[0].message_id is None and events[0].occurred_at is None
    assert "\n" not in events[0].detail and "\r" not in events[0].detail and len(events[0].detail) == 500
    assert events[0].status == ""
    assert events[1].addresses == () and events[1].kind == "hard"
    assert events[2].addresses == (READER,) and events[2].detail == ""


# --- the web app: end to end ------------------------------------------------------------------------------------

OTHERS = ("stays@example.net", "also.stays@example.org")


@pytest.fixture
def served(tmp_path: Path, certs: CertServer):
    """The web app on a real port with every provider configured, and three active readers."""
    sendgrid = SendGridKey()
    settings = settings_with(
        tmp_path,
        ses_config(certs)
        + f'postmark_username = "{POSTMARK[0]}"\npostmark_password = "{POSTMARK[1]}"\n'
        + f'mailgun_signing_key = "{MAILGUN_KEY}"\nsendgrid_public_key = "{sendgrid.public_key}"\n',
    )
    db = open_database(settings.database)
    for address in (READER, *OTHERS):
        add_subscriber(db, address)
    db.close()
    app = RunningApp(create_app(settings, send_signups=False))
    yield Served(settings, app, certs, sendgrid)
    app.stop()


class Served:
    def __init__(self, settings: Settings, app: RunningApp, certs: CertServer, sendgrid: SendGridKey) -> None:
        self.settings, self.app, self.certs, self.sendgrid = settings, app, certs, sendgrid

    def post(self, provider: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        headers = {"content-type": "application/json"} | (headers or {})
        return httpx.post(f"{self.app.url}/webhooks/{provider}", content=body, headers=headers, timeout=30)

    def tables(self) -> dict[str, list[tuple]]:
        """Every row of every table: what "nothing changed" compares."""
        db = open_database(self.settings.database)
        try:
            names = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {
                name: sorted(map(repr, db.execute(f"SELECT * FROM [{name}]").fetchall())) for name in names
            }
        finally:
            db.close()

    def state(self, address: str) -> tuple[str, bool]:
        return reader_state(self.settings, address)

    def bounces(self) -> list[tuple[str, str, str]]:
        db = open_database(self.settings.database)
        try:
            return [(b.source, b.kind, b.email) for b in list_bounces(db)]
        finally:
            db.close()


def bounce_request(served: Served, provider: str, address: str = READER) -> tuple[bytes, dict[str, str]]:
    """A signed request from ``provider`` reporting a hard bounce of ``address``."""
    if provider == "ses":
        return signed(served.certs, sns_notification(ses_bounce(address))), {}
    if provider == "postmark":
        return json.dumps(postmark_bounce(address)).encode(), basic_auth(*POSTMARK)
    if provider == "mailgun":
        return mailgun_body(MAILGUN_KEY, mailgun_failed(address)), {}
    body = sendgrid_events(sendgrid_event(address), sendgrid_event(OTHERS[0], "delivered"))
    return body, served.sendgrid.headers(body)


@pytest.mark.parametrize("provider", ["ses", "postmark", "mailgun", "sendgrid"])
def test_a_signed_bounce_suppresses_exactly_that_reader(served: Served, provider: str, caplog) -> None:
    body, headers = bounce_request(served, provider)
    caplog.set_level(logging.INFO, logger="newsletter.web.webhooks")
    answer = served.post(provider, body, headers)
    assert (answer.status_code, answer.text) == (200, "ok\n")
    assert "set-cookie" not in answer.headers
    assert served.state(READER) == ("bounced", True)
    assert [served.state(address) for address in OTHERS] == [("active", False)] * 2
    assert served.bounces() == [(provider, "hard", READER)]
    lines = [r.getMessage() for r in caplog.records if r.name == "newsletter.web.webhooks"]
    assert lines == [
        f"webhook {provider}: 1 event(s) taken, 0 seen before, {int(provider == 'sendgrid')} of other kinds"
    ]
    # The same event again (a provider's retry, or a replay that passes its checks) changes nothing.
    before = served.tables()
    if provider == "mailgun":  # a token is taken once: the same event, signed again with a new token
        body = mailgun_body(MAILGUN_KEY, json.loads(body)["event-data"])
    again = served.post(provider, body, headers)
    assert again.status_code == 200
    assert served.tables() == before


def test_a_complaint_unsubscribes_the_reader(served: Served) -> None:
    answer = served.post("ses", signed(served.certs, sns_notification(ses_complaint(READER))))
    assert answer.status_code == 200
    assert served.state(READER) == ("unsubscribed", True)
    assert served.bounces() == [("ses", "complaint", READER)]


Request = tuple[str, bytes, dict[str, str], int]  # provider, body, headers, the status it is answered with


def forged_requests(served: Served, tmp_path: Path) -> tuple[dict[str, Request], bytes]:
    """Requests that must be refused, and a Mailgun request to be sent twice."""
    cases = {
        f"ses {name}": ("ses", body, {}, 403)
        for name, (body, _words) in forged_sns(tmp_path, served.certs).items()
    }
    failed = mailgun_failed(READER)
    replayed_token = mailgun_body(MAILGUN_KEY, mailgun_failed(OTHERS[1]), token="t" * 50)
    sendgrid_body = sendgrid_events(sendgrid_event(READER))
    postmark_body = json.dumps(postmark_bounce(READER)).encode()
    cases |= {
        "postmark wrong password": ("postmark", postmark_body, basic_auth(POSTMARK[0], "wrong"), 401),
        "postmark no auth": ("postmark", postmark_body, {}, 401),
        "mailgun wrong key": ("mailgun", mailgun_body("key-someone-else", failed), {}, 403),
        "mailgun old timestamp": (
            "mailgun",
            mailgun_body(MAILGUN_KEY, failed, timestamp=int(time.time()) - 3600),
            {},
            403,
        ),
        "sendgrid altered body": (
            "sendgrid",
            sendgrid_body.replace(READER.encode(), OTHERS[0].encode()),
            served.sendgrid.headers(sendgrid_body),
            403,
        ),
        "sendgrid wrong key": ("sendgrid", sendgrid_body, SendGridKey().headers(sendgrid_body), 403),
        "sendgrid old timestamp": (
            "sendgrid",
            sendgrid_body,
            served.sendgrid.headers(sendgrid_body, timestamp=int(time.time()) - 3600),
            403,
        ),
    }
    return cases, replayed_token


def test_forged_and_replayed_requests_are_refused_with_nothing_changed(
    served: Served, tmp_path: Path
) -> None:
    cases, replayed_token = forged_requests(served, tmp_path)
    assert served.post("mailgun", replayed_token).status_code == 200  # the token's first, genuine use
    assert served.state(OTHERS[1]) == ("bounced", True)
    before = served.tables()
    cases["mailgun reused token"] = ("mailgun", replayed_token, {}, 403)
    for name, (provider, body, headers, status) in cases.items():
        answer = served.post(provider, body, headers)
        assert answer.status_code == status, name
        if status == 401:
            assert answer.headers["www-authenticate"] == 'Basic realm="webhooks"'
    assert served.tables() == before
    assert served.state(READER) == ("active", False)
    assert set(served.certs.requests) == {"/SimpleNotificationService.pem"}  # no other host or file asked


def test_broken_or_oversized_bodies_change_nothing(served: Served) -> None:
    before = served.tables()
    assert served.post("postmark", b"{not json", basic_auth(*POSTMARK)).status_code == 400
    assert served.post("ses", b"[1, 2").status_code == 400
    big = b"[" + b" " * 1_000_001 + b"]"
    answer = served.post("sendgrid", big, served.sendgrid.headers(big))
    assert answer.status_code == 413
    assert served.tables() == before


def test_a_subscription_is_confirmed_through_the_web_app(served: Served) -> None:
    answer = served.post(
        "ses", signed(served.certs, subscription(served.certs, served.certs.url("/confirm")))
    )
    assert answer.status_code == 200
    assert "/confirm" in served.certs.requests


def test_webhooks_not_configured_are_not_found(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, f'mailgun_signing_key = "{MAILGUN_KEY}"')
    app = RunningApp(create_app(settings, send_signups=False))
    try:
        for provider in ("ses", "postmark", "sendgrid", "other"):
            answer = httpx.post(f"{app.url}/webhooks/{provider}", content=b"{}", timeout=10)
            assert answer.status_code == 404, provider
        assert httpx.get(f"{app.url}/webhooks/mailgun", timeout=10).status_code == 405
        assert httpx.post(f"{app.url}/webhooks/mailgun", content=b"{}", timeout=10).status_code == 400
    finally:
        app.stop()
