"""A FOLIO (Okapi) test double, written from FOLIO's published RAML and JSON schemas.

Follows, in folio-org's repositories:
- mod-login `ramls/login.raml` @ 011797b25e507ee1f4477be11b2ff221fd910de5 (`/authn/login`
  → 201 + `x-okapi-token` header + `loginResponse`; `/authn/login-with-expiry` → 201 +
  `Set-Cookie: folioAccessToken=…; Max-Age=…` and `folioRefreshToken`, body
  `loginResponseWithExpiry`; 400 text, 422 `errors`, 500 text), `loginCredentials.json`
  @ 54f0574d44c9bbe3989b6bfc1742b4e440920b5d, `loginResponse.json`
  @ bd209072acb3d075ae0fa0ae067980ac35af548f, `loginResponseWithExpiry.json`
  @ 458ee45c521596a39f55ca429cb8dd11839e8654 (that version also has `accessToken` in the
  body; the double sends the expirations only, as the newer cookie-based releases do);
- mod-users `ramls/patronpin.raml` @ 55be1bd0adc8666e8d07a28fdf5e042b4ceddb62 (`POST
  /patron-pin` → 201, `POST /patron-pin/verify` → 200 valid / 422 not valid, 500 text),
  `patronpin.json` @ 20047e8db957ef44bd8ebcb4fc16924704a2eb8f, `userdata.json`
  @ 120bde51cd43eedab04498bb960e823cfd1d2743, `userdataCollection.json`
  @ 0f220bba37c6c06032dfb20362d36e8ed58a10ab, `usergroup.json`
  @ 22135ebfa90b3c46070f1ebcb4a3bbd1965de143;
- mod-patron-blocks `ramls/automated-patron-blocks.raml`
  @ 6de08d3bdeaa61f002a01ccd707d93f0ce744a97 (200 `automatedPatronBlocks`, 400 text for a bad
  UUID, 500 text); the block fields (`patronBlockConditionId`, `blockBorrowing`,
  `blockRenewals`, `blockRequests`, `message`) as FOLIO clients read them (the item schema file
  is not in the index);
- mod-feesfines `ramls/manualblockdata.json` @ 0dbca1a77a95ff872508df1a0eabdfd0fc0119d2 and
  `accountdata.json` @ 04279fc1146b132da0a94b7b7e5d2a02b5d960b5.
Okapi itself answers 401 (text) for a missing, wrong or expired token and 400 for a missing
tenant; the RAMLs do not list those, so the schemas below add them per route as the gateway's.
CQL: `field=="value"` terms joined by `and`/`or`, backslash escapes, `*`/`?` unescaped in a
quoted value are masks (what RMB does), `==` compares case-insensitively.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.plugins.ils_http.recording import Recorded, RecordingDouble
from tests.plugins.ils_http.schema import Schema
from tests.plugins.seed import SEED

TENANT = "diku"
NS = uuid.UUID("7f2c7f8e-8f6a-4a1e-9d3b-1c0ffee00000")
GROUPS = {"ADULT": str(uuid.uuid5(NS, "group-ADULT")), "JUVENILE": str(uuid.uuid5(NS, "g-J"))}

# -- the contract, as we read it ----------------------------------------------------------------
_S = {"type": "string"}
_B = {"type": "boolean"}
_DT = {"type": "string", "format": "date-time"}
TEXT = "text"  # a text/plain body
ERRORS: Schema = {
    "type": "object",
    "properties": {
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "message": _S,
                    "type": _S,
                    "code": _S,
                    "parameters": {"type": "array"},
                },
            },
        },
        "total_records": {"type": "integer"},
    },
}
USER: Schema = {
    "type": "object",
    "properties": {
        "username": _S,
        "id": _S,
        "externalSystemId": _S,
        "barcode": _S,
        "active": _B,
        "type": _S,
        "patronGroup": _S,
        "departments": {"type": "array"},
        "personal": {
            "type": "object",
            "properties": {
                "lastName": _S,
                "firstName": _S,
                "middleName": _S,
                "preferredFirstName": _S,
                "email": _S,
                "phone": _S,
                "mobilePhone": _S,
                "dateOfBirth": _DT,
                "addresses": {"type": "array"},
                "preferredContactTypeId": _S,
            },
            "required": ["lastName"],
            "additionalProperties": False,
        },
        "enrollmentDate": _DT,
        "expirationDate": _DT,
        "createdDate": _DT,
        "updatedDate": _DT,
        "metadata": {"type": "object"},
        "tags": {"type": "object"},
        "customFields": {"type": "object"},
    },
    "additionalProperties": False,
}
USERS: Schema = {
    "type": "object",
    "properties": {
        "users": {"type": "array", "items": USER},
        "totalRecords": {"type": "integer"},
        "resultInfo": {"type": "object"},
    },
    "required": ["users", "totalRecords"],
}
GROUP: Schema = {
    "type": "object",
    "properties": {
        "group": _S,
        "desc": _S,
        "id": _S,
        "expirationOffsetInDays": {"type": "integer"},
        "source": _S,
        "metadata": {"type": "object"},
    },
    "required": ["group"],
}
AUTOMATED: Schema = {
    "type": "object",
    "properties": {
        "automatedPatronBlocks": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "patronBlockConditionId": _S,
                    "blockBorrowing": _B,
                    "blockRenewals": _B,
                    "blockRequests": _B,
                    "message": _S,
                },
                "additionalProperties": False,
            },
        }
    },
    "required": ["automatedPatronBlocks"],
}
MANUAL_BLOCK: Schema = {
    "type": "object",
    "properties": {
        "type": _S,
        "desc": _S,
        "code": _S,
        "staffInformation": _S,
        "patronMessage": _S,
        "expirationDate": _DT,
        "borrowing": _B,
        "renewals": _B,
        "requests": _B,
        "userId": _S,
        "metadata": {"type": "object"},
        "id": _S,
    },
    "additionalProperties": False,
    "required": ["desc", "userId"],
}
MANUAL: Schema = {
    "type": "object",
    "properties": {
        "manualblocks": {"type": "array", "items": MANUAL_BLOCK},
        "totalRecords": {"type": "integer"},
    },
    "required": ["manualblocks", "totalRecords"],
}
_NAMED = {"type": "object", "properties": {"name": _S}, "required": ["name"]}
ACCOUNT: Schema = {
    "type": "object",
    "properties": {
        "amount": {"type": "number"},
        "remaining": {"type": "number"},
        "dateCreated": _DT,
        "status": _NAMED,
        "paymentStatus": _NAMED,
        "feeFineType": _S,
        "feeFineOwner": _S,
        "title": _S,
        "userId": _S,
        "feeFineId": _S,
        "ownerId": _S,
        "id": _S,
    },
    "additionalProperties": False,
    "required": [
        "amount",
        "remaining",
        "status",
        "paymentStatus",
        "userId",
        "feeFineId",
        "ownerId",
    ],
}
ACCOUNTS: Schema = {
    "type": "object",
    "properties": {
        "accounts": {"type": "array", "items": ACCOUNT},
        "totalRecords": {"type": "integer"},
    },
    "required": ["accounts", "totalRecords"],
}
LOGIN: Schema = {
    "type": "object",
    "properties": {"okapiToken": _S, "refreshToken": _S},
    "required": ["okapiToken"],
}
LOGIN_EXPIRY: Schema = {
    "type": "object",
    "properties": {"accessTokenExpiration": _S, "refreshTokenExpiration": _S, "accessToken": _S},
    "required": ["refreshTokenExpiration", "accessTokenExpiration"],
}
_TEXT = {"type": "string"}  # text/plain bodies are recorded as their text
_GATEWAY = {400: _TEXT, 401: _TEXT}
SCHEMAS: dict[str, dict[int, Schema | None]] = {
    "login": {201: LOGIN, 422: ERRORS, 500: _TEXT, **_GATEWAY},
    "login-with-expiry": {201: LOGIN_EXPIRY, 422: ERRORS, 500: _TEXT, **_GATEWAY},
    "users": {200: USERS, 422: ERRORS, 500: _TEXT, **_GATEWAY},
    "user": {200: USER, 404: _TEXT, 500: _TEXT, **_GATEWAY},
    "pin-verify": {200: None, 422: None, 500: _TEXT, **_GATEWAY},
    "pin-set": {201: None, 500: _TEXT, **_GATEWAY},
    "automated": {200: AUTOMATED, 500: _TEXT, **_GATEWAY},
    "manual": {200: MANUAL, 500: _TEXT, **_GATEWAY},
    "accounts": {200: ACCOUNTS, 500: _TEXT, **_GATEWAY},
    "group": {200: GROUP, 404: _TEXT, 500: _TEXT, **_GATEWAY},
}


# -- CQL, the little the connector sends --------------------------------------------------------
_TERM = re.compile(r'([A-Za-z][\w.]*)==(?:"((?:[^"\\]|\\.)*)"|([^\s()"]+))')


def _pattern(raw: str) -> re.Pattern[str]:
    """A quoted CQL value: backslash escapes literal; bare * and ? are masks."""
    out = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            out.append(re.escape(raw[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def cql_filter(query: str) -> list[tuple[str, re.Pattern[str]]] | None:
    """[(field, pattern)], or None when the query is not the subset we understand."""
    terms = [
        (m.group(1), _pattern(m.group(2) if m.group(2) is not None else m.group(3)))
        for m in _TERM.finditer(query)
    ]
    rest = _TERM.sub("", query)
    if not terms or re.sub(r"\b(and|or)\b|[()\s]", "", rest):
        return None
    return terms


def _get(record: dict[str, Any], path: str) -> str:
    value: Any = record
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def cql_match(query: str, record: dict[str, Any]) -> bool:
    terms = cql_filter(query)
    assert terms is not None
    hits = [bool(p.fullmatch(_get(record, name))) for name, p in terms]
    return any(hits) if re.search(r"\bor\b", _TERM.sub("", query)) else all(hits)


@dataclass
class FolioUser:
    id: str
    barcode: str | None
    last: str
    first: str
    pin: str | None
    username: str | None = None
    email: str | None = None
    group: str = "ADULT"
    expires: dt.date | None = None
    active: bool = True
    external: str | None = None

    def api(self) -> dict[str, Any]:
        user: dict[str, Any] = {
            "id": self.id,
            "active": self.active,
            "type": "patron",
            "patronGroup": GROUPS[self.group],
            "departments": [],
            "personal": {"lastName": self.last, "firstName": self.first, "addresses": []},
            "enrollmentDate": "2020-01-15T00:00:00.000+00:00",
            "createdDate": "2020-01-15T00:00:00.000+00:00",
            "updatedDate": "2026-11-30T10:00:00.000+00:00",
            "metadata": {"createdDate": "2020-01-15T00:00:00.000+00:00"},
        }
        for key, value in (
            ("barcode", self.barcode),
            ("username", self.username),
            ("externalSystemId", self.external),
        ):
            if value is not None:
                user[key] = value
        if self.email is not None:
            user["personal"]["email"] = self.email
        if self.expires is not None:
            user["expirationDate"] = f"{self.expires.isoformat()}T23:59:59.000+00:00"
        return user


def seed_users() -> list[FolioUser]:
    today = dt.date.today()
    return [
        FolioUser(
            id=str(uuid.uuid5(NS, s.barcode)),
            barcode=s.barcode,
            last=s.surname,
            first=s.given,
            pin=s.pin,
            username=f"user{i}",
            email=s.email,
            group=s.category,
            expires=s.expires,
            active=s.expires is None or s.expires >= today,
        )
        for i, s in enumerate(SEED, start=1)
    ]


@dataclass(kw_only=True)
class FolioDouble(RecordingDouble):
    username: str = "bridge-service"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    token_lifetime: int = 600
    users: list[FolioUser] = field(default_factory=seed_users)
    automated: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    manual: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    accounts: dict[str, list[Decimal]] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)
    logins: int = 0

    def __post_init__(self) -> None:
        for s in SEED:
            uid = str(uuid.uuid5(NS, s.barcode))
            if s.blocked:
                self.manual[uid] = [
                    {
                        "type": "Manual",
                        "desc": "Card reported lost at the desk",
                        "patronMessage": s.blocked,
                        "borrowing": True,
                        "renewals": True,
                        "requests": True,
                        "userId": uid,
                        "id": str(uuid.uuid4()),
                    }
                ]
            if s.fines:
                self.accounts[uid] = [s.fines]

    # -- test controls ----------------------------------------------------------------------
    def expire_tokens(self) -> None:
        self.tokens.clear()

    def add(self, user: FolioUser) -> FolioUser:
        self.users.append(user)
        return user

    def by_barcode(self, barcode: str) -> FolioUser:
        return next(u for u in self.users if u.barcode == barcode)

    # -- plumbing ---------------------------------------------------------------------------
    def _json(self, route: str, status: int, body: Any, **kw: Any) -> Response:
        self.responses.append(Recorded(route, status, body, False))
        return JSONResponse(body, status_code=status, **kw)

    def _text(self, route: str, status: int, text: str) -> Response:
        self.responses.append(Recorded(route, status, text, False))
        return PlainTextResponse(text, status_code=status)

    def _empty(self, route: str, status: int) -> Response:
        self.responses.append(Recorded(route, status, None, False))
        return Response(status_code=status)

    def fault_response(self, kind: str, route: str) -> Response:
        if kind == "429":
            return PlainTextResponse("Too Many Requests", 429, headers={"Retry-After": "2"})
        if kind in ("500", "503"):
            return PlainTextResponse("Internal server error, contact administrator", int(kind))
        if kind == "malformed":
            return Response(b'{"users": [{"id": "x"', media_type="application/json")
        if kind == "wrongtype":
            return JSONResponse({"users": "none", "totalRecords": "many"})
        if kind == "401":
            return PlainTextResponse("Invalid token", 401)
        raise AssertionError(kind)

    async def _enter(self, request: Request, route: str) -> tuple[bytes, Response | None]:
        body = await request.body()
        self.requests.append((request.method, request.url.path, body, {"query": request.url.query}))
        fault = await self.take_fault(route)
        if fault is not None:
            return body, fault
        if request.headers.get("x-okapi-tenant") != TENANT:
            return body, self._text(route, 400, "No X-Okapi-Tenant header")
        if not route.startswith("login"):
            expires = self.tokens.get(request.headers.get("x-okapi-token", ""))
            if expires is None or time.monotonic() >= expires:
                return body, self._text(route, 401, "Invalid token")
        return body, None

    def _user(self, user_id: str) -> FolioUser | None:
        return next((u for u in self.users if u.id == user_id), None)

    # -- routes -----------------------------------------------------------------------------
    async def _login(self, request: Request, route: str) -> tuple[str, Response | None]:
        raw, early = await self._enter(request, route)
        if early is not None:
            return "", early
        creds = json.loads(raw)
        if creds.get("username") != self.username:
            error = {"message": "Error verifying user existence", "code": "username.incorrect"}
            return "", self._json(route, 422, {"errors": [error], "total_records": 1})
        if creds.get("password") != self.password:
            error = {"message": "Password does not match", "code": "password.incorrect"}
            return "", self._json(route, 422, {"errors": [error], "total_records": 1})
        token = secrets.token_urlsafe(24)
        self.tokens[token] = time.monotonic() + self.token_lifetime
        self.logins += 1
        return token, None

    async def login(self, request: Request) -> Response:
        token, early = await self._login(request, "login")
        if early is not None:
            return early
        return self._json("login", 201, {"okapiToken": token}, headers={"x-okapi-token": token})

    async def login_with_expiry(self, request: Request) -> Response:
        token, early = await self._login(request, "login-with-expiry")
        if early is not None:
            return early
        now = dt.datetime.now(dt.UTC)
        body = {
            "accessTokenExpiration": (now + dt.timedelta(seconds=self.token_lifetime)).isoformat(),
            "refreshTokenExpiration": (now + dt.timedelta(days=7)).isoformat(),
        }
        response = self._json("login-with-expiry", 201, body)
        response.set_cookie(
            "folioAccessToken", token, max_age=self.token_lifetime, httponly=True, samesite="strict"
        )
        response.set_cookie(
            "folioRefreshToken",
            secrets.token_urlsafe(24),
            max_age=604800,
            path="/authn",
            httponly=True,
            samesite="strict",
        )
        return response

    async def list_users(self, request: Request) -> Response:
        _, early = await self._enter(request, "users")
        if early is not None:
            return early
        query = request.query_params.get("query")
        limit = int(request.query_params.get("limit", "10"))
        found = [u.api() for u in self.users]
        if query is not None:
            if cql_filter(query) is None:
                error = {"message": f"CQL parse error: {query}", "type": "1", "code": "-1"}
                return self._json("users", 422, {"errors": [error], "total_records": 1})
            found = [u for u in found if cql_match(query, u)]
        return self._json("users", 200, {"users": found[:limit], "totalRecords": len(found)})

    async def get_user(self, request: Request) -> Response:
        _, early = await self._enter(request, "user")
        if early is not None:
            return early
        user = self._user(request.path_params["id"])
        if user is None:
            return self._text("user", 404, "User not found")
        return self._json("user", 200, user.api())

    async def pin_verify(self, request: Request) -> Response:
        raw, early = await self._enter(request, "pin-verify")
        if early is not None:
            return early
        body = json.loads(raw)
        user = self._user(str(body.get("id")))
        if user is None or user.pin is None or user.pin != body.get("pin"):
            return self._empty("pin-verify", 422)
        return self._empty("pin-verify", 200)

    async def pin_set(self, request: Request) -> Response:
        raw, early = await self._enter(request, "pin-set")
        if early is not None:
            return early
        body = json.loads(raw)
        user = self._user(str(body.get("id")))
        if user is None:
            return self._text("pin-set", 500, "Internal server error, contact administrator")
        user.pin = body["pin"]
        return self._empty("pin-set", 201)

    async def automated_blocks(self, request: Request) -> Response:
        _, early = await self._enter(request, "automated")
        if early is not None:
            return early
        blocks = self.automated.get(request.path_params["id"], [])
        return self._json("automated", 200, {"automatedPatronBlocks": blocks})

    async def manual_blocks(self, request: Request) -> Response:
        _, early = await self._enter(request, "manual")
        if early is not None:
            return early
        query = request.query_params.get("query", "")
        rows = [b for blocks in self.manual.values() for b in blocks if cql_match(query, b)]
        return self._json("manual", 200, {"manualblocks": rows, "totalRecords": len(rows)})

    async def list_accounts(self, request: Request) -> Response:
        _, early = await self._enter(request, "accounts")
        if early is not None:
            return early
        query = request.query_params.get("query", "")
        rows = [
            {
                "amount": float(amount),
                "remaining": float(amount),
                "status": {"name": "Open"},
                "paymentStatus": {"name": "Outstanding"},
                "feeFineType": "Overdue fine",
                "userId": uid,
                "feeFineId": str(uuid.uuid5(NS, "overdue")),
                "ownerId": str(uuid.uuid5(NS, "owner")),
                "id": str(uuid.uuid5(NS, f"{uid}-{i}")),
            }
            for uid, amounts in self.accounts.items()
            for i, amount in enumerate(amounts)
        ]
        rows = [r for r in rows if cql_match(query, r)]
        return self._json("accounts", 200, {"accounts": rows, "totalRecords": len(rows)})

    async def get_group(self, request: Request) -> Response:
        _, early = await self._enter(request, "group")
        if early is not None:
            return early
        gid = request.path_params["id"]
        name = next((n for n, g in GROUPS.items() if g == gid), None)
        if name is None:
            return self._text("group", 404, "Not found")
        return self._json("group", 200, {"group": name, "desc": f"{name} patrons", "id": gid})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/authn/login", self.login, methods=["POST"]),
                Route("/authn/login-with-expiry", self.login_with_expiry, methods=["POST"]),
                Route("/users", self.list_users, methods=["GET"]),
                Route("/users/{id}", self.get_user, methods=["GET"]),
                Route("/patron-pin", self.pin_set, methods=["POST"]),
                Route("/patron-pin/verify", self.pin_verify, methods=["POST"]),
                Route("/automated-patron-blocks/{id}", self.automated_blocks, methods=["GET"]),
                Route("/manualblocks", self.manual_blocks, methods=["GET"]),
                Route("/accounts", self.list_accounts, methods=["GET"]),
                Route("/groups/{id}", self.get_group, methods=["GET"]),
            ]
        )
