"""What DNS says about sending as a domain (dnspython): does its SPF record permit the sending host, does
the DKIM record publish the configured key, does a DMARC record exist and align with From. Each check is
a ``Finding``: passed or not, and in one line what was found or what to publish.

The SPF evaluation is RFC 7208's check_host() for the mechanisms a sender's record uses (all, include,
a, mx, ip4, ip6, exists; ptr is never a match, as the RFC advises against it) and the redirect modifier,
within the limit of 10 DNS lookups; a record with macros is said to be beyond this check. DMARC's
organisational domain comes from the Public Suffix List (publicsuffixlist, which ships it).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from functools import lru_cache

import dns.exception
import dns.name
import dns.rdata
import dns.resolver
from publicsuffixlist import PublicSuffixList

from newsletter.dkim_sign import DkimKey, record_name, record_problem

TIMEOUT = 2.0  # seconds for each question, all tries included
LOOKUP_LIMIT = 10  # RFC 7208 4.6.4: DNS lookups one SPF evaluation may cause
MX_LIMIT = 10
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DnsUnreachable(Exception):
    """No answer at all (a timeout, no name server): nothing can be said about the records."""


@dataclass(frozen=True, slots=True)
class Finding:
    name: str
    ok: bool
    detail: str
    warning: bool = False


def resolver(server: str | None = None, timeout: float = TIMEOUT) -> dns.resolver.Resolver:
    """The system's resolver, or one that asks only ``server`` ("HOST", "HOST:PORT", "[IPv6]:PORT"):
    a split-horizon or authoritative server. ``ValueError`` for a server that cannot be used."""
    if server is None:
        try:
            chosen = dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            raise ValueError("this machine has no DNS resolver configured: give --dns-server") from None
    else:
        host, port = _host_port(server)
        chosen = dns.resolver.Resolver(configure=False)
        chosen.nameservers = [host]
        chosen.port = port
    chosen.timeout = timeout
    chosen.lifetime = timeout
    return chosen


def _host_port(server: str) -> tuple[str, int]:
    match = re.fullmatch(
        r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?|([0-9A-Fa-f:]+)", server.strip()
    )
    if not match:
        raise ValueError(f"--dns-server {server!r}: give HOST, HOST:PORT or [IPv6]:PORT")
    host = match.group(1) or match.group(3) or match.group(5)
    port = int(match.group(2) or match.group(4) or 53)
    if not 0 < port < 65536:
        raise ValueError(f"--dns-server {server!r}: the port must be 1 to 65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:  # a name: the system's resolver finds the server's address
            host = socket.getaddrinfo(host, port, proto=socket.IPPROTO_UDP)[0][4][0]
        except OSError as exc:
            raise ValueError(f"--dns-server {server!r}: cannot find its address ({exc.strerror})") from None
    return host, port


class Lookups:
    """The questions the checks ask, with their answers: none for a name or a type that does not exist,
    ``DnsUnreachable`` when no answer came at all."""

    def __init__(self, chosen: dns.resolver.Resolver) -> None:
        self.resolver = chosen

    def _answer(self, name: str, kind: str) -> list[dns.rdata.Rdata]:
        try:
            return list(self.resolver.resolve(name, kind, search=False))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.YXDOMAIN):
            return []
        except (dns.exception.SyntaxError, dns.name.NameTooLong):  # a name no record can have
            return []
        except dns.exception.Timeout:
            raise DnsUnreachable(
                f"no answer from {self._server()} within {self.resolver.lifetime:g} s"
            ) from None
        except dns.resolver.NoNameservers as exc:
            raise DnsUnreachable(
                f"{self._server()} answered with an error for {name} ({exc.kwargs.get('errors') or kind})"
            ) from None

    def _server(self) -> str:
        servers = ", ".join(str(server) for server in self.resolver.nameservers)
        port = self.resolver.port
        return f"the DNS server {servers}" + (f" port {port}" if port != 53 else "")

    def txt(self, name: str) -> list[str]:
        """Each TXT record, its strings joined."""
        return [
            b"".join(record.strings).decode("ascii", "replace")  # type: ignore[attr-defined]
            for record in self._answer(name, "TXT")
        ]

    def addresses(self, name: str) -> list[IPAddress]:
        found = [ipaddress.ip_address(record.address) for record in self._answer(name, "A")]  # type: ignore[attr-defined]
        found += [ipaddress.ip_address(record.address) for record in self._answer(name, "AAAA")]  # type: ignore[attr-defined]
        return found

    def mx(self, name: str) -> list[str]:
        records = sorted(self._answer(name, "MX"), key=lambda record: record.preference)  # type: ignore[attr-defined]
        return [str(record.exchange).rstrip(".") for record in records]  # type: ignore[attr-defined]


# --- SPF ------------------------------------------------------------------------------------------------


class SpfError(Exception):
    """permerror: the record cannot be evaluated; the message says why."""


_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9._-]*)=(.*)")
_MECHANISM = re.compile(r"([+?~-]?)([A-Za-z0-9]+)(?::([^/]*))?(?:/(\d+))?(?://(\d+))?")
_QUALIFIERS = {"+": "pass", "": "pass", "-": "fail", "~": "softfail", "?": "neutral"}


def shown(record: str, limit: int = 300) -> str:
    """A record from DNS as a line may show it: printable ASCII only, at most ``limit`` characters."""
    text = "".join(character if " " <= character <= "~" else "?" for character in record)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def spf_records(lookups: Lookups, domain: str) -> list[str]:
    return [record for record in lookups.txt(domain) if re.match(r"(?i)v=spf1(\s|$)", record)]


def check_host(lookups: Lookups, ip: IPAddress, domain: str) -> str:
    """RFC 7208's result for mail from ``domain`` sent by ``ip``: pass, fail, softfail, neutral or none;
    ``SpfError`` for permerror; ``DnsUnreachable`` for temperror."""
    return _SpfEvaluation(lookups, ip).check(domain)


class _SpfEvaluation:
    def __init__(self, lookups: Lookups, ip: IPAddress) -> None:
        self.lookups = lookups
        self.ip = ip
        self.count = 0

    def _lookup(self) -> None:
        self.count += 1
        if self.count > LOOKUP_LIMIT:
            raise SpfError(f"it needs more than {LOOKUP_LIMIT} DNS lookups, which receivers refuse")

    def check(self, domain: str) -> str:
        records = spf_records(self.lookups, domain)
        if not records:
            return "none"
        if len(records) > 1:
            raise SpfError(f"{domain} has {len(records)} SPF records; receivers accept exactly one")
        redirect = None
        for term in records[0].split()[1:]:
            modifier = _MODIFIER.fullmatch(term)
            if modifier:
                if modifier.group(1).lower() == "redirect":
                    redirect = self._domain(modifier.group(2), domain)
                continue
            mechanism = _MECHANISM.fullmatch(term)
            if not mechanism:
                raise SpfError(f"{domain}'s SPF record has a term that cannot be read: {shown(term, 60)!r}")
            qualifier, name, argument, cidr4, cidr6 = mechanism.groups()
            if self._matches(name.lower(), argument, cidr4, cidr6, domain):
                return _QUALIFIERS[qualifier]
        if redirect is not None:
            self._lookup()
            result = self.check(redirect)
            if result == "none":
                raise SpfError(f"{domain}'s SPF record redirects to {redirect}, which has none")
            return result
        return "neutral"

    def _domain(self, argument: str | None, current: str) -> str:
        if argument is None or argument == "":
            return current
        if "%" in argument:
            raise SpfError(f"it uses macros ({shown(argument, 60)}), which this check does not expand")
        return shown(argument, 253).rstrip(".")

    def _matches(
        self, name: str, argument: str | None, cidr4: str | None, cidr6: str | None, domain: str
    ) -> bool:
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            try:
                network = ipaddress.ip_network(
                    f"{argument}/{cidr4}" if cidr4 else argument or "", strict=False
                )
            except ValueError:
                raise SpfError(
                    f"{domain}'s SPF record has a bad {name}: {shown(argument or '', 60)}"
                ) from None
            return self.ip.version == network.version and self.ip in network
        if name == "include":
            if not argument:
                raise SpfError(f"{domain}'s SPF record has an include: without a domain")
            self._lookup()
            target = self._domain(argument, domain)
            result = self.check(target)
            if result == "none":
                raise SpfError(f"{domain}'s SPF record includes {target}, which has no SPF record")
            return result == "pass"
        if name in ("a", "mx"):
            self._lookup()
            target = self._domain(argument, domain)
            hosts = [target]
            if name == "mx":
                hosts = self.lookups.mx(target)
                if len(hosts) > MX_LIMIT:
                    raise SpfError(f"{target} has more than {MX_LIMIT} MX hosts")
            bits = int(
                cidr4
                if self.ip.version == 4 and cidr4
                else cidr6
                if self.ip.version == 6 and cidr6
                else self.ip.max_prefixlen
            )
            return any(
                self.ip in ipaddress.ip_network(f"{address}/{bits}", strict=False)
                for host in hosts
                for address in self.lookups.addresses(host)
                if address.version == self.ip.version
            )
        if name == "exists":
            self._lookup()
            target = self._domain(argument, domain)
            return bool(self.lookups.addresses(target))
        if name == "ptr":
            self._lookup()
            return False  # RFC 7208 5.5: do not use; receivers may ignore it
        raise SpfError(f"{domain}'s SPF record has an unknown mechanism {shown(name, 30)!r}")


def check_spf(lookups: Lookups, domain: str, host: str) -> Finding:
    """Does ``domain``'s SPF record permit the [smtp] ``host`` to send its mail?"""
    records = spf_records(lookups, domain)
    local = _is_local(host)
    addresses = _host_addresses(lookups, host)
    suggestion = (
        " ".join(f"ip{address.version}:{address}" for address in addresses)
        if addresses and not local
        else "ip4:<this server's public address>"
    )
    if not records:
        return Finding(
            "spf",
            False,
            f'{domain} has no SPF record: publish TXT at {domain} "v=spf1 {suggestion} ~all" (for a relay, '
            "the include: its provider documents instead of the address)",
        )
    record = shown(records[0])
    if local:
        # The server on this machine relays out through this machine's public address, which DNS cannot tell.
        try:
            for address in addresses:
                check_host(lookups, address, domain)
        except SpfError as exc:
            return Finding("spf", False, f'{domain}\'s SPF record cannot be evaluated: {exc} ("{record}")')
        return Finding(
            "spf",
            True,
            f'{domain} has an SPF record ("{record}"); [smtp] host {host} is this machine: it must permit this '
            "machine's public address",
            warning=True,
        )
    if not addresses:
        return Finding("spf", False, f"[smtp] host {host} has no address in DNS, so SPF cannot be checked")
    try:
        results = {address: check_host(lookups, address, domain) for address in addresses}
    except SpfError as exc:
        return Finding("spf", False, f'{domain}\'s SPF record cannot be evaluated: {exc} ("{record}")')
    refused = [f"{address} {result}" for address, result in results.items() if result != "pass"]
    if refused:
        return Finding(
            "spf",
            False,
            f'{domain}\'s SPF record ("{record}") does not permit [smtp] host {host} ({", ".join(refused)}): '
            f"add {suggestion} before its all, or if {host} is a relay, the include: its provider documents",
        )
    listed = ", ".join(str(address) for address in addresses)
    return Finding("spf", True, f"{domain}'s SPF record permits [smtp] host {host} ({listed})")


def _is_local(host: str) -> bool:
    if host in ("localhost", "embedded") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_addresses(lookups: Lookups, host: str) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    if _is_local(host):
        return []
    return lookups.addresses(host)


# --- DKIM -----------------------------------------------------------------------------------------------


def check_dkim_record(lookups: Lookups, selector: str, domain: str, key: DkimKey) -> Finding:
    """Does <selector>._domainkey.<domain> publish ``key``?"""
    name = record_name(selector, domain)
    records = [record for record in lookups.txt(name) if "p=" in record]
    publish = (
        f'publish TXT at {name} "{key.record()}" (in a zone file, as quoted strings of at most 255 bytes)'
    )
    if not records:
        return Finding("dkim-dns", False, f"no DKIM record at {name}: {publish}")
    if len(records) > 1:
        return Finding("dkim-dns", False, f"{name} has {len(records)} DKIM records; keep one: {publish}")
    problem = record_problem(records[0], key)
    if problem:
        return Finding("dkim-dns", False, f"{name}: {shown(problem, 120)}: {publish}")
    return Finding("dkim-dns", True, f"{name} publishes the configured {key.kind} key")


# --- DMARC ----------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()


def organisational_domain(domain: str) -> str:
    """The registered domain ``domain`` belongs to (example.co.uk for mail.example.co.uk)."""
    return _suffixes().privatesuffix(domain.lower().rstrip(".")) or domain.lower().rstrip(".")


def aligned(domain: str, from_domain: str, mode: str) -> bool:
    """DMARC identifier alignment: strict means the same name, relaxed the same organisational domain."""
    domain, from_domain = domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    if mode == "s":
        return domain == from_domain
    return organisational_domain(domain) == organisational_domain(from_domain)


def dmarc_record(lookups: Lookups, from_domain: str) -> tuple[str, dict[str, str]] | None:
    """Where the From domain's DMARC record is (its own name or its organisational domain's) and its tags."""
    names = [f"_dmarc.{from_domain}"]
    organisation = organisational_domain(from_domain)
    if organisation != from_domain:
        names.append(f"_dmarc.{organisation}")
    for name in names:
        records = [record for record in lookups.txt(name) if re.match(r"v\s*=\s*DMARC1\s*(;|$)", record)]
        if len(records) == 1:
            tags = {}
            for part in records[0].split(";"):
                if "=" in part:
                    tag, value = part.split("=", 1)
                    tags[tag.strip().lower()] = value.strip()
            return name, tags
    return None


def check_dmarc(
    lookups: Lookups, from_domain: str, dkim_domain: str | None, envelope_domain: str, spf_passes: bool | None
) -> Finding:
    """Does a DMARC record exist for the From domain, and do the DKIM signature's domain or the envelope
    domain (when its SPF passes) align with From as the record asks?"""
    organisation = organisational_domain(from_domain)
    found = dmarc_record(lookups, from_domain)
    if found is None:
        also = f" nor _dmarc.{organisation}" if organisation != from_domain else ""
        return Finding(
            "dmarc",
            False,
            f"no DMARC record at _dmarc.{from_domain}{also}: publish TXT at _dmarc.{organisation} "
            f'"v=DMARC1; p=none; rua=mailto:postmaster@{organisation}" (then quarantine once reports look right)',
        )
    name, tags = found
    policy = tags.get("sp") if name != f"_dmarc.{from_domain}" and "sp" in tags else tags.get("p")
    if policy not in ("none", "quarantine", "reject"):
        return Finding("dmarc", False, f"{name}: the record has no valid p= (none, quarantine or reject)")
    adkim = "s" if tags.get("adkim", "r").lower() == "s" else "r"
    aspf = "s" if tags.get("aspf", "r").lower() == "s" else "r"
    via = []
    if dkim_domain and aligned(dkim_domain, from_domain, adkim):
        via.append(f"DKIM d={dkim_domain}")
    if spf_passes is not False and aligned(envelope_domain, from_domain, aspf):
        via.append(f"SPF of {envelope_domain}")
    modes = f"adkim={adkim}, aspf={aspf}"
    if not via:
        signing = f"DKIM d={dkim_domain}" if dkim_domain else "no DKIM signature"
        spf = f"the envelope domain {envelope_domain}" + (
            " (whose SPF does not pass)" if spf_passes is False else ""
        )
        target = from_domain if "s" in (adkim, aspf) else organisation
        return Finding(
            "dmarc",
            False,
            f"{name} (p={policy}, {modes}): From {from_domain} aligns with neither {signing} nor {spf}: set "
            f'[dkim] domain = "{target}"' + (" with a key published for it" if not dkim_domain else ""),
        )
    return Finding(
        "dmarc", True, f"{name} (p={policy}, {modes}): From {from_domain} aligns through {' and '.join(via)}"
    )
