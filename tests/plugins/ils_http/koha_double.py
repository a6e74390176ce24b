"""A Koha REST API test double, written from Koha's published OpenAPI contract.

Follows Koha-Community/Koha, OpenAPI 2 files under `api/v1/swagger/`:
- `paths/auth.yaml` @ 011a85d37cf139433301b23cb81a167f67d86ff9 (`/auth/password/validation`:
  body `identifier`|`userid` + `password`, additionalProperties false; 201 `{cardnumber,
  patron_id, userid}`; 400/401/403/500/503 with the error object);
- `paths/oauth.yaml` @ 011a85d37cf139433301b23cb81a167f67d86ff9 (`/oauth/token`, form
  `grant_type`, `client_id`, `client_secret`; 200 `{access_token, token_type, expires_in}`);
- `paths/patrons.yaml` @ 0e23a877694cff38e48422e26d4bdb8047c0226a (`GET /patrons` with
  case-insensitive query parameters, `GET /patrons/{patron_id}` 200/401/403/404/500/503);
- `paths/patrons_password.yaml` @ 9e50bcc1b534ec12c6468f57caac5422a42ab6b0 (`POST
  /patrons/{patron_id}/password` `{password, password_2}` → 200);
- `definitions/patron.yaml` @ 131ff0f4025eec5ac7d4b72c9add0e73d76cd7eb, `patron_balance.yaml`
  @ 9e50bcc1b534ec12c6468f57caac5422a42ab6b0,
  `error.yaml` @ 46d19dd6176df12410bbc4aa17508174a2935ef8;
- behaviour not in the spec files, from the reference note (Koha's own API tests,
  `t/db_dependent/api/v1/password_validation.t`, and `Koha/REST/V1/Auth/Password.pm`): unknown
  identifier and wrong password both 400 `{"error": "Validation failed"}`; a locked account
  (failed attempts ≥ FailedLoginAttempts) 400 even with the right password; an expired password
  400 `{"error": "Password expired"}`; both identifiers given → 400 "Only one identifier
  attribute can be passed"; a failure counts against `login_attempts`, a success resets it;
  query parameters match "contains" unless `_match=exact`.

The schemas `SCHEMAS` are ours, written from those files (field names, types, nullability,
required keys, status codes per route); `KohaDouble.responses` records every answer so a
fixture checks each one against them. Faults (`fail()`) are answers a real deployment gives
through its proxy or when sick (429, 500, 503, a slow answer, a broken body, a 401 for a
token Koha forgot); they are marked and left out of the schema check.
"""

from __future__ import annotations

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

# -- the contract, as we read it ----------------------------------------------------------------
_S = {"type": "string"}
_S_NULL = {"type": ["string", "null"]}
_B_NULL = {"type": ["boolean", "null"]}
_DATE_NULL = {"type": ["string", "null"], "format": "date"}
ERROR: Schema = {"type": "object", "properties": {"error": _S}, "additionalProperties": True}
PATRON: Schema = {
    "type": "object",
    "properties": {
        "patron_id": {"type": "integer"},
        "cardnumber": _S_NULL,
        "surname": _S_NULL,
        "firstname": _S_NULL,
        "preferred_name": _S_NULL,
        "middle_name": _S_NULL,
        "title": _S_NULL,
        "other_name": _S_NULL,
        "initials": _S_NULL,
        "address": _S_NULL,
        "city": _S_NULL,
        "postal_code": _S_NULL,
        "email": _S_NULL,
        "phone": _S_NULL,
        "secondary_email": _S_NULL,
        "date_of_birth": _DATE_NULL,
        "library_id": _S,
        "category_id": _S,
        "date_enrolled": _DATE_NULL,
        "expiry_date": _DATE_NULL,
        "date_renewed": _DATE_NULL,
        "incorrect_address": _B_NULL,
        "patron_card_lost": _B_NULL,
        "restricted": {"type": "boolean"},
        "userid": _S_NULL,
        "lang": _S,
        "login_attempts": {"type": ["integer", "null"]},
        "anonymized": {"type": "boolean"},
        "autorenew_checkouts": {"type": "boolean"},
        "privacy": {"type": "integer"},
        "updated_on": _S,
        "last_seen": _S_NULL,
        "protected": {"type": ["boolean"]},
    },
    "required": ["surname", "library_id", "category_id"],
    "additionalProperties": False,
}
_TOTAL_LINES = {
    "type": "object",
    "properties": {"total": {"type": "number"}, "lines": {"type": "array"}},
}
BALANCE: Schema = {
    "type": "object",
    "properties": {
        "balance": {"type": "number"},
        "outstanding_credits": _TOTAL_LINES,
        "outstanding_debits": _TOTAL_LINES,
    },
    "required": ["balance"],
    "additionalProperties": False,
}
TOKEN: Schema = {
    "type": "object",
    "properties": {
        "access_token": _S,
        "token_type": _S,
        "expires_in": {"type": "integer"},
    },
    "additionalProperties": False,
}
VALIDATED: Schema = {
    "type": "object",
    "properties": {"cardnumber": _S, "patron_id": {"type": "integer"}, "userid": _S},
    "additionalProperties": False,
}
# route → status → body schema (None: no body described)
SCHEMAS: dict[str, dict[int, Schema | None]] = {
    "token": {200: TOKEN, 400: ERROR, 403: ERROR},
    "validation": {201: VALIDATED, 400: ERROR, 401: ERROR, 403: ERROR, 500: ERROR, 503: ERROR},
    "patrons": {200: {"type": "array", "items": PATRON}, 401: ERROR, 403: ERROR, 500: ERROR},
    "patron": {200: PATRON, 401: ERROR, 403: ERROR, 404: ERROR, 500: ERROR, 503: ERROR},
    "account": {200: BALANCE, 401: ERROR, 403: ERROR, 404: ERROR, 500: ERROR},
    "password": {
        200: None,
        400: ERROR,
        401: ERROR,
        403: ERROR,
        404: ERROR,
        500: ERROR,
        503: ERROR,
    },
}


@dataclass
class KohaPatron:
    patron_id: int
    cardnumber: str | None
    surname: str
    firstname: str
    password: str | None
    userid: str | None = None
    email: str | None = None
    category_id: str = "ADULT"
    library_id: str = "MAIN"
    expiry_date: dt.date | None = None
    restricted: bool = False
    patron_card_lost: bool = False
    incorrect_address: bool = False
    balance: Decimal = Decimal("0")
    login_attempts: int = 0
    password_expired: bool = False

    def api(self) -> dict[str, Any]:
        """The patron as GET /patrons/{id} sends it (definitions/patron.yaml field names)."""
        return {
            "patron_id": self.patron_id,
            "cardnumber": self.cardnumber,
            "surname": self.surname,
            "firstname": self.firstname,
            "preferred_name": None,
            "middle_name": None,
            "title": None,
            "other_name": None,
            "initials": None,
            "address": "1 Library Way",
            "city": "Springfield",
            "postal_code": None,
            "email": self.email,
            "phone": None,
            "secondary_email": None,
            "date_of_birth": None,
            "library_id": self.library_id,
            "category_id": self.category_id,
            "date_enrolled": "2020-01-15",
            "expiry_date": self.expiry_date.isoformat() if self.expiry_date else None,
            "date_renewed": None,
            "incorrect_address": self.incorrect_address,
            "patron_card_lost": self.patron_card_lost,
            "restricted": self.restricted,
            "userid": self.userid,
            "lang": "default",
            "login_attempts": self.login_attempts,
            "anonymized": False,
            "autorenew_checkouts": True,
            "privacy": 1,
            "updated_on": "2026-11-30T10:00:00+00:00",
            "last_seen": None,
            "protected": False,
        }


def seed_patrons() -> list[KohaPatron]:
    """The contract suite's seed patrons, Koha's way (blocked = card reported lost)."""
    out = []
    for i, s in enumerate(SEED, start=101):
        out.append(
            KohaPatron(
                patron_id=i,
                cardnumber=s.barcode,
                surname=s.surname,
                firstname=s.given,
                password=s.pin,
                userid=f"user{i}",
                email=s.email,
                category_id=s.category,
                library_id=s.home_library,
                expiry_date=s.expires,
                patron_card_lost=s.blocked is not None,
                balance=s.fines,
            )
        )
    return out


@dataclass(kw_only=True)
class KohaDouble(BearerTokens, RecordingDouble):
    client_id: str = "bridge-client"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    failed_login_attempts: int = 0  # Koha's syspref; 0 = no lock-out
    min_password_length: int = 4
    patrons: list[KohaPatron] = field(default_factory=seed_patrons)

    # -- test controls ----------------------------------------------------------------------
    def add(self, patron: KohaPatron) -> KohaPatron:
        self.patrons.append(patron)
        return patron

    def by_card(self, cardnumber: str) -> KohaPatron:
        return next(p for p in self.patrons if p.cardnumber == cardnumber)

    # -- plumbing ---------------------------------------------------------------------------
    def fault_response(self, kind: str, route: str) -> Response:
        if kind == "429":
            return JSONResponse(
                {"error": "Too Many Requests"}, status_code=429, headers={"Retry-After": "2"}
            )
        if kind in ("500", "503"):
            return JSONResponse({"error": "Something went wrong"}, status_code=int(kind))
        if kind == "malformed":
            return Response(b'{"patron_id": 1, "cardnum', media_type="application/json")
        if kind == "wrongtype":
            return JSONResponse({"patron_id": "one", "category_id": 5, "library_id": []})
        if kind == "401":
            return JSONResponse({"error": "Authentication failure."}, status_code=401)
        raise AssertionError(kind)

    async def _enter(self, request: Request, route: str) -> tuple[bytes, Response | None]:
        body = await request.body()
        self.requests.append((request.method, request.url.path, body, {"query": request.url.query}))
        fault = await self.take_fault(route)
        if fault is not None:
            return body, fault
        if route != "token" and not self.bearer_ok(request):
            return body, self.answer(route, 401, {"error": "Authentication failure."})
        return body, None

    # -- routes -----------------------------------------------------------------------------
    async def token(self, request: Request) -> Response:
        _, early = await self._enter(request, "token")
        if early is not None:
            return early
        form = await request.form()
        if form.get("grant_type") != "client_credentials":
            return self.answer("token", 400, {"error": "Unimplemented grant type"})
        if form.get("client_id") != self.client_id or form.get("client_secret") != (
            self.client_secret
        ):
            return self.answer("token", 403, {"error": "unauthorized_client"})
        return self.answer("token", 200, self.issue_token("Bearer"))

    async def validation(self, request: Request) -> Response:
        raw, early = await self._enter(request, "validation")
        if early is not None:
            return early
        try:
            body = json.loads(raw)
        except ValueError:
            return self.answer("validation", 400, {"error": "Malformed JSON"})
        if not isinstance(body, dict) or set(body) - {"identifier", "password", "userid"}:
            return self.answer("validation", 400, {"error": "Properties not allowed"})
        if "password" not in body or not isinstance(body["password"], str):
            return self.answer("validation", 400, {"error": "Missing property: password"})
        if "identifier" in body and "userid" in body:
            return self.answer(
                "validation", 400, {"error": "Only one identifier attribute can be passed"}
            )
        patron = None
        if "userid" in body:
            patron = next((p for p in self.patrons if p.userid == body["userid"]), None)
        elif "identifier" in body:
            ident = body["identifier"]
            patron = next((p for p in self.patrons if p.userid == ident), None) or next(
                (p for p in self.patrons if p.cardnumber == ident), None
            )
        if patron is None:
            return self.answer("validation", 400, {"error": "Validation failed"})
        locked = self.failed_login_attempts and patron.login_attempts >= (
            self.failed_login_attempts
        )
        if locked or patron.password is None or patron.password != body["password"]:
            patron.login_attempts += 1
            return self.answer("validation", 400, {"error": "Validation failed"})
        if patron.password_expired:
            return self.answer("validation", 400, {"error": "Password expired"})
        patron.login_attempts = 0
        return self.answer(
            "validation",
            201,
            {
                "cardnumber": patron.cardnumber or "",
                "patron_id": patron.patron_id,
                "userid": patron.userid or "",
            },
        )

    async def list_patrons(self, request: Request) -> Response:
        _, early = await self._enter(request, "patrons")
        if early is not None:
            return early
        q = request.query_params
        exact = q.get("_match") == "exact"
        found = list(self.patrons)
        for key in ("cardnumber", "userid", "email", "surname"):
            if key in q:
                want = q[key].casefold()

                def keep(p: KohaPatron, key: str = key, want: str = want) -> bool:
                    value = (getattr(p, key) or "").casefold()
                    return value == want if exact else want in value

                found = [p for p in found if keep(p)]
        per_page = int(q.get("_per_page", "20"))
        return self.answer("patrons", 200, [p.api() for p in found[:per_page]])

    def _patron(self, request: Request) -> KohaPatron | None:
        raw = request.path_params["patron_id"]
        return next((p for p in self.patrons if str(p.patron_id) == raw), None)

    async def get_patron(self, request: Request) -> Response:
        _, early = await self._enter(request, "patron")
        if early is not None:
            return early
        patron = self._patron(request)
        if patron is None:
            return self.answer("patron", 404, {"error": "Patron not found"})
        return self.answer("patron", 200, patron.api())

    async def account(self, request: Request) -> Response:
        _, early = await self._enter(request, "account")
        if early is not None:
            return early
        patron = self._patron(request)
        if patron is None:
            return self.answer("account", 404, {"error": "Patron not found"})
        owed = float(patron.balance)
        return self.answer(
            "account",
            200,
            {
                "balance": owed,
                "outstanding_debits": {"total": owed, "lines": []},
                "outstanding_credits": {"total": 0, "lines": []},
            },
        )

    async def password(self, request: Request) -> Response:
        raw, early = await self._enter(request, "password")
        if early is not None:
            return early
        patron = self._patron(request)
        if patron is None:
            return self.answer("password", 404, {"error": "Patron not found"})
        body = json.loads(raw)
        if set(body) != {"password", "password_2"}:
            return self.answer("password", 400, {"error": "Properties not allowed"})
        if body["password"] != body["password_2"]:
            return self.answer("password", 400, {"error": "Passwords don't match"})
        if len(body["password"]) < self.min_password_length:
            return self.answer(
                "password",
                400,
                {"error": f"Password length must be at least {self.min_password_length}"},
            )
        patron.password = body["password"]
        patron.password_expired = False
        return self.answer("password", 200, "")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/v1/oauth/token", self.token, methods=["POST"]),
                Route("/api/v1/auth/password/validation", self.validation, methods=["POST"]),
                Route("/api/v1/patrons", self.list_patrons, methods=["GET"]),
                Route("/api/v1/patrons/{patron_id}", self.get_patron, methods=["GET"]),
                Route("/api/v1/patrons/{patron_id}/account", self.account, methods=["GET"]),
                Route("/api/v1/patrons/{patron_id}/password", self.password, methods=["POST"]),
            ]
        )
