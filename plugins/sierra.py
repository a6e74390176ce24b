"""`[store] plugin = "sierra"`: PINs checked by III Sierra through its REST API (v6).

Calls (Sierra API v6; the request and response shapes as III documents them and as the
generated client techfromsage/sierra-api-php-client models them; see docs/ils-rest.md):
- token: `POST /v6/token`, HTTP Basic `key:secret`, form `grant_type=client_credentials` →
  `{access_token, token_type: "bearer", expires_in}`; the key needs the Patrons Validate role
  (Patrons Read for lookups, Patrons Write for PIN changes);
- PIN check: `POST /v6/patrons/validate` `{barcode, pin, caseSensitivity}` → 204 when valid,
  400 (an error object) for a wrong PIN and an unknown barcode alike. Never sent twice;
- status, only after a good PIN: `GET /v6/patrons/find?varFieldTag=b&varFieldContent=<barcode>
  &fields=…` → `id`, `names`, `barcodes`, `emails`, `expirationDate`, `patronType`,
  `homeLibraryCode`, `blockInfo.code` ("-" = none), `moneyOwed`, `deleted`; cached per record;
- lookups: the same `find` (tag `b` barcode, `z` e-mail; 404 = none, 409 = several) and
  `GET /v6/patrons/{id}?fields=…`;
- PIN change and reset: `PUT /v6/patrons/{id}` `{"pin": …}` → 204 (400 when Sierra's PIN rules
  refuse it).
With `tell_unknown` (default) a failed check is followed by a `find` to say "unknown card".
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation

import msgspec

from bridge.core.patron import Patron
from bridge.core.store import (
    Capability,
    Health,
    StorePlugin,
    StoreServices,
    Verification,
)
from plugins.ils_http.client import HttpIls, IlsUnavailable, Reply
from plugins.ils_http.settings import HttpStoreSettings
from plugins.ils_http.store import HttpStore, PinChange, probe_health
from plugins.ils_http.tokens import ClientCredentials

FIELDS = (
    "id,names,barcodes,emails,expirationDate,patronType,homeLibraryCode,blockInfo,moneyOwed,deleted"
)


class SierraSettings(HttpStoreSettings, frozen=True):
    # base_url: up to and including /iii/sierra-api (the connector adds /v6/...)
    key: str = ""  # the API key (client key)
    secret: str = ""  # its secret (secret_file / secret_env keep it out)
    case_sensitive: bool = False  # caseSensitivity in the PIN check
    # blockInfo codes that do not block (Sierra's "-" means no block)
    unblocked_codes: tuple[str, ...] = ("-",)
    # Sierra patron type number → category name (unlisted: the number itself)
    patron_types: dict[str, str] = msgspec.field(default_factory=dict)
    tell_unknown: bool = True  # after a failed check, find the card to say "unknown card"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.key or not self.secret:
            raise ValueError("key and secret (or secret_file/_env) are required")


# -- what Sierra sends --------------------------------------------------------------------------
class Block(msgspec.Struct, frozen=True):
    code: str = "-"


class SierraPatron(msgspec.Struct, frozen=True):
    id: int
    deleted: bool = False
    names: list[str] = []
    barcodes: list[str] = []
    emails: list[str] = []
    expirationDate: dt.date | None = None
    patronType: int | None = None
    homeLibraryCode: str | None = None
    blockInfo: Block | None = None
    moneyOwed: float | None = None


class SierraError(msgspec.Struct, frozen=True):
    code: int
    httpStatus: int
    name: str
    specificCode: int = 0
    description: str = ""


class SierraStore(HttpStore):
    name = "sierra"
    forbidden = "the API key lacks the role"
    pin_change = PinChange(
        204,
        {
            400: "Sierra refused the new PIN (its PIN rules)",
            404: "sierra: the patron is no longer in Sierra",
        },
    )
    settings: SierraSettings

    def __init__(self, settings: SierraSettings, http: HttpIls, auth: ClientCredentials) -> None:
        super().__init__(settings, http, {Capability.BY_EMAIL, Capability.BY_RECORD_ID})
        self.auth = auth

    # -- Store ------------------------------------------------------------------------------
    async def check_pin(self, barcode: str, pin: str) -> Verification:
        reply = await self.http.call(
            "POST",
            "/v6/patrons/validate",
            what="PIN check",
            auth=self.auth,
            json={"barcode": barcode, "pin": pin, "caseSensitivity": self.settings.case_sensitive},
        )
        if reply.status == 204:
            patron = await self._status(barcode)
            return Verification(patron, pin_ok=patron is not None)
        if reply.status == 400:
            self.http.decode(reply, SierraError, "PIN check")  # the documented error shape
            return await self.wrong_or_unknown(barcode, can_tell=self.settings.tell_unknown)
        raise self.failure(reply, "PIN check")

    async def find(self, barcode: str) -> Patron | None:
        found = await self._find("b", barcode)
        return None if found is None else self._patron(found, barcode)

    async def lookup_by_email(self, email: str) -> list[Patron]:
        """Sierra's find answers one patron; several sharing the address is "unavailable"."""
        if not email:
            return []
        async with self.http.deadline("lookup"):
            found = await self._find("z", email, several="several patrons share this e-mail")
            wanted = email.casefold()
            if found is None or not any(e.casefold() == wanted for e in found.emails):
                return []
            return [self._patron(found, "")]

    async def lookup_by_record_id(self, record_id: str) -> Patron | None:
        if not record_id.isascii() or not record_id.isdigit() or len(record_id) > 12:
            return None
        async with self.http.deadline("lookup"):
            reply = await self.http.call(
                "GET",
                f"/v6/patrons/{record_id}",
                what="patron",
                auth=self.auth,
                params={"fields": FIELDS},
            )
            if reply.status == 404:
                return None
            if reply.status != 200:
                raise self.failure(reply, "patron")
            found = self.http.decode(reply, SierraPatron, "patron")
            return None if found.deleted else self._patron(found, "")

    async def set_pin(self, patron: Patron, pin: str) -> Reply:
        return await self.http.call(
            "PUT",
            f"/v6/patrons/{patron.record_id}",
            what="PIN change",
            auth=self.auth,
            json={"pin": pin},
        )

    def forget(self, patron: Patron) -> None:
        self.records.drop(patron.barcode)  # Sierra's records are cached per barcode

    async def health(self) -> Health:
        async def probe() -> None:
            await self.auth.headers(self.http)  # a token proves the key and the server

        return await probe_health(self.http, probe, "sierra", "Sierra API answering")

    # -- internals --------------------------------------------------------------------------
    async def _status(self, barcode: str) -> Patron | None:
        """The record after a good PIN, cached per barcode (Sierra's find is by barcode)."""
        hit = self.records.get(barcode)
        if hit is not None:
            return hit
        found = await self._find("b", barcode)
        if found is None:
            return None
        patron = self._patron(found, barcode)
        self.records.put(barcode, patron)
        return patron

    async def _find(
        self, tag: str, value: str, *, several: str = "the barcode matches more than one patron"
    ) -> SierraPatron | None:
        reply = await self.http.call(
            "GET",
            "/v6/patrons/find",
            what="find",
            auth=self.auth,
            params={"varFieldTag": tag, "varFieldContent": value, "fields": FIELDS},
        )
        if reply.status == 404:
            return None
        if reply.status == 409:
            raise IlsUnavailable(f"sierra: {several}")
        if reply.status != 200:
            raise self.failure(reply, "find")
        found = self.http.decode(reply, SierraPatron, "find")
        return None if found.deleted else found

    def _patron(self, sierra: SierraPatron, typed: str) -> Patron:
        code = (sierra.blockInfo or Block()).code.strip() or "-"
        blocked = code not in self.settings.unblocked_codes
        try:
            owed = Decimal(str(sierra.moneyOwed or 0)).quantize(Decimal("0.01"))
        except InvalidOperation:
            raise IlsUnavailable("sierra: unreadable moneyOwed") from None
        ptype = "" if sierra.patronType is None else str(sierra.patronType)
        barcode = typed if typed in sierra.barcodes else (sierra.barcodes or [typed])[0]
        return Patron(
            barcode=barcode,
            record_id=str(sierra.id),
            name=sierra.names[0] if sierra.names else "",
            email=sierra.emails[0] if sierra.emails else None,
            category=self.settings.patron_types.get(ptype, ptype),
            expires=sierra.expirationDate,
            blocked=blocked,
            blocked_reason=f"blocked in Sierra (code {code})" if blocked else None,
            fines=max(owed, Decimal("0.00")),
            home_library=(sierra.homeLibraryCode or "").strip() or None,
        )


async def open_store(settings: SierraSettings, services: StoreServices) -> SierraStore:
    """Build the client; Sierra being down at start-up is not an error."""
    http = HttpIls(settings, name="sierra", base_dir=services.base_dir)
    auth = ClientCredentials("/v6/token", settings.key, settings.secret, style="basic")
    return SierraStore(settings, http, auth)


PLUGIN = StorePlugin(
    name="sierra",
    settings=SierraSettings,
    open=open_store,
    description="III Sierra REST API v6 (PIN validate, patron find, PIN change)",
)
