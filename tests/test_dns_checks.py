"""The doctor's DNS checks against a real DNS server on 127.0.0.1 (dnslib): SPF of the envelope domain
permits the sending host (through include, redirect, a, mx, ip4 and ip6, within 10 lookups), the DKIM
record publishes the configured key, DMARC exists for From and aligns; for each, the correct record
passes, and a missing or misaligned one fails with one line saying what to publish."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.config import load_settings
from newsletter.devsmtp import EmbeddedSMTPServer, free_port
from newsletter.dkim_sign import generate_key, write_key
from newsletter.doctor import doctor, sending_domains
from tests.support.dns_server import dns_server
from tests.test_cli import run
from tests.test_deliver import make_settings

HOST = "mail.example.org"
HOST_ADDRESS = "192.0.2.10"
DMARC = {"_dmarc.example.org": "v=DMARC1; p=quarantine; rua=mailto:dmarc@example.org"}
MAIL = {HOST: [HOST_ADDRESS]}


def settings_for(tmp_path: Path, *, host: str = HOST, dkim: str | None = None, bounces: str | None = None,
                 sender: str = "Research Digest <digest@example.org>", kind: str = "rsa"):  # fmt: skip
    """Settings sending through ``host``; with ``dkim`` (a domain), a new key signing as it under the
    selector "news"; with ``bounces``, that bounce address. Returns them and the key (or None)."""
    make_settings(tmp_path, 25, host=host, **{"from": sender})
    config = tmp_path / "newsletter.toml"
    key = None
    extra = ""
    if dkim:
        key = generate_key(kind)
        write_key(key, tmp_path / "news.key", force=True)
        extra += f'[dkim]\ndomain = "{dkim}"\nselector = "news"\nprivate_key_file = "news.key"\n'
    if bounces:
        extra += f'[bounces]\naddress = "{bounces}"\n'
    config.write_text(config.read_text() + extra)
    return load_settings(config, environ={}), key


def checks(settings, dns) -> dict[str, tuple[bool, bool, str]]:
    """Each DNS-related check by name: (passed, warning, detail)."""
    return {
        check.name: (check.ok, check.warning, check.detail)
        for check in sending_domains(settings, dns_server=dns.address).checks
    }


# --- SPF ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("records", "a", "aaaa", "mx"),
    [
        ({"example.org": "v=spf1 ip4:192.0.2.0/24 -all"}, MAIL, {}, {}),
        ({"example.org": "v=spf1 include:_spf.relay.example.net ~all",
          "_spf.relay.example.net": "v=spf1 ip4:198.51.100.0/24 ip4:192.0.2.10 -all"}, MAIL, {}, {}),
        ({"example.org": "v=spf1 redirect=_spf.example.org", "_spf.example.org": "v=spf1 a:mail.example.org -all"},
         MAIL, {}, {}),
        ({"example.org": "v=spf1 mx -all"}, {**MAIL, "mx1.example.org": ["203.0.113.1"]}, {},
         {"example.org": ["mx1.example.org", HOST]}),
        ({"example.org": "v=spf1 a:out.example.org/24 -all"}, {**MAIL, "out.example.org": ["192.0.2.99"]}, {}, {}),
        ({"example.org": "v=spf1 ip6:2001:db8::/32 -all"}, {}, {HOST: ["2001:db8::25"]}, {}),
    ],
    ids=["ip4", "include", "redirect-a", "mx", "a-cidr", "ip6"],
)  # fmt: skip
def test_spf_that_permits_the_sending_host_passes(tmp_path, records, a, aaaa, mx):
    settings, _ = settings_for(tmp_path)
    with dns_server({**records, **DMARC}, a, aaaa=aaaa, mx=mx) as dns:
        ok, warning, detail = checks(settings, dns)["spf"]
    assert ok and not warning, detail
    assert detail.startswith(f"example.org's SPF record permits [smtp] host {HOST}")


def test_spf_missing_or_not_permitting_the_host_says_what_to_publish(tmp_path):
    settings, _ = settings_for(tmp_path)
    with dns_server(DMARC, MAIL) as dns:
        ok, _, detail = checks(settings, dns)["spf"]
        assert not ok
        assert detail.startswith(
            f'example.org has no SPF record: publish TXT at example.org "v=spf1 ip4:{HOST_ADDRESS} ~all"'
        )

        dns.zone.add_txt("example.org", "v=spf1 ip4:203.0.113.0/24 -all")
        ok, _, detail = checks(settings, dns)["spf"]
        assert not ok
        assert (
            f"does not permit [smtp] host {HOST} ({HOST_ADDRESS} fail): add ip4:{HOST_ADDRESS} before its all"
            in detail
        )

        dns.zone.txt["example.org"] = ["v=spf1 ip4:203.0.113.0/24 ~all"]
        assert f"({HOST_ADDRESS} softfail)" in checks(settings, dns)["spf"][2]

        dns.zone.add_txt("example.org", "v=spf1 -all")  # two records: receivers take neither
        ok, _, detail = checks(settings, dns)["spf"]
        assert not ok and "has 2 SPF records; receivers accept exactly one" in detail


def test_spf_beyond_ten_lookups_or_with_a_missing_include_cannot_be_evaluated(tmp_path):
    settings, _ = settings_for(tmp_path)
    chain = {f"_spf{n}.example.org": f"v=spf1 include:_spf{n + 1}.example.org -all" for n in range(11)}
    chain["_spf11.example.org"] = "v=spf1 ip4:192.0.2.10 -all"
    with dns_server({"example.org": "v=spf1 include:_spf0.example.org -all", **chain, **DMARC}, MAIL) as dns:
        ok, _, detail = checks(settings, dns)["spf"]
        assert not ok and "more than 10 DNS lookups" in detail
        dns.zone.txt["example.org"] = ["v=spf1 include:_spf.nowhere.example.net -all"]
        ok, _, detail = checks(settings, dns)["spf"]
        assert not ok and "includes _spf.nowhere.example.net, which has no SPF record" in detail


def test_spf_is_checked_for_the_bounce_address_domain(tmp_path):
    settings, _ = settings_for(tmp_path, bounces="bounces@bounce.example.net")
    with dns_server({"example.org": "v=spf1 -all", "bounce.example.net": "v=spf1 ip4:192.0.2.10 -all", **DMARC},
                    MAIL) as dns:  # fmt: skip
        ok, _, detail = checks(settings, dns)["spf"]
    assert ok and detail.startswith("bounce.example.net's SPF record permits")


def test_a_server_on_this_machine_gets_a_reminder_not_a_verdict(tmp_path):
    settings, _ = settings_for(tmp_path, host="127.0.0.1")
    with dns_server({"example.org": "v=spf1 mx -all", **DMARC}) as dns:
        ok, warning, detail = checks(settings, dns)["spf"]
    assert (
        ok and warning and "127.0.0.1 is this machine: it must permit this machine's public address" in detail
    )


# --- DKIM -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_the_dkim_record_must_publish_the_configured_key(tmp_path, kind):
    settings, key = settings_for(tmp_path, dkim="example.org", kind=kind)
    assert key is not None
    spf = {"example.org": "v=spf1 ip4:192.0.2.10 -all"}
    with dns_server({**spf, **DMARC}, MAIL) as dns:
        result = checks(settings, dns)
        assert result["dkim"][0] and f"signing as d=example.org s=news ({kind}-sha256" in result["dkim"][2]
        ok, _, detail = result["dkim-dns"]
        assert not ok
        assert detail.startswith(
            f'no DKIM record at news._domainkey.example.org: publish TXT at news._domainkey.example.org "{key.record()}"'
        )

        dns.zone.add_txt("news._domainkey.example.org", key.record())
        ok, _, detail = checks(settings, dns)["dkim-dns"]
        assert ok and detail == f"news._domainkey.example.org publishes the configured {kind} key"

        other = generate_key(kind)
        dns.zone.txt["news._domainkey.example.org"] = [other.record()]
        ok, _, detail = checks(settings, dns)["dkim-dns"]
        assert not ok and "the record's public key (p=) is not the configured key's" in detail
        assert key.record() in detail

        wrong_kind = generate_key("ed25519" if kind == "rsa" else "rsa")
        dns.zone.txt["news._domainkey.example.org"] = [wrong_kind.record()]
        ok, _, detail = checks(settings, dns)["dkim-dns"]
        assert not ok and f"the configured key is {kind}" in detail


def test_a_dkim_key_that_cannot_be_read_is_one_line_with_its_path(tmp_path):
    settings, _ = settings_for(tmp_path, dkim="example.org")
    (tmp_path / "news.key").write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    with dns_server(DMARC, MAIL) as dns:
        result = checks(settings, dns)
    ok, _, detail = result["dkim"]
    assert not ok and detail == f"DKIM key {tmp_path / 'news.key'}: is not a readable PEM private key"
    assert "dkim-dns" not in result  # nothing to compare the record with


# --- DMARC ----------------------------------------------------------------------------------------------


def test_dmarc_exists_and_aligns_through_dkim_or_spf(tmp_path):
    settings, key = settings_for(tmp_path, dkim="example.org")
    assert key is not None
    records = {"example.org": "v=spf1 ip4:192.0.2.10 -all", "news._domainkey.example.org": key.record()}
    with dns_server({**records, **DMARC}, MAIL) as dns:
        ok, _, detail = checks(settings, dns)["dmarc"]
    assert ok and detail == (
        "_dmarc.example.org (p=quarantine, adkim=r, aspf=r): From example.org aligns through DKIM d=example.org "
        "and SPF of example.org"
    )


def test_dmarc_missing_says_what_to_publish(tmp_path):
    settings, _ = settings_for(tmp_path, sender="Digest <digest@news.example.co.uk>")
    with dns_server({"news.example.co.uk": "v=spf1 ip4:192.0.2.10 -all"}, MAIL) as dns:
        ok, _, detail = checks(settings, dns)["dmarc"]
        assert not ok and detail == (
            "no DMARC record at _dmarc.news.example.co.uk nor _dmarc.example.co.uk: publish TXT at "
            '_dmarc.example.co.uk "v=DMARC1; p=none; rua=mailto:postmaster@example.co.uk" (then quarantine '
            "once reports look right)"
        )
        # The organisational domain's record covers its subdomains (its sp= when it has one).
        dns.zone.add_txt("_dmarc.example.co.uk", "v=DMARC1; p=reject; sp=quarantine")
        ok, _, detail = checks(settings, dns)["dmarc"]
        assert ok and detail.startswith(
            "_dmarc.example.co.uk (p=quarantine, adkim=r, aspf=r): From news.example.co.uk"
        )


def test_dmarc_misaligned_from_fails_with_what_to_change(tmp_path):
    settings, key = settings_for(tmp_path, dkim="other.example.net", bounces="bounces@bounce.example.net")
    assert key is not None
    records = {
        "bounce.example.net": "v=spf1 ip4:192.0.2.10 -all",
        "news._domainkey.other.example.net": key.record(),
        **DMARC,
    }
    with dns_server(records, MAIL) as dns:
        result = checks(settings, dns)
        assert result["spf"][0] and result["dkim-dns"][0]  # each passes on its own...
        ok, _, detail = result["dmarc"]
        assert not ok  # ...but neither is the From's domain
        assert detail == (
            "_dmarc.example.org (p=quarantine, adkim=r, aspf=r): From example.org aligns with neither DKIM "
            'd=other.example.net nor the envelope domain bounce.example.net: set [dkim] domain = "example.org"'
        )


def test_strict_alignment_needs_the_same_name(tmp_path):
    settings, key = settings_for(tmp_path, dkim="example.org", sender="Digest <digest@news.example.org>")
    assert key is not None
    records = {"news.example.org": "v=spf1 -all", "news._domainkey.example.org": key.record()}
    with dns_server({**records, "_dmarc.example.org": "v=DMARC1; p=reject"}, MAIL) as dns:
        ok, _, detail = checks(settings, dns)["dmarc"]
        assert ok and "aligns through DKIM d=example.org" in detail  # relaxed: the same organisation
        dns.zone.txt["_dmarc.example.org"] = ["v=DMARC1; p=reject; adkim=s"]
        ok, _, detail = checks(settings, dns)["dmarc"]
        assert not ok and "adkim=s" in detail and 'set [dkim] domain = "news.example.org"' in detail


# --- the doctor as a whole --------------------------------------------------------------------------------


def test_doctor_with_a_dns_server_that_does_not_answer_says_so_in_one_line(tmp_path):
    server = EmbeddedSMTPServer(tmp_path / "maildir").start()
    try:
        settings = make_settings(tmp_path, server.port)
        port = free_port()  # nothing listens there
        diagnosis = doctor(settings, dns_server=f"127.0.0.1:{port}")
    finally:
        server.stop()
    [dns] = [check for check in diagnosis.checks if check.name == "dns"]
    assert not dns.ok and dns.detail == (
        f"no answer from the DNS server 127.0.0.1 port {port} within 2 s: SPF, DKIM and DMARC records not checked"
    )
    assert not any(check.name in ("spf", "dmarc") for check in diagnosis.checks)


def test_doctor_without_a_dns_server_asks_nothing_about_reserved_or_embedded(tmp_path):
    settings = make_settings(tmp_path, 25)  # digest@example.org: reserved for examples
    [dns] = [check for check in sending_domains(settings).checks if check.name == "dns"]
    assert dns.ok and dns.warning and "example.org is reserved for examples" in dns.detail


def test_doctor_command_checks_dns_against_the_named_server(tmp_path):
    server = EmbeddedSMTPServer(tmp_path / "maildir").start()
    try:
        settings = make_settings(tmp_path, server.port)
        config = tmp_path / "newsletter.toml"
        key = generate_key("ed25519")
        write_key(key, tmp_path / "news.key")
        config.write_text(
            config.read_text()
            + '[dkim]\ndomain = "example.org"\nselector = "news"\nprivate_key_file = "news.key"\n'
        )
        from newsletter.db import open_database

        open_database(settings.database).close()
        records = {"example.org": "v=spf1 mx -all", "news._domainkey.example.org": key.record(), **DMARC}
        with dns_server(records) as dns:
            result = run("--config", str(config), "doctor", "--dns-server", dns.address, cwd=tmp_path)
            assert "Traceback" not in result.stderr
            lines = result.stdout.splitlines()
            assert any(
                line.strip().startswith("ok dkim-dns: news._domainkey.example.org publishes")
                for line in lines
            )
            assert any(
                line.strip().startswith("ok dmarc: _dmarc.example.org (p=quarantine") for line in lines
            )
            assert any(
                line.strip().startswith("warning spf: example.org has an SPF record") for line in lines
            )
            assert result.returncode == 0, result.stdout

            del dns.zone.txt["_dmarc.example.org"]
            result = run("--config", str(config), "doctor", "--dns-server", dns.address, cwd=tmp_path)
            assert result.returncode == 1 and "some checks failed" in result.stderr
            [line] = [line for line in result.stdout.splitlines() if "dmarc:" in line]
            assert line.strip().startswith("FAILED dmarc: no DMARC record at _dmarc.example.org: publish TXT")

        bad = run("--config", str(config), "doctor", "--dns-server", "nowhere:99999", cwd=tmp_path)
        assert "Traceback" not in bad.stderr and "FAILED dns: --dns-server 'nowhere:99999'" in bad.stdout
    finally:
        server.stop()
