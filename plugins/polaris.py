"""`[store] plugin = "polaris"`: PINs checked by Polaris through its API (PAPI).

Every PAPI call is signed: `Authorization: PWS <AccessID>:<signature>` with signature =
Base64(HMAC-SHA1(AccessKey, METHOD + URL + date [+ secret])) and the same RFC 1123 GMT date in
the `PolarisDate` (or `Date`) header; the secret is a patron's or staff user's AccessSecret
for patron methods. The URL signed is exactly the URL sent (`HttpIls.send(sign=...)` signs the
built request), with the barcode in the path encoded as Polaris clients encode it. The PIN is
sent only in the body of the patron authentication; it never enters a URL or a signature.

Calls (Polaris API reference as summarised in clcdpc/polaris-api-csharp and VuFind's driver;
see docs/ils-rest.md):
- PIN check: `POST /public/v1/{lang}/{app}/{org}/authenticator/patron` `{Barcode, Password}`
  → 200 with `PAPIErrorCode` 0, `PatronID`, `AccessSecret`, `AuthExpDate`; a wrong PIN or an
  unknown barcode is `PAPIErrorCode` -3001 (PAPI answers 200 even then). Polaris counts failed
  attempts (three in five minutes may lock the account), so the check is never sent twice;
- status, only after a good PIN, signed with the patron's AccessSecret:
  `GET …/patron/{barcode}/circulationblocks` (`CanPatronCirculate`, `Blocks[]`,
  `ExpirationDate`, `PatronCodeID`, `AssignedBranchName`, names, `EmailAddress`) and
  `GET …/patron/{barcode}/basicdata` (`ChargeBalance`); cached per barcode;
- lookups without a PIN (LDAP search, SIP2 63 without AD), only with staff credentials:
  `POST /protected/v1/{lang}/{app}/{org}/authenticator/staff` `{Domain, Username, Password}` →
  `AccessToken` and `AccessSecret` (about 24 h); then the same patron calls with
  `X-PAPI-AccessToken` and the staff AccessSecret in the signature;
- PIN change: not implemented (PAPI's PatronRegistrationUpdate); the PIN pages say to change
  the PIN in Polaris.
A 401 means PAPI refused the signature (wrong key, a clock more than 30 minutes off, or a key
without the method): "unavailable", never "wrong PIN".
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email.utils
import hashlib
import hmac
import re
import time
from decimal import Decimal, InvalidOperation
from typing import Literal
from urllib.parse import quote_plus

import httpx
import msgspec

from bridge.core.patron import Patron
from bridge.core.store import (
    Health,
    StorePlugin,
    StoreServices,
    StoreUnavailable,
    Verification,
)
from plugins.ils_http.client import HttpIls, IlsUnavailable, Reply
from plugins.ils_http.settings import HttpStoreSettings
from plugins.ils_http.store import HttpStore, probe_health


class SignatureRefused(IlsUnavailable):
    """PAPI answered 401: the signature, the key, the clock or a staff token was refused."""


BAD_CREDENTIALS = -3001  # "Unable to authenticate patron credentials"
STAFF_TOKEN_SECONDS = 23 * 3600.0  # AccessSecrets last about 24 h; renew an hour early


class PolarisSettings(HttpStoreSettings, frozen=True):
    # base_url: up to and including /PAPIService/REST
    access_id: str = ""  # PAPI access ID
    api_key: str = ""  # PAPI access key (api_key_file / api_key_env keep it out)
    lang_id: int = 1033
    app_id: int = 100
    org_id: int = 1
    date_header: Literal["PolarisDate", "Date"] = "PolarisDate"
    # Staff user for lookups without a PIN (protected AuthenticateStaffUser); optional.
    staff_domain: str = ""
    staff_user: str = ""
    password: str = ""  # the staff user's password
    # Polaris PatronCodeID → category name (unlisted: the number)
    patron_codes: dict[str, str] = msgspec.field(default_factory=dict)
    # CanPatronCirculate false (and not expired) makes the patron "blocked"
    block_when_cannot_circulate: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.access_id or not self.api_key:
            raise ValueError("access_id and api_key (or api_key_file/_env) are required")
        if bool(self.staff_user) != bool(self.password):
            raise ValueError("staff_user and password go together (or password_file/_env)")

    @property
    def public(self) -> str:
        return f"/public/v1/{self.lang_id}/{self.app_id}/{self.org_id}"

    @property
    def protected(self) -> str:
        return f"/protected/v1/{self.lang_id}/{self.app_id}/{self.org_id}"


# -- what PAPI sends ----------------------------------------------------------------------------
class Authenticated(msgspec.Struct, frozen=True):
    PAPIErrorCode: int
    ErrorMessage: str | None = None
    AccessSecret: str | None = None
    AccessToken: str | None = None
    PatronID: int | None = None
    AuthExpDate: str | None = None


class PolarisBlock(msgspec.Struct, frozen=True):
    BlockDescription: str | None = None


class CirculationBlocks(msgspec.Struct, frozen=True):
    PAPIErrorCode: int
    ErrorMessage: str | None = None
    ValidPatron: bool = False
    PatronID: int = 0
    PatronCodeID: int = 0
    AssignedBranchName: str | None = None
    ExpirationDate: str | None = None
    Blocks: list[PolarisBlock] | None = None
    CanPatronCirculate: bool = False
    EmailAddress: str | None = None
    NameFirst: str | None = None
    NameLast: str | None = None


class BasicData(msgspec.Struct, frozen=True):
    ChargeBalance: float = 0.0


class BasicDataResult(msgspec.Struct, frozen=True):
    PAPIErrorCode: int
    PatronBasicData: BasicData | None = None


# -- signing and dates --------------------------------------------------------------------------
def http_date(now: float) -> str:
    """RFC 1123 in GMT, as PAPI wants it: "Wed, 17 Oct 2012 22:23:32 GMT"."""
    return email.utils.formatdate(now, usegmt=True)


def signature(key: str, method: str, url: str, date: str, secret: str = "") -> str:
    """Base64(HMAC-SHA1(key, METHOD + URL + date + secret))."""
    text = f"{method}{url}{date}{secret}".encode()
    return base64.b64encode(hmac.new(key.encode(), text, hashlib.sha1).digest()).decode()


_MS_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


def parse_date(value: str | None) -> dt.date | None:
    """PAPI dates: "/Date(1360051200000-0800)/" or ISO 8601 ("2022-01-04T14:58:32-0400")."""
    if not value:
        return None
    match = _MS_DATE.match(value)
    try:
        if match:
            when = dt.datetime.fromtimestamp(int(match.group(1)) / 1000, dt.UTC)
            offset = match.group(2)
            if offset:
                sign = -1 if offset[0] == "-" else 1
                when += sign * dt.timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
            return when.date()
        return dt.datetime.fromisoformat(value).date()
    except (ValueError, OverflowError, OSError):
        raise IlsUnavailable("polaris: unreadable date") from None


class PolarisStore(HttpStore):
    name = "polaris"
    settings: PolarisSettings

    def __init__(self, settings: PolarisSettings, http: HttpIls) -> None:
        super().__init__(settings, http, set())
        self.clock = time.time
        self._staff: tuple[str, str] | None = None  # (AccessToken, AccessSecret)
        self._staff_until = 0.0
        self._staff_lock = asyncio.Lock()
        self.staff_logins = 0

    # -- Store ------------------------------------------------------------------------------
    async def check_pin(self, barcode: str, pin: str) -> Verification:
        reply = await self._signed(
            "POST",
            f"{self.settings.public}/authenticator/patron",
            what="PIN check",
            json={"Barcode": barcode, "Password": pin},
        )
        answer = self.http.decode(reply, Authenticated, "PIN check")
        if answer.PAPIErrorCode == 0 and answer.AccessSecret:
            patron = await self._status(barcode, answer.AccessSecret, None)
            return Verification(patron, pin_ok=patron is not None)
        if -3999 <= answer.PAPIErrorCode <= -3000:
            known: Patron | None = Patron(barcode=barcode, record_id="")
            if self._staff_configured:
                known = await self._staff_lookup(barcode)
            return Verification(known, pin_ok=False)
        raise self._papi_error(answer.PAPIErrorCode, "PIN check")

    async def lookup(self, barcode: str) -> Patron | None:
        if barcode and not self._staff_configured:
            raise StoreUnavailable("polaris: lookups without a PIN need staff_user/password")
        return await super().lookup(barcode)

    async def find(self, barcode: str) -> Patron | None:
        return await self._staff_lookup(barcode)

    async def health(self) -> Health:
        async def probe() -> Reply:
            return await self.http.send("GET", f"{self.settings.public}/api", what="health")

        return await probe_health(self.http, probe, "polaris", "Polaris API answering")

    # -- internals --------------------------------------------------------------------------
    @property
    def _staff_configured(self) -> bool:
        return bool(self.settings.staff_user)

    def _patron_url(self, barcode: str, what: str) -> str:
        return f"{self.settings.public}/patron/{quote_plus(barcode)}/{what}"

    async def _signed(
        self,
        method: str,
        url: str,
        *,
        what: str,
        secret: str = "",
        token: str | None = None,
        json: object = None,
    ) -> Reply:
        s = self.settings

        def sign(request: httpx.Request) -> None:
            date = http_date(self.clock())
            mac = signature(s.api_key, request.method, str(request.url), date, secret)
            request.headers[s.date_header] = date
            request.headers["Authorization"] = f"PWS {s.access_id}:{mac}"
            if token is not None:
                request.headers["X-PAPI-AccessToken"] = token

        reply = await self.http.send(method, url, what=what, json=json, sign=sign)
        if reply.status == 401:
            raise SignatureRefused(f"polaris: {what}: PAPI refused the signature (key or clock)")
        if reply.status != 200:
            raise self.http.unexpected(reply, what)
        return reply

    def _papi_error(self, code: int, what: str) -> IlsUnavailable:
        self.http.breaker.failure(self.http.monotonic())
        return IlsUnavailable(f"polaris: {what}: PAPI error {code}")

    async def _status(self, barcode: str, secret: str, token: str | None) -> Patron | None:
        """Blocks and balance, signed with a patron's or the staff user's AccessSecret."""
        if token is None:
            hit = self.records.get(barcode)
            if hit is not None:
                return hit
        blocks_reply, basic_reply = await asyncio.gather(
            self._signed(
                "GET",
                self._patron_url(barcode, "circulationblocks"),
                what="blocks",
                secret=secret,
                token=token,
            ),
            self._signed(
                "GET",
                self._patron_url(barcode, "basicdata"),
                what="basic data",
                secret=secret,
                token=token,
            ),
        )
        blocks = self.http.decode(blocks_reply, CirculationBlocks, "blocks")
        if -3999 <= blocks.PAPIErrorCode <= -3000 or not blocks.ValidPatron:
            return None
        if blocks.PAPIErrorCode < 0:
            raise self._papi_error(blocks.PAPIErrorCode, "blocks")
        basic = self.http.decode(basic_reply, BasicDataResult, "basic data")
        if basic.PAPIErrorCode < 0 or basic.PatronBasicData is None:
            raise self._papi_error(basic.PAPIErrorCode, "basic data")
        patron = self._patron(barcode, blocks, basic.PatronBasicData)
        self.records.put(barcode, patron)
        return patron

    def _patron(self, barcode: str, blocks: CirculationBlocks, basic: BasicData) -> Patron:
        expires = parse_date(blocks.ExpirationDate)
        expired = expires is not None and expires < dt.date.today()
        reason = None
        # An expired card cannot circulate either; it is answered as expired, not blocked.
        refused = self.settings.block_when_cannot_circulate and not blocks.CanPatronCirculate
        if refused and not expired:
            described = [b.BlockDescription for b in blocks.Blocks or () if b.BlockDescription]
            reason = described[0] if described else "cannot circulate (Polaris)"
        try:
            owed = Decimal(str(basic.ChargeBalance)).quantize(Decimal("0.01"))
        except InvalidOperation:
            raise IlsUnavailable("polaris: unreadable ChargeBalance") from None
        code = str(blocks.PatronCodeID)
        name = ", ".join(part for part in (blocks.NameLast, blocks.NameFirst) if part)
        return Patron(
            barcode=barcode,
            record_id=str(blocks.PatronID),
            name=name,
            email=blocks.EmailAddress or None,
            category=self.settings.patron_codes.get(code, code),
            expires=expires,
            blocked=reason is not None,
            blocked_reason=reason,
            fines=max(owed, Decimal("0.00")),
            home_library=blocks.AssignedBranchName or None,
        )

    async def _staff_lookup(self, barcode: str) -> Patron | None:
        for attempt in (1, 2):
            token, secret = await self._staff_token()
            try:
                return await self._status(barcode, secret, token)
            except SignatureRefused:
                if attempt == 2:
                    raise
                # A refused staff token (expired early, revoked): log in again once.
                self._staff = None
        return None  # pragma: no cover - the loop returns or raises

    async def _staff_token(self) -> tuple[str, str]:
        if self._staff is None or self.http.monotonic() >= self._staff_until:
            async with self._staff_lock:
                if self._staff is None or self.http.monotonic() >= self._staff_until:
                    await self._staff_login()
        assert self._staff is not None
        return self._staff

    async def _staff_login(self) -> None:
        s = self.settings
        started = self.http.monotonic()
        reply = await self._signed(
            "POST",
            f"{s.protected}/authenticator/staff",
            what="staff login",
            json={"Domain": s.staff_domain, "Username": s.staff_user, "Password": s.password},
        )
        answer = self.http.decode(reply, Authenticated, "staff login")
        if answer.PAPIErrorCode != 0 or not answer.AccessToken or not answer.AccessSecret:
            raise IlsUnavailable(f"polaris: staff login refused (PAPI {answer.PAPIErrorCode})")
        self._staff = (answer.AccessToken, answer.AccessSecret)
        self._staff_until = started + STAFF_TOKEN_SECONDS
        self.staff_logins += 1


async def open_store(settings: PolarisSettings, services: StoreServices) -> PolarisStore:
    """Build the client; Polaris being down at start-up is not an error."""
    http = HttpIls(settings, name="polaris", base_dir=services.base_dir)
    return PolarisStore(settings, http)


PLUGIN = StorePlugin(
    name="polaris",
    settings=PolarisSettings,
    open=open_store,
    description="Polaris PAPI (signed patron authentication, blocks, balance)",
)
