"""A SirsiDynix Symphony Web Services (ILSWS) test double, written from public clients' use of it.

ILSWS publishes its schemas only from a live server (`…/describe`); the shapes here follow the
public clients the reference note cites: multnomah-county-it/libilsws `src/Libilsws.php`
@ 1cfeb26aa10f7533a9a68458dfc00ae8e33fda58 (headers `x-sirs-clientID`, `SD-Originating-App-Id`,
`x-sirs-sessionToken`; `POST /user/staff/login` `{login, password}` → `sessionToken`;
`POST /user/patron/authenticate` `{barcode, password}` → `patronKey`; `GET
/user/patron/key/{key}?includeFields=…` with `firstName`, `lastName`, `privilegeExpiresDate`,
`profile`, `library`, `address1`, `standing`, `blockList{owed}`), Aspen-Discovery's
`code/web/Drivers/SirsiDynixROA.php` @ 0388c1941006a1f050d7b8f28d624fa9702df439 (`messageList`
on failures, `fields` wrappers with `resource`/`key` references), and a public Rails client that
checks a PIN with the client id alone and reads 200 as valid, 401 as invalid. Our assumptions:
the 401 bodies' `messageList` codes, 404 for an unknown key or barcode, amounts as strings.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.plugins.ils_http.recording import RecordingDouble
from tests.plugins.ils_http.schema import Schema
from tests.plugins.seed import SEED

_S = {"type": "string"}
_REF = {"type": "object", "properties": {"resource": _S, "key": _S}, "required": ["key"]}
MESSAGES: Schema = {
    "type": "object",
    "properties": {
        "messageList": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"code": _S, "message": _S},
                "required": ["code", "message"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["messageList"],
    "additionalProperties": False,
}
RECORD: Schema = {
    "type": "object",
    "properties": {
        "resource": _S,
        "key": _S,
        "fields": {
            "type": "object",
            "properties": {
                "barcode": _S,
                "firstName": _S,
                "lastName": _S,
                "preferredName": {"type": ["string", "null"]},
                "privilegeExpiresDate": {"type": ["string", "null"], "format": "date"},
                "profile": _REF,
                "library": _REF,
                "standing": _REF,
                "address1": {"type": "array"},
                "blockList": {"type": "array"},
            },
        },
    },
    "required": ["resource", "key", "fields"],
    "additionalProperties": False,
}
SCHEMAS: dict[str, dict[int, Schema | None]] = {
    "staff-login": {
        200: {"type": "object", "properties": {"sessionToken": _S, "staffKey": _S}},
        401: MESSAGES,
    },
    "authenticate": {
        200: {"type": "object", "properties": {"patronKey": _S}, "required": ["patronKey"]},
        401: MESSAGES,
    },
    "patron": {200: RECORD, 401: MESSAGES, 404: MESSAGES},
}


def messages(code: str, text: str) -> dict[str, Any]:
    return {"messageList": [{"code": code, "message": text}]}


@dataclass
class SymphonyPatron:
    key: str
    barcode: str
    last: str
    first: str
    pin: str | None
    email: str | None = None
    profile: str = "ADULT"
    expires: dt.date | None = None
    standing: str = "OK"
    owed: Decimal = Decimal("0")

    def api(self) -> dict[str, Any]:
        blocks = []
        if self.owed:
            blocks.append(
                {
                    "resource": "/circulation/block",
                    "key": f"{self.key}:1",
                    "fields": {"owed": {"currencyCode": "USD", "amount": f"{self.owed:.2f}"}},
                }
            )
        address = []
        if self.email:
            address.append(
                {
                    "resource": "/user/patron/address1",
                    "key": "1",
                    "fields": {
                        "code": {"resource": "/policy/patronAddress1", "key": "EMAIL"},
                        "data": self.email,
                    },
                }
            )
        return {
            "resource": "/user/patron",
            "key": self.key,
            "fields": {
                "barcode": self.barcode,
                "firstName": self.first,
                "lastName": self.last,
                "preferredName": None,
                "privilegeExpiresDate": self.expires.isoformat() if self.expires else None,
                "profile": {"resource": "/policy/userProfile", "key": self.profile},
                "library": {"resource": "/policy/library", "key": "MAIN"},
                "standing": {"resource": "/policy/patronStanding", "key": self.standing},
                "address1": address,
                "blockList": blocks,
            },
        }


def seed_patrons() -> list[SymphonyPatron]:
    return [
        SymphonyPatron(
            key=str(301 + i),
            barcode=s.barcode,
            last=s.surname,
            first=s.given,
            pin=s.pin,
            email=s.email,
            profile=s.category,
            expires=s.expires,
            standing="BARRED" if s.blocked else "OK",
            owed=s.fines,
        )
        for i, s in enumerate(SEED)
    ]


@dataclass(kw_only=True)
class SymphonyDouble(RecordingDouble):
    client_id: str = "PatronBridgeClient"
    staff_user: str = "bridge"
    staff_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    patrons: list[SymphonyPatron] = field(default_factory=seed_patrons)
    sessions: set[str] = field(default_factory=set)
    logins: int = 0

    def expire_sessions(self) -> None:
        self.sessions.clear()

    def add(self, patron: SymphonyPatron) -> SymphonyPatron:
        self.patrons.append(patron)
        return patron

    def by_barcode(self, barcode: str) -> SymphonyPatron:
        return next(p for p in self.patrons if p.barcode == barcode)

    def fault_response(self, kind: str, route: str) -> Response:
        if kind == "429":
            return JSONResponse(messages("tooMany", "Too many requests"), 429, {"Retry-After": "2"})
        if kind in ("500", "503"):
            return JSONResponse(messages("internal", "Internal error"), int(kind))
        if kind == "malformed":
            return Response(b'{"patronKey": "30', media_type="application/json")
        if kind == "wrongtype":
            return JSONResponse({"patronKey": 301, "key": 5, "fields": []})
        raise AssertionError(kind)

    async def _enter(self, request: Request, route: str, *, session: bool) -> Response | None:
        body = await request.body()
        self.requests.append((request.method, request.url.path, body, {"query": request.url.query}))
        fault = await self.take_fault(route)
        if fault is not None:
            return fault
        if request.headers.get("x-sirs-clientid") != self.client_id or not request.headers.get(
            "sd-originating-app-id"
        ):
            return self.answer(route, 401, messages("clientIDInvalid", "Invalid client ID"))
        if session and request.headers.get("x-sirs-sessiontoken") not in self.sessions:
            return self.answer(route, 401, messages("sessionTimedOut", "The session has timed out"))
        return None

    async def staff_login(self, request: Request) -> Response:
        early = await self._enter(request, "staff-login", session=False)
        if early is not None:
            return early
        body = json.loads(await request.body())
        if (body.get("login"), body.get("password")) != (self.staff_user, self.staff_password):
            return self.answer("staff-login", 401, messages("unableToLogin", "Unable to log in"))
        token = str(uuid.uuid4())
        self.sessions.add(token)
        self.logins += 1
        return self.answer("staff-login", 200, {"sessionToken": token, "staffKey": "1"})

    async def authenticate(self, request: Request) -> Response:
        early = await self._enter(request, "authenticate", session=False)
        if early is not None:
            return early
        body = json.loads(await request.body())
        found = next((p for p in self.patrons if p.barcode == body.get("barcode")), None)
        if found is None or found.pin is None or found.pin != body.get("password"):
            return self.answer(
                "authenticate", 401, messages("unableToAuthenticate", "Invalid barcode or PIN")
            )
        return self.answer("authenticate", 200, {"patronKey": found.key})

    async def by_key(self, request: Request) -> Response:
        early = await self._enter(request, "patron", session=True)
        if early is not None:
            return early
        key = unquote(request.scope["raw_path"].decode("ascii").rsplit("/", 1)[1])
        found = next((p for p in self.patrons if p.key == key), None)
        if found is None:
            return self.answer("patron", 404, messages("recordNotFound", "Record not found"))
        return self.answer("patron", 200, found.api())

    async def by_barcode_route(self, request: Request) -> Response:
        early = await self._enter(request, "patron", session=True)
        if early is not None:
            return early
        raw = request.scope["raw_path"].decode("ascii").split("/user/patron/barcode/", 1)[1]
        found = next((p for p in self.patrons if p.barcode == unquote(raw)), None)
        if found is None:
            return self.answer("patron", 404, messages("recordNotFound", "Record not found"))
        return self.answer("patron", 200, found.api())

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/user/staff/login", self.staff_login, methods=["POST"]),
                Route("/user/patron/authenticate", self.authenticate, methods=["POST"]),
                Route("/user/patron/key/{key}", self.by_key, methods=["GET"]),
                Route(
                    "/user/patron/barcode/{barcode:path}", self.by_barcode_route, methods=["GET"]
                ),
            ]
        )
