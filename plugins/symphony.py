"""`[store] plugin = "symphony"`: PINs checked by SirsiDynix Symphony through Web Services
(ILSWS, the REST API; VuFind's `Symphony.php` is the older SOAP SymWS and is not this).

Every request carries `x-sirs-clientID` and `SD-Originating-App-Id` (and optionally
`SD-Working-LibraryID`). Calls (as public ILSWS clients make them: multnomah-county-it/libilsws,
Aspen's SirsiDynixROA driver, Stanford's and Virginia's clients; see docs/ils-rest.md):
- PIN check: `POST /user/patron/authenticate` `{barcode, password}` with the client id only (no
  staff session, so a 401 here can only mean the patron's credentials) → 200 `{patronKey}`;
  401 for a wrong PIN and an unknown barcode alike. Never sent twice;
- the staff session for reads: `POST /user/staff/login` `{login, password}` → `sessionToken`,
  sent as `x-sirs-sessionToken`; a 401 on a read logs in again once;
- status, only after a good PIN: `GET /user/patron/key/{patronKey}?includeFields=…` →
  `fields.{barcode, firstName, lastName, privilegeExpiresDate, profile.key, library.key,
  standing.key, address1[].fields{code.key, data}, blockList[].fields.owed.amount}`; cached
  per record;
- lookups: `GET /user/patron/barcode/{barcode}?includeFields=…` (404 = none).
No PIN change: ILSWS changes a PIN only in the patron's own session (`changeMyPin`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from urllib.parse import quote

import msgspec

from bridge.core.patron import Patron
from bridge.core.store import (
    Health,
    StorePlugin,
    StoreServices,
    Verification,
)
from plugins.ils_http.client import HttpIls, IlsUnavailable
from plugins.ils_http.settings import HttpStoreSettings
from plugins.ils_http.store import HttpStore, probe_health

INCLUDE = (
    "barcode,firstName,lastName,preferredName,privilegeExpiresDate,profile,library,standing,"
    "address1,blockList{owed}"
)


class SymphonySettings(HttpStoreSettings, frozen=True):
    # base_url: the ILSWS base, e.g. https://ils.example.org/ilsws (the connector adds /user/...)
    client_id: str = ""  # x-sirs-clientID
    app_id: str = "patron-bridge"  # SD-Originating-App-Id
    working_library: str = ""  # SD-Working-LibraryID (optional)
    user: str = ""  # the staff login for reads
    password: str = ""  # its password (password_file / password_env keep it out)
    ok_standings: tuple[str, ...] = ("OK",)  # any other standing key blocks
    profiles: dict[str, str] = msgspec.field(default_factory=dict)  # profile key → category
    tell_unknown: bool = True  # after a failed check, look the barcode up

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.client_id:
            raise ValueError("client_id is required")
        if not self.user or not self.password:
            raise ValueError("user and password (or password_file/_env) are required")


# -- what ILSWS sends ---------------------------------------------------------------------------
class Ref(msgspec.Struct, frozen=True):
    key: str = ""


class Amount(msgspec.Struct, frozen=True):
    amount: str | float = "0"
    currencyCode: str | None = None


class BlockFields(msgspec.Struct, frozen=True):
    owed: Amount | None = None


class Block(msgspec.Struct, frozen=True):
    fields: BlockFields | None = None


class AddressFields(msgspec.Struct, frozen=True):
    code: Ref | None = None
    data: str | None = None


class Address(msgspec.Struct, frozen=True):
    fields: AddressFields | None = None


class PatronFields(msgspec.Struct, frozen=True):
    barcode: str | None = None
    firstName: str | None = None
    lastName: str | None = None
    preferredName: str | None = None
    privilegeExpiresDate: dt.date | None = None
    profile: Ref | None = None
    library: Ref | None = None
    standing: Ref | None = None
    address1: list[Address] = []
    blockList: list[Block] = []


class PatronRecord(msgspec.Struct, frozen=True):
    key: str
    fields: PatronFields


class Authenticated(msgspec.Struct, frozen=True):
    patronKey: str


class StaffLogin(msgspec.Struct, frozen=True):
    sessionToken: str


class StaffSession:
    """An `Authorizer`: the staff `sessionToken`, fetched once and renewed after a 401."""

    def __init__(self, settings: SymphonySettings) -> None:
        self._credentials = {"login": settings.user, "password": settings.password}
        self._token: str | None = None
        self._lock = asyncio.Lock()
        self.logins = 0

    async def headers(self, http: HttpIls) -> dict[str, str]:
        if self._token is None:
            async with self._lock:
                if self._token is None:
                    await self._login(http)
        assert self._token is not None
        return {"x-sirs-sessionToken": self._token}

    def rejected(self, sent: Mapping[str, str]) -> None:
        if sent.get("x-sirs-sessionToken") == self._token:
            self._token = None

    async def _login(self, http: HttpIls) -> None:
        reply = await http.send(
            "POST", "/user/staff/login", what="staff login", json=self._credentials
        )
        if reply.status != 200:
            raise IlsUnavailable(f"symphony: staff login refused (status {reply.status})")
        self._token = http.decode(reply, StaffLogin, "staff login").sessionToken
        if not self._token:
            raise IlsUnavailable("symphony: staff login: no session token")
        self.logins += 1


class SymphonyStore(HttpStore):
    name = "symphony"
    forbidden = "the client id or staff user may not"
    settings: SymphonySettings

    def __init__(self, settings: SymphonySettings, http: HttpIls, staff: StaffSession) -> None:
        super().__init__(settings, http, set())
        self.staff = staff

    # -- Store ------------------------------------------------------------------------------
    async def check_pin(self, barcode: str, pin: str) -> Verification:
        reply = await self.http.send(
            "POST",
            "/user/patron/authenticate",
            what="PIN check",
            json={"barcode": barcode, "password": pin},
        )
        if reply.status == 200:
            key = self.http.decode(reply, Authenticated, "PIN check").patronKey
            patron = await self._by_key(key, barcode)
            return Verification(patron, pin_ok=patron is not None)
        if reply.status == 401:
            return await self.wrong_or_unknown(barcode, can_tell=self.settings.tell_unknown)
        raise self.failure(reply, "PIN check")

    async def find(self, barcode: str) -> Patron | None:
        return await self._by_barcode(barcode)

    async def health(self) -> Health:
        async def probe() -> None:
            await self.staff.headers(self.http)  # a staff session proves id, login and server

        return await probe_health(self.http, probe, "symphony", "Symphony Web Services answering")

    # -- internals --------------------------------------------------------------------------
    async def _read(self, url: str, what: str) -> PatronRecord | None:
        reply = await self.http.call(
            "GET", url, what=what, auth=self.staff, params={"includeFields": INCLUDE}
        )
        if reply.status == 404:
            return None
        if reply.status != 200:
            raise self.failure(reply, what)
        return self.http.decode(reply, PatronRecord, what)

    async def _by_key(self, key: str, typed: str) -> Patron | None:
        hit = self.records.get(key)
        if hit is not None:
            return hit
        record = await self._read(f"/user/patron/key/{quote(key, safe='')}", "patron")
        if record is None:
            return None
        patron = self._patron(record, typed)
        self.records.put(key, patron)
        return patron

    async def _by_barcode(self, barcode: str) -> Patron | None:
        record = await self._read(f"/user/patron/barcode/{quote(barcode, safe='')}", "lookup")
        return None if record is None else self._patron(record, barcode)

    def _patron(self, record: PatronRecord, typed: str) -> Patron:
        f = record.fields
        standing = f.standing.key if f.standing else "OK"
        blocked = standing not in self.settings.ok_standings
        owed = Decimal("0.00")
        try:
            for block in f.blockList:
                if block.fields and block.fields.owed:
                    owed += Decimal(str(block.fields.owed.amount))
        except InvalidOperation:
            raise IlsUnavailable("symphony: unreadable amount owed") from None
        email = next(
            (
                a.fields.data
                for a in f.address1
                if a.fields and a.fields.code and a.fields.code.key == "EMAIL" and a.fields.data
            ),
            None,
        )
        profile = f.profile.key if f.profile else ""
        given = f.preferredName or f.firstName
        return Patron(
            barcode=f.barcode or typed,
            record_id=record.key,
            name=", ".join(p for p in (f.lastName, given) if p),
            email=email,
            category=self.settings.profiles.get(profile, profile),
            expires=f.privilegeExpiresDate,
            blocked=blocked,
            blocked_reason=f"standing {standing} in Symphony" if blocked else None,
            fines=max(owed, Decimal("0.00")).quantize(Decimal("0.01")),
            home_library=(f.library.key if f.library else "") or None,
        )


async def open_store(settings: SymphonySettings, services: StoreServices) -> SymphonyStore:
    """Build the client; Symphony being down at start-up is not an error."""
    headers = {"x-sirs-clientID": settings.client_id, "SD-Originating-App-Id": settings.app_id}
    if settings.working_library:
        headers["SD-Working-LibraryID"] = settings.working_library
    http = HttpIls(settings, name="symphony", base_dir=services.base_dir, headers=headers)
    return SymphonyStore(settings, http, StaffSession(settings))


PLUGIN = StorePlugin(
    name="symphony",
    settings=SymphonySettings,
    open=open_store,
    description="SirsiDynix Symphony Web Services (ILSWS patron authenticate, staff reads)",
)
