"""`[store] plugin = "alma"`: PINs checked by Ex Libris Alma through its Users API.

Calls (Alma REST API `/almaws/v1`, JSON; see docs/ils-rest.md):
- the API key on every call, as the header `Authorization: apikey <key>` (the default; keys in
  URLs end up in proxy logs) or the `apikey` query parameter;
- PIN check: `POST /almaws/v1/users/{id}?user_id_type=all_unique&op=auth` with the password
  in the `Exl-User-Pw` header (never in the query string, where VuFind's debug log printed it)
  → 204 when right; 400 with `errorList.error[].errorCode` 401866 (authentication failed) or
  401890 (user not found): Alma tells an unknown card from a wrong PIN. Only internal users
  (passwords in the Ex Libris Identity Service) can be checked this way;
- status, only after a good PIN: `GET /almaws/v1/users/{id}?user_id_type=all_unique&view=full
  &expand=fees` → `primary_id`, names, `user_group`, `expiry_date`, `status`,
  `contact_info.email[]`, `user_block[]`, `fees.value`; cached per record;
- lookups: the same GET (401861 = not found).
No PIN change (the capability is absent: patrons change it where the library tells them).
Alma's daily API quota and per-second limit answer 429; the breaker then waits Retry-After.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Literal
from urllib.parse import quote

import msgspec

from bridge.core.patron import Patron
from bridge.core.store import (
    Health,
    StorePlugin,
    StoreServices,
    Verification,
)
from plugins.ils_http.client import HttpIls, IlsUnavailable, Reply
from plugins.ils_http.settings import HttpStoreSettings
from plugins.ils_http.store import HttpStore, probe_health, refused

AUTH_FAILED = "401866"
NOT_FOUND = frozenset({"401890", "401861"})


class AlmaSettings(HttpStoreSettings, frozen=True):
    # base_url: the regional API host, e.g. https://api-eu.hosted.exlibrisgroup.com
    api_key: str = ""  # api_key_file / api_key_env keep it out of the file
    api_key_in: Literal["header", "query"] = "header"
    # Which user_group codes count as which category (unlisted: the code)
    user_groups: dict[str, str] = msgspec.field(default_factory=dict)
    # user_block types that do not refuse a login (e.g. a notice-only block)
    ignored_blocks: tuple[str, ...] = ()
    inactive_is_blocked: bool = True  # status INACTIVE: blocked

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.api_key:
            raise ValueError("api_key (or api_key_file/_env) is required")


# -- what Alma sends ----------------------------------------------------------------------------
class Coded(msgspec.Struct, frozen=True):
    value: str = ""
    desc: str | None = None


class Email(msgspec.Struct, frozen=True):
    email_address: str
    preferred: bool = False


class ContactInfo(msgspec.Struct, frozen=True):
    email: list[Email] = []


class UserBlock(msgspec.Struct, frozen=True):
    block_type: Coded | None = None
    block_description: Coded | None = None
    block_status: str = "ACTIVE"
    expiry_date: str | None = None


class Fees(msgspec.Struct, frozen=True):
    value: float = 0.0


class AlmaUser(msgspec.Struct, frozen=True):
    primary_id: str
    first_name: str | None = None
    last_name: str | None = None
    user_group: Coded | None = None
    expiry_date: str | None = None
    status: Coded | None = None
    contact_info: ContactInfo | None = None
    user_block: list[UserBlock] = []
    fees: Fees | None = None


class AlmaErrorItem(msgspec.Struct, frozen=True):
    errorCode: str
    errorMessage: str = ""


class AlmaErrorList(msgspec.Struct, frozen=True):
    error: list[AlmaErrorItem]


class AlmaError(msgspec.Struct, frozen=True):
    errorList: AlmaErrorList
    errorsExist: bool = True


def alma_date(value: str | None) -> dt.date | None:
    """Alma's dates: "2027-12-31Z" or "2027-12-31"."""
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value.removesuffix("Z")[:10])
    except ValueError:
        raise IlsUnavailable("alma: unreadable date") from None


class AlmaStore(HttpStore):
    name = "alma"
    settings: AlmaSettings

    def __init__(self, settings: AlmaSettings, http: HttpIls) -> None:
        super().__init__(settings, http, set())

    # -- Store ------------------------------------------------------------------------------
    async def check_pin(self, barcode: str, pin: str) -> Verification:
        reply = await self.http.send(
            "POST",
            self._user_url(barcode),
            what="PIN check",
            params=self._params({"user_id_type": "all_unique", "op": "auth"}),
            headers={**self._auth(), "Exl-User-Pw": pin},
        )
        if reply.status == 204:
            patron = await self._status(barcode)
            return Verification(patron, pin_ok=patron is not None)
        code = self._error_code(reply, "PIN check")
        if code == AUTH_FAILED:
            return refused(barcode)
        if code in NOT_FOUND:
            return Verification(None, pin_ok=False)
        raise self._failure(reply, code, "PIN check")

    async def find(self, barcode: str) -> Patron | None:
        return await self._status(barcode, cached=False)

    async def health(self) -> Health:
        async def probe() -> Reply:
            return await self.http.send(
                "GET",
                "/almaws/v1/users/test",
                what="health",
                params=self._params({}),
                headers=self._auth(),
            )

        return await probe_health(self.http, probe, "alma", "Alma API answering")

    # -- internals --------------------------------------------------------------------------
    @staticmethod
    def _user_url(user_id: str) -> str:
        return f"/almaws/v1/users/{quote(user_id, safe='')}"

    def _auth(self) -> dict[str, str]:
        if self.settings.api_key_in == "header":
            return {"Authorization": f"apikey {self.settings.api_key}"}
        return {}

    def _params(self, params: dict[str, str]) -> dict[str, str]:
        out = {**params, "format": "json"}
        if self.settings.api_key_in == "query":
            out["apikey"] = self.settings.api_key
        return out

    def _error_code(self, reply: Reply, what: str) -> str:
        if reply.status in (401, 403):
            raise IlsUnavailable(f"alma: {what}: the API key was refused ({reply.status})")
        if reply.status != 400:
            raise self.http.unexpected(reply, what)
        errors = self.http.decode(reply, AlmaError, what).errorList.error
        return errors[0].errorCode if errors else ""

    def _failure(self, reply: Reply, code: str, what: str) -> IlsUnavailable:
        self.http.breaker.failure(self.http.monotonic())
        return IlsUnavailable(f"alma: {what}: Alma error {code or reply.status}")

    async def _status(self, user_id: str, *, cached: bool = True) -> Patron | None:
        if cached:
            hit = self.records.get(user_id)
            if hit is not None:
                return hit
        reply = await self.http.send(
            "GET",
            self._user_url(user_id),
            what="user",
            params=self._params({"user_id_type": "all_unique", "view": "full", "expand": "fees"}),
            headers=self._auth(),
        )
        if reply.status != 200:
            code = self._error_code(reply, "user")
            if code in NOT_FOUND:
                return None
            raise self._failure(reply, code, "user")
        patron = self._patron(self.http.decode(reply, AlmaUser, "user"), user_id)
        self.records.put(user_id, patron)
        return patron

    def _patron(self, user: AlmaUser, typed: str) -> Patron:
        today = dt.date.today()
        reason = None
        for block in user.user_block:
            kind = block.block_type.value if block.block_type else ""
            until = alma_date(block.expiry_date)
            if block.block_status != "ACTIVE" or kind in self.settings.ignored_blocks:
                continue
            if until is not None and until < today:
                continue
            described = block.block_description.desc if block.block_description else None
            reason = described or "blocked in Alma"
            break
        expires = alma_date(user.expiry_date)
        inactive = (user.status.value if user.status else "ACTIVE") != "ACTIVE"
        # An expired account is usually inactive too; it is answered as expired.
        not_expired = expires is None or expires >= today
        if reason is None and inactive and not_expired and self.settings.inactive_is_blocked:
            reason = "inactive in Alma"
        emails = user.contact_info.email if user.contact_info else []
        preferred = next((e for e in emails if e.preferred), emails[0] if emails else None)
        group = user.user_group.value if user.user_group else ""
        try:
            owed = Decimal(str(user.fees.value if user.fees else 0)).quantize(Decimal("0.01"))
        except InvalidOperation:
            raise IlsUnavailable("alma: unreadable fees") from None
        return Patron(
            barcode=typed,
            record_id=user.primary_id,
            name=", ".join(p for p in (user.last_name, user.first_name) if p),
            email=preferred.email_address if preferred else None,
            category=self.settings.user_groups.get(group, group),
            expires=expires,
            blocked=reason is not None,
            blocked_reason=reason,
            fines=max(owed, Decimal("0.00")),
        )


async def open_store(settings: AlmaSettings, services: StoreServices) -> AlmaStore:
    """Build the client; Alma being unreachable at start-up is not an error."""
    return AlmaStore(settings, HttpIls(settings, name="alma", base_dir=services.base_dir))


PLUGIN = StorePlugin(
    name="alma",
    settings=AlmaSettings,
    open=open_store,
    description="Ex Libris Alma Users API (op=auth PIN check with Exl-User-Pw, status)",
)
