"""What each relay sends to its webhook, signed as the relay signs it, with keys made for one test; and an
HTTPS server on 127.0.0.1 that serves an SNS signing certificate and answers SubscribeURLs, as AWS does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from tests.support.tls import server_certificate

TOPIC = "arn:aws:sns:us-east-1:123456789012:newsletter-bounces"


class CertServer:
    """HTTPS on 127.0.0.1 (a self-signed certificate, ``ca_file`` trusts it): GET ``path`` answers
    ``files[path]``; every request's path is kept in ``requests``."""

    def __init__(self, directory: Path) -> None:
        self.ca_file, context = server_certificate(directory)
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = server.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("content-length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"https://{self.host}{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def cert_server(directory: Path) -> Iterator[CertServer]:
    server = CertServer(directory)
    try:
        yield server
    finally:
        server.stop()


def signing_certificate(common_name: str = "sns.amazonaws.com") -> tuple[rsa.RSAPrivateKey, bytes]:
    """An RSA key and a self-signed certificate for it (PEM), like the one SNS signs with."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    return key, certificate.public_bytes(serialization.Encoding.PEM)


SNS_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}


def sns_sign(
    message: dict[str, Any], key: rsa.RSAPrivateKey, cert_url: str, version: str = "1"
) -> dict[str, Any]:
    """``message`` with SignatureVersion, Signature and SigningCertURL, signed as SNS signs."""
    text = "".join(f"{n}\n{message[n]}\n" for n in SNS_FIELDS[message["Type"]] if message.get(n) is not None)
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(text.encode(), padding.PKCS1v15(), digest)
    return message | {
        "SignatureVersion": version,
        "Signature": base64.b64encode(signature).decode(),
        "SigningCertURL": cert_url,
    }


def sns_timestamp(seconds_ago: float = 0) -> str:
    moment = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def sns_notification(ses: dict[str, Any], *, topic: str = TOPIC, seconds_ago: float = 0) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": topic,
        "Message": json.dumps(ses),
        "Timestamp": sns_timestamp(seconds_ago),
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }


def ses_bounce(
    address: str, *, bounce_type: str = "Permanent", message_id: str | None = None
) -> dict[str, Any]:
    """An SES bounce notification, as SES publishes it to SNS."""
    headers = [{"name": "Message-ID", "value": message_id}] if message_id else []
    return {
        "notificationType": "Bounce",
        "bounce": {
            "feedbackId": f"0100{secrets.token_hex(8)}-bounce-000000",
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": address,
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
            "timestamp": "2026-01-27T14:59:38.237Z",
            "reportingMTA": "dsn; a27-23.smtp-out.us-west-2.amazonses.com",
        },
        "mail": {
            "timestamp": "2026-01-27T14:59:37.000Z",
            "source": "digest@example.org",
            "messageId": "0000014644fe5ef6-9a483358-9170-4cb4-a269-f5dcdf415321-000000",
            "destination": [address],
            "headers": headers,
        },
    }


def ses_complaint(address: str) -> dict[str, Any]:
    return {
        "notificationType": "Complaint",
        "complaint": {
            "feedbackId": f"0100{secrets.token_hex(8)}-complaint-000000",
            "complainedRecipients": [{"emailAddress": address}],
            "complaintFeedbackType": "abuse",
            "timestamp": "2026-01-27T15:00:00.000Z",
        },
        "mail": {"messageId": "0000014644fe5ef6", "destination": [address]},
    }


def postmark_bounce(
    address: str, *, kind: str = "HardBounce", record_id: int | None = None
) -> dict[str, Any]:
    return {
        "RecordType": "Bounce",
        "ID": record_id or secrets.randbelow(10**12),
        "Type": kind,
        "TypeCode": 1,
        "Name": "Hard bounce",
        "MessageID": str(uuid.uuid4()),
        "MessageStream": "outbound",
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": address,
        "From": "digest@example.org",
        "BouncedAt": "2026-01-27T16:33:54.9070259Z",
    }


def basic_auth(username: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def mailgun_body(
    signing_key: str,
    event_data: dict[str, Any],
    *,
    timestamp: int | None = None,
    token: str | None = None,
) -> bytes:
    """A Mailgun webhook request's JSON body, signed with ``signing_key``."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    token = token or secrets.token_hex(25)
    signature = hmac.new(signing_key.encode(), f"{stamp}{token}".encode(), hashlib.sha256).hexdigest()
    body = {
        "signature": {"timestamp": stamp, "token": token, "signature": signature},
        "event-data": event_data,
    }
    return json.dumps(body).encode()


def mailgun_failed(address: str, *, severity: str = "permanent") -> dict[str, Any]:
    return {
        "event": "failed",
        "id": secrets.token_urlsafe(16),
        "timestamp": time.time(),
        "severity": severity,
        "reason": "bounce",
        "recipient": address,
        "message": {"headers": {"message-id": "20260127.1.abc@example.org", "to": address}},
        "delivery-status": {
            "code": 550,
            "message": "5.1.1 The email account that you tried to reach does not exist",
            "description": "",
        },
    }


class SendGridKey:
    """The key pair of SendGrid's signed event webhook: ``public_key`` as SendGrid shows it (base64 DER)."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        der = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self.private.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "content-type": "application/json",
            "x-twilio-email-event-webhook-signature": base64.b64encode(signature).decode(),
            "x-twilio-email-event-webhook-timestamp": stamp,
        }


def sendgrid_events(*records: dict[str, Any]) -> bytes:
    return json.dumps(list(records)).encode()


def sendgrid_event(address: str, event: str = "bounce", **more: Any) -> dict[str, Any]:
    return {
        "email": address,
        "timestamp": int(time.time()),
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "event": event,
        "sg_event_id": secrets.token_urlsafe(16),
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "reason": "500 unknown recipient",
        "status": "5.0.0",
        "type": "bounce",
    } | more
