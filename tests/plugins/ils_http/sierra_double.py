"""A III Sierra REST API (v6) test double, written from the published request/response shapes.

Sierra's Swagger is served by each Sierra server and has no public repository copy; the
machine-readable shapes used here are the models generated from it in
techfromsage/sierra-api-php-client @ 5eaaebb1155d7c06cd090147e5c4b22979652fec:
`docs/Model/Patron.md` (`id` int, `deleted` bool, `names`/`barcodes`/`emails` string lists,
`expirationDate` yyyy-MM-dd, `patronType` int, `homeLibraryCode`, `blockInfo`, `moneyOwed`
double, ...), `docs/Model/PatronValidation.md` (`barcode`, `pin`, `caseSensitivity`),
`docs/Model/PatronPatch.md` (`pin`), `docs/Model/ErrorCode.md` (`code`, `specificCode`,
`httpStatus`, `name`, `description`). Behaviour from III's documentation as the reference note
quotes it (techdocs.iii.com patronAPI and error handling pages; Wellcome Collection's client):
`POST /v6/token` with HTTP Basic key:secret → `{access_token, token_type: "bearer",
expires_in}`; `POST /v6/patrons/validate` → 204 valid, 400 otherwise (code 108 "Invalid
parameter"); `GET /v6/patrons/find?varFieldTag=b|z&varFieldContent=…` → the patron, 404 (107
"Record not found"), 409 (133, duplicates); `PUT /v6/patrons/{id}` `{pin}` → 204, 400 (136,
specificCode 3) for a PIN Sierra's rules refuse; `fields=` limits the answer to `id` and the
fields asked for. The answer to a bad key (401 with an error object) is our assumption.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.plugins.ils_http.recording import BearerTokens, RecordingDouble
from tests.plugins.ils_http.schema import Schema
from tests.plugins.seed import SEED

PREFIX = "/iii/sierra-api"
_S = {"type": "string"}
_LIST = {"type": "array", "items": _S}
ERROR: Schema = {
    "type": "object",
    "properties": {
        "code": {"type": "integer"},
        "specificCode": {"type": "integer"},
        "httpStatus": {"type": "integer"},
        "name": _S,
        "description": _S,
    },
    "required": ["code", "specificCode", "httpStatus", "name"],
    "additionalProperties": False,
}
PATRON: Schema = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "updatedDate": _S,
        "createdDate": _S,
        "deleted": {"type": "boolean"},
        "suppressed": {"type": "boolean"},
        "names": _LIST,
        "barcodes": _LIST,
        "expirationDate": {"type": "string", "format": "date"},
        "birthDate": {"type": "string", "format": "date"},
        "emails": _LIST,
        "patronType": {"type": "integer"},
        "homeLibraryCode": _S,
        "blockInfo": {"type": "object", "properties": {"code": _S, "until": _S}},
        "moneyOwed": {"type": "number"},
        "pMessage": _S,
        "langPref": _S,
    },
    "required": ["id"],
    "additionalProperties": False,
}
TOKEN: Schema = {
    "type": "object",
    "properties": {"access_token": _S, "token_type": _S, "expires_in": {"type": "integer"}},
    "required": ["access_token", "token_type", "expires_in"],
    "additionalProperties": False,
}
SCHEMAS: dict[str, dict[int, Schema | None]] = {
    "token": {200: TOKEN, 400: ERROR, 401: ERROR},
    "validate": {204: None, 400: ERROR, 401: ERROR},
    "find": {200: PATRON, 400: ERROR, 401: ERROR, 404: ERROR, 409: ERROR},
    "patron": {200: PATRON, 401: ERROR, 404: ERROR},
    "update": {204: None, 400: ERROR, 401: ERROR, 404: ERROR},
}
TRIVIAL = {"0000", "1111", "1234"}


def error(code: int, status: int, name: str, description: str = "", specific: int = 0) -> dict:  # type: ignore[type-arg]
    body: dict[str, Any] = {
        "code": code,
        "specificCode": specific,
        "httpStatus": status,
        "name": name,
    }
    if description:
        body["description"] = description
    return body


@dataclass
class SierraPatron:
    id: int
    barcode: str
    name: str
    pin: str | None
    email: str | None = None
    ptype: int = 1
    expires: dt.date | None = None
    block: str = "-"
    owed: Decimal = Decimal("0")
    home: str = "main "
    deleted: bool = False

    def api(self, fields: set[str] | None) -> dict[str, Any]:
        full: dict[str, Any] = {
            "id": self.id,
            "deleted": self.deleted,
            "suppressed": False,
            "names": [self.name],
            "barcodes": [self.barcode],
            "emails": [self.email] if self.email else [],
            "patronType": self.ptype,
            "homeLibraryCode": self.home,
            "blockInfo": {"code": self.block},
            "moneyOwed": float(self.owed),
            "updatedDate": "2026-11-30T10:00:00Z",
        }
        if self.expires is not None:
            full["expirationDate"] = self.expires.isoformat()
        if fields is None:
            return full
        return {k: v for k, v in full.items() if k == "id" or k in fields}


def seed_patrons() -> list[SierraPatron]:
    return [
        SierraPatron(
            id=1_000_001 + i,
            barcode=s.barcode,
            name=s.name,
            pin=s.pin,
            email=s.email,
            expires=s.expires,
            block="c" if s.blocked else "-",
            owed=s.fines,
        )
        for i, s in enumerate(SEED)
    ]


@dataclass(kw_only=True)
class SierraDouble(BearerTokens, RecordingDouble):
    key: str = "bridge-key"
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    patrons: list[SierraPatron] = field(default_factory=seed_patrons)

    def add(self, patron: SierraPatron) -> SierraPatron:
        self.patrons.append(patron)
        return patron

    def by_barcode(self, barcode: str) -> SierraPatron:
        return next(p for p in self.patrons if p.barcode == barcode)

    def fault_response(self, kind: str, route: str) -> Response:
        if kind == "429":
            return JSONResponse({"name": "Too Many Requests"}, 429, {"Retry-After": "2"})
        if kind in ("500", "503"):
            return JSONResponse(error(109, int(kind), "Internal server error"), int(kind))
        if kind == "malformed":
            return Response(b'{"id": 1000001, "names": ["Rea', media_type="application/json")
        if kind == "wrongtype":
            return JSONResponse({"id": "one", "names": "Reader", "moneyOwed": "lots"})
        if kind == "401":
            return JSONResponse(error(123, 401, "Unauthorized", "invalid_grant"), 401)
        raise AssertionError(kind)

    async def _enter(self, request: Request, route: str) -> tuple[bytes, Response | None]:
        body = await request.body()
        self.requests.append((request.method, request.url.path, body, {"query": request.url.query}))
        fault = await self.take_fault(route)
        if fault is not None:
            return body, fault
        if route != "token" and not self.bearer_ok(request):
            return body, self.answer(route, 401, error(123, 401, "Unauthorized"))
        return body, None

    async def token(self, request: Request) -> Response:
        _, early = await self._enter(request, "token")
        if early is not None:
            return early
        scheme, _, raw = request.headers.get("authorization", "").partition(" ")
        expected = base64.b64encode(f"{self.key}:{self.secret}".encode()).decode()
        if scheme != "Basic" or raw != expected:
            return self.answer("token", 401, error(123, 401, "Unauthorized", "invalid_client"))
        form = await request.form()
        if form.get("grant_type") != "client_credentials":
            return self.answer("token", 400, error(108, 400, "Invalid parameter"))
        return self.answer("token", 200, self.issue_token("bearer"))

    async def validate(self, request: Request) -> Response:
        raw, early = await self._enter(request, "validate")
        if early is not None:
            return early
        body = json.loads(raw)
        if set(body) - {"barcode", "pin", "caseSensitivity"} or "barcode" not in body:
            return self.answer("validate", 400, error(108, 400, "Invalid parameter"))
        patron = next(
            (p for p in self.patrons if p.barcode == body["barcode"] and not p.deleted), None
        )
        pin = body.get("pin")
        good = patron is not None and patron.pin is not None and isinstance(pin, str)
        if good and body.get("caseSensitivity", True) is False:
            good = patron.pin.casefold() == pin.casefold()  # type: ignore[union-attr]
        elif good:
            good = patron.pin == pin  # type: ignore[union-attr]
        if not good:
            return self.answer("validate", 400, error(108, 400, "Invalid parameter"))
        return self.answer("validate", 204, None)

    def _fields(self, request: Request) -> set[str] | None:
        raw = request.query_params.get("fields")
        return None if raw is None else set(raw.split(","))

    async def find(self, request: Request) -> Response:
        _, early = await self._enter(request, "find")
        if early is not None:
            return early
        q = request.query_params
        tag, content = q.get("varFieldTag"), q.get("varFieldContent")
        if tag not in ("b", "z") or content is None:
            return self.answer("find", 400, error(108, 400, "Invalid parameter"))
        if tag == "b":
            found = [p for p in self.patrons if p.barcode == content]
        else:
            found = [p for p in self.patrons if (p.email or "").casefold() == content.casefold()]
        if not found:
            return self.answer("find", 404, error(107, 404, "Record not found"))
        if len(found) > 1:
            return self.answer("find", 409, error(133, 409, "Duplicate records found"))
        return self.answer("find", 200, found[0].api(self._fields(request)))

    async def get_patron(self, request: Request) -> Response:
        _, early = await self._enter(request, "patron")
        if early is not None:
            return early
        raw = request.path_params["id"]
        found = next((p for p in self.patrons if str(p.id) == raw), None)
        if found is None:
            return self.answer("patron", 404, error(107, 404, "Record not found"))
        return self.answer("patron", 200, found.api(self._fields(request)))

    async def update(self, request: Request) -> Response:
        raw, early = await self._enter(request, "update")
        if early is not None:
            return early
        found = next((p for p in self.patrons if str(p.id) == request.path_params["id"]), None)
        if found is None:
            return self.answer("update", 404, error(107, 404, "Record not found"))
        body = json.loads(raw)
        pin = body.get("pin")
        if not isinstance(pin, str) or len(pin) < 4 or pin in TRIVIAL:
            return self.answer(
                "update", 400, error(136, 400, "PIN is not valid", "PIN is trivial", specific=3)
            )
        found.pin = pin
        return self.answer("update", 204, None)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(f"{PREFIX}/v6/token", self.token, methods=["POST"]),
                Route(f"{PREFIX}/v6/patrons/validate", self.validate, methods=["POST"]),
                Route(f"{PREFIX}/v6/patrons/find", self.find, methods=["GET"]),
                Route(f"{PREFIX}/v6/patrons/{{id}}", self.get_patron, methods=["GET"]),
                Route(f"{PREFIX}/v6/patrons/{{id}}", self.update, methods=["PUT"]),
            ]
        )
