"""`[store] plugin = "evergreen-http"`: PINs checked by Evergreen itself through its OpenSRF
HTTP gateway (the same door the Evergreen web staff client and OPAC apps use).

Calls (`plugins.evergreen_osrf` has the wire format and its sources):
- PIN check: `open-ils.auth.login` `{barcode|username|identifier, password, type: "opac",
  agent, org}` (oils_auth.c `oilsAuthLogin`) → the event `SUCCESS` with `{authtoken,
  authtime}`; `LOGIN_FAILED` for an unknown card, a wrong PIN, a barred patron and a card past
  Evergreen's own failure limit alike; `PATRON_INACTIVE` / `PATRON_CARD_INACTIVE` only when
  the PIN was right. Evergreen counts failures (`auth_limits/block_count`), so the check is
  never sent twice. The PIN travels in the POST body, never in a URL;
- status, only after a good PIN, as the patron: `open-ils.auth.session.retrieve(token)` (the
  record id), then `open-ils.actor.user.fleshed.retrieve(token, id, ["card",
  "standing_penalties"])` and `open-ils.actor.user.fines.summary(token, id)` together; the
  patron's session is then ended (`open-ils.auth.session.delete`) in the background, one
  session at a time (see `_end_sessions`). The record is cached per typed barcode for
  `status_cache_seconds`;
- lookups (LDAP search, SIP2 63 without a PIN, telling an unknown card from a wrong PIN) need a
  staff account: `open-ils.auth.login` type "staff" once, then
  `open-ils.actor.user.fleshed.retrieve_by_barcode(token, barcode)` and the fines summary; a
  `NO_SESSION` answer (the staff session timed out) logs in again once;
- categories: `open-ils.actor.groups.tree.retrieve` (permission group names), read once;
- field positions: the server's IDL (`/reports/fm_IDL.xml`), read once on first use.
No PIN change: Evergreen changes a password in the patron's own session with the current one
(`open-ils.actor.user.password.update`), which the bridge's PIN pages do not hold.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import msgspec

from bridge.core.patron import Patron
from bridge.core.store import (
    Health,
    StorePlugin,
    StoreServices,
    StoreUnavailable,
    Verification,
)
from plugins.evergreen_osrf import Event, GatewayError, Idl, envelope, event, request_form
from plugins.ils_http.client import HttpIls, IlsUnavailable
from plugins.ils_http.settings import HttpStoreSettings
from plugins.ils_http.store import HttpStore, probe_health

AUTH = "open-ils.auth"
ACTOR = "open-ils.actor"
CLASSES = ("au", "ac", "ausp", "csp", "pgt", "mous")
NAME = "evergreen-http"
ENDINGS_MAX = 1000  # patron sessions waiting to be ended; past it the oldest are left to time out


class EvergreenSettings(HttpStoreSettings, frozen=True):
    # base_url: the Evergreen web server, e.g. https://catalog.example.org
    gateway_path: str = "/osrf-gateway-v1"
    idl_path: str = "/reports/fm_IDL.xml"
    # What patrons type: a card barcode, an Evergreen username, or either (Evergreen decides by
    # its opac.barcode_regex, by default "starts with a digit").
    identifier: Literal["barcode", "username", "either"] = "barcode"
    org: int | None = None  # the org unit logins count for (timeouts, barcode regex)
    agent: str = "patron-bridge"  # recorded by Evergreen as the login's agent
    staff_user: str = ""  # optional: enables lookups (LDAP search, SIP2 63 without a PIN)
    password: str = ""  # the staff user's password (password_file / password_env)
    # A standing penalty blocks when its block_list names one of these actions.
    block_on: tuple[str, ...] = ("CIRC",)
    # Penalties the bridge judges itself (its own fines limit), never "blocked".
    ignored_penalties: tuple[str, ...] = ("PATRON_EXCEEDS_FINES",)
    profiles: dict[str, str] = msgspec.field(default_factory=dict)  # group name → category
    # End each patron session after the status read (in the background). Off: Evergreen lets
    # it time out (its opac timeout), one request fewer per login.
    end_sessions: bool = True
    # After LOGIN_FAILED, look the card up (needs staff_user; with identifier = "barcode").
    tell_unknown: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for path in (self.gateway_path, self.idl_path):
            if not path.startswith("/") or "?" in path or "#" in path:
                raise ValueError("gateway_path and idl_path are absolute paths")
        if bool(self.staff_user) != bool(self.password):
            raise ValueError("staff_user and password (or password_file/_env) go together")


# -- what Evergreen sends, once unpacked by the IDL ------------------------------------------------
Flag = Literal["t", "f"] | bool | None  # Evergreen's booleans: "t"/"f" (cstore) or JSON


def true(value: Flag) -> bool:
    return value is True or value == "t"


class Card(msgspec.Struct, frozen=True):
    barcode: str
    id: int | str | None = None
    active: Flag = "t"


class PenaltyType(msgspec.Struct, frozen=True):
    name: str
    id: int | str | None = None
    label: str | None = None
    block_list: str | None = None


class Penalty(msgspec.Struct, frozen=True):
    standing_penalty: PenaltyType | int | str
    stop_date: str | None = None


class User(msgspec.Struct, frozen=True):
    id: int | str
    usrname: str | None = None
    family_name: str | None = None
    first_given_name: str | None = None
    pref_first_given_name: str | None = None
    email: str | None = None
    expire_date: str | None = None
    profile: int | str | None = None
    home_ou: int | str | None = None
    active: Flag = "t"
    barred: Flag = "f"
    deleted: Flag = "f"
    card: Card | int | str | None = None
    cards: list[Card] | None = None
    standing_penalties: list[Penalty] | None = None


class Summary(msgspec.Struct, frozen=True):
    balance_owed: str | float | int | None = None


class Group(msgspec.Struct, frozen=True):
    id: int | str
    name: str
    children: list[Group] | None = None


class Login(msgspec.Struct, frozen=True):
    authtoken: str


def eg_date(value: str | None) -> dt.date | None:
    """Evergreen's timestamps ("2027-12-31T23:59:59-0500"): the date part."""
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        raise IlsUnavailable(f"{NAME}: unreadable date") from None


class Gateway:
    """One Evergreen: the gateway calls, the IDL and group names read once, the staff session."""

    def __init__(self, settings: EvergreenSettings, http: HttpIls) -> None:
        self.settings = settings
        self.http = http
        self.idl: Idl | None = None
        self.groups: dict[str, str] = {}
        self._staff: str | None = None
        self._lock = asyncio.Lock()  # one IDL read at a time
        self._staff_lock = asyncio.Lock()  # one staff login at a time
        self.staff_logins = 0

    async def ready(self) -> Idl:
        """The IDL (and group names), read on first use; a failure is retried next time."""
        if self.idl is None:
            async with self._lock:
                if self.idl is None:
                    await self._load()
        assert self.idl is not None
        return self.idl

    async def _load(self) -> None:
        params = tuple(("class", c) for c in CLASSES)
        reply = await self.http.send(
            "GET", self.settings.idl_path, what="IDL", params=params, headers={"Accept": "*/*"}
        )
        if reply.status != 200:
            raise self.http.unexpected(reply, "IDL")
        try:
            idl = await asyncio.to_thread(Idl.parse, reply.body, CLASSES)
        except GatewayError as exc:
            raise self.broken("IDL", exc) from None
        tree = await self._call(idl, ACTOR, "open-ils.actor.groups.tree.retrieve", what="groups")
        groups: dict[str, str] = {}
        pending = [self.convert(tree, Group, "groups")] if tree is not None else []
        while pending:
            group = pending.pop()
            groups[str(group.id)] = group.name
            pending.extend(group.children or [])
        self.groups = groups
        self.idl = idl

    def broken(self, what: str, exc: Exception) -> IlsUnavailable:
        self.http.breaker.failure(self.http.monotonic())
        return IlsUnavailable(f"{NAME}: {what}: {exc}")

    def convert(self, value: Any, type_: type[Any], what: str) -> Any:
        try:
            return msgspec.convert(value, type_)
        except msgspec.ValidationError:
            raise self.broken(what, ValueError("unexpected answer")) from None

    async def _call(self, idl: Idl, service: str, method: str, *params: Any, what: str) -> Any:
        """One method call: its first answer, unpacked (None when it answered nothing)."""
        reply = await self.http.send(
            "POST",
            self.settings.gateway_path,
            what=what,
            data=request_form(service, method, params),
        )
        if reply.status != 200:
            raise self.http.unexpected(reply, what)
        try:
            payload = envelope(reply.body)
            return idl.unpack(payload[0]) if payload else None
        except GatewayError as exc:
            raise self.broken(what, exc) from None

    async def call(self, service: str, method: str, *params: Any, what: str) -> Any:
        return await self._call(await self.ready(), service, method, *params, what=what)

    async def login(self, ident: dict[str, str], password: str, type_: str) -> Event:
        """`open-ils.auth.login`; its answer is always an event."""
        args: dict[str, Any] = {
            **ident,
            "password": password,
            "type": type_,
            "agent": self.settings.agent,
        }
        if self.settings.org is not None:
            args["org"] = self.settings.org
        answer = await self.call(AUTH, "open-ils.auth.login", args, what="login")
        found = self.event_of(answer)
        if found is None:
            raise self.broken("login", ValueError("no event"))
        return found

    def event_of(self, value: Any) -> Event | None:
        try:
            return event(value)
        except GatewayError as exc:
            raise self.broken("event", exc) from None

    async def staff(self, method: str, *params: Any, what: str) -> Any:
        """A call in the staff session (logged in on demand, again once after NO_SESSION)."""
        for attempt in (1, 2):
            token = await self.staff_token()
            answer = await self.call(ACTOR, method, token, *params, what=what)
            found = self.event_of(answer)
            if found is None or found.textcode != "NO_SESSION":
                return answer
            if self._staff == token:
                self._staff = None
            if attempt == 2:
                break
        raise IlsUnavailable(f"{NAME}: {what}: Evergreen keeps refusing the staff session")

    async def staff_token(self) -> str:
        if not self.settings.staff_user:
            raise IlsUnavailable(f"{NAME}: lookups need staff_user (see docs/ils-rest.md)")
        if self._staff is None:
            async with self._staff_lock:
                if self._staff is None:
                    ident = {"username": self.settings.staff_user}
                    answer = await self.login(ident, self.settings.password, "staff")
                    if answer.textcode != "SUCCESS":
                        raise IlsUnavailable(f"{NAME}: staff login refused ({answer.textcode})")
                    self._staff = self.convert(answer.payload, Login, "staff login").authtoken
                    self.staff_logins += 1
        assert self._staff is not None
        return self._staff


class EvergreenStore(HttpStore):
    name = NAME
    settings: EvergreenSettings

    def __init__(self, settings: EvergreenSettings, http: HttpIls) -> None:
        super().__init__(settings, http, set())
        self.eg = Gateway(settings, http)
        self._endings: collections.deque[str] = collections.deque(maxlen=ENDINGS_MAX)
        self._ender: asyncio.Task[None] | None = None

    # -- Store ------------------------------------------------------------------------------
    async def check_pin(self, barcode: str, pin: str) -> Verification:
        answer = await self.eg.login(self._ident(barcode), pin, "opac")
        if answer.textcode == "SUCCESS":
            token = self.eg.convert(answer.payload, Login, "login").authtoken
            try:
                patron = await self._own_record(token, barcode)
            finally:
                if self.settings.end_sessions:
                    self._end_session(token)
            return Verification(patron, pin_ok=patron is not None)
        if answer.textcode in ("PATRON_INACTIVE", "PATRON_CARD_INACTIVE"):
            # Said only when the PIN was right: the patron may not use the library now.
            found = await self._staff_lookup(barcode) if self.settings.staff_user else None
            reason = "card inactive" if "CARD" in answer.textcode else "inactive in Evergreen"
            patron = found or Patron(barcode=barcode, record_id="")
            return Verification(
                dataclasses.replace(patron, blocked=True, blocked_reason=reason), pin_ok=True
            )
        if answer.textcode == "LOGIN_FAILED":
            # Only a barcode can be looked up; a username that failed stays "wrong PIN".
            s = self.settings
            can_tell = s.tell_unknown and bool(s.staff_user) and s.identifier == "barcode"
            return await self.wrong_or_unknown(barcode, can_tell=can_tell)
        raise self.eg.broken("PIN check", ValueError(f"Evergreen event {answer.textcode}"))

    async def find(self, barcode: str) -> Patron | None:
        return await self._staff_lookup(barcode)

    async def health(self) -> Health:
        async def probe() -> None:
            await self.eg.ready()
            if self.settings.staff_user:
                await self.eg.staff_token()  # a staff session proves gateway, IDL and login
            else:
                echo = await self.eg.call(AUTH, "opensrf.system.echo", "ping", what="health")
                if echo != "ping":
                    raise IlsUnavailable(f"{NAME}: health: unexpected echo")

        return await probe_health(self.http, probe, NAME, "Evergreen gateway answering")

    async def aclose(self) -> None:
        if self._ender is not None:
            self._ender.cancel()
            await asyncio.gather(self._ender, return_exceptions=True)
        await super().aclose()

    async def ended(self) -> None:
        """Wait until every patron session queued so far has been ended (tests, benchmark)."""
        while self._ender is not None:
            await asyncio.shield(self._ender)

    # -- internals --------------------------------------------------------------------------
    def _ident(self, typed: str) -> dict[str, str]:
        key = {"barcode": "barcode", "username": "username", "either": "identifier"}
        return {key[self.settings.identifier]: typed}

    async def _own_record(self, token: str, typed: str) -> Patron | None:
        """The patron's record read in their own fresh session (no staff rights needed)."""
        hit = self.records.get(typed)
        if hit is not None:
            return hit
        me = await self.eg.call(AUTH, "open-ils.auth.session.retrieve", token, what="session")
        if self.eg.event_of(me) is not None:
            raise self.eg.broken("session", ValueError("no session for a fresh login"))
        user_id = self.eg.convert(me, User, "session").id
        fleshed, summary = await asyncio.gather(
            self.eg.call(
                ACTOR,
                "open-ils.actor.user.fleshed.retrieve",
                token,
                user_id,
                ["card", "cards", "standing_penalties"],
                what="patron",
            ),
            self.eg.call(ACTOR, "open-ils.actor.user.fines.summary", token, user_id, what="fines"),
        )
        patron = self._patron(fleshed, summary, typed)
        if patron is not None:
            self.records.put(typed, patron)
        return patron

    async def _staff_lookup(self, barcode: str) -> Patron | None:
        found = await self.eg.staff(
            "open-ils.actor.user.fleshed.retrieve_by_barcode", barcode, what="lookup"
        )
        problem = self.eg.event_of(found)
        if problem is not None:
            if problem.textcode in ("ACTOR_CARD_NOT_FOUND", "ACTOR_USER_NOT_FOUND"):
                return None
            raise self.eg.broken("lookup", ValueError(f"Evergreen event {problem.textcode}"))
        user = self.eg.convert(found, User, "lookup")
        summary = await self.eg.staff("open-ils.actor.user.fines.summary", user.id, what="fines")
        return self._patron(found, summary, barcode)

    def _end_session(self, token: str) -> None:
        """End the patron's Evergreen session without making the patron wait for it."""
        self._endings.append(token)
        if self._ender is None:
            self._ender = asyncio.get_running_loop().create_task(self._end_sessions())

    async def _end_sessions(self) -> None:
        """Send the queued session ends one after another: at most one request in flight and one
        pooled connection held, whatever the number of logins. Sent all at once (a task each),
        they took connections from the next PIN checks and doubled the requests the ILS was
        serving at a time, which made every login wait behind another login's logout."""
        try:
            while self._endings:
                token = self._endings.popleft()
                # Best effort: an ILS that does not answer lets the session time out by itself.
                with contextlib.suppress(StoreUnavailable):
                    await self.eg.call(AUTH, "open-ils.auth.session.delete", token, what="logout")
        finally:
            self._ender = None

    def _patron(self, raw: Any, summary: Any, typed: str) -> Patron | None:
        if self.eg.event_of(raw) is not None or raw is None:
            raise self.eg.broken("patron", ValueError("no record"))
        user: User = self.eg.convert(raw, User, "patron")
        if true(user.deleted):
            return None
        owed = Decimal("0.00")
        if self.eg.event_of(summary) is not None:  # never "no fines" for an answer we lack
            raise self.eg.broken("fines", ValueError("Evergreen refused the fines summary"))
        if summary is not None:
            balance = self.eg.convert(summary, Summary, "fines").balance_owed
            try:
                owed = Decimal(str(balance or 0)).quantize(Decimal("0.01"))
            except InvalidOperation:
                raise self.eg.broken("fines", ValueError("unreadable balance")) from None
        cards = [c for c in [user.card, *(user.cards or [])] if isinstance(c, Card)]
        card = next((c for c in cards if c.barcode == typed), None)
        reason = self._blocked(user, card)
        group = self.eg.groups.get(str(user.profile), str(user.profile or ""))
        given = user.pref_first_given_name or user.first_given_name
        return Patron(
            barcode=typed if card is not None or not cards else cards[0].barcode,
            record_id=str(user.id),
            name=", ".join(p for p in (user.family_name, given) if p),
            email=user.email or None,
            category=self.settings.profiles.get(group, group),
            expires=eg_date(user.expire_date),
            blocked=reason is not None,
            blocked_reason=reason,
            fines=max(owed, Decimal("0.00")),
            home_library=None if user.home_ou is None else str(user.home_ou),
        )

    def _blocked(self, user: User, card: Card | None) -> str | None:
        if true(user.barred):
            return "barred in Evergreen"
        if not true(user.active):
            return "inactive in Evergreen"
        if card is not None and not true(card.active):
            return "card inactive"
        today = dt.date.today()
        for penalty in user.standing_penalties or []:
            kind = penalty.standing_penalty
            if not isinstance(kind, PenaltyType) or kind.name in self.settings.ignored_penalties:
                continue
            stop = eg_date(penalty.stop_date)
            if stop is not None and stop <= today:
                continue
            actions = set((kind.block_list or "").split("|"))
            if actions & set(self.settings.block_on):
                return kind.label or kind.name
        return None


async def open_store(settings: EvergreenSettings, services: StoreServices) -> EvergreenStore:
    """Build the client; Evergreen being down at start-up is not an error (the IDL is read on
    first use)."""
    return EvergreenStore(settings, HttpIls(settings, name=NAME, base_dir=services.base_dir))


PLUGIN = StorePlugin(
    name=NAME,
    settings=EvergreenSettings,
    open=open_store,
    description="Evergreen's OpenSRF HTTP gateway (open-ils.auth.login, fleshed patron record)",
)
