"""`[store] plugin = "folio"`: PINs checked by FOLIO (mod-users' patron PIN) through Okapi.

FOLIO has no single "barcode + PIN" call, so a check is two (folio-org RAML/JSON schemas; see
docs/ils-rest.md):
1. the user: `GET /users?query=barcode=="<barcode>"` (CQL, the value escaped), or `username`,
   `externalSystemId`, or either of barcode/username. No user: "unknown card" (FOLIO tells
   them apart, unlike Koha). After a good PIN the user found is kept per typed identifier for
   `user_cache_seconds`, so a repeated login is the PIN check alone; a wrong PIN drops it
   (the next attempt looks the card up again, in case it now belongs to someone else).
2. the PIN: `POST /patron-pin/verify` `{id, pin}` → 200 valid, 422 not valid (also when the
   patron has no PIN). mod-users keeps no failure counter; the bridge's throttle is the only
   one. The check is never sent twice.
Only after a good PIN, the standing (cached per user for `status_cache_seconds`):
`GET /automated-patron-blocks/{id}` (`blockBorrowing`/`blockRenewals`/`blockRequests`,
`message`), `GET /manualblocks?query=userId==<id>` (`borrowing`/`renewals`/`requests`,
`expirationDate`, `patronMessage`), `GET /accounts?query=userId==<id> and status.name=="Open"`
(`remaining`), `GET /groups/{patronGroup}` (the group name as category); the user's `active`
and `expirationDate`.

The bridge logs in as a service user: `POST /authn/login-with-expiry` (token in the
`folioAccessToken` cookie, lifetime from its Max-Age or the body's `accessTokenExpiration`),
or the legacy `POST /authn/login` (`x-okapi-token` header, no expiry). Every request carries
`X-Okapi-Tenant` and `X-Okapi-Token`; a 401 logs in again once.

PIN change and reset: `POST /patron-pin` `{id, pin}` → 201 (no old-PIN check in FOLIO: the
bridge checks the old PIN first and applies its PIN policy).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
import uuid
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from http.cookies import CookieError, SimpleCookie
from typing import Annotated, Literal

import msgspec

from bridge.core.patron import Patron
from bridge.core.secret import Secret
from bridge.core.store import (
    Capability,
    Health,
    StorePlugin,
    StoreServices,
    Verification,
)
from plugins.ils_http.client import HttpIls, IlsUnavailable, Reply
from plugins.ils_http.records import RecordCache
from plugins.ils_http.settings import CacheSeconds, HttpStoreSettings
from plugins.ils_http.store import HttpStore, PinChange, probe_health

_TENANT = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
BlockKind = Literal["borrowing", "renewals", "requests"]
DEFAULT_TOKEN_SECONDS = 600.0  # mod-login's documented example Max-Age
MAX_RESULTS = 20


class FolioSettings(HttpStoreSettings, frozen=True):
    tenant: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,62}$")] = ""
    username: str = ""  # the service user the bridge logs in as
    password: str = ""  # its password (password_file / password_env keep it out)
    login: Literal["expiry", "legacy"] = "expiry"  # /authn/login-with-expiry or /authn/login
    # What patrons type: their barcode, their FOLIO username, externalSystemId, or either of
    # barcode/username.
    identifier: Literal["barcode", "username", "externalSystemId", "either"] = "barcode"
    # Which block actions make a patron "blocked" for the bridge.
    blocks: tuple[BlockKind, ...] = ("borrowing",)
    automated_blocks: bool = True  # read mod-patron-blocks
    manual_blocks: bool = True  # read mod-feesfines' manual blocks
    fines: Literal["accounts", "none"] = "accounts"
    category: Literal["group", "uuid"] = "group"  # the patron group's name, or its UUID
    inactive_is_blocked: bool = True  # active = false and not expired: blocked
    # How long the user found for a typed identifier is reused after a good PIN (0: never):
    # a barcode moved to another user is seen at most this late.
    user_cache_seconds: CacheSeconds = 30.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _TENANT.match(self.tenant):
            raise ValueError("tenant must be a FOLIO tenant id (lower case, digits, _)")
        if not self.username or not self.password:
            raise ValueError("username and password (or password_file/_env) are required")


# -- what FOLIO sends (mod-users userdata.json, usergroup.json; mod-patron-blocks; mod-feesfines) -
class Personal(msgspec.Struct, frozen=True):
    lastName: str = ""
    firstName: str | None = None
    preferredFirstName: str | None = None
    email: str | None = None


class FolioUser(msgspec.Struct, frozen=True):
    id: str
    username: str | None = None
    barcode: str | None = None
    externalSystemId: str | None = None
    active: bool = True
    patronGroup: str | None = None
    expirationDate: str | None = None
    personal: Personal | None = None


class Users(msgspec.Struct, frozen=True):
    users: list[FolioUser]
    totalRecords: int


class AutomatedBlock(msgspec.Struct, frozen=True):
    blockBorrowing: bool = False
    blockRenewals: bool = False
    blockRequests: bool = False
    message: str = ""


class AutomatedBlocks(msgspec.Struct, frozen=True):
    automatedPatronBlocks: list[AutomatedBlock]


class ManualBlock(msgspec.Struct, frozen=True):
    desc: str
    borrowing: bool = False
    renewals: bool = False
    requests: bool = False
    patronMessage: str | None = None
    expirationDate: str | None = None


class ManualBlocks(msgspec.Struct, frozen=True):
    manualblocks: list[ManualBlock]


class Account(msgspec.Struct, frozen=True):
    remaining: float


class Accounts(msgspec.Struct, frozen=True):
    accounts: list[Account]
    totalRecords: int


class Group(msgspec.Struct, frozen=True):
    group: str


class LoginWithExpiry(msgspec.Struct, frozen=True):
    accessTokenExpiration: str | None = None
    accessToken: str | None = None  # older mod-login put the token here too


_CQL_SPECIAL = re.compile(r'([\\"*?^])')


def cql_string(value: str) -> str:
    """A CQL quoted string: backslash, quote and the masking characters escaped."""
    return '"' + _CQL_SPECIAL.sub(r"\\\1", value) + '"'


def parse_time(value: str | None) -> dt.datetime | None:
    """FOLIO's ISO 8601 date-times ("2027-01-31T23:59:59.000+00:00", "...Z")."""
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise IlsUnavailable("folio: unreadable date") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower() and len(value) == 36
    except ValueError:
        return False


class FolioLogin:
    """An `Authorizer`: the service user's Okapi token, with the tenant on every request."""

    def __init__(self, settings: FolioSettings) -> None:
        self.tenant = settings.tenant
        self.mode = settings.login
        self._credentials = {"username": settings.username, "password": settings.password}
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()
        self.logins = 0

    async def headers(self, http: HttpIls) -> dict[str, str]:
        if self._token is None or http.monotonic() >= self._expires:
            async with self._lock:
                if self._token is None or http.monotonic() >= self._expires:
                    await self._login(http)
        assert self._token is not None
        return {"X-Okapi-Tenant": self.tenant, "X-Okapi-Token": self._token}

    def rejected(self, sent: Mapping[str, str]) -> None:
        if sent.get("X-Okapi-Token") == self._token:
            self._token = None

    async def _login(self, http: HttpIls) -> None:
        path = "/authn/login-with-expiry" if self.mode == "expiry" else "/authn/login"
        started = http.monotonic()
        reply = await http.send(
            "POST",
            path,
            what="login",
            json=self._credentials,
            headers={"X-Okapi-Tenant": self.tenant},
        )
        if reply.status != 201:
            raise IlsUnavailable(f"folio: login refused (status {reply.status})")
        if self.mode == "legacy":
            token = reply.headers.get("x-okapi-token")
            lifetime = float("inf")
        else:
            token, lifetime = self._from_expiry(http, reply)
        if not token:
            raise IlsUnavailable("folio: login: no token in the answer")
        self._token = token
        self._expires = started + lifetime - min(30.0, lifetime / 10)
        self.logins += 1

    @staticmethod
    def _from_expiry(http: HttpIls, reply: Reply) -> tuple[str | None, float]:
        token: str | None = None
        lifetime: float | None = None
        for header in reply.headers.get_list("set-cookie"):
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(header)
            except CookieError:
                continue
            morsel = jar.get("folioAccessToken")
            if morsel is not None:
                token = morsel.value
                if morsel["max-age"].isdigit():
                    lifetime = float(morsel["max-age"])
        body = http.decode(reply, LoginWithExpiry, "login")
        token = token or body.accessToken
        if lifetime is None:
            expires = parse_time(body.accessTokenExpiration)
            lifetime = expires.timestamp() - time.time() if expires else DEFAULT_TOKEN_SECONDS
        if lifetime <= 0:
            raise IlsUnavailable("folio: login: the token is already expired")
        return token, lifetime


class FolioStore(HttpStore):
    name = "folio"
    forbidden = "the service user lacks a permission"
    pin_change = PinChange(201)
    settings: FolioSettings

    def __init__(self, settings: FolioSettings, http: HttpIls, auth: FolioLogin) -> None:
        super().__init__(settings, http, {Capability.BY_EMAIL, Capability.BY_RECORD_ID})
        self.auth = auth
        self.groups: dict[str, str] = {}
        self.users: RecordCache[FolioUser] = RecordCache(
            settings.user_cache_seconds, http.monotonic
        )

    # -- Store ------------------------------------------------------------------------------
    async def verify_pin(self, barcode: str, pin: Secret) -> Verification:
        text = pin.text()
        if not barcode:
            return Verification(None, pin_ok=False)
        async with self.http.deadline("PIN check"):
            user = self.users.get(barcode) or await self._find(barcode)
            if user is None:
                return Verification(None, pin_ok=False)
            if text is None:
                return Verification(self._patron(user, barcode), pin_ok=False)
            reply = await self.http.call(
                "POST",
                "/patron-pin/verify",
                what="PIN check",
                auth=self.auth,
                json={"id": user.id, "pin": text},
            )
            if reply.status == 200:
                self.users.put(barcode, user)
                return Verification(await self._status(user, barcode), pin_ok=True)
            if reply.status == 422:
                self.users.drop(barcode)
                return Verification(self._patron(user, barcode), pin_ok=False)
            raise self.failure(reply, "PIN check")

    async def find(self, barcode: str) -> Patron | None:
        user = await self._find(barcode)
        return None if user is None else await self._status(user, barcode)

    async def lookup_by_email(self, email: str) -> list[Patron]:
        if not email:
            return []
        async with self.http.deadline("lookup"):
            users = await self._users(f"personal.email=={cql_string(email)}")
            wanted = email.casefold()
            users = [
                u for u in users if ((u.personal and u.personal.email) or "").casefold() == wanted
            ]
            return list(await asyncio.gather(*(self._status(u, "") for u in users)))

    async def lookup_by_record_id(self, record_id: str) -> Patron | None:
        if not is_uuid(record_id):
            return None
        async with self.http.deadline("lookup"):
            reply = await self.http.call("GET", f"/users/{record_id}", what="user", auth=self.auth)
            if reply.status == 404:
                return None
            if reply.status != 200:
                raise self.failure(reply, "user")
            user = self.http.decode(reply, FolioUser, "user")
            return await self._status(user, "", cached=False)

    def settable(self, patron: Patron) -> bool:
        return is_uuid(patron.record_id)

    async def set_pin(self, patron: Patron, pin: str) -> Reply:
        return await self.http.call(
            "POST",
            "/patron-pin",
            what="PIN change",
            auth=self.auth,
            json={"id": patron.record_id, "pin": pin},
        )

    async def health(self) -> Health:
        async def probe() -> Reply:
            return await self.http.call(
                "GET", "/users", what="health", auth=self.auth, params={"limit": "0"}
            )

        return await probe_health(self.http, probe, "folio", "FOLIO answering")

    # -- internals --------------------------------------------------------------------------
    async def _users(self, query: str) -> list[FolioUser]:
        reply = await self.http.call(
            "GET",
            "/users",
            what="lookup",
            auth=self.auth,
            params={"query": query, "limit": str(MAX_RESULTS)},
        )
        if reply.status != 200:
            raise self.failure(reply, "lookup")
        return self.http.decode(reply, Users, "lookup").users

    async def _find(self, typed: str) -> FolioUser | None:
        keys = {
            "barcode": ("barcode",),
            "username": ("username",),
            "externalSystemId": ("externalSystemId",),
            "either": ("barcode", "username"),
        }[self.settings.identifier]
        query = " or ".join(f"{key}=={cql_string(typed)}" for key in keys)
        if len(keys) > 1:
            query = f"({query})"
        found = [u for u in await self._users(query) if typed in (getattr(u, k) for k in keys)]
        if len(found) > 1:
            raise IlsUnavailable("folio: the identifier matches more than one user")
        return found[0] if found else None

    def _patron(
        self,
        user: FolioUser,
        typed: str,
        *,
        reason: str | None = None,
        fines: Decimal = Decimal("0.00"),
        category: str = "",
    ) -> Patron:
        personal = user.personal or Personal()
        given = personal.preferredFirstName or personal.firstName
        name = ", ".join(part for part in (personal.lastName, given) if part)
        expires = parse_time(user.expirationDate)
        return Patron(
            barcode=user.barcode or typed,
            record_id=user.id,
            name=name,
            email=personal.email or None,
            category=category or user.patronGroup or "",
            expires=expires.date() if expires else None,
            blocked=reason is not None,
            blocked_reason=reason,
            fines=fines,
        )

    async def _status(self, user: FolioUser, typed: str, *, cached: bool = True) -> Patron:
        if cached:
            hit = self.records.get(user.id)
            if hit is not None:
                return hit
        auto, manual, fines, category = await asyncio.gather(
            self._automated(user.id), self._manual(user.id), self._fines(user.id), self._group(user)
        )
        reason = auto or manual
        if reason is None and not user.active and self.settings.inactive_is_blocked:
            expires = parse_time(user.expirationDate)
            if expires is None or expires >= dt.datetime.now(dt.UTC):
                reason = "inactive in FOLIO"
        patron = self._patron(user, typed, reason=reason, fines=fines, category=category)
        self.records.put(user.id, patron)
        return patron

    async def _automated(self, user_id: str) -> str | None:
        if not self.settings.automated_blocks:
            return None
        reply = await self.http.call(
            "GET", f"/automated-patron-blocks/{user_id}", what="blocks", auth=self.auth
        )
        if reply.status != 200:
            raise self.failure(reply, "blocks")
        kinds = self.settings.blocks
        for block in self.http.decode(reply, AutomatedBlocks, "blocks").automatedPatronBlocks:
            if (
                ("borrowing" in kinds and block.blockBorrowing)
                or ("renewals" in kinds and block.blockRenewals)
                or ("requests" in kinds and block.blockRequests)
            ):
                return block.message or "blocked in FOLIO"
        return None

    async def _manual(self, user_id: str) -> str | None:
        if not self.settings.manual_blocks:
            return None
        reply = await self.http.call(
            "GET",
            "/manualblocks",
            what="manual blocks",
            auth=self.auth,
            params={"query": f"userId=={user_id}", "limit": "100"},
        )
        if reply.status != 200:
            raise self.failure(reply, "manual blocks")
        now = dt.datetime.now(dt.UTC)
        kinds = self.settings.blocks
        for block in self.http.decode(reply, ManualBlocks, "manual blocks").manualblocks:
            until = parse_time(block.expirationDate)
            if until is not None and until < now:
                continue
            if (
                ("borrowing" in kinds and block.borrowing)
                or ("renewals" in kinds and block.renewals)
                or ("requests" in kinds and block.requests)
            ):
                return block.patronMessage or block.desc or "blocked in FOLIO"
        return None

    async def _fines(self, user_id: str) -> Decimal:
        if self.settings.fines == "none":
            return Decimal("0.00")
        reply = await self.http.call(
            "GET",
            "/accounts",
            what="accounts",
            auth=self.auth,
            params={"query": f'userId=={user_id} and status.name=="Open"', "limit": "1000"},
        )
        if reply.status != 200:
            raise self.failure(reply, "accounts")
        total = Decimal("0.00")
        try:
            for account in self.http.decode(reply, Accounts, "accounts").accounts:
                total += Decimal(str(account.remaining))
        except InvalidOperation:
            raise IlsUnavailable("folio: accounts: unreadable amount") from None
        return max(total, Decimal("0.00")).quantize(Decimal("0.01"))

    async def _group(self, user: FolioUser) -> str:
        group_id = user.patronGroup
        if self.settings.category == "uuid" or not group_id or not is_uuid(group_id):
            return group_id or ""
        known = self.groups.get(group_id)
        if known is not None:
            return known
        reply = await self.http.call("GET", f"/groups/{group_id}", what="group", auth=self.auth)
        if reply.status == 404:
            return group_id
        if reply.status != 200:
            raise self.failure(reply, "group")
        name = self.http.decode(reply, Group, "group").group
        self.groups[group_id] = name
        return name


async def open_store(settings: FolioSettings, services: StoreServices) -> FolioStore:
    """Build the client; FOLIO being down at start-up is not an error."""
    http = HttpIls(settings, name="folio", base_dir=services.base_dir)
    return FolioStore(settings, http, FolioLogin(settings))


PLUGIN = StorePlugin(
    name="folio",
    settings=FolioSettings,
    open=open_store,
    description="FOLIO through Okapi (patron PIN check, blocks, fines, PIN change)",
)
