"""An Evergreen test double: the OpenSRF HTTP gateway and the IDL, written from the sources.

Follows, field for field where they say it:
- evergreen-library-system/OpenSRF `src/gateway/osrf_json_gateway.c` @
  d8dbf0c4e44cf45f00ffe2785d0778658029b825: `POST /osrf-gateway-v1` form `service`, `method`,
  repeated `param` (JSON texts); the answer `{"payload":[...],"status":<osrf status>}` with
  `"debug"` when OpenSRF failed (status 404 for an unknown method); HTTP 200 in every case,
  404 only when `service` or `method` is missing; content type text/plain;
- evergreen-library-system/Evergreen `Open-ILS/src/c-apps/oils_auth.c` (the version the index
  holds with `oilsAuthLogin`, pcre2 and MFA; init/complete also @
  029deb6ce6cd2ac4a2858edf786d364909687fc0): `open-ils.auth.login` takes one hash `{username,
  barcode, identifier, password, type, org, workstation, agent}`; `identifier` is a barcode
  when it matches `opac.barcode_regex` (default `^\\d`); an unknown user, a barred one
  (auth_internal.user.validate), a wrong password, and a user past `block_count` (10) recent
  failures all get the event LOGIN_FAILED; PATRON_INACTIVE / PATRON_CARD_INACTIVE come only
  with the right password; success is SUCCESS `{authtoken, authtime}`; failures of existing
  users are counted. `open-ils.auth.session.retrieve(token)` answers the user object
  (password blanked) or NO_SESSION; `open-ils.auth.session.delete(token)` answers the token;
- Evergreen `Open-ILS/src/perlmods/lib/OpenILS/Application/Actor.pm` @
  42505e6c89ef51cdba62d112222739114e8de8dd (the version the index holds):
  `open-ils.actor.user.fleshed.retrieve(auth, user_id, fields)` (another user needs
  VIEW_USER), `...fleshed.retrieve_by_barcode(auth, barcode)` (card looked up by barcode;
  flesh_user's default fields include card, cards and standing_penalties, the penalties
  active ones with `standing_penalty` fleshed),
  `open-ils.actor.user.fines.summary(auth, user_id)` (the `mous` row, or null when the user has
  no open transactions), `open-ils.actor.groups.tree.retrieve` (the `pgt` tree);
- the IDL (`Open-ILS/examples/fm_IDL.xml`, served at `/reports/fm_IDL.xml`): classes au, ac,
  ausp, csp, pgt, mous with the field names the connector reads. The double serves only those
  classes and fields; their *order* is ours (the connector maps names to positions from the
  server's IDL and never assumes one: `shuffle_idl` reverses every class to prove it).
- `opensrf.system.echo` answers its arguments: one of the system methods OpenSRF registers
  for every application, C ones such as open-ils.auth included (`osrf_application.h`
  OSRF_SYSMETHOD_ECHO, as indexed; commit not pinned).

`SCHEMAS` check every recorded answer: the envelope, and each payload item an event or an
object of the class the method returns with exactly as many positions as the served IDL has.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import quoteattr

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.plugins.ils_http.recording import RecordingDouble
from tests.plugins.ils_http.schema import Schema
from tests.plugins.seed import SEED

GATEWAY = "/osrf-gateway-v1"
IDL_PATH = "/reports/fm_IDL.xml"
BLOCK_COUNT = 10
IDL: dict[str, tuple[str, ...]] = {
    "au": (
        "addresses",
        "cards",
        "standing_penalties",
        "stat_cat_entries",
        "ws_ou",
        "wsid",
        "active",
        "barred",
        "card",
        "create_date",
        "deleted",
        "email",
        "expire_date",
        "family_name",
        "first_given_name",
        "home_ou",
        "id",
        "passwd",
        "pref_first_given_name",
        "profile",
        "usrname",
    ),
    "ac": ("active", "barcode", "id", "usr"),
    "ausp": ("id", "org_unit", "set_date", "staff", "standing_penalty", "stop_date", "usr"),
    "csp": ("id", "name", "label", "block_list", "staff_alert", "org_depth"),
    "pgt": ("children", "description", "id", "name", "parent", "perm_interval", "usergroup"),
    "mous": ("balance_owed", "total_owed", "total_paid", "usr"),
}
GROUPS = [(1, "Users", None), (2, "ADULT", 1), (3, "Staff", 1)]
PENALTIES = {
    1: ("PATRON_EXCEEDS_FINES", "Patron exceeds fine threshold", "CIRC|HOLD|RENEW"),
    20: ("ALERT_NOTE", "Alerting Note, no blocks", None),
    101: ("LOST_CARD", "card reported lost", "CIRC|HOLD|RENEW"),
}


# -- the contract, as we read it ----------------------------------------------------------------
def fm(cls: str) -> Schema:
    """A fieldmapper object of `cls` as the IDL the double serves shapes it."""
    return {
        "type": "object",
        "properties": {
            "__c": {"const": cls},
            "__p": {"type": "array", "minItems": len(IDL[cls]), "maxItems": len(IDL[cls])},
        },
        "required": ["__c", "__p"],
        "additionalProperties": False,
    }


EVENT: Schema = {
    "type": "object",
    "properties": {
        "ilsevent": {"type": ["integer", "string"]},
        "textcode": {"type": "string"},
        "desc": {"type": "string"},
        "pid": {"type": "integer"},
        "stacktrace": {"type": "string"},
        "servertime": {"type": "string"},
        "payload": {},
    },
    "required": ["ilsevent", "textcode", "desc"],
    "additionalProperties": False,
}


def envelope(*items: Schema) -> Schema:
    return {
        "type": "object",
        "properties": {
            "payload": {"type": "array", "items": {"anyOf": list(items)}, "maxItems": 1},
            "status": {"type": "integer"},
            "debug": {"type": "string"},
        },
        "required": ["payload", "status"],
        "additionalProperties": False,
    }


_STRING = {"type": "string"}
_NULL = {"type": "null"}
SCHEMAS: dict[str, dict[int, Schema | None]] = {
    "idl": {200: None},
    "open-ils.auth.login": {200: envelope(EVENT)},
    "open-ils.auth.session.retrieve": {200: envelope(fm("au"), EVENT)},
    "open-ils.auth.session.delete": {200: envelope(_STRING, _NULL)},
    "open-ils.actor.user.fleshed.retrieve": {200: envelope(fm("au"), EVENT)},
    "open-ils.actor.user.fleshed.retrieve_by_barcode": {200: envelope(fm("au"), EVENT)},
    "open-ils.actor.user.fines.summary": {200: envelope(fm("mous"), _NULL, EVENT)},
    "open-ils.actor.groups.tree.retrieve": {200: envelope(fm("pgt"))},
    "opensrf.system.echo": {200: envelope(_STRING)},
    "unknown": {200: envelope()},
}


def ils_event(code: int, textcode: str, desc: str, payload: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ilsevent": code,
        "textcode": textcode,
        "desc": desc,
        "pid": 4242,
        "stacktrace": "oils_auth.c:1",
        "servertime": "Fri Dec  4 03:00:00 2026",
    }
    if payload is not None:
        body["payload"] = payload
    return body


LOGIN_FAILED = (1000, "LOGIN_FAILED", "User login failed")
NO_SESSION = (1001, "NO_SESSION", "User login session has either timed out or does not exist")


@dataclass
class EgPatron:
    id: int
    barcode: str
    usrname: str
    family: str
    given: str
    pin: str | None
    email: str | None = None
    profile: int = 2
    expires: dt.date | None = None
    active: bool = True
    barred: bool = False
    deleted: bool = False
    card_active: bool = True
    penalties: tuple[int, ...] = ()
    balance: Decimal = Decimal("0")
    staff: bool = False


def seed_patrons() -> list[EgPatron]:
    out = []
    for i, s in enumerate(SEED):
        penalties: tuple[int, ...] = (101,) if s.blocked else ()
        if s.fines:
            penalties += (1,)
        out.append(
            EgPatron(
                id=100 + i,
                barcode=s.barcode,
                usrname=f"{s.given.lower()}{i}",
                family=s.surname,
                given=s.given,
                pin=s.pin,
                email=s.email,
                expires=s.expires,
                penalties=penalties,
                balance=s.fines,
            )
        )
    return out


@dataclass
class Session:
    user: int
    kind: str


@dataclass(kw_only=True)
class EvergreenDouble(RecordingDouble):
    staff_user: str = "bridge-staff"
    staff_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    shuffle_idl: bool = False
    patrons: list[EgPatron] = field(default_factory=seed_patrons)
    sessions: dict[str, Session] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    logins: dict[str, int] = field(default_factory=dict)  # per login type
    deleted_sessions: int = 0
    deny_fines: bool = False  # the account lacks VIEW_USER_TRANSACTIONS

    def __post_init__(self) -> None:
        self.patrons.append(
            EgPatron(9000, "", self.staff_user, "Bridge", "Staff", self.staff_password, profile=3)
        )
        self.patrons[-1].staff = True

    # -- test controls ----------------------------------------------------------------------
    def add(self, patron: EgPatron) -> EgPatron:
        self.patrons.append(patron)
        return patron

    def by_barcode(self, barcode: str) -> EgPatron:
        return next(p for p in self.patrons if p.barcode == barcode)

    def pin_checks(self) -> int:
        """Patron logins asked for (staff logins left out), whatever their answer."""
        return sum(
            1
            for _, _, body, meta in self.requests
            if meta.get("route") == "open-ils.auth.login" and b"%22type%22%3A%22opac%22" in body
        )

    def expire_sessions(self) -> None:
        """Every authtoken is forgotten (memcached restarted, or the timeout passed)."""
        self.sessions.clear()

    def fault_response(self, kind: str, route: str) -> Response:
        if kind == "429":
            return Response("Too Many Requests", 429, {"Retry-After": "2"})
        if kind in ("500", "503"):
            return Response("<html>Internal Server Error</html>", int(kind))
        if kind == "osrf500":  # OpenSRF's own failure: HTTP 200, the envelope says 500
            return JSONResponse(
                {"payload": [], "debug": "osrfMethodException : died", "status": 500}
            )
        if kind == "malformed":
            return Response(b'{"payload":[{"__c":"au","__p":[nu', media_type="text/plain")
        if kind == "wrongtype":
            return JSONResponse({"payload": [{"__c": "zzz", "__p": 5}], "status": 200})
        if kind == "wrongclass":  # a record where an event belongs, of a class the IDL lacks
            return JSONResponse({"payload": [{"__c": "aou", "__p": [1]}], "status": 200})
        raise AssertionError(kind)

    # -- the IDL ------------------------------------------------------------------------------
    def fields(self, cls: str) -> tuple[str, ...]:
        names = IDL[cls]
        return tuple(reversed(names)) if self.shuffle_idl else names

    def obj(self, cls: str, **values: Any) -> dict[str, Any]:
        unknown = set(values) - set(IDL[cls])
        assert not unknown, unknown
        return {"__c": cls, "__p": [values.get(n) for n in self.fields(cls)]}

    async def idl(self, request: Request) -> Response:
        await self.record(request, route="idl")
        fault = await self.take_fault("idl")
        if fault is not None:
            return fault
        wanted = request.query_params.getlist("class") or list(IDL)
        parts = ['<?xml version="1.0" encoding="UTF-8"?>']
        parts.append('<IDL xmlns="http://opensrf.org/spec/IDL/base/v1">')
        for cls in wanted:
            if cls not in IDL:
                continue
            parts.append(f"<class id={quoteattr(cls)}><fields>")
            parts += [f"<field name={quoteattr(n)}/>" for n in self.fields(cls)]
            parts.append("</fields></class>")
        parts.append("</IDL>")
        self.answer("idl", 200, None)
        return Response("\n".join(parts), media_type="application/xml")

    # -- records as Evergreen shapes them ---------------------------------------------------------
    def _card(self, p: EgPatron) -> dict[str, Any]:
        return self.obj("ac", id=p.id * 10, usr=p.id, barcode=p.barcode, active=_tf(p.card_active))

    def _user(self, p: EgPatron, fleshed: set[str]) -> dict[str, Any]:
        values: dict[str, Any] = {
            "id": p.id,
            "usrname": p.usrname,
            "family_name": p.family,
            "first_given_name": p.given,
            "email": p.email,
            "expire_date": f"{p.expires.isoformat()}T23:59:59-0500" if p.expires else None,
            "profile": p.profile,
            "home_ou": 4,
            "active": _tf(p.active),
            "barred": _tf(p.barred),
            "deleted": _tf(p.deleted),
            "card": self._card(p) if "card" in fleshed else p.id * 10,
            "create_date": "2020-01-02T10:00:00-0500",
            "passwd": None,  # blanked, as Evergreen does
        }
        if "cards" in fleshed:
            values["cards"] = [self._card(p)]
        if "standing_penalties" in fleshed:
            values["standing_penalties"] = [
                self.obj(
                    "ausp",
                    id=p.id * 100 + n,
                    usr=p.id,
                    org_unit=1,
                    set_date="2026-01-01T00:00:00-0500",
                    standing_penalty=self.obj(
                        "csp",
                        id=n,
                        name=PENALTIES[n][0],
                        label=PENALTIES[n][1],
                        block_list=PENALTIES[n][2],
                        staff_alert=_tf(n >= 100),
                        org_depth=0,
                    ),
                )
                for n in p.penalties
            ]
        return self.obj("au", **values)

    # -- the gateway --------------------------------------------------------------------------
    async def gateway(self, request: Request) -> Response:
        body = await request.body()
        form = await request.form()
        method = str(form.get("method") or "")
        self.requests.append((request.method, request.url.path, body, {"route": method}))
        if not form.get("service") or not method:
            return Response("", 404)
        route = method if method in SCHEMAS else "unknown"
        fault = await self.take_fault(method)
        if fault is not None:
            return fault
        params = [json.loads(str(v)) for v in form.getlist("param")]
        handler = getattr(self, "m_" + method.replace(".", "_").replace("-", "_"), None)
        if handler is None:
            debug = f"osrfMethodException :  *** Call to [{method}] failed: method not found"
            return self._envelope(route, [], status=404, debug=debug)
        result = handler(*params)
        return self._envelope(route, [] if result is _NOTHING else [result])

    def _envelope(
        self, route: str, payload: list[Any], status: int = 200, debug: str | None = None
    ) -> Response:
        body: dict[str, Any] = {"payload": payload, "status": status}
        if debug is not None:
            body["debug"] = debug
        self.answer(route, 200, body)
        return Response(json.dumps(body), media_type="text/plain")

    def _session(self, token: Any) -> Session | None:
        return self.sessions.get(token) if isinstance(token, str) else None

    def _find(self, ident: dict[str, Any]) -> tuple[EgPatron | None, str | None]:
        username, barcode = ident.get("username"), ident.get("barcode")
        identifier = ident.get("identifier")
        if identifier and not username and not barcode:
            if re.match(r"\d", str(identifier)):
                barcode = identifier
            else:
                username = identifier
        if username:
            return next((p for p in self.patrons if p.usrname == username), None), None
        if barcode:
            return next((p for p in self.patrons if p.barcode == barcode), None), str(barcode)
        return None, None

    # -- open-ils.auth ----------------------------------------------------------------------------
    def m_open_ils_auth_login(self, args: dict[str, Any]) -> Any:
        kind = str(args.get("type") or "staff")
        patron, barcode = self._find(args)
        if patron is None or patron.deleted:
            return ils_event(*LOGIN_FAILED)
        key = patron.usrname
        if patron.barred or (kind in ("staff", "temp") and not patron.staff):
            return ils_event(*LOGIN_FAILED)
        if self.failures.get(key, 0) >= BLOCK_COUNT:
            self.failures[key] += 1
            return ils_event(*LOGIN_FAILED)
        if patron.pin is None or args.get("password") != patron.pin:
            self.failures[key] = self.failures.get(key, 0) + 1
            return ils_event(*LOGIN_FAILED)
        if not patron.active:
            return ils_event(1904, "PATRON_INACTIVE", "This account is marked as inactive")
        if barcode is not None and not patron.card_active:
            return ils_event(1905, "PATRON_CARD_INACTIVE", "This card is marked as inactive")
        token = secrets.token_hex(16)
        self.sessions[token] = Session(patron.id, kind)
        self.logins[kind] = self.logins.get(kind, 0) + 1
        return ils_event(0, "SUCCESS", "Success", {"authtoken": token, "authtime": 420})

    def m_open_ils_auth_session_retrieve(self, token: Any, *_: Any) -> Any:
        session = self._session(token)
        if session is None:
            return ils_event(*NO_SESSION)
        patron = next(p for p in self.patrons if p.id == session.user)
        return self._user(patron, set())

    def m_open_ils_auth_session_delete(self, token: Any) -> Any:
        if self.sessions.pop(token, None) is not None:
            self.deleted_sessions += 1
        return token

    def m_opensrf_system_echo(self, *args: Any) -> Any:
        return args[0] if args else _NOTHING

    # -- open-ils.actor ---------------------------------------------------------------------------
    def m_open_ils_actor_user_fleshed_retrieve(
        self, token: Any, user_id: Any, fields: Any = None
    ) -> Any:
        session = self._session(token)
        if session is None:
            return ils_event(*NO_SESSION)
        if session.user != user_id and session.kind != "staff":
            return ils_event(5000, "PERM_FAILURE", "Permission Denied", "VIEW_USER")
        patron = next((p for p in self.patrons if p.id == user_id), None)
        if patron is None:
            return ils_event(1002, "ACTOR_USER_NOT_FOUND", "User not found")
        return self._user(patron, set(fields or ["card", "cards", "standing_penalties"]))

    def m_open_ils_actor_user_fleshed_retrieve_by_barcode(self, token: Any, barcode: Any) -> Any:
        session = self._session(token)
        if session is None:
            return ils_event(*NO_SESSION)
        if session.kind != "staff":
            return ils_event(5000, "PERM_FAILURE", "Permission Denied", "VIEW_USER")
        patron = next((p for p in self.patrons if p.barcode and p.barcode == barcode), None)
        if patron is None:
            return ils_event(1200, "ACTOR_CARD_NOT_FOUND", "The requested card was not found")
        return self._user(patron, {"card", "cards", "standing_penalties"})

    def m_open_ils_actor_user_fines_summary(self, token: Any, user_id: Any) -> Any:
        session = self._session(token)
        if session is None:
            return ils_event(*NO_SESSION)
        if self.deny_fines or (session.user != user_id and session.kind != "staff"):
            return ils_event(5000, "PERM_FAILURE", "Permission Denied", "VIEW_USER_TRANSACTIONS")
        patron = next((p for p in self.patrons if p.id == user_id), None)
        if patron is None or not patron.balance:
            return None
        owed = f"{patron.balance:.2f}"
        return self.obj(
            "mous", usr=patron.id, balance_owed=owed, total_owed=owed, total_paid="0.00"
        )

    def m_open_ils_actor_groups_tree_retrieve(self) -> Any:
        def node(gid: int) -> dict[str, Any]:
            _, name, parent = next(g for g in GROUPS if g[0] == gid)
            children = [node(g[0]) for g in GROUPS if g[2] == gid]
            return self.obj(
                "pgt",
                id=gid,
                name=name,
                parent=parent,
                children=children,
                description=name,
                perm_interval="3 years",
                usergroup="t",
            )

        return node(1)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(GATEWAY, self.gateway, methods=["POST"]),
                Route(IDL_PATH, self.idl, methods=["GET"]),
            ]
        )


_NOTHING = object()


def _tf(value: bool) -> str:
    return "t" if value else "f"
