"""The relays' webhooks: ``POST /webhooks/{ses,postmark,mailgun,sendgrid}``, where Amazon SES (through SNS),
Postmark, Mailgun and SendGrid report bounces and complaints.

A relay is no browser and has no session: these routes take no CSRF token and authenticate each request by
the provider's own scheme instead (``newsletter.relay_events``). A provider that [webhooks] does not
configure is a 404. A request that fails its check is refused (401 or 403) and changes nothing; each event
of one that passes goes through the same policy as a bounce from the mailbox (``bounce_policy.take``), in a
database thread, and an event taken before changes nothing. Events of other kinds (delivered, opened...)
are answered 200, so that the provider does not send them again. One log line per request, without secrets
or addresses.
"""

from __future__ import annotations

import logging

import anyio.to_thread
import sqlite_utils
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from newsletter.bounce_policy import Taken, take
from newsletter.outbox import return_paths
from newsletter.relay_events import MAX_BODY, PROVIDERS, Received, Refused, RelayEvents
from newsletter.web.pages import Site

log = logging.getLogger(__name__)

BODY_BYTES = MAX_BODY
# Requests verified at once: an SNS certificate fetch may take seconds; others wait without a thread.
CONCURRENT_CHECKS = 4


def is_webhook_path(path: str) -> bool:
    return path.startswith("/webhooks/")


class Webhooks:
    def __init__(self, site: Site) -> None:
        self.site = site
        self.relay = RelayEvents(site.settings.webhooks)
        self.checks = anyio.CapacityLimiter(CONCURRENT_CHECKS)

    def routes(self) -> list[Route]:
        return [Route("/webhooks/{provider}", self.receive, methods=["POST"])]

    async def receive(self, request: Request) -> Response:
        provider = request.path_params["provider"]
        if provider not in PROVIDERS or not self.relay.configured(provider):
            return PlainTextResponse("Not Found\n", status_code=404)
        body = await request.body()  # BodyLimit has capped it at BODY_BYTES
        headers = dict(request.headers)
        try:
            received = await anyio.to_thread.run_sync(
                self.relay.read, provider, headers, body, limiter=self.checks
            )
        except Refused as refused:
            log.warning("webhook %s: refused (%d): %s", provider, refused.status, refused.reason)
            extra = {"www-authenticate": 'Basic realm="webhooks"'} if refused.status == 401 else {}
            return PlainTextResponse(refused.reason + "\n", status_code=refused.status, headers=extra)
        try:
            taken = await self.site.call(lambda db: self._take(db, received))
        except BaseException:
            self.relay.release(received)  # the provider sends it again: let its token pass then
            raise
        new = [t for t in taken if t.new]
        log.info(
            "webhook %s: %d event(s) taken, %d seen before, %d of other kinds%s",
            provider,
            len(new),
            len(taken) - len(new),
            received.ignored,
            f"; {received.note}" if received.note else "",
        )
        return PlainTextResponse("ok\n")

    def _take(self, db: sqlite_utils.Database, received: Received) -> list[Taken]:
        settings = self.site.settings
        paths = return_paths(settings, db)  # once for a request's batch of events
        return [take(db, settings, event, paths=paths) for event in received.events]
