"""What every HTTP connector's store says the same way: the verify / lookup / PIN-change flow
(`HttpStore`), a refusal naming no patron, health.

Each connector's `Store` class keeps its ILS's calls; the parts that read the same in all of
them (the deadlines around each operation, a wrong PIN that must not tell whether the card
exists, the PIN change's cache drop and status reading, and a health probe that first asks the
circuit breaker, then runs one cheap call under the "health" deadline) live here, so a change
to how they behave is made once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bridge.core.patron import Patron
from bridge.core.secret import Secret
from bridge.core.store import Capability, Health, NotSupported, StoreUnavailable, Verification
from plugins.ils_http.client import HttpIls, IlsUnavailable, Reply
from plugins.ils_http.records import RecordCache
from plugins.ils_http.settings import HttpStoreSettings


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


@dataclass(frozen=True, slots=True)
class PinChange:
    """How an ILS answers a PIN change: the status that means done, and what its refusals
    mean to the patron (a status not named here is the ILS misbehaving)."""

    done: int
    refused: dict[int, str] = field(default_factory=dict)


class HttpStore:
    """The flow every HTTP connector's store shares; a connector fills in its ILS's calls.

    - `verify_pin`: an empty barcode or a PIN that is not text is refused without asking the
      ILS; otherwise `check_pin` runs under the "PIN check" deadline (one operation: the check
      and the status read share it).
    - `lookup`: an empty barcode is no patron; otherwise `find` under the "lookup" deadline.
    - `change_pin`: only with `pin_change` set (else `NotSupported`, and no CHANGE_PIN
      capability); `set_pin` sends the new PIN under the "PIN change" deadline, the cached
      record is dropped whatever the answer, and the answer is read by `pin_change`.
    """

    name = "ils"
    pin_change: PinChange | None = None
    forbidden = "the ILS refused the bridge's rights"  # what a 403 means, in this ILS's words

    def __init__(
        self, settings: HttpStoreSettings, http: HttpIls, capabilities: set[Capability]
    ) -> None:
        self.settings = settings
        self.http = http
        self.records: RecordCache[Patron] = RecordCache(
            settings.status_cache_seconds, http.monotonic
        )
        if self.pin_change is not None:
            capabilities = capabilities | {Capability.CHANGE_PIN}
        self.capabilities = frozenset({Capability.VERIFY, *capabilities})

    async def verify_pin(self, barcode: str, pin: Secret) -> Verification:
        text = pin.text()
        if text is None or not barcode:
            return refused(barcode)
        async with self.http.deadline("PIN check"):
            return await self.check_pin(barcode, text)

    async def lookup(self, barcode: str) -> Patron | None:
        if not barcode:
            return None
        async with self.http.deadline("lookup"):
            return await self.find(barcode)

    async def change_pin(self, patron: Patron, new_pin: Secret) -> None:
        if self.pin_change is None:
            raise NotSupported(f"the {self.name} connector does not change PINs")
        text = new_pin.text()
        if text is None or not self.settable(patron):
            raise StoreUnavailable(f"{self.name}: cannot set this PIN")
        async with self.http.deadline("PIN change"):
            reply = await self.set_pin(patron, text)
        self.forget(patron)
        if reply.status == self.pin_change.done:
            return
        message = self.pin_change.refused.get(reply.status)
        if message is not None:
            raise StoreUnavailable(message)
        raise self.failure(reply, "PIN change")

    async def aclose(self) -> None:
        await self.http.aclose()

    async def wrong_or_unknown(self, barcode: str, *, can_tell: bool) -> Verification:
        """After an ILS answered "no" without saying whether the card exists: with `can_tell`
        (the connector's `tell_unknown`, and a lookup it can make) a lookup of the card (a
        read, never a second login attempt) says which; else "wrong PIN" naming no patron."""
        if can_tell:
            return Verification(await self.find(barcode), pin_ok=False)
        return refused(barcode)

    # -- what a connector fills in ------------------------------------------------------------
    async def check_pin(self, barcode: str, pin: str) -> Verification:
        raise NotImplementedError

    async def find(self, barcode: str) -> Patron | None:
        raise NotImplementedError

    def settable(self, patron: Patron) -> bool:
        """Whether the record id is one this ILS could have issued (never sent otherwise)."""
        return patron.record_id.isascii() and patron.record_id.isdigit()

    async def set_pin(self, patron: Patron, pin: str) -> Reply:
        raise NotImplementedError

    def forget(self, patron: Patron) -> None:
        """Drop the cached record of a patron whose PIN just changed."""
        self.records.drop(patron.record_id)

    def failure(self, reply: Reply, what: str) -> IlsUnavailable:
        """A status the API does not document for this call (403: the bridge may not)."""
        if reply.status == 403:
            return IlsUnavailable(f"{self.name}: {what}: {self.forbidden}")
        return self.http.unexpected(reply, what)
