"""An arXiv API for the local feed server: answers ``id_list`` queries the way export.arxiv.org does, with an
entry for each id it knows and none for the others, and records what was asked."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

from tests.support.feedserver import FeedServer, RecordedRequest, Reply

ATOM_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<feed xmlns="http://www.w3.org/2005/Atom" xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/" '
    'xmlns:arxiv="http://arxiv.org/schemas/atom">\n'
    "  <id>https://arxiv.org/api/test</id>\n  <title>arXiv Query</title>\n"
)


@dataclass
class FakeArxiv:
    """``papers``: arXiv id -> (title, abstract, category). ``url`` is the API's address on the server."""

    server: FeedServer
    papers: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    path: str = "/api/query"
    down: bool = False  # answer 503 to everything

    def __post_init__(self) -> None:
        self.url = self.server.respond(self.path, self._answer)

    @property
    def asked(self) -> list[list[str]]:
        """The ids of each request, in order."""
        return [request.query.get("id_list", [""])[0].split(",") for request in self.requests]

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.server.requests_to(self.path)

    def _answer(self, request: RecordedRequest) -> Reply:
        if self.down:
            return Reply(
                status=503, body=b"<html><title>Service Unavailable</title></html>", content_type="text/html"
            )
        wanted = request.query.get("id_list", [""])[0].split(",")
        start = int(request.query.get("start", ["0"])[0])
        found = [arxiv_id for arxiv_id in wanted if arxiv_id in self.papers]
        body = ATOM_HEAD + (
            f"  <opensearch:totalResults>{len(found)}</opensearch:totalResults>\n"
            f"  <opensearch:startIndex>{start}</opensearch:startIndex>\n"
        )
        body += "".join(self._entry(arxiv_id) for arxiv_id in found[start:])
        return Reply(body=(body + "</feed>\n").encode(), content_type="application/atom+xml; charset=utf-8")

    def _entry(self, arxiv_id: str) -> str:
        title, abstract, category = self.papers[arxiv_id]
        return (
            f"  <entry>\n    <id>http://arxiv.org/abs/{arxiv_id}v2</id>\n"
            f"    <title>{escape(title)}</title>\n    <summary>{escape(abstract)}</summary>\n"
            "    <published>2024-01-10T12:00:00Z</published>\n    <updated>2024-02-01T12:00:00Z</updated>\n"
            "    <author><name>Ada Lovelace</name></author>\n    <author><name>Alan Turing</name></author>\n"
            f'    <link href="https://arxiv.org/abs/{arxiv_id}v2" rel="alternate" type="text/html"/>\n'
            f'    <category term="{category}" scheme="http://arxiv.org/schemas/atom"/>\n'
            f'    <arxiv:primary_category term="{category}"/>\n  </entry>\n'
        )
