"""Front ends run `authenticate` inline (bridge.eager) until it first suspends. A store that uses
`asyncio.timeout` (the SIP2 ILS pool does) needs a task around it, so the core yields once
before any store call when there is none. These tests run the core from a plain loop callback,
as the LDAP and RADIUS protocol callbacks do."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge import eager
from bridge.core.audit import Audit
from bridge.core.auth import Authenticator
from bridge.core.cache import VerifiedCache
from bridge.core.patron import Context, Decision, Outcome, Patron
from bridge.core.secret import Secret
from bridge.core.store import Capability, Health, Verification
from bridge.core.throttle import Throttle, ThrottleRules
from tests.pins import DEMO_PIN

PATRON = Patron("21234000000001", "r1", "Rivera, Ana")


class TimeoutStore:
    """Every call starts with asyncio.timeout, which raises outside a task."""

    capabilities = frozenset({Capability.VERIFY})

    async def _bounded(self) -> None:
        async with asyncio.timeout(5):
            await asyncio.sleep(0)

    async def lookup(self, barcode: str) -> Patron | None:
        await self._bounded()
        return PATRON if barcode == PATRON.barcode else None

    async def verify_pin(self, barcode: str, pin: Secret) -> Verification:
        await self._bounded()
        known = barcode == PATRON.barcode
        return Verification(PATRON if known else None, known and pin.matches(DEMO_PIN))

    async def change_pin(self, patron: Patron, new_pin: Secret) -> None:
        await self._bounded()

    async def health(self) -> Health:
        await self._bounded()
        return Health(True)

    async def aclose(self) -> None:
        return None


def authenticator() -> Authenticator:
    return Authenticator(
        TimeoutStore(),
        throttle=Throttle(ThrottleRules()),
        cache=VerifiedCache(30),
        audit=Audit(),
    )


async def from_callback(work: Any) -> Any:
    """Start `work` with eager.run from a loop callback (no current task), await the result."""
    loop = asyncio.get_running_loop()
    started: asyncio.Future[Any] = loop.create_future()

    def callback() -> None:
        assert asyncio.current_task() is None
        try:
            started.set_result(eager.run(work))
        except BaseException as exc:
            started.set_exception(exc)

    loop.call_soon(callback)
    outcome = await started
    if isinstance(outcome, eager.Pending):
        return await outcome.task
    return outcome


async def test_uncached_authenticate_runs_store_in_a_task() -> None:
    auth = authenticator()
    ctx = Context("ldap", "test", "127.0.0.1")
    decision: Decision = await from_callback(
        auth.authenticate(PATRON.barcode, Secret(DEMO_PIN), ctx)
    )
    assert decision.outcome is Outcome.ACCEPTED
    # Now cached: decided inline without reaching the store.
    again: Decision = await from_callback(auth.authenticate(PATRON.barcode, Secret(DEMO_PIN), ctx))
    assert again.outcome is Outcome.ACCEPTED and again.reason == "verified (cached)"


async def test_lookups_and_health_run_store_in_a_task() -> None:
    auth = authenticator()
    assert await from_callback(auth.lookup(PATRON.barcode)) == PATRON
    health: Health = await from_callback(auth.health())
    assert health.ok
