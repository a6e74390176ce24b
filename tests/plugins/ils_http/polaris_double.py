"""A Polaris PAPI test double, written from the published request/response descriptions.

Polaris publishes no machine-readable spec in a public repository. The shapes here follow
clcdpc/polaris-api-csharp: `polaris_papi_coding_agent_reference.md`
@ 090c84f539ff2c268fe16b152dc89eb139f00108 (a summary of the Polaris API Reference 7.7: route
shape `/PAPIService/REST/{public|protected}/v1/{lang}/{app}/{org}/…`; `Authorization: PWS
{AccessID}:{Base64(HMAC-SHA1(key, METHOD + URI + HTTPDate [+ AccessSecret]))}`; the date in
`Date` or `PolarisDate`, within ±30 minutes; `AuthenticatePatron` `{Barcode, Password}` →
`AccessToken`, `AccessSecret`, `AuthExpDate`, `PatronID`, error -3001; responses are 200 with
`PAPIErrorCode`/`ErrorMessage`; `GET …/api` unauthenticated; staff AccessToken in
`X-PAPI-AccessToken` with the staff AccessSecret in the signature), and its models
`Models/PatronCirculateBlocksResult.cs` @ 004a8d12e3710a937f55fe7d19d72353be3e15ca,
`PatronBasicDataGetResult.cs` (`PatronBasicData.ChargeBalance`, …), `ProtectedToken.cs`
(`AccessToken`, `AccessSecret`, `AuthExpDate`), `PapiResponseCommon.cs`; the 401 with
`WWW-Authenticate: PWS realm="Polaris API"` for a bad signature and the `/Date(ms±hhmm)/` dates
from the reference note (PatronValidate page, VuFind's driver). Our assumptions, not found in
those sources: an unknown barcode in a staff lookup is `PAPIErrorCode` -3000 with
`ValidPatron` false; a refused staff login is -8001; three failed patron authentications lock
the card for the rest of the run (the reference says "may temporarily lock").
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import unquote_plus

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.plugins.ils_http.recording import Recorded, RecordingDouble
from tests.plugins.ils_http.schema import Schema
from tests.plugins.seed import SEED

PREFIX = "/PAPIService/REST"
_S = {"type": "string"}
_S_NULL = {"type": ["string", "null"]}
_I = {"type": "integer"}
_COMMON = {"PAPIErrorCode": _I, "ErrorMessage": _S_NULL}
AUTH: Schema = {
    "type": "object",
    "properties": {
        **_COMMON,
        "AccessToken": _S_NULL,
        "AccessSecret": _S_NULL,
        "PatronID": _I,
        "AuthExpDate": _S_NULL,
    },
    "required": ["PAPIErrorCode"],
    "additionalProperties": False,
}
STAFF: Schema = {
    "type": "object",
    "properties": {
        **_COMMON,
        "AccessToken": _S_NULL,
        "AccessSecret": _S_NULL,
        "AuthExpDate": _S_NULL,
    },
    "required": ["PAPIErrorCode"],
    "additionalProperties": False,
}
BLOCKS: Schema = {
    "type": "object",
    "properties": {
        **_COMMON,
        "Barcode": _S_NULL,
        "ValidPatron": {"type": "boolean"},
        "PatronID": _I,
        "PatronCodeID": _I,
        "AssignedBranchID": _I,
        "PatronBarcode": _S_NULL,
        "AssignedBranchName": _S_NULL,
        "ExpirationDate": _S_NULL,
        "OverridePasswordUsed": {"type": "boolean"},
        "Blocks": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "properties": {"PatronID": _I, "PatronName": _S_NULL, "BlockDescription": _S_NULL},
                "additionalProperties": False,
            },
        },
        "CanPatronCirculate": {"type": "boolean"},
        "EmailAddress": _S_NULL,
        "NameFirst": _S_NULL,
        "NameLast": _S_NULL,
        "NameMiddle": _S_NULL,
    },
    "required": ["PAPIErrorCode"],
    "additionalProperties": False,
}
BASIC: Schema = {
    "type": "object",
    "properties": {
        **_COMMON,
        "PatronBasicData": {
            "type": ["object", "null"],
            "properties": {
                "PatronID": _I,
                "Barcode": _S_NULL,
                "NameFirst": _S_NULL,
                "NameLast": _S_NULL,
                "EmailAddress": _S_NULL,
                "ItemsOutCount": _I,
                "ItemsOverdueCount": _I,
                "ChargeBalance": {"type": "number"},
                "CreditBalance": {"type": "number"},
                "DepositBalance": {"type": "number"},
                "PatronCodeID": _I,
                "PatronOrgID": _I,
            },
            "additionalProperties": False,
        },
    },
    "required": ["PAPIErrorCode"],
    "additionalProperties": False,
}
API: Schema = {
    "type": "object",
    "properties": {**_COMMON, "Version": _S, "Major": _I, "Minor": _I, "Build": _I, "Revision": _I},
}
SCHEMAS: dict[str, dict[int, Schema | None]] = {
    "api": {200: API},
    "patron-auth": {200: AUTH, 401: None},
    "staff-auth": {200: STAFF, 401: None},
    "blocks": {200: BLOCKS, 401: None},
    "basic": {200: BASIC, 401: None},
}


def ms_date(day: dt.date) -> str:
    """`/Date(ms-0000)/` at midnight UTC."""
    ms = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)
    return f"/Date({ms}-0000)/"


@dataclass
class PolarisPatron:
    patron_id: int
    barcode: str
    last: str
    first: str
    password: str | None
    email: str | None = None
    code: int = 1
    expires: dt.date | None = None
    blocks: list[str] = field(default_factory=list)
    balance: Decimal = Decimal("0")
    failures: int = 0

    def can_circulate(self) -> bool:
        expired = self.expires is not None and self.expires < dt.date.today()
        return not self.blocks and not expired


def seed_patrons() -> list[PolarisPatron]:
    return [
        PolarisPatron(
            patron_id=5001 + i,
            barcode=s.barcode,
            last=s.surname,
            first=s.given,
            password=s.pin,
            email=s.email,
            expires=s.expires,
            blocks=[s.blocked] if s.blocked else [],
            balance=s.fines,
        )
        for i, s in enumerate(SEED)
    ]


@dataclass(kw_only=True)
class PolarisDouble(RecordingDouble):
    access_id: str = "bridge"
    key: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    staff_domain: str = "LIBRARY"
    staff_user: str = "papi-staff"
    staff_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    lock_after: int = 3
    patrons: list[PolarisPatron] = field(default_factory=seed_patrons)
    patron_secrets: dict[str, str] = field(default_factory=dict)  # secret → barcode
    staff_tokens: dict[str, str] = field(default_factory=dict)  # token → secret
    staff_logins: int = 0
    skew_seconds: float = 0.0  # the double's clock minus the real one

    def revoke_staff_tokens(self) -> None:
        self.staff_tokens.clear()

    def add(self, patron: PolarisPatron) -> PolarisPatron:
        self.patrons.append(patron)
        return patron

    def by_barcode(self, barcode: str) -> PolarisPatron:
        return next(p for p in self.patrons if p.barcode == barcode)

    # -- plumbing ---------------------------------------------------------------------------
    def _answer(self, route: str, body: Any) -> Response:
        self.responses.append(Recorded(route, 200, body, False))
        return JSONResponse(body)

    def _refuse(self, route: str) -> Response:
        self.responses.append(Recorded(route, 401, None, False))
        return Response(status_code=401, headers={"WWW-Authenticate": 'PWS realm="Polaris API"'})

    def fault_response(self, kind: str, route: str) -> Response:
        if kind == "429":
            return JSONResponse({"Message": "Too many requests"}, 429, {"Retry-After": "2"})
        if kind in ("500", "503"):
            return JSONResponse({"Message": "An error has occurred."}, int(kind))
        if kind == "malformed":
            return Response(b'{"PAPIErrorCode": 0, "Access', media_type="application/json")
        if kind == "wrongtype":
            return JSONResponse({"PAPIErrorCode": "zero", "ValidPatron": "yes"})
        if kind == "401":
            return Response(status_code=401)
        raise AssertionError(kind)

    def _signed_ok(self, request: Request, secret: str) -> bool:
        header = request.headers.get("authorization", "")
        date = request.headers.get("polarisdate") or request.headers.get("date")
        if not header.startswith("PWS ") or date is None:
            return False
        access_id, _, mac = header[4:].partition(":")
        try:
            when = email.utils.parsedate_to_datetime(date)
        except (TypeError, ValueError):
            return False
        now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.skew_seconds)
        if when.tzinfo is None or abs((when - now).total_seconds()) > 30 * 60:
            return False
        raw = request.scope["raw_path"].decode("ascii")
        query = request.scope["query_string"].decode("ascii")
        url = f"{request.url.scheme}://{request.headers['host']}{raw}"
        if query:
            url += f"?{query}"
        text = f"{request.method}{url}{date}{secret}".encode()
        expected = base64.b64encode(hmac.new(self.key.encode(), text, hashlib.sha1).digest())
        return access_id == self.access_id and hmac.compare_digest(mac.encode(), expected)

    async def _enter(self, request: Request, route: str) -> tuple[bytes, Response | None]:
        body = await request.body()
        self.requests.append((request.method, request.url.path, body, {"query": request.url.query}))
        return body, await self.take_fault(route)

    def _patron_from_path(self, request: Request) -> tuple[str, PolarisPatron | None]:
        raw = request.scope["raw_path"].decode("ascii").split("/patron/", 1)[1]
        barcode = unquote_plus(raw.rsplit("/", 1)[0])
        return barcode, next((p for p in self.patrons if p.barcode == barcode), None)

    def _patron_secret(self, request: Request, barcode: str) -> str | None:
        """The secret the request must be signed with: staff's, or a patron's own."""
        token = request.headers.get("x-papi-accesstoken")
        if token is not None:
            return self.staff_tokens.get(token)
        for secret, owner in self.patron_secrets.items():
            if owner == barcode and self._signed_ok(request, secret):
                return secret
        return None

    # -- routes -----------------------------------------------------------------------------
    async def api(self, request: Request) -> Response:
        _, early = await self._enter(request, "api")
        if early is not None:
            return early
        return self._answer(
            "api",
            {
                "PAPIErrorCode": 0,
                "ErrorMessage": "",
                "Version": "7.7.0.1",
                "Major": 7,
                "Minor": 7,
                "Build": 0,
                "Revision": 1,
            },
        )

    async def patron_auth(self, request: Request) -> Response:
        raw, early = await self._enter(request, "patron-auth")
        if early is not None:
            return early
        if not self._signed_ok(request, ""):
            return self._refuse("patron-auth")
        body = json.loads(raw)
        patron = next((p for p in self.patrons if p.barcode == body.get("Barcode")), None)
        locked = patron is not None and patron.failures >= self.lock_after
        if (
            patron is None
            or locked
            or patron.password is None
            or (patron.password != body.get("Password"))
        ):
            if patron is not None:
                patron.failures += 1
            return self._answer(
                "patron-auth",
                {
                    "PAPIErrorCode": -3001,
                    "ErrorMessage": "Unable to authenticate patron credentials",
                    "AccessToken": None,
                    "AccessSecret": None,
                    "PatronID": 0,
                    "AuthExpDate": None,
                },
            )
        patron.failures = 0
        secret = secrets.token_urlsafe(18)
        self.patron_secrets[secret] = patron.barcode
        tomorrow = dt.date.today() + dt.timedelta(days=1)
        return self._answer(
            "patron-auth",
            {
                "PAPIErrorCode": 0,
                "ErrorMessage": "",
                "AccessToken": secrets.token_urlsafe(12),
                "AccessSecret": secret,
                "PatronID": patron.patron_id,
                "AuthExpDate": ms_date(tomorrow),
            },
        )

    async def staff_auth(self, request: Request) -> Response:
        raw, early = await self._enter(request, "staff-auth")
        if early is not None:
            return early
        if not self._signed_ok(request, ""):
            return self._refuse("staff-auth")
        body = json.loads(raw)
        if (body.get("Domain"), body.get("Username"), body.get("Password")) != (
            self.staff_domain,
            self.staff_user,
            self.staff_password,
        ):
            return self._answer(
                "staff-auth",
                {"PAPIErrorCode": -8001, "ErrorMessage": "Invalid staff user credentials"},
            )
        token, secret = secrets.token_urlsafe(12), secrets.token_urlsafe(18)
        self.staff_tokens[token] = secret
        self.staff_logins += 1
        return self._answer(
            "staff-auth",
            {
                "PAPIErrorCode": 0,
                "ErrorMessage": "",
                "AccessToken": token,
                "AccessSecret": secret,
                "AuthExpDate": ms_date(dt.date.today() + dt.timedelta(days=1)),
            },
        )

    async def blocks(self, request: Request) -> Response:
        _, early = await self._enter(request, "blocks")
        if early is not None:
            return early
        barcode, patron = self._patron_from_path(request)
        secret = self._patron_secret(request, barcode)
        if secret is None or not self._signed_ok(request, secret):
            return self._refuse("blocks")
        if patron is None:
            return self._answer(
                "blocks",
                {"PAPIErrorCode": -3000, "ErrorMessage": "Invalid patron", "ValidPatron": False},
            )
        return self._answer(
            "blocks",
            {
                "PAPIErrorCode": 0,
                "ErrorMessage": "",
                "Barcode": patron.barcode,
                "ValidPatron": True,
                "PatronID": patron.patron_id,
                "PatronCodeID": patron.code,
                "AssignedBranchID": 3,
                "PatronBarcode": patron.barcode,
                "AssignedBranchName": "Main Library",
                "ExpirationDate": ms_date(patron.expires) if patron.expires else None,
                "OverridePasswordUsed": False,
                "Blocks": [
                    {
                        "PatronID": patron.patron_id,
                        "PatronName": f"{patron.first} {patron.last}",
                        "BlockDescription": text,
                    }
                    for text in patron.blocks
                ],
                "CanPatronCirculate": patron.can_circulate(),
                "EmailAddress": patron.email,
                "NameFirst": patron.first,
                "NameLast": patron.last,
                "NameMiddle": None,
            },
        )

    async def basic(self, request: Request) -> Response:
        _, early = await self._enter(request, "basic")
        if early is not None:
            return early
        barcode, patron = self._patron_from_path(request)
        secret = self._patron_secret(request, barcode)
        if secret is None or not self._signed_ok(request, secret):
            return self._refuse("basic")
        if patron is None:
            return self._answer("basic", {"PAPIErrorCode": -3000, "ErrorMessage": "Invalid patron"})
        return self._answer(
            "basic",
            {
                "PAPIErrorCode": 0,
                "ErrorMessage": "",
                "PatronBasicData": {
                    "PatronID": patron.patron_id,
                    "Barcode": patron.barcode,
                    "NameFirst": patron.first,
                    "NameLast": patron.last,
                    "EmailAddress": patron.email,
                    "ItemsOutCount": 0,
                    "ItemsOverdueCount": 0,
                    "ChargeBalance": float(patron.balance),
                    "CreditBalance": 0.0,
                    "DepositBalance": 0.0,
                    "PatronCodeID": patron.code,
                    "PatronOrgID": 3,
                },
            },
        )

    def app(self) -> Starlette:
        public = f"{PREFIX}/public/v1/{{lang}}/{{app}}/{{org}}"
        protected = f"{PREFIX}/protected/v1/{{lang}}/{{app}}/{{org}}"
        return Starlette(
            routes=[
                Route(f"{public}/api", self.api, methods=["GET"]),
                Route(f"{public}/authenticator/patron", self.patron_auth, methods=["POST"]),
                Route(f"{protected}/authenticator/staff", self.staff_auth, methods=["POST"]),
                Route(f"{public}/patron/{{barcode:path}}/circulationblocks", self.blocks),
                Route(f"{public}/patron/{{barcode:path}}/basicdata", self.basic),
            ]
        )
