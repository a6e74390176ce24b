"""An Ex Libris Alma Users API test double, written from the published descriptions.

Alma has no public repository spec. The shapes follow the Ex Libris Developer Network pages as
the reference note quotes them ("Authenticate or refresh user": `POST
/almaws/v1/users/{user_id}?user_id_type=all_unique&op=auth` with the password in the
`Exl-User-Pw` header → 204; errors 401866 "User authentication failed" and 401890 "User was
not found"; the user object's `primary_id`, `first_name`, `last_name`, `user_group`
{value, desc}, `expiry_date`, `status`, `contact_info.email[]` with `preferred`,
`user_block[]`, `fees` with `expand=fees`; the `apikey` query parameter or `Authorization:
apikey` header; 429 "Too Many Requests" over the quota) and VuFind's Alma driver
(vufind-org/vufind `module/VuFind/src/VuFind/ILS/Driver/Alma.php`
@ 00cd53b87317cad20f29a87a1a2a2adae08b6f24: errors read from `errorList.error[0]`, HTTP 400
for failures, 204 with no body). Our assumptions, not found in those sources: the JSON error
envelope `{"errorsExist": true, "errorList": {"error": [{"errorCode", "errorMessage",
"trackingId"}]}, "result": null}`; 401861 for a GET of an unknown user; a wrong API key → 401;
`GET /almaws/v1/users/test` → 200 for a working key; dates as "YYYY-MM-DDZ".
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.plugins.ils_http.recording import Recorded, RecordingDouble
from tests.plugins.ils_http.schema import Schema
from tests.plugins.seed import SEED

_S = {"type": "string"}
_CODED = {"type": "object", "properties": {"value": _S, "desc": _S}}
ERROR: Schema = {
    "type": "object",
    "properties": {
        "errorsExist": {"type": "boolean"},
        "errorList": {
            "type": "object",
            "properties": {
                "error": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"errorCode": _S, "errorMessage": _S, "trackingId": _S},
                        "required": ["errorCode", "errorMessage"],
                        "additionalProperties": False,
                    },
                }
            },
            "required": ["error"],
        },
        "result": {"type": "null"},
    },
    "required": ["errorsExist", "errorList"],
    "additionalProperties": False,
}
USER: Schema = {
    "type": "object",
    "properties": {
        "primary_id": _S,
        "first_name": _S,
        "last_name": _S,
        "user_group": _CODED,
        "account_type": _CODED,
        "expiry_date": _S,
        "status": _CODED,
        "contact_info": {
            "type": "object",
            "properties": {
                "email": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "email_address": _S,
                            "preferred": {"type": "boolean"},
                            "email_type": {"type": "array"},
                        },
                        "required": ["email_address"],
                    },
                },
                "address": {"type": "array"},
                "phone": {"type": "array"},
            },
        },
        "user_identifier": {"type": "array"},
        "user_block": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "block_type": _CODED,
                    "block_description": _CODED,
                    "block_status": _S,
                    "expiry_date": _S,
                    "created_by": _S,
                    "created_date": _S,
                },
            },
        },
        "fees": {"type": "object", "properties": {"value": {"type": "number"}, "currency": _S}},
    },
    "required": ["primary_id"],
}
SCHEMAS: dict[str, dict[int, Schema | None]] = {
    "auth": {204: None, 400: ERROR, 401: ERROR},
    "user": {200: USER, 400: ERROR, 401: ERROR},
    "test": {200: None, 401: ERROR},
}


def alma_date(day: dt.date) -> str:
    return f"{day.isoformat()}Z"


@dataclass
class AlmaUser:
    primary_id: str
    barcode: str
    last: str
    first: str
    password: str | None
    email: str | None = None
    group: str = "ADULT"
    expires: dt.date | None = None
    blocks: list[str] = field(default_factory=list)
    fees: Decimal = Decimal("0")
    active: bool = True

    def api(self) -> dict[str, Any]:
        user: dict[str, Any] = {
            "primary_id": self.primary_id,
            "first_name": self.first,
            "last_name": self.last,
            "user_group": {"value": self.group, "desc": self.group.title()},
            "account_type": {"value": "INTERNAL", "desc": "Internal"},
            "status": {
                "value": "ACTIVE" if self.active else "INACTIVE",
                "desc": "Active" if self.active else "Inactive",
            },
            "contact_info": {
                "address": [],
                "phone": [],
                "email": [{"email_address": self.email, "preferred": True, "email_type": []}]
                if self.email
                else [],
            },
            "user_identifier": [
                {"id_type": {"value": "BARCODE", "desc": "Barcode"}, "value": self.barcode}
            ],
            "user_block": [
                {
                    "block_type": {"value": "GENERAL", "desc": "General"},
                    "block_description": {"value": "LOST", "desc": text},
                    "block_status": "ACTIVE",
                    "created_by": "desk",
                    "created_date": "2026-01-15Z",
                }
                for text in self.blocks
            ],
            "fees": {"value": float(self.fees), "currency": "USD"},
        }
        if self.expires is not None:
            user["expiry_date"] = alma_date(self.expires)
        return user


def seed_users() -> list[AlmaUser]:
    today = dt.date.today()
    return [
        AlmaUser(
            primary_id=f"user{i}@example.edu",
            barcode=s.barcode,
            last=s.surname,
            first=s.given,
            password=s.pin,
            email=s.email,
            group=s.category,
            expires=s.expires,
            blocks=[s.blocked] if s.blocked else [],
            fees=s.fines,
            active=s.expires is None or s.expires >= today,
        )
        for i, s in enumerate(SEED, start=1)
    ]


def error(code: str, message: str) -> dict[str, Any]:
    return {
        "errorsExist": True,
        "errorList": {
            "error": [{"errorCode": code, "errorMessage": message, "trackingId": "E01-0000"}]
        },
        "result": None,
    }


@dataclass(kw_only=True)
class AlmaDouble(RecordingDouble):
    key: str = field(default_factory=lambda: "l8xx" + secrets.token_hex(14))
    users: list[AlmaUser] = field(default_factory=seed_users)

    def add(self, user: AlmaUser) -> AlmaUser:
        self.users.append(user)
        return user

    def by_barcode(self, barcode: str) -> AlmaUser:
        return next(u for u in self.users if u.barcode == barcode)

    def calls(self, method: str, suffix: str = "") -> int:
        return sum(1 for r in self.requests if r[0] == method and r[1].endswith(suffix))

    def fault_response(self, kind: str, route: str) -> Response:
        if kind == "429":
            return JSONResponse(
                error("PER_SECOND_THRESHOLD", "Too Many Requests"), 429, {"Retry-After": "2"}
            )
        if kind in ("500", "503"):
            return JSONResponse(error("GENERAL_ERROR", "internal error"), int(kind))
        if kind == "malformed":
            return Response(b'{"primary_id": "user1', media_type="application/json")
        if kind == "wrongtype":
            return JSONResponse(
                {"primary_id": 7, "user_block": "none"},
                status_code=200 if route != "auth" else 400,
            )
        raise AssertionError(kind)

    async def _enter(self, request: Request, route: str) -> Response | None:
        body = await request.body()
        self.requests.append((request.method, request.url.path, body, {"query": request.url.query}))
        fault = await self.take_fault(route)
        if fault is not None:
            return fault
        header = request.headers.get("authorization", "")
        key = header[7:] if header.startswith("apikey ") else request.query_params.get("apikey")
        if key != self.key:
            return self.answer(route, 401, error("UNAUTHORIZED", "Invalid API Key"))
        return None

    def _find(self, request: Request) -> AlmaUser | None:
        ident = request.path_params["user_id"]
        return next((u for u in self.users if ident in (u.primary_id, u.barcode)), None)

    async def user(self, request: Request) -> Response:
        if request.method == "POST":
            return await self.auth(request)
        early = await self._enter(request, "user")
        if early is not None:
            return early
        found = self._find(request)
        if found is None:
            return self.answer("user", 400, error("401861", "User with identifier not found"))
        return self.answer("user", 200, found.api())

    async def auth(self, request: Request) -> Response:
        early = await self._enter(request, "auth")
        if early is not None:
            return early
        if request.query_params.get("op") != "auth":
            return self.answer("auth", 400, error("401652", "General Error"))
        found = self._find(request)
        if found is None:
            return self.answer("auth", 400, error("401890", "User was not found."))
        password = request.headers.get("exl-user-pw")
        if found.password is None or password != found.password:
            return self.answer("auth", 400, error("401866", "User authentication failed"))
        return self.answer("auth", 204, None)

    async def test(self, request: Request) -> Response:
        early = await self._enter(request, "test")
        if early is not None:
            return early
        self.responses.append(Recorded("test", 200, None, False))
        return Response("API-key tested successfully", media_type="text/plain")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/almaws/v1/users/test", self.test, methods=["GET"]),
                Route("/almaws/v1/users/{user_id:path}", self.user, methods=["GET", "POST"]),
            ]
        )
