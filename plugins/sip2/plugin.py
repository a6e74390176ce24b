"""The `sip2` store: PINs checked by the library's own ILS over SIP2.

verify_pin sends 63 with the PIN in AD and maps the 64 (`mapping.verification`); lookup sends
63 without AD. The ILS verifies; the bridge never sees a hash. A PIN change cannot be written
through SIP2, so the store does not claim CHANGE_PIN and the PIN pages tell the patron to
change it in the catalogue. Every failure to reach the ILS (down, slow, circuit open, login
refused, unreadable reply) is `StoreUnavailable`, which the authenticator answers as "store
unavailable" and never counts against the card.

The same pool serves circulation pass-through: `circulate()` is what the SIP2 front end's
forwarder (`bridge.sip2.upstream`) calls when `[sip2] upstream = "sip2"`.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from bridge.core.patron import Patron
from bridge.core.secret import Secret
from bridge.core.store import (
    Capability,
    Health,
    NotSupported,
    StorePlugin,
    StoreServices,
    StoreUnavailable,
    Verification,
    same_barcode,
)
from bridge.sip2.codec import BX_ORDER, CIRCULATION_CODES, Message, ProtocolError, sip_date
from bridge.sip2.messages import PatronRequest
from plugins.sip2 import mapping
from plugins.sip2.pool import Pool, UpstreamError
from plugins.sip2.settings import Sip2StoreSettings

log = structlog.get_logger("plugins.sip2")


class Sip2Store:
    capabilities = frozenset({Capability.VERIFY})
    # The upstream ILS decides which AA values are one patron, and SIP2 does not say: exact.
    canonical_barcode = staticmethod(same_barcode)

    def __init__(self, settings: Sip2StoreSettings, pool: Pool) -> None:
        self.settings = settings
        self.pool = pool

    # -- Store ------------------------------------------------------------------------------
    async def verify_pin(self, barcode: str, pin: Secret) -> Verification:
        return await self._ask(barcode, pin)

    async def lookup(self, barcode: str) -> Patron | None:
        return (await self._ask(barcode, None)).patron

    async def change_pin(self, patron: Patron, new_pin: Secret) -> None:
        raise NotSupported("SIP2 cannot change a PIN; it is changed in the library's catalogue")

    async def health(self) -> Health:
        """Closed breaker and an on-line 98 from the ILS; an open breaker answers at once."""
        now = self.pool.monotonic()
        if self.pool.breaker.retry_after(now) > 0:  # open, pause not over: do not ask
            return Health(False, f"ILS unreachable: circuit {self.pool.breaker.describe(now)}")
        # Otherwise ask: when the circuit is open and its pause is over this 99 is the probe,
        # so a front end's periodic health check brings the store back without patron traffic.
        try:
            status = await self.pool.status()
        except UpstreamError as exc:
            return Health(False, f"ILS unreachable: {exc}")
        self.pool.upstream_status = status
        if not status.online:
            return Health(False, "the ILS says it is off-line")
        return Health(True, f"ILS on-line ({self.pool.open_connections} connections)")

    async def aclose(self) -> None:
        await self.pool.aclose()

    # -- for the SIP2 front end's circulation pass-through (bridge.sip2.upstream.Upstream) ----
    @property
    def upstream_institution(self) -> str:
        return self.settings.institution

    async def circulate(self, request: Message) -> Message:
        try:
            return await self.pool.request(request)
        except UpstreamError as exc:
            raise StoreUnavailable(f"ILS: {exc}") from None

    def supported_circulation(self) -> frozenset[str]:
        """What the ILS's last 98 said it answers (BX); all of it when we have not heard."""
        status = self.pool.upstream_status
        if status is None or len(status.supported) < len(BX_ORDER):
            return CIRCULATION_CODES
        said = {code for code, flag in zip(BX_ORDER, status.supported, strict=False) if flag == "Y"}
        return frozenset(said & CIRCULATION_CODES)

    # -- internals --------------------------------------------------------------------------
    def _request(self, barcode: str, pin: Secret | None) -> Message:
        s = self.settings
        return PatronRequest(
            code="63",
            barcode=barcode,
            pin=pin,
            institution=s.institution,
            terminal_password=Secret(b""),
            language=s.language,
            date=sip_date(self.pool.clock()),
        ).to_message()

    async def _ask(self, barcode: str, pin: Secret | None) -> Verification:
        try:
            reply = await self.pool.request(self._request(barcode, pin))
        except UpstreamError as exc:
            raise StoreUnavailable(f"ILS: {exc}") from None
        if reply.code != "64":  # the client session checks this; belt and braces
            raise StoreUnavailable("ILS: unexpected reply")
        try:
            status = reply.fixed["patron_status"]
        except KeyError:
            raise StoreUnavailable("ILS: unreadable 64") from None
        return mapping.verification(barcode, status, reply.fields)


async def open_store(settings: Sip2StoreSettings, services: StoreServices) -> Sip2Store:
    """Open the pool and try the ILS once (to learn its BX); an ILS that is down at start-up
    is not an error: the store answers "unavailable" until it comes back."""
    pool = Pool(settings, base_dir=services.base_dir, monotonic=time.monotonic, clock=time.time)
    pool.start()
    store = Sip2Store(settings, pool)
    try:
        pool.upstream_status = await pool.status()
    except (UpstreamError, ProtocolError) as exc:
        log.warning("sip2_upstream_unreachable_at_start", host=settings.host, error=str(exc))
    except asyncio.CancelledError:
        await pool.aclose()
        raise
    return store


PLUGIN = StorePlugin(
    name="sip2",
    settings=Sip2StoreSettings,
    open=open_store,
    description="the library's ILS over SIP2 (63/64 PIN checks, circulation pass-through)",
)
