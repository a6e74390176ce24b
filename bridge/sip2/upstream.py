"""Circulation pass-through: checkouts, checkins, renewals, holds, fees and item information
forwarded to the library's ILS over the SIP2 store's connection pool.

Why: a self-check pointed at the bridge (for its lockout, audit and PIN rules) must still check
items out, and those rules live in the ILS. With `[sip2] upstream = "sip2"` (the configured
store's plugin name) the front end hands messages 11, 09, 17, 29, 37, 15, 19, 65 and 25 from
an authenticated SIP account to `UpstreamCirculation.handle`, which

- rewrites what belongs to the bridge's side of the wire: AO becomes the ILS's institution
  (when the store sets one) and AC the store's terminal password (empty), so the vendor's
  bridge credentials never reach the ILS;
- sends it on a pooled, logged-in connection, where the store's own `ClientSession` numbers and
  checksums it for the ILS;
- maps the reply's AO back to the account's institution and returns it without AY/AZ: the
  server's session mirrors the *client's* sequence number and checksum on the way out.

Patron checks (23, 63) never come here: the bridge's authenticator answers them, so its
throttle and audit apply. When the ILS cannot be reached the client gets a well-formed refusal
of the right type, never silence. AD (a patron PIN a checkout may carry) is forwarded as is
and never logged: this module logs codes, not messages.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import structlog

from bridge.core.store import StoreUnavailable
from bridge.sip2.circulation import CirculationContext, refusal
from bridge.sip2.codec import CIRCULATION_CODES, RESPONSE_CODE, Message

log = structlog.get_logger("bridge.sip2")

UNAVAILABLE = "The library system is not available. Please try again later or ask staff."


class UpstreamMisconfigured(Exception):
    """`[sip2] upstream` names something the configured store cannot serve."""


@runtime_checkable
class Upstream(Protocol):
    """What a store offers for pass-through (the `sip2` store plugin implements it)."""

    upstream_institution: str

    def supported_circulation(self) -> frozenset[str]:
        """The circulation codes the ILS says it answers (its 98's BX)."""
        ...

    async def circulate(self, request: Message) -> Message:
        """Send one request to the ILS and return its reply; `StoreUnavailable` when it cannot."""
        ...


class UpstreamCirculation:
    """The `Circulation` seam, answered by an upstream ILS."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.supported = frozenset(upstream.supported_circulation() & CIRCULATION_CODES)

    async def handle(self, request: Message, ctx: CirculationContext) -> Message:
        if request.code not in self.supported:
            return refusal(request, ctx.date, ctx.institution)
        try:
            reply = await self.upstream.circulate(to_upstream(request, self.upstream))
        except StoreUnavailable:
            log.warning("sip2_upstream_circulation_failed", code=request.code, client=ctx.login)
            return refusal(request, ctx.date, ctx.institution, UNAVAILABLE)
        if reply.code != RESPONSE_CODE[request.code]:
            log.warning("sip2_upstream_wrong_reply", code=request.code, reply=reply.code)
            return refusal(request, ctx.date, ctx.institution, UNAVAILABLE)
        return to_client(reply, ctx.institution)


def to_upstream(request: Message, upstream: Upstream) -> Message:
    """The request as the ILS should see it: its institution, the store's (empty) AC."""
    fields: list[tuple[str, str]] = []
    for tag, value in request.fields:
        if tag == "AO" and upstream.upstream_institution:
            value = upstream.upstream_institution
        elif tag == "AC":
            value = ""
        fields.append((tag, value))
    return Message(request.code, dict(request.fixed), fields)


def to_client(reply: Message, institution: str) -> Message:
    """The ILS's reply as the client should see it: the account's AO, no AY/AZ of the ILS's."""
    fields = [
        ("AO", institution) if tag == "AO" and institution else (tag, value)
        for tag, value in reply.fields
    ]
    return Message(reply.code, dict(reply.fixed), fields)


def circulation_for_upstream(name: str, store_plugin: str, store: object) -> UpstreamCirculation:
    """The forwarder for `[sip2] upstream = name`; the name must be the configured store's."""
    if name != store_plugin:
        raise UpstreamMisconfigured(
            f"sip2.upstream: {name!r} is not the configured store (store.plugin = "
            f"{store_plugin!r}); circulation can only go to the store the bridge asks"
        )
    if not isinstance(store, Upstream):
        raise UpstreamMisconfigured(
            f"sip2.upstream: the {store_plugin!r} store cannot forward circulation"
        )
    return UpstreamCirculation(store)
