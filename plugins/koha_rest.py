"""`[store] plugin = "koha-rest"`: PINs checked by Koha itself through its REST API.

Calls (Koha's OpenAPI spec, `api/v1/swagger/` in Koha-Community/Koha; see docs/ils-rest.md):
- token: `POST /api/v1/oauth/token` (client credentials; syspref RESTOAuth2ClientCredentials),
  or HTTP Basic for sites that use RESTBasicAuth;
- PIN check: `POST /api/v1/auth/password/validation` `{identifier|userid, password}` → 201
  `{cardnumber, patron_id, userid}` (204 with no body in the first releases that had it);
  400 for an unknown card, a wrong PIN and a locked account alike. Koha counts the failure
  against the patron (`login_attempts`), so the check is never sent twice;
- status, only after a good PIN: `GET /api/v1/patrons/{patron_id}` (`expiry_date`,
  `restricted`, `patron_card_lost`, `incorrect_address`, `category_id`, `library_id`, names,
  `email`) and `GET /api/v1/patrons/{patron_id}/account` (`balance`), cached per record for
  `status_cache_seconds`;
- lookups (LDAP search, SIP2 63 without a PIN, PIN pages): `GET /api/v1/patrons?cardnumber=…`
  (or `userid`, `email`) with `_match=exact`; results are compared exactly again here, since
  Koha's default match is "contains";
- PIN change and reset: `POST /api/v1/patrons/{patron_id}/password` `{password, password_2}`.

Koha cannot tell an unknown card from a wrong PIN in its answer. With `tell_unknown` (the
default) a failed check is followed by a lookup of the card (a read, not a login attempt) so
the bridge can answer "unknown card" the way its other stores do; without it both are
"wrong PIN". The API user needs the `borrowers` permission (on 25.05 and later
`borrowers: api_validate_password` suffices for the check; lookups and PIN changes need more).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Literal

import msgspec

from bridge.core.patron import Patron
from bridge.core.store import (
    Capability,
    Health,
    StorePlugin,
    StoreServices,
    Verification,
)
from plugins.ils_http.client import Authorizer, HttpIls, IlsUnavailable, Reply
from plugins.ils_http.settings import HttpStoreSettings
from plugins.ils_http.store import HttpStore, PinChange, probe_health, refused
from plugins.ils_http.tokens import ClientCredentials

API = "/api/v1"
BlockReason = Literal["restricted", "card_lost", "incorrect_address"]
MAX_RESULTS = 20


class KohaRestSettings(HttpStoreSettings, frozen=True):
    auth: Literal["oauth2", "basic"] = "oauth2"
    client_id: str = ""  # oauth2: the API key's client id
    secret: str = ""  # oauth2: its client secret (secret_file / secret_env keep it out)
    user: str = ""  # basic: the staff user
    password: str = ""  # basic: its password
    # What patrons type: their card number, their Koha username, or either (Koha tries the
    # username first, then the card number).
    identifier: Literal["cardnumber", "userid", "either"] = "cardnumber"
    # Which Koha flags make a patron "blocked" for the bridge.
    blocked_when: tuple[BlockReason, ...] = ("restricted", "card_lost", "incorrect_address")
    fines: Literal["account", "none"] = "account"  # read /patrons/{id}/account, or never
    tell_unknown: bool = True  # after a failed check, look the card up to say "unknown card"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.auth == "oauth2" and not (self.client_id and self.secret):
            raise ValueError("auth = oauth2 needs client_id and secret (or secret_file/_env)")
        if self.auth == "basic" and not (self.user and self.password):
            raise ValueError("auth = basic needs user and password (or password_file/_env)")


# -- what Koha sends (definitions/patron.yaml, patron_balance.yaml, paths/auth.yaml) -------------
class Validated(msgspec.Struct, frozen=True):
    patron_id: int
    cardnumber: str | None = None
    userid: str | None = None


class KohaError(msgspec.Struct, frozen=True):
    error: str = ""


class KohaPatron(msgspec.Struct, frozen=True):
    patron_id: int
    category_id: str
    library_id: str
    surname: str | None = None
    cardnumber: str | None = None
    userid: str | None = None
    firstname: str | None = None
    preferred_name: str | None = None
    email: str | None = None
    expiry_date: dt.date | None = None
    restricted: bool = False
    patron_card_lost: bool | None = None
    incorrect_address: bool | None = None


class Balance(msgspec.Struct, frozen=True):
    balance: float


class BasicAuth:
    """RESTBasicAuth: a staff user and password on every request."""

    def __init__(self, user: str, password: str) -> None:
        raw = f"{user}:{password}".encode()
        self._header = "Basic " + base64.b64encode(raw).decode("ascii")

    async def headers(self, http: HttpIls) -> dict[str, str]:
        return {"Authorization": self._header}

    def rejected(self, sent: Mapping[str, str]) -> None:
        """Nothing to renew: a second 401 reports the bad credentials."""


def to_patron(
    koha: KohaPatron, balance: Decimal, blocked_when: tuple[BlockReason, ...], typed: str
) -> Patron:
    """Koha's record in the bridge's terms; `typed` is what the patron typed (barcode)."""
    given = koha.preferred_name or koha.firstname
    name = ", ".join(part for part in (koha.surname, given) if part)
    reason = None
    if "restricted" in blocked_when and koha.restricted:
        reason = "restricted in Koha"
    elif "card_lost" in blocked_when and koha.patron_card_lost:
        reason = "card reported lost"
    elif "incorrect_address" in blocked_when and koha.incorrect_address:
        reason = "address unconfirmed"
    return Patron(
        barcode=koha.cardnumber or typed,
        record_id=str(koha.patron_id),
        name=name,
        email=koha.email or None,
        category=koha.category_id,
        expires=koha.expiry_date,
        blocked=reason is not None,
        blocked_reason=reason,
        fines=max(balance, Decimal("0.00")),
        home_library=koha.library_id or None,
    )


def _money(value: float) -> Decimal:
    try:
        return Decimal(str(value)).quantize(Decimal("0.01"))
    except InvalidOperation:
        raise IlsUnavailable("koha-rest: account: unreadable balance") from None


class KohaRestStore(HttpStore):
    name = "koha-rest"
    forbidden = "the API user lacks the permission"
    pin_change = PinChange(
        200,
        {
            400: "Koha refused the new PIN (its password rules)",
            404: "koha-rest: the patron is no longer in Koha",
        },
    )
    settings: KohaRestSettings

    def __init__(self, settings: KohaRestSettings, http: HttpIls, auth: Authorizer) -> None:
        super().__init__(settings, http, {Capability.BY_EMAIL, Capability.BY_RECORD_ID})
        self.auth = auth

    # -- Store ------------------------------------------------------------------------------
    async def check_pin(self, barcode: str, pin: str) -> Verification:
        reply = await self.http.call(
            "POST",
            f"{API}/auth/password/validation",
            what="PIN check",
            auth=self.auth,
            json=self._validation_body(barcode, pin),
        )
        if reply.status == 201:
            found = self.http.decode(reply, Validated, "PIN check")
            if self.settings.identifier == "cardnumber" and found.cardnumber != barcode:
                # Koha matched a username: not what this library lets patrons type.
                return refused(barcode)
            patron = await self._status(str(found.patron_id), barcode)
            return Verification(patron, pin_ok=patron is not None)
        if reply.status == 204:  # the first releases: no body, find the record ourselves
            patron = await self._find(barcode)
            return Verification(patron, pin_ok=patron is not None)
        if reply.status == 400:
            return await self._refused(reply, barcode)
        raise self.failure(reply, "PIN check")

    async def find(self, barcode: str) -> Patron | None:
        return await self._find(barcode)

    async def lookup_by_email(self, email: str) -> list[Patron]:
        if not email:
            return []
        async with self.http.deadline("lookup"):
            found = await self._search({"email": email})
            wanted = email.casefold()
            found = [p for p in found if (p.email or "").casefold() == wanted]
            return list(await asyncio.gather(*(self._complete(p, "") for p in found)))

    async def lookup_by_record_id(self, record_id: str) -> Patron | None:
        if not record_id.isascii() or not record_id.isdigit() or len(record_id) > 18:
            return None
        async with self.http.deadline("lookup"):
            return await self._status(record_id, "", cached=False)

    async def set_pin(self, patron: Patron, pin: str) -> Reply:
        return await self.http.call(
            "POST",
            f"{API}/patrons/{patron.record_id}/password",
            what="PIN change",
            auth=self.auth,
            json={"password": pin, "password_2": pin},
        )

    async def health(self) -> Health:
        async def probe() -> Reply:
            return await self.http.call(
                "GET", f"{API}/patrons", what="health", auth=self.auth, params={"_per_page": "1"}
            )

        return await probe_health(self.http, probe, "koha-rest", "Koha REST API answering")

    # -- internals --------------------------------------------------------------------------
    def _validation_body(self, barcode: str, pin: str) -> dict[str, str]:
        if self.settings.identifier == "userid":
            return {"userid": barcode, "password": pin}
        return {"identifier": barcode, "password": pin}

    async def _refused(self, reply: Reply, barcode: str) -> Verification:
        error = self.http.decode(reply, KohaError, "PIN check").error
        if error == "Password expired":
            # Koha says so only when the password itself matched; the patron must change it.
            patron = await self._find(barcode)
            if patron is not None:
                expired = dataclasses.replace(
                    patron, blocked=True, blocked_reason="PIN expired in Koha; change it there"
                )
                return Verification(expired, pin_ok=True)
        if self.settings.tell_unknown:
            known = await self._find(barcode, with_fines=False)
            return Verification(known, pin_ok=False)
        return refused(barcode)

    async def _find(self, barcode: str, *, with_fines: bool = True) -> Patron | None:
        """The patron a typed identifier names, by the configured identifier."""
        keys = {
            "cardnumber": ("cardnumber",),
            "userid": ("userid",),
            "either": ("userid", "cardnumber"),
        }[self.settings.identifier]
        for key in keys:
            found = [
                p
                for p in await self._search({key: barcode})
                if (p.cardnumber if key == "cardnumber" else p.userid) == barcode
            ]
            if len(found) == 1:
                if not with_fines:
                    return to_patron(found[0], Decimal(0), self.settings.blocked_when, barcode)
                return await self._complete(found[0], barcode)
            if len(found) > 1:
                raise IlsUnavailable(f"koha-rest: {key} matches more than one patron")
        return None

    async def _search(self, query: dict[str, str]) -> list[KohaPatron]:
        params = {**query, "_match": "exact", "_per_page": str(MAX_RESULTS)}
        reply = await self.http.call(
            "GET", f"{API}/patrons", what="lookup", auth=self.auth, params=params
        )
        if reply.status != 200:
            raise self.failure(reply, "lookup")
        return self.http.decode(reply, list[KohaPatron], "lookup")

    async def _status(self, record_id: str, typed: str, *, cached: bool = True) -> Patron | None:
        """The record (and balance) after a good PIN, from the short cache when fresh."""
        if cached:
            hit = self.records.get(record_id)
            if hit is not None:
                return hit
        reply = await self.http.call(
            "GET", f"{API}/patrons/{record_id}", what="patron", auth=self.auth
        )
        if reply.status == 404:
            return None
        if reply.status != 200:
            raise self.failure(reply, "patron")
        koha = self.http.decode(reply, KohaPatron, "patron")
        return await self._complete(koha, typed)

    async def _complete(self, koha: KohaPatron, typed: str) -> Patron:
        balance = Decimal("0.00")
        if self.settings.fines == "account":
            reply = await self.http.call(
                "GET", f"{API}/patrons/{koha.patron_id}/account", what="account", auth=self.auth
            )
            if reply.status != 200:
                raise self.failure(reply, "account")
            balance = _money(self.http.decode(reply, Balance, "account").balance)
        patron = to_patron(koha, balance, self.settings.blocked_when, typed)
        self.records.put(patron.record_id, patron)
        return patron


async def open_store(settings: KohaRestSettings, services: StoreServices) -> KohaRestStore:
    """Build the client; Koha being down at start-up is not an error (answers "unavailable")."""
    http = HttpIls(settings, name="koha-rest", base_dir=services.base_dir)
    auth: Authorizer
    if settings.auth == "oauth2":
        auth = ClientCredentials(f"{API}/oauth/token", settings.client_id, settings.secret)
    else:
        auth = BasicAuth(settings.user, settings.password)
    return KohaRestStore(settings, http, auth)


PLUGIN = StorePlugin(
    name="koha-rest",
    settings=KohaRestSettings,
    open=open_store,
    description="Koha's REST API (PIN check, patron status, PIN change)",
)
