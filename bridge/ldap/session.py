"""One LDAP connection's state and the answer to each request: bind, search, compare, extended.

No sockets here: `Session.handle(message)` returns a `Reply` (the PDUs to write and whether the
server must then close or switch to TLS); the server adapter does the I/O. The only awaits are
the core's (authenticate, lookups, PIN changes), so a cached bind completes without ever
suspending and the server can run it inline.

Who may do what:
- anonymous: bind, WhoAmI, StartTLS and the RootDSE (`anonymous_search = "directory"` widens it);
- a service account: search and compare under its `search_base`, reading only its allowed
  attributes (filters on other attributes evaluate as Undefined, so they cannot probe them);
- a patron: their own entry only (Alexandria-style clients read it after binding).
"""

from __future__ import annotations

import datetime as dt
import hmac
import os
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from bridge.core.auth import ChangeResult, in_task
from bridge.core.patron import Context, Decision, Outcome, Patron
from bridge.core.secret import Secret
from bridge.core.store import StoreUnavailable
from bridge.ldap import answers as rc
from bridge.ldap import dn as dnlib
from bridge.ldap import messages as m
from bridge.ldap.ber import ProtocolError
from bridge.ldap.directory import (
    Directory,
    Entry,
    GroupName,
    Location,
    Missing,
    Node,
    Outside,
    PatronName,
    RootDSE,
    ServiceName,
)
from bridge.ldap.filters import Lookup, evaluate, excludes, lookups, point, required
from bridge.services import Services

T = TypeVar("T")
Deadline = Callable[[float], AbstractAsyncContextManager[Any]]

KNOWN_CONTROLS = frozenset({m.OID_PAGED_RESULTS, m.OID_PPOLICY, m.OID_MANAGE_DSA_IT})
RESPONSE_OF = {
    m.BindRequest: m.BIND_RESPONSE,
    m.SearchRequest: m.SEARCH_RESULT_DONE,
    m.CompareRequest: m.COMPARE_RESPONSE,
    m.ExtendedRequest: m.EXTENDED_RESPONSE,
}
GROUP_MEMBER_ATTRS = frozenset({"member", "uniquemember"})
WITHIN_MEMO = 1024  # search bases remembered per listener (cleared when full)
WITHIN_NAME_MAX = 512  # longest base DN (characters) remembered


@dataclass(slots=True)  # one per request: not frozen (its __init__ would cost more), never changed
class Reply:
    pdus: list[bytes]
    after: Literal["close", "starttls"] | None = None


class Refused(Exception):
    """A search or compare ends with this result code (and no more entries)."""

    def __init__(
        self, code: int, diagnostic: str = "", matched: str = "", entries: list[Entry] | None = None
    ) -> None:
        super().__init__(diagnostic)
        self.code = code
        self.diagnostic = diagnostic
        self.matched = matched
        self.entries = entries or []  # entries still sent (containers, never patrons)


class ServiceSecrets:
    """Vendor secrets checked with a keyed HMAC (random per-process key), not the PIN KDF.

    Service secrets are long random tokens, so a fast hash is enough, and search-then-bind then
    costs one KDF (the patron's), not two."""

    def __init__(self, passwords: list[str]) -> None:
        self._key = os.urandom(32)
        self._digests = [self._digest(p.encode("utf-8")) for p in passwords]

    def _digest(self, raw: bytes) -> bytes:
        return hmac.digest(self._key, raw, "sha256")  # one-shot: no HMAC object per bind

    def verify(self, index: int, secret: Secret) -> bool:
        return hmac.compare_digest(self._digests[index], self._digest(secret.reveal()))


class Shared:
    """What every connection of every LDAP listener shares."""

    def __init__(
        self,
        services: Services,
        directory: Directory,
        *,
        starttls: bool,
        today: Callable[[], dt.date] = dt.date.today,
        deadline: Deadline | None = None,
    ) -> None:
        settings = directory.settings
        # How a lookup is bounded in time: the server passes asyncio.timeout; without it
        # (pure tests) lookups are awaited as they are. Timers stay out of this module.
        self.deadline = deadline
        self.services = services
        self.auth = services.authenticator
        self.audit = services.audit
        self.directory = directory
        self.settings = settings
        self.starttls = starttls
        self.today = today
        self.secrets = ServiceSecrets([a.password for a in settings.service_accounts])
        self.as_service = [AsService(i) for i in range(len(settings.service_accounts))]
        self.client_names = [
            (dnlib.parse(a.dn, fold=False)[0][0][1] or a.dn) for a in settings.service_accounts
        ]
        self.policies = [services.config.client_policy(a.policy) for a in settings.service_accounts]
        self.anonymous_policy = services.config.client_policy(None)
        self.allowed = [
            None if a.attributes is None else frozenset(x.lower() for x in a.attributes)
            for a in settings.service_accounts
        ]
        self.search_bases = [
            dnlib.parse(a.search_base or settings.base_dn) for a in settings.service_accounts
        ]
        # (search base DN as sent, account) -> inside the account's search base: vendors send
        # the same base in every search, and parsing it costs more than the rest of the check
        self.within: dict[tuple[str, int], bool] = {}
        extensions = [m.OID_WHOAMI, m.OID_PASSWD_MODIFY] + ([m.OID_STARTTLS] if starttls else [])
        self.root_dse = directory.root_dse(extensions, sorted(KNOWN_CONTROLS))
        # A search by `(uid=X)` can be answered from the patron's entry alone (`_search_now`)
        # when uid is the barcode lookup and no fixed entry (base, containers, groups) has a
        # uid an equality could match (a base DN named `uid=...` has one).
        fixed = [directory.node(n) for n in ("base", "patrons", "groups", "services")]
        fixed += [directory.group(g) for g in settings.groups]
        self.uid_point = directory.keys.get("uid") == "barcode" and not any(
            "uid" in e.index for e in fixed
        )


def _page(entries: list[Entry], paged: m.PagedRequest) -> tuple[list[Entry], bytes]:
    """One page of a (re-run) search; the cookie is the next offset, empty on the last page."""
    offset = int.from_bytes(paged.cookie, "big") if paged.cookie else 0
    size = paged.size if paged.size > 0 else len(entries)
    page = entries[offset : offset + size]
    following = offset + len(page)
    return page, following.to_bytes(4, "big") if following < len(entries) else b""


@dataclass(frozen=True, slots=True)
class Anonymous:
    pass


@dataclass(frozen=True, slots=True)
class AsService:
    index: int


@dataclass(slots=True)  # set on every patron bind: not frozen (cheaper), never changed
class AsPatron:
    barcode: str


Identity = Anonymous | AsService | AsPatron
ANONYMOUS = Anonymous()


class Session:
    def __init__(self, shared: Shared, source: str, *, tls: bool, require_tls: bool) -> None:
        self.shared = shared
        self.source = source
        self.tls = tls
        self.require_tls = require_tls
        self.identity: Identity = ANONYMOUS
        self.vendor: int | None = None  # last service account bound on this connection
        self._contexts: dict[int | None, Context] = {}
        self._announced: set[int] = set()  # service accounts whose bind here was audited

    # -- dispatch ---------------------------------------------------------------------------
    async def handle(self, msg: m.Message) -> Reply:
        op = msg.op
        for control in msg.controls:
            if control.critical and control.oid not in KNOWN_CONTROLS:
                return self._critical(msg)
        if isinstance(op, m.BindRequest):
            return await self.bind(msg, op)
        if isinstance(op, m.SearchRequest):
            return await self.search(msg, op)
        if isinstance(op, m.CompareRequest):
            return Reply([await self.compare(msg.id, op)])
        if isinstance(op, m.ExtendedRequest):
            return await self.extended(msg.id, op)
        if isinstance(op, m.Unsupported):
            return Reply([m.result(msg.id, op.response, rc.UNWILLING_TO_PERFORM, "read-only")])
        if isinstance(op, m.UnbindRequest):
            return Reply([], "close")
        return Reply([])  # Abandon: never answered (the server drops queued work)

    def _critical(self, msg: m.Message) -> Reply:
        op = msg.op
        tag = op.response if isinstance(op, m.Unsupported) else RESPONSE_OF.get(type(op))
        if tag is None:  # unbind/abandon carry no response
            return Reply([], "close" if isinstance(op, m.UnbindRequest) else None)
        text = "unsupported critical control"
        if tag == m.EXTENDED_RESPONSE:
            return Reply([m.extended(msg.id, rc.UNAVAILABLE_CRITICAL_EXTENSION, text)])
        return Reply([m.result(msg.id, tag, rc.UNAVAILABLE_CRITICAL_EXTENSION, text)])

    def _context(self) -> Context:
        """Who asks: the last vendor bound on this connection (its name and policy), else
        "anonymous" with the global policy. Built once per vendor, not per bind."""
        ctx = self._contexts.get(self.vendor)
        if ctx is None:
            s = self.shared
            if self.vendor is None:
                ctx = Context("ldap", "anonymous", self.source, s.anonymous_policy)
            else:
                name, policy = s.client_names[self.vendor], s.policies[self.vendor]
                ctx = Context("ldap", name, self.source, policy)
            self._contexts[self.vendor] = ctx
        return ctx

    # -- bind -------------------------------------------------------------------------------
    def handle_now(self, msg: m.Message) -> Reply | None:
        """The answer when it needs nothing awaited, else None (then `handle`).

        A vendor's simple bind is what the bridge answers most, and most are settled at once
        (a PIN the core verified lately, a service account, a refusal): the server asks here
        first, and only a bind that needs the store goes through `handle`'s coroutine. The
        same for EZproxy's search for the card it is about to bind as (`_search_now`). A
        request with controls always goes through `handle` (critical-control, paging and
        ppolicy handling live there)."""
        if msg.controls:
            return None
        op = msg.op
        if type(op) is m.SearchRequest:
            return self._search_now(msg.id, op)
        if type(op) is not m.BindRequest:
            return None
        step = self._bind_start(msg, op)
        if isinstance(step, Reply):
            return step
        barcode, password = step
        decision = self.shared.auth.settle(barcode, password, self._context())
        return None if decision is None else self._bound(msg, decision)

    async def bind(self, msg: m.Message, req: m.BindRequest) -> Reply:
        step = self._bind_start(msg, req)
        if isinstance(step, Reply):
            return step
        barcode, password = step
        # `authenticate` settles first itself: no separate `settle` call here.
        decision = await self.shared.auth.authenticate(barcode, password, self._context())
        return self._bound(msg, decision)

    def _bind_start(self, msg: m.Message, req: m.BindRequest) -> Reply | tuple[str, Secret]:
        """Everything a bind decides before the PIN check: the answer, or the card and PIN
        to check."""
        s = self.shared
        mid = msg.id
        self.identity = ANONYMOUS  # RFC 4513 §4: a bind starts by dropping the old identity
        if req.version != 3:
            return self._bind_result(mid, rc.PROTOCOL_ERROR, "LDAPv3 only")
        password = req.password
        if password is None:
            return self._bind_result(mid, rc.AUTH_METHOD_NOT_SUPPORTED, "simple bind only")
        if not req.name:
            if password:
                return self._bind_result(mid, rc.INVALID_CREDENTIALS)
            if not s.settings.allow_anonymous_bind:
                return self._bind_result(
                    mid, rc.INAPPROPRIATE_AUTHENTICATION, "anonymous bind is disabled"
                )
            return self._bind_result(mid, rc.SUCCESS)
        if not password:
            # RFC 4513 §5.1.2 unauthenticated bind: never treat it as a login.
            return self._bind_result(mid, rc.UNWILLING_TO_PERFORM, "a PIN is required")
        if self.require_tls and not self.tls:
            return self._bind_result(mid, rc.CONFIDENTIALITY_REQUIRED, "use StartTLS or LDAPS")
        target = s.directory.bind_name(req.name)
        if isinstance(target, ServiceName):
            return self._service_bind(mid, target.index, password)
        if not isinstance(target, PatronName):
            s.audit.event("ldap_bind_refused", source=self.source, reason="not a patron name")
            s.auth.record_bad_input(self.source)
            return self._bind_result(mid, rc.INVALID_CREDENTIALS)
        return target.barcode, password

    def _bound(self, msg: m.Message, decision: Decision) -> Reply:
        """The bind response for the core's decision."""
        patron = decision.patron
        if decision.outcome is Outcome.ACCEPTED and patron is not None and not msg.controls:
            # the commonest answer, pre-encoded (what the general lines below produce for it)
            self.identity = AsPatron(patron.barcode)
            return Reply([m.bind_success(msg.id)])
        answer = rc.bind_answer(decision, self.shared.settings.locked_message)
        controls: list[m.Control] = []
        if msg.control(m.OID_PPOLICY) is not None:
            controls.append(m.ppolicy_response(answer.ppolicy_error))
        if answer.code == rc.SUCCESS and decision.patron is not None:
            self.identity = AsPatron(decision.patron.barcode)
        response = m.result(msg.id, m.BIND_RESPONSE, answer.code, answer.diagnostic, "", controls)
        return Reply([response])

    def _service_bind(self, mid: int, index: int, password: Secret) -> Reply:
        """A vendor's secret, checked with the keyed hash. A wrong one counts as a failure
        from that source in the core's throttle (no card involved), so guessing service
        secrets gets the address blocked like guessing PINs does.

        Failures are always audited; a success once per connection and account, because
        Apache and EZproxy re-bind their pooled connections before every patron login."""
        s = self.shared
        refusal = s.auth.service_refusal(self.source)
        ok = refusal is None and s.secrets.verify(index, password)
        if not ok or index not in self._announced:
            outcome = "accepted" if ok else "bad_secret" if refusal is None else "throttled"
            s.audit.event(
                "ldap_service_bind",
                client=s.client_names[index],
                source=self.source,
                outcome=outcome,
            )
        if not ok:
            if refusal is None:
                s.auth.record_service_failure(self.source)
            return self._bind_result(mid, rc.INVALID_CREDENTIALS)
        self._announced.add(index)
        self.identity = s.as_service[index]
        self.vendor = index
        return self._bind_result(mid, rc.SUCCESS)

    @staticmethod
    def _bind_result(mid: int, code: int, diagnostic: str = "") -> Reply:
        return Reply([m.result(mid, m.BIND_RESPONSE, code, diagnostic)])

    # -- search -----------------------------------------------------------------------------
    def _search_now(self, mid: int, req: m.SearchRequest) -> Reply | None:
        """A service account's search for one card by uid, a card whose PIN the core verified
        lately (search-then-bind: the vendor searches for the card it is about to bind as),
        answered from the verified cache without a coroutine. None for everything else, and
        for any case where `search` would answer otherwise than with this one entry (then
        `search` answers from the start: nothing here has been sent or audited)."""
        ident = self.identity
        s = self.shared
        if type(ident) is not AsService or not s.uid_point:
            return None
        value = point(req.filter)
        if value is None:
            return None
        allowed = s.allowed[ident.index]
        if allowed is not None and "uid" not in allowed:
            return None  # uid is not this account's to search by: `search` refuses it
        scope = req.scope
        d = s.directory
        try:
            loc = d.locate(req.base)
            # the base entry's subtree, or the patrons container's children (and itself)
            if type(loc) is not Node or not (
                (loc.name == "base" and scope == 2) or (loc.name == "patrons" and scope != 0)
            ):
                return None
            self._may_read(req.base, loc)
            text = value.decode("utf-8").strip()
        except (dnlib.DNError, Refused, UnicodeDecodeError):
            return None
        patron = s.auth.recent(text)
        if patron is None:
            return None  # the store must answer: `search`
        limit = s.settings.size_limit
        if req.size_limit:
            limit = min(limit, req.size_limit)
        if limit < 1:
            return None
        entry = d.patron(patron, s.today())
        # The filter on the entry, as `evaluate` would see it: uid (readable, checked above)
        # and the objectClass equalities; `search` sends no entry when one fails.
        filt = req.filter
        items = filt.items if type(filt) is m.And else (filt,)
        for item in items:
            if type(item) is not m.Equality or not entry.holds(item.attr.lower(), item.value):
                return None
        op = entry.answer(req.attributes, allowed, req.types_only)
        return Reply([m.envelope(mid, op) + m.search_done(mid)])

    async def search(self, msg: m.Message, req: m.SearchRequest) -> Reply:
        mid = msg.id
        paged_ctl = msg.control(m.OID_PAGED_RESULTS)
        try:
            paged = None if paged_ctl is None else m.decode_paged(paged_ctl.value)
        except ProtocolError:
            return Reply([m.result(mid, m.SEARCH_RESULT_DONE, rc.PROTOCOL_ERROR, "bad paging")])
        entries: list[Entry] = []
        code, diagnostic, matched = rc.SUCCESS, "", ""
        try:
            entries = await self._entries(req)
        except Refused as refusal:
            code, diagnostic, matched = refusal.code, refusal.diagnostic, refusal.matched
            entries = refusal.entries
        limit = self.shared.settings.size_limit
        if req.size_limit:
            limit = min(limit, req.size_limit)
        if len(entries) > limit:
            entries, code, diagnostic = entries[:limit], rc.SIZE_LIMIT_EXCEEDED, "size limit"
        controls: list[m.Control] = []
        if paged is not None:
            if paged.cookie and len(paged.cookie) != 4:
                done = m.result(mid, m.SEARCH_RESULT_DONE, rc.UNWILLING_TO_PERFORM, "bad cookie")
                return Reply([done])
            entries, cookie = _page(entries, paged)
            controls.append(m.paged_response(0, cookie))
        pdus = [
            m.envelope(mid, e.answer(req.attributes, self._allowed_on(e), req.types_only))
            for e in entries
        ]
        pdus.append(m.result(mid, m.SEARCH_RESULT_DONE, code, diagnostic, matched, controls))
        return Reply(pdus)

    def _allowed(self) -> frozenset[str] | None:
        ident = self.identity
        return self.shared.allowed[ident.index] if isinstance(ident, AsService) else None

    def _allowed_on(self, e: Entry) -> frozenset[str] | None:
        """The account's attribute allow-list applies to patron entries: it is data
        minimisation for patron records. The RootDSE, the containers and the group entries
        hold configuration, not patron data, and are served whole (ldap3 `get_info=ALL` needs
        the RootDSE's namingContexts; Apache compares a group's objectClass)."""
        if not e.patron:
            return None
        return self._allowed()

    def _visible(self, e: Entry) -> dict[str, list[bytes]]:
        allowed = self._allowed_on(e)
        attrs = e.index
        if allowed is None:
            return attrs
        return {k: v for k, v in attrs.items() if k in allowed or k == "objectclass"}

    def _locate(self, name: str) -> Location:
        try:
            return self.shared.directory.locate(name)
        except dnlib.DNError:
            raise Refused(rc.INVALID_DN_SYNTAX, "invalid DN") from None

    def _may_read(self, name: str, loc: Location) -> None:
        """Raise Refused unless the bound identity may look at or below this DN."""
        s = self.shared
        ident = self.identity
        if isinstance(loc, RootDSE):
            return
        if isinstance(ident, Anonymous):
            if s.settings.anonymous_search != "directory":
                raise Refused(rc.INSUFFICIENT_ACCESS, "bind first")
        elif isinstance(ident, AsService):
            key = (name, ident.index)
            inside = s.within.get(key)
            if inside is None:
                inside = dnlib.is_within(dnlib.parse(name), s.search_bases[ident.index])
                if len(name) <= WITHIN_NAME_MAX:  # a vendor's few search bases, kept
                    if len(s.within) >= WITHIN_MEMO:
                        s.within.clear()
                    s.within[key] = inside
            if not inside:
                raise Refused(rc.INSUFFICIENT_ACCESS, "outside this account's search base")

    async def _entries(self, req: m.SearchRequest) -> list[Entry]:
        s = self.shared
        d = s.directory
        loc = self._locate(req.base)
        self._may_read(req.base, loc)
        scope = req.scope
        found: list[Entry] = []
        wants_patrons = False
        match loc:
            case RootDSE():
                if scope == 0:
                    found.append(s.root_dse)
            case Node("base"):
                if scope == 0:
                    found.append(d.node("base"))
                else:
                    if scope == 2:
                        found.append(d.node("base"))
                    found.extend(d.node(ou) for ou in ("patrons", "groups", "services"))
                    if scope == 2:
                        found.extend(d.group(g) for g in s.settings.groups)
                        wants_patrons = True
            case Node("patrons"):
                if scope != 1:
                    found.append(d.node("patrons"))
                wants_patrons = scope != 0
            case Node("groups"):
                if scope != 1:
                    found.append(d.node("groups"))
                if scope != 0:
                    found.extend(d.group(g) for g in s.settings.groups)
            case Node(name):
                if scope != 1:
                    found.append(d.node(name))
            case PatronName(barcode):
                ident = self.identity
                if isinstance(ident, AsPatron) and ident.barcode.casefold() != barcode.casefold():
                    # another patron's entry: hidden, and without a lookup whose answer
                    # (entry or noSuchObject) would tell whether that card exists
                    raise Refused(rc.NO_SUCH_OBJECT, "", d.patrons_dn)
                patron = await self._fetch(self._patron(barcode), req.time_limit)
                if patron is None:
                    raise Refused(rc.NO_SUCH_OBJECT, "", d.patrons_dn)
                if scope != 1:
                    found.append(d.patron(patron, s.today()))
            case GroupName(category):
                if category.casefold() not in d.groups:
                    raise Refused(rc.NO_SUCH_OBJECT, "", d.groups_dn)
                if scope != 1:
                    found.append(d.group(category))
            case Missing(matched):
                raise Refused(rc.NO_SUCH_OBJECT, "", matched)
            case ServiceName() | Outside():
                raise Refused(rc.NO_SUCH_OBJECT)
        needs = required(req.filter)
        found = [e for e in found if needs <= e.index.keys() and self._matches(req.filter, e)]
        if wants_patrons and excludes(req.filter, d.patron_classes):
            wants_patrons = False  # e.g. SSSD's sudoRole or posixGroup searches: no patron
        if wants_patrons:
            try:
                found.extend(await self._patrons(req))
            except Refused as refusal:
                if refusal.code == rc.SIZE_LIMIT_EXCEEDED:
                    refusal.entries = found
                raise
        if isinstance(self.identity, AsPatron):
            own = d.patron_dn(self.identity.barcode)
            below = "," + d.patrons_dn
            found = [e for e in found if e.dn == own or not e.dn.endswith(below)]
        return found

    def _matches(self, f: m.Filter, e: Entry) -> bool:
        return evaluate(f, self._visible(e)) is True

    async def _patron(self, barcode: str) -> Patron | None:
        return await self.shared.auth.lookup(barcode)

    async def _fetch(self, work: Awaitable[T], time_limit: int) -> T:
        """Await a store lookup within the search's time limit; a store failure is 52."""
        limit = self.shared.settings.time_limit
        if time_limit:
            limit = min(limit, float(time_limit))
        try:
            deadline = self.shared.deadline
            if deadline is None:
                result = await work
            else:
                # A timeout scope, not wait_for (which wraps the lookup in a second task);
                # it needs a task, and handlers start inline (`bridge.eager`).
                await in_task()
                async with deadline(limit):
                    result = await work
        except TimeoutError:
            raise Refused(rc.TIME_LIMIT_EXCEEDED, "time limit") from None
        except StoreUnavailable:
            raise Refused(rc.UNAVAILABLE, "patron records are unavailable") from None
        return result

    async def _patrons(self, req: m.SearchRequest) -> list[Entry]:
        """Patrons a filter names through indexed lookups; anything else is enumeration."""
        s = self.shared
        allowed = self._allowed()
        keys = s.directory.keys
        if allowed is not None:
            keys = {k: v for k, v in keys.items() if k in allowed}
        plan = lookups(req.filter, keys)
        if plan is None:
            s.audit.event(
                "ldap_enumeration_refused",
                source=self.source,
                client=self._context().client,
            )
            if s.settings.enumeration == "unwilling":
                raise Refused(rc.UNWILLING_TO_PERFORM, "search by uid, mail or record id")
            raise Refused(rc.SIZE_LIMIT_EXCEEDED, "search by uid, mail or record id")
        patrons: dict[str, Patron] = {}
        for key in sorted(plan, key=lambda k: (k.kind, k.value)):
            for p in await self._fetch_many(key, req.time_limit):
                patrons[p.barcode] = p
        today = s.today()
        entries = [s.directory.patron(p, today) for p in patrons.values()]
        return [e for e in entries if self._matches(req.filter, e)]

    async def _fetch_many(self, key: Lookup, time_limit: int) -> list[Patron]:
        auth = self.shared.auth
        if key.kind == "barcode":
            one = auth.recent(key.value)  # verified within cache.ttl: no store round trip
            if one is None:
                one = await self._fetch(auth.lookup(key.value), time_limit)
            return [] if one is None else [one]
        if key.kind == "record":
            one = await self._fetch(auth.lookup_by_record_id(key.value), time_limit)
            return [] if one is None else [one]
        if key.kind == "uid_number":
            record = self.shared.directory.record_for_uid_number(key.value)
            if record is None:
                return []
            one = await self._fetch(auth.lookup_by_record_id(record), time_limit)
            return [] if one is None else [one]
        return await self._fetch(auth.lookup_by_email(key.value), time_limit)

    # -- compare ----------------------------------------------------------------------------
    async def compare(self, mid: int, req: m.CompareRequest) -> bytes:
        try:
            code = await self._compare(req)
        except Refused as refusal:
            return m.result(
                mid, m.COMPARE_RESPONSE, refusal.code, refusal.diagnostic, refusal.matched
            )
        return m.result(mid, m.COMPARE_RESPONSE, code)

    async def _compare(self, req: m.CompareRequest) -> int:
        s = self.shared
        d = s.directory
        loc = self._locate(req.dn)
        if isinstance(loc, RootDSE):
            raise Refused(rc.INSUFFICIENT_ACCESS)
        self._may_read(req.dn, loc)
        attr = req.attr.lower()
        allowed = self._allowed() if isinstance(loc, PatronName) else None
        if allowed is not None and attr not in allowed and attr != "objectclass":
            raise Refused(rc.INSUFFICIENT_ACCESS, "attribute not readable")
        if isinstance(loc, GroupName):
            if attr in GROUP_MEMBER_ATTRS:
                return await self._is_member(loc.category, req.value)
            entry = d.group(loc.category)
        elif isinstance(loc, PatronName):
            ident = self.identity
            if isinstance(ident, AsPatron) and ident.barcode != loc.barcode:
                raise Refused(rc.INSUFFICIENT_ACCESS)
            patron = await self._fetch(self._patron(loc.barcode), 0)
            if patron is None:
                raise Refused(rc.NO_SUCH_OBJECT, "", d.patrons_dn)
            entry = d.patron(patron, s.today())
        elif isinstance(loc, Node):
            entry = d.node(loc.name)
        elif isinstance(loc, Missing):
            raise Refused(rc.NO_SUCH_OBJECT, "", loc.matched)
        else:
            raise Refused(rc.NO_SUCH_OBJECT)
        if attr not in entry.index:
            raise Refused(rc.NO_SUCH_ATTRIBUTE)
        verdict = evaluate(m.Equality(attr, req.value), entry.index)
        return rc.COMPARE_TRUE if verdict else rc.COMPARE_FALSE

    async def _is_member(self, category: str, value: bytes) -> int:
        """`Require ldap-group`: is the patron named by `value` in this category's group?"""
        try:
            member = self.shared.directory.locate(value.decode("utf-8"))
        except (UnicodeDecodeError, dnlib.DNError):
            return rc.COMPARE_FALSE
        if not isinstance(member, PatronName):
            return rc.COMPARE_FALSE
        ident = self.identity
        if isinstance(ident, AsPatron) and ident.barcode != member.barcode:
            raise Refused(rc.INSUFFICIENT_ACCESS)
        patron = await self._fetch(self._patron(member.barcode), 0)
        if patron is None or patron.category.casefold() != category.casefold():
            return rc.COMPARE_FALSE
        return rc.COMPARE_TRUE

    # -- extended ---------------------------------------------------------------------------
    async def extended(self, mid: int, req: m.ExtendedRequest) -> Reply:
        if req.name == m.OID_STARTTLS:
            if self.tls:
                return Reply([m.extended(mid, rc.OPERATIONS_ERROR, "TLS is already on")])
            if not self.shared.starttls:
                return Reply([m.extended(mid, rc.UNAVAILABLE, "StartTLS is not configured")])
            return Reply([m.extended(mid, rc.SUCCESS, name=m.OID_STARTTLS)], "starttls")
        if req.name == m.OID_WHOAMI:
            return Reply([m.extended(mid, rc.SUCCESS, value=self._authz_id().encode())])
        if req.name == m.OID_PASSWD_MODIFY:
            code, text = await self._passwd_modify(req.value)
            return Reply([m.extended(mid, code, text)])
        return Reply([m.extended(mid, rc.PROTOCOL_ERROR, "unsupported extended operation")])

    def _authz_id(self) -> str:
        ident = self.identity
        if isinstance(ident, AsPatron):
            return "dn:" + self.shared.directory.patron_dn(ident.barcode)
        if isinstance(ident, AsService):
            return "dn:" + self.shared.settings.service_accounts[ident.index].dn
        return ""

    async def _passwd_modify(self, value: bytes | None) -> tuple[int, str]:
        """RFC 3062: a patron changes their PIN with the old one; a service account with
        `can_set_pin` may set it without. The PIN policy applies either way."""
        s = self.shared
        try:
            req = m.decode_passwd_modify(value)
        except ProtocolError:
            return rc.PROTOCOL_ERROR, "malformed password modify request"
        if self.require_tls and not self.tls:
            return rc.CONFIDENTIALITY_REQUIRED, "use StartTLS or LDAPS"
        if req.new is None:
            return rc.UNWILLING_TO_PERFORM, "choose the new PIN (PINs are not generated)"
        ident = self.identity
        if req.user is not None:
            target = s.directory.bind_name(req.user)
            if not isinstance(target, PatronName):
                return rc.NO_SUCH_OBJECT, "not a patron"
            barcode = target.barcode
        elif isinstance(ident, AsPatron):
            barcode = ident.barcode
        else:
            return rc.UNWILLING_TO_PERFORM, "name the patron"
        result: ChangeResult
        if req.old is not None:
            result = await s.auth.change_pin(barcode, req.old, req.new, req.new, self._context())
        elif isinstance(ident, AsService) and s.settings.service_accounts[ident.index].can_set_pin:
            actor = "ldap:" + s.client_names[ident.index]
            result = await s.auth.set_pin(barcode, req.new, actor=actor)
        else:
            return rc.UNWILLING_TO_PERFORM, "the old PIN is required"
        if result.ok:
            return rc.SUCCESS, ""
        if result.policy is not None:
            return rc.CONSTRAINT_VIOLATION, result.policy.reason
        code = rc.change_code(result.outcome)
        return code, "" if code == rc.INVALID_CREDENTIALS else result.reason
