"""What every HTTP connector's store says the same way: a refusal naming no patron, health.

Each connector's `Store` class keeps its ILS's calls; the parts that read the same in all of
them (a wrong PIN that must not tell whether the card exists, and a health probe that first
asks the circuit breaker, then runs one cheap call under the "health" deadline) live here, so
a change to how health or refusals are reported is made once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bridge.core.patron import Patron
from bridge.core.store import Health, StoreUnavailable, Verification
from plugins.ils_http.client import HttpIls, Reply


def refused(barcode: str) -> Verification:
    """A failed check that does not say whether the card is known (the patron has no record)."""
    return Verification(Patron(barcode=barcode, record_id=""), pin_ok=False)


async def probe_health(
    http: HttpIls,
    probe: Callable[[], Awaitable[Reply | None]],
    name: str,
    answering: str,
) -> Health:
    """The breaker's word if it has one, else one probe call under the health deadline.

    `probe` returns the reply to check for 200, or None when succeeding at all is the proof
    (a token or staff session obtained). `name` prefixes the failure ("koha-rest: health: ...").
    """
    known = http.circuit_health()
    if known is not None:
        return known
    try:
        async with http.deadline("health"):
            reply = await probe()
    except StoreUnavailable as exc:
        return Health(False, str(exc))
    if reply is not None and reply.status != 200:
        return Health(False, f"{name}: health: status {reply.status}")
    return Health(True, answering)
