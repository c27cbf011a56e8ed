"""DKIM: every message the newsletter sends (digests, one-offs, test copies, sign-up emails) arrives at a
real aiosmtpd server signed, and dkimpy verifies each signature with the public key it looks up on a
real DNS server on 127.0.0.1; a message altered after signing fails. `newsletter dkim keygen` writes a key
whose printed record verifies what it signs; a key that cannot be used is one line naming the file."""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
import time
from pathlib import Path

import dkim
import pytest
from dns import resolver as dns_resolver

from newsletter.config import load_settings
from newsletter.db import open_database
from newsletter.dkim_sign import Signer, generate_key, read_key, txt_strings, write_key
from newsletter.errors import DkimKeyError
from newsletter.message import DigestTemplate, MessageTemplate, ReaderLayout, Recipient
from newsletter.outbox import create_one_off, send_edition, send_signup_email, send_test_copy
from newsletter.render import Renderer, RenderSettings
from newsletter.smtp import begin_message, end_message, final_reply, open_smtp, send_content
from newsletter.subscribers import add_subscriber
from tests.support.dns_server import RunningDns, dns_server
from tests.support.smtpserver import ScriptedSMTPServer
from tests.test_cli import run
from tests.test_deliver import edition_with_sample_papers, make_settings, subscribe
from tests.test_personal_digest import SENDER, small_edition

DOMAIN = "example.org"
SELECTOR = "news"
RECORD = f"{SELECTOR}._domainkey.{DOMAIN}"


@pytest.fixture
def smtp_server(tmp_path):
    server = ScriptedSMTPServer(tmp_path / "maildir")
    yield server
    server.stop()


def txt_lookup(dns: RunningDns):
    """dkimpy's ``dnsfunc``: the TXT record, asked of the test's DNS server with dnspython."""
    resolver = dns_resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = dns.port

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        try:
            answer = resolver.resolve(name.decode("ascii"), "TXT", lifetime=timeout)
        except dns_resolver.NXDOMAIN:
            return b""
        return b"".join(next(iter(answer)).strings)

    return lookup


def verifies(raw: bytes, dns: RunningDns) -> bool:
    return dkim.verify(raw, dnsfunc=txt_lookup(dns))


def raw_messages(maildir: Path) -> dict[str, list[bytes]]:
    """Each stored message exactly as received (the server's Delivered-To line first, which is not signed),
    by recipient."""
    found: dict[str, list[bytes]] = {}
    for path in sorted((maildir / "new").iterdir()):
        raw = path.read_bytes()
        recipient = raw.split(b"\r\n", 1)[0].split(b":", 1)[1].strip().decode()
        found.setdefault(recipient, []).append(raw)
    return found


def signing_settings(tmp_path: Path, port: int, kind: str):
    """The test's settings with [dkim] on, a new key of ``kind`` in dkim/news.key; and the key."""
    make_settings(tmp_path, port)
    key = generate_key(kind)
    write_key(key, tmp_path / "dkim" / "news.key")
    config = tmp_path / "newsletter.toml"
    config.write_text(
        config.read_text()
        + f'[dkim]\ndomain = "{DOMAIN}"\nselector = "{SELECTOR}"\nprivate_key_file = "dkim/news.key"\n'
    )
    return load_settings(config, environ={}), key


def signature_of(raw: bytes) -> dict[str, str]:
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    value = "".join(str(message["DKIM-Signature"]).split())
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


def altered(raw: bytes) -> list[bytes]:
    """The message changed after signing: in its body, in a signed header, by a second From."""
    head, body = raw.split(b"\r\n\r\n", 1)
    changed_body = head + b"\r\n\r\n" + body.replace(b"Hello", b"Hallo", 1)
    changed_subject = re.sub(rb"\r\nSubject: ", b"\r\nSubject: Re: ", raw, count=1)
    added_from = raw.replace(b"\r\nTo: ", b"\r\nFrom: Mallory <m@evil.example>\r\nTo: ", 1)
    return [changed_body, changed_subject, added_from]


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_every_digest_copy_verifies_and_altered_copies_fail(tmp_path, smtp_server, kind):
    settings, key = signing_settings(tmp_path, smtp_server.port, kind)
    edition_id = edition_with_sample_papers(settings)
    addresses = subscribe(settings, 4)
    report = send_edition(settings, edition_id)
    assert report.complete and report.counts == {"sent": 4}
    received = raw_messages(smtp_server.maildir)
    assert sorted(received) == sorted(addresses)
    unsubscribe_links = set()
    with dns_server({RECORD: key.record()}) as dns:
        for address in addresses:
            [raw] = received[address]
            tags = signature_of(raw)
            assert tags["a"] == f"{kind}-sha256" and tags["d"] == DOMAIN and tags["s"] == SELECTOR
            assert tags["c"] == "relaxed/simple"
            signed = tags["h"].split(":")
            for field in ("from", "to", "subject", "date", "message-id", "list-unsubscribe", "list-id"):
                assert field in signed
            assert verifies(raw, dns), address
            for bad in altered(raw):
                assert not verifies(bad, dns)
            message = email.message_from_bytes(raw, policy=email.policy.default)
            unsubscribe_links.add(message["List-Unsubscribe"])
    assert len(unsubscribe_links) == 4  # each reader's own links, each copy signed for itself


@pytest.mark.parametrize("url_length", [40, 1500], ids=["7bit", "quoted-printable"])
@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_digests_sent_as_smtp_data_verify_in_either_encoding(tmp_path, smtp_server, kind, url_length):
    """Readers with their own greeting, links, "For you" and order, sent over SMTP as a send does
    (dot-stuffed DATA: lines that start with a dot come out of the server as they were signed)."""
    key = generate_key(kind)
    kit = Renderer(RenderSettings("Research Digest", "https://news.example.org")).digest(
        small_edition(url_length), for_you=8
    )
    template = DigestTemplate(
        kit, SENDER, "https://news.example.org/feedback/", dkim=Signer(DOMAIN, SELECTOR, key)
    )
    layouts = [
        ReaderLayout(),
        ReaderLayout(((4, "Close to “Halo mass”, you liked: halo, mass"),), [[2, 1, 0], [5, 4, 3]]),
        ReaderLayout(((0, "You liked: galaxies"), (3, "Zoë’s")), [[0, 2, 1], [3, 5, 4]]),
    ]
    settings = make_settings(tmp_path, smtp_server.port)
    smtp = open_smtp(settings.smtp)
    try:
        for n, layout in enumerate(layouts):
            recipient = Recipient(
                f"reader{n}@example.org",
                ["Zoë", "Ann", ""][n],
                f"https://news.example.org/p/T{n}",
                f"https://news.example.org/u/T{n}",
                f"<{n}@example.org>",
                f"TOKEN{n}.abc",
            )
            wire = template.wire(recipient, layout=layout)
            assert b"\r\n.." in wire  # lines that had to be dot-stuffed (the frame's CSS has one)
            begin_message(smtp, "digest@example.org", recipient.email)
            send_content(smtp, wire)
            end_message(smtp)
            assert final_reply(smtp)[0] == 250
    finally:
        smtp.close()
    received = raw_messages(smtp_server.maildir)
    with dns_server({RECORD: key.record()}) as dns:
        for n in range(3):
            [raw] = received[f"reader{n}@example.org"]
            transfer = "quoted-printable" if url_length > 40 else "7bit"
            assert f"Content-Transfer-Encoding: {transfer}".encode() in raw
            assert f"TOKEN{n}.abc".encode() in raw.replace(b"=\r\n", b"")
            assert verifies(raw, dns)
            assert not any(verifies(bad, dns) for bad in altered(raw))


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_one_offs_test_copies_and_signup_emails_verify(tmp_path, smtp_server, kind):
    settings, key = signing_settings(tmp_path, smtp_server.port, kind)
    edition_id = edition_with_sample_papers(settings)
    subscribe(settings, 2)
    one_off = create_one_off(settings, "Maintenance on Friday", "The archive is down *briefly*.\n\n.Dot")
    assert send_edition(settings, one_off).complete
    send_test_copy(settings, edition_id, "editor@example.org")
    db = open_database(settings.database)
    pending = add_subscriber(db, "new@example.org", status="pending", source="web").subscriber
    db.close()
    send_signup_email(settings, pending, "confirm")
    send_signup_email(settings, pending, "already")  # the note to an address that already receives it

    received = raw_messages(smtp_server.maildir)
    messages = [
        *received["reader0@example.org"],
        *received["editor@example.org"],
        *received["new@example.org"],
    ]
    assert len(messages) == 4
    with dns_server({RECORD: key.record()}) as dns:
        for raw in messages:
            assert b"DKIM-Signature: " in raw.split(b"\r\n\r\n")[0]
            assert verifies(raw, dns)
            changed = raw.replace(b"\r\nSubject: ", b"\r\nSubject: [SPAM] ", 1)
            assert changed != raw and not verifies(changed, dns)
        # A published record of another key, or none at all: nothing verifies.
        dns.zone.txt[RECORD] = [generate_key(kind).record()]
        assert not any(verifies(raw, dns) for raw in messages)
        del dns.zone.txt[RECORD]
        assert not verifies(messages[0], dns)


def test_without_dkim_nothing_is_signed(tmp_path, smtp_server):
    settings = make_settings(tmp_path, smtp_server.port)
    edition_id = edition_with_sample_papers(settings)
    subscribe(settings, 1)
    assert send_edition(settings, edition_id).complete
    [raw] = raw_messages(smtp_server.maildir)["reader0@example.org"]
    assert b"DKIM-Signature" not in raw


def test_a_key_that_cannot_be_used_stops_a_send_before_it_starts(tmp_path, smtp_server):
    settings, _key = signing_settings(tmp_path, smtp_server.port, "rsa")
    edition_id = edition_with_sample_papers(settings)
    subscribe(settings, 2)
    path = tmp_path / "dkim" / "news.key"

    path.unlink()
    with pytest.raises(DkimKeyError, match=f"DKIM key {re.escape(str(path))}: no such file"):
        send_edition(settings, edition_id)

    path.write_text("not a key\n")
    with pytest.raises(DkimKeyError, match="neither a PEM private key nor an Ed25519 key"):
        send_edition(settings, edition_id)

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ecdsa = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(ecdsa)
    with pytest.raises(DkimKeyError, match="DKIM signs with RSA or Ed25519 keys"):
        send_edition(settings, edition_id)
    assert smtp_server.counts() == {}  # nothing went out unsigned

    # The command line says it in one line, with the file's path, and exit code 2.
    result = run(
        "--config", str(tmp_path / "newsletter.toml"), "digest", "send", str(edition_id), cwd=tmp_path
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("error: DKIM key ") and str(path) in line


def test_a_key_path_that_is_no_file_is_said(tmp_path):
    with pytest.raises(DkimKeyError, match=f"DKIM key {re.escape(str(tmp_path))}: is a directory"):
        read_key(tmp_path)


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_keygen_writes_a_private_key_and_prints_the_record_that_verifies_it(tmp_path, smtp_server, kind):
    settings = make_settings(tmp_path, smtp_server.port)
    config = tmp_path / "newsletter.toml"
    config.write_text(
        config.read_text() + f'[dkim]\ndomain = "{DOMAIN}"\nprivate_key_file = "keys/dkim.key"\n'
    )
    result = run(
        "--config", str(config), "dkim", "keygen", "--kind", kind, "--selector", SELECTOR, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    path = tmp_path / "keys" / "dkim.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_key(path).kind == kind
    lines = result.stdout.splitlines()
    name, record = lines[-2:]  # for a web form: the name, then the value on one line
    assert name == RECORD and record.startswith(f"v=DKIM1; k={kind}; p=")
    zone = "\n".join(lines[:-2])  # for a zone file: the value in strings of at most 255 bytes
    assert zone.startswith(f"{RECORD}. IN TXT (")
    strings = re.findall(r'"([^"]*)"', zone)
    assert "".join(strings) == record and all(len(part) <= 255 for part in strings)
    assert strings == txt_strings(record)

    again = run("--config", str(config), "dkim", "keygen", cwd=tmp_path)  # never overwrites a key
    assert again.returncode == 2 and "exists" in again.stderr and "--force" in again.stderr
    assert read_key(path).public_key() in record

    # Send with the key and the selector of the record, served as printed.
    config.write_text(config.read_text().replace("[dkim]\n", f'[dkim]\nselector = "{SELECTOR}"\n'))
    settings = load_settings(config, environ={})
    edition_id = edition_with_sample_papers(settings)
    subscribe(settings, 1)
    assert send_edition(settings, edition_id).complete
    [raw] = raw_messages(smtp_server.maildir)["reader0@example.org"]
    with dns_server({name: record}) as dns:
        assert dns.query_txt(name) == [record]
        assert verifies(raw, dns)

    forced = run("--config", str(config), "dkim", "keygen", "--kind", kind, "--force", cwd=tmp_path)
    assert forced.returncode == 0 and forced.stdout.splitlines()[-1] != record  # a new key
    assert path.stat().st_mode & 0o777 == 0o600


def test_keygen_needs_somewhere_to_write(tmp_path):
    result = run("dkim", "keygen", cwd=tmp_path)
    assert result.returncode == 2 and "private_key_file" in result.stderr and "--out" in result.stderr
    result = run("dkim", "keygen", "--kind", "ed25519", "--out", "k.key", cwd=tmp_path)
    assert result.returncode == 0 and (tmp_path / "k.key").exists()
    assert "[dkim] domain" in result.stderr  # how to configure what it made


def test_a_template_signs_like_dkimpy_and_both_verify(tmp_path):
    """The signature made from prepared parts and dkimpy's own signature of the same message, with the
    same key file, verify alike (the key file is dkimpy's format)."""
    path = tmp_path / "k.key"
    key = generate_key("rsa")
    write_key(key, path)
    rendered = Renderer(RenderSettings("Research Digest", "https://news.example.org")).one_off("Hi", "Text.")
    recipient = Recipient("a@example.org", "Ann", "https://n/p", "https://n/u", "<1@example.org>")
    plain = MessageTemplate(rendered, SENDER).render(recipient)
    theirs = dkim.sign(plain, SELECTOR.encode(), DOMAIN.encode(), path.read_bytes())
    ours = MessageTemplate(rendered, SENDER, dkim=Signer(DOMAIN, SELECTOR, read_key(path))).render(recipient)
    with dns_server({RECORD: key.record()}) as dns:
        assert verifies(theirs + plain, dns)
        assert verifies(ours, dns)


@pytest.mark.parametrize(
    "body",
    [
        b"line\r\n",
        b"line\r\n\r\n\r\n",  # empty lines at the end do not count
        b".starts with a dot\r\n..two\r\nmiddle\r\n.\r\n",
        b"no final line break",
        b"\r\n",
    ],
)
def test_the_body_hash_is_dkimpys_simple_canonicalisation_dot_stuffed_or_not(body):
    from dkim.canonicalization import Simple

    from newsletter.dkim_sign import _body_hash

    header = b"Subject: x\r\n\r\n"
    expected = hashlib.sha256(Simple.canonicalize_body(body)).digest()
    assert _body_hash(header + body, len(header), False) == expected
    stuffed = (b"\r\n" + body).replace(b"\r\n.", b"\r\n..")[2:]
    assert _body_hash(header + stuffed, len(header), True) == expected


def test_the_signup_sender_keeps_requests_while_the_key_cannot_be_used(tmp_path, smtp_server, caplog):
    from newsletter.preferences import Preferences
    from newsletter.signup_sender import SignupSender
    from newsletter.signups import SignupRequest, enqueue

    settings, _key = signing_settings(tmp_path, smtp_server.port, "ed25519")
    path = tmp_path / "dkim" / "news.key"
    path.unlink()
    db = open_database(settings.database)
    enqueue(db, SignupRequest.create("new@example.org", "", Preferences()))
    db.close()
    SignupSender(settings).drain()
    assert smtp_server.counts() == {}
    assert f"DKIM key {path}: no such file" in caplog.text  # one line in the log, no traceback
    assert "Traceback" not in caplog.text

    key = generate_key("ed25519")
    write_key(key, path)
    time.sleep(0.2)  # the retry is due after [smtp] retry_backoff (0.05 s here)
    SignupSender(settings).drain()
    [raw] = raw_messages(smtp_server.maildir)["new@example.org"]
    with dns_server({RECORD: key.record()}) as dns:
        assert verifies(raw, dns)
