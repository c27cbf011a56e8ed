"""A real DNS server on 127.0.0.1 answering from a small zone the test gives (dnslib), for DKIM
verification and the doctor's DNS checks: no resolver of the machine is consulted."""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from dnslib import AAAA, MX, QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSServer


def _txt_strings(value: str) -> list[bytes]:
    """A TXT value as the character-strings of at most 255 bytes that a published record holds."""
    data = value.encode("ascii")
    return [data[start : start + 255] for start in range(0, len(data), 255)] or [b""]


@dataclass
class Zone(BaseResolver):
    """Records by name ("_dmarc.example.org"): TXT values, A and AAAA addresses, MX hosts (in order of
    preference). Names not here answer NXDOMAIN; a name with records of other types answers NOERROR with
    no answer, as a real server does."""

    txt: dict[str, list[str]] = field(default_factory=dict)
    a: dict[str, list[str]] = field(default_factory=dict)
    aaaa: dict[str, list[str]] = field(default_factory=dict)
    mx: dict[str, list[str]] = field(default_factory=dict)

    def add_txt(self, name: str, value: str) -> None:
        self.txt.setdefault(name.lower().rstrip("."), []).append(value)

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).lower().rstrip(".")
        qtype = QTYPE[request.q.qtype]
        if all(name not in records for records in (self.txt, self.a, self.aaaa, self.mx)):
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        if qtype in ("TXT", "ANY"):
            for value in self.txt.get(name, []):
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(_txt_strings(value)), ttl=60))
        if qtype in ("A", "ANY"):
            for address in self.a.get(name, []):
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=60))
        if qtype in ("AAAA", "ANY"):
            for address in self.aaaa.get(name, []):
                reply.add_answer(RR(request.q.qname, QTYPE.AAAA, rdata=AAAA(address), ttl=60))
        if qtype in ("MX", "ANY"):
            for preference, host in enumerate(self.mx.get(name, []), start=1):
                reply.add_answer(RR(request.q.qname, QTYPE.MX, rdata=MX(host, preference * 10), ttl=60))
        return reply


@dataclass(frozen=True)
class RunningDns:
    zone: Zone
    port: int

    @property
    def address(self) -> str:
        """As a setting or an argument names a name server: "127.0.0.1:<port>"."""
        return f"127.0.0.1:{self.port}"

    def query_txt(self, name: str) -> list[str]:
        """The TXT values of ``name`` as a resolver sees them (to check the server itself)."""
        answer = DNSRecord.question(name, "TXT").send("127.0.0.1", self.port, timeout=2)
        return [
            b"".join(rr.rdata.data).decode("ascii")
            for rr in DNSRecord.parse(answer).rr
            if rr.rtype == QTYPE.TXT
        ]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def dns_server(
    txt: Mapping[str, str | list[str]] | None = None,
    a: Mapping[str, list[str]] | None = None,
    *,
    aaaa: Mapping[str, list[str]] | None = None,
    mx: Mapping[str, list[str]] | None = None,
) -> Iterator[RunningDns]:
    """A DNS server on 127.0.0.1 (UDP, a free port) for the test's duration; change ``.zone`` at will."""
    zone = Zone()
    for name, values in (txt or {}).items():
        for value in [values] if isinstance(values, str) else values:
            zone.add_txt(name, value)
    for name, addresses in (a or {}).items():
        zone.a[name.lower().rstrip(".")] = list(addresses)
    for name, addresses in (aaaa or {}).items():
        zone.aaaa[name.lower().rstrip(".")] = list(addresses)
    for name, hosts in (mx or {}).items():
        zone.mx[name.lower().rstrip(".")] = list(hosts)
    for _attempt in range(5):  # another process may take the probed port in between
        port = _free_udp_port()
        try:
            server = DNSServer(zone, port=port, address="127.0.0.1", logger=_Quiet())
        except OSError:
            continue
        break
    else:
        raise RuntimeError("no free UDP port for the test DNS server")
    server.start_thread()
    try:
        yield RunningDns(zone, port)
    finally:
        server.stop()
        server.server.server_close()


class _Quiet:
    """dnslib logs every request to stdout; tests do not need it."""

    def __getattr__(self, name: str) -> object:
        return lambda *args, **kwargs: None
