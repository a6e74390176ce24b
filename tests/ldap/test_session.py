"""Session logic with a scripted authenticator: every outcome, access rules, odd requests.

The real core and real clients are exercised in test_server.py; here the authenticator is a
stand-in so outcomes that are hard to provoke for real (store down) are covered exactly."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import pytest

from bridge.config import loads
from bridge.core.audit import Audit
from bridge.core.auth import ChangeResult
from bridge.core.patron import Context, Decision, Outcome, Patron
from bridge.core.pin import PinPolicy
from bridge.core.secret import Secret
from bridge.core.store import StoreUnavailable
from bridge.core.throttle import Refusal, Throttle, ThrottleRules
from bridge.ldap import answers as rc
from bridge.ldap import ber
from bridge.ldap import messages as m
from bridge.ldap.directory import Directory
from bridge.ldap.session import AsPatron, Session, Shared
from bridge.services import Services
from tests.ldap import oracle
from tests.pins import DEMO_PIN, NEW_PIN, WRONG_PIN

BASE = "dc=library,dc=example"
SVC = f"cn=ezproxy,ou=services,{BASE}"
NARROW = f"cn=narrow,ou=services,{BASE}"
ANA = Patron("21234000000001", "rec-1", "Rivera, Ana", "ana@example.org", "ADULT")
BAO = Patron("21234000000004", "rec-4", "Nguyen, Bao", None, "JUVENILE")


def dn_of(p: Patron) -> str:
    return f"uid={p.barcode},ou=patrons,{BASE}"


class FakeAuth:
    def __init__(self) -> None:
        self.throttle = Throttle(ThrottleRules(source_max_failures=3))
        self.clock = lambda: 1000.0
        self.patrons = {p.barcode: p for p in (ANA, BAO)}
        self.outcomes: dict[str, Outcome] = {}
        self.down = False
        self.calls: list[tuple[str, str, Context]] = []
        self.sets: list[tuple[str, str]] = []

    def service_refusal(self, source: str) -> Refusal | None:
        return self.throttle.check_source(source, self.clock())

    def record_service_failure(self, source: str) -> None:
        self.throttle.record_failure(None, source, self.clock())

    def record_bad_input(self, source: str) -> None:
        self.throttle.record_bad_input(source, self.clock())

    def settle(self, barcode: str, pin: Secret, ctx: Context) -> Decision | None:
        return None  # nothing is cached here: every bind reaches `authenticate`

    async def authenticate(self, barcode: str, pin: Secret, ctx: Context) -> Decision:
        self.calls.append(("auth", barcode, ctx))
        outcome = self.outcomes.get(barcode)
        patron = self.patrons.get(barcode)
        if outcome is None:
            outcome = Outcome.UNKNOWN_CARD if patron is None else Outcome.ACCEPTED
            if patron is not None and not pin.matches(DEMO_PIN):
                outcome = Outcome.BAD_PIN
        return Decision(outcome, patron, pin_ok=outcome is Outcome.ACCEPTED)

    def recent(self, barcode: str) -> Patron | None:
        """Nothing verified lately: every search asks `lookup` (the real cache is tested in
        tests/core/test_recent.py and end to end in tests/ldap/test_search_cached.py)."""
        return None

    async def lookup(self, barcode: str) -> Patron | None:
        if self.down:
            raise StoreUnavailable("down")
        return self.patrons.get(barcode)

    async def lookup_by_email(self, email: str) -> list[Patron]:
        return [p for p in self.patrons.values() if p.email == email]

    async def lookup_by_record_id(self, record_id: str) -> Patron | None:
        return next((p for p in self.patrons.values() if p.record_id == record_id), None)

    async def change_pin(
        self, barcode: str, old: Secret, new: Secret, again: Secret, ctx: Context
    ) -> ChangeResult:
        if not old.matches(DEMO_PIN):
            return ChangeResult(False, outcome=Outcome.BAD_PIN)
        verdict = PinPolicy().check(new)
        return ChangeResult(verdict.ok, policy=None if verdict.ok else verdict)

    async def set_pin(self, barcode: str, new: Secret, *, actor: str) -> ChangeResult:
        self.sets.append((barcode, actor))
        return ChangeResult(True)


CONFIG = f"""
[store]
plugin = "sqlite"
[ldap]
groups = ["ADULT"]
[[ldap.service_accounts]]
dn = "{SVC}"
password = "svc-secret"
can_set_pin = true
[[ldap.service_accounts]]
dn = "{NARROW}"
password = "narrow-secret"
attributes = ["uid", "cn"]
search_base = "ou=groups,{BASE}"
"""


@pytest.fixture
def auth() -> FakeAuth:
    return FakeAuth()


def make(auth: FakeAuth, **kw: Any) -> Session:
    config = loads(CONFIG)
    assert config.ldap is not None
    services = Services(config, cast(Any, auth), Audit())
    shared = Shared(
        services, Directory(config.ldap), starttls=True, today=lambda: dt.date(2026, 1, 1)
    )
    return Session(shared, "127.0.0.1", tls=kw.get("tls", False), require_tls=kw.get("req", False))


async def ask(session: Session, pdu: bytes) -> list[dict[str, Any]]:
    reply = await session.handle(m.decode(pdu))
    return [oracle.decode(p) for p in reply.pdus]


async def bind(session: Session, name: str, pw: str, **kw: Any) -> dict[str, Any]:
    return (await ask(session, oracle.bind(1, name, pw.encode(), kw.get("controls"))))[0]


def code(resp: dict[str, Any]) -> int:
    return int(resp["payload"][0][3])


async def test_every_outcome_through_bind(auth: FakeAuth) -> None:
    session = make(auth)
    expected = {
        Outcome.ACCEPTED: 0,
        Outcome.STORE_UNAVAILABLE: 52,
        Outcome.BUSY: 51,
    }
    for outcome in Outcome:
        auth.outcomes[ANA.barcode] = outcome
        resp = await bind(session, dn_of(ANA), DEMO_PIN)
        assert code(resp) == expected.get(outcome, 49), outcome
        assert resp["protocolOp"] == 1


async def test_locked_card_gets_ppolicy_only_when_asked(auth: FakeAuth) -> None:
    session = make(auth)
    auth.outcomes[ANA.barcode] = Outcome.CARD_LOCKED
    plain = await bind(session, dn_of(ANA), DEMO_PIN)
    assert plain["controls"] is None
    asked = await bind(session, dn_of(ANA), DEMO_PIN, controls=[(m.OID_PPOLICY, False, None)])
    control = asked["controls"][0][3]
    assert control[0][3] == m.OID_PPOLICY.encode() and control[1][3] == b"0\x03\x81\x01\x01"


async def test_bind_names_that_name_no_patron_count_against_the_source(auth: FakeAuth) -> None:
    """A bind name that is no patron's (garbage, another tree) is bad input: it counts against
    the source like a malformed barcode does in the core, so it cannot be sent for free."""
    session = make(auth)
    for name in ("uid=x,dc=elsewhere", "cn=\\zz,,,", "o=" + "x" * 5000):
        assert code(await bind(session, name, DEMO_PIN)) == 49
    refusal = auth.throttle.check_source("127.0.0.1", auth.clock())
    assert refusal is not None and refusal.scope == "source"


async def test_bind_names_and_refusals(auth: FakeAuth) -> None:
    session = make(auth)
    assert code(await bind(session, ANA.barcode, DEMO_PIN)) == 0  # bare barcode
    assert (
        code(await bind(session, "UID=21234000000001, OU=Patrons,DC=Library,DC=Example", DEMO_PIN))
        == 0
    )
    assert code(await bind(session, dn_of(ANA), WRONG_PIN)) == 49
    assert code(await bind(session, "uid=x,dc=elsewhere", DEMO_PIN)) == 49
    assert code(await bind(session, SVC, "svc-secret")) == 0
    assert code(await bind(session, SVC, "wrong")) == 49
    # the vendor's policy and name travel with the patron bind that follows on the connection
    await bind(session, SVC, "svc-secret")
    await bind(session, dn_of(ANA), DEMO_PIN)
    assert auth.calls[-1][2].client == "ezproxy"
    # empty password: an unauthenticated bind, never a login
    pdu = ber.sequence(
        ber.integer(2),
        ber.tlv(0x60, ber.integer(3) + ber.octets(dn_of(ANA)) + ber.tlv(0x80, b"")),
    )
    assert code((await ask(session, pdu))[0]) == 53
    sasl = ber.sequence(
        ber.integer(3),
        ber.tlv(
            0x60, ber.integer(3) + ber.octets(b"") + ber.sequence(ber.octets(b"PLAIN"), tag=0xA3)
        ),
    )
    assert code((await ask(session, sasl))[0]) == 7
    v2 = ber.sequence(
        ber.integer(4), ber.tlv(0x60, ber.integer(2) + ber.octets(b"") + ber.tlv(0x80, b""))
    )
    assert code((await ask(session, v2))[0]) == 2
    anonymous = ber.sequence(
        ber.integer(5), ber.tlv(0x60, ber.integer(3) + ber.octets(b"") + ber.tlv(0x80, b""))
    )
    assert code((await ask(session, anonymous))[0]) == 0


async def test_tls_required_for_bind(auth: FakeAuth) -> None:
    assert code(await bind(make(auth, req=True), dn_of(ANA), DEMO_PIN)) == 13
    assert code(await bind(make(auth, req=True, tls=True), dn_of(ANA), DEMO_PIN)) == 0


async def test_anonymous_reads_only_the_root_dse(auth: FakeAuth) -> None:
    session = make(auth)
    root = await ask(session, oracle.search(2, "", "(objectClass=*)", scope=0))
    assert [r["protocolOp"] for r in root] == [4, 5]
    refused = await ask(session, oracle.search(3, BASE, f"(uid={ANA.barcode})"))
    assert len(refused) == 1 and code(refused[0]) == rc.INSUFFICIENT_ACCESS


async def test_search_finds_by_uid_mail_and_record_id(auth: FakeAuth) -> None:
    session = make(auth)
    await bind(session, SVC, "svc-secret")
    for filt in (
        f"(uid={ANA.barcode})",
        "(&(objectClass=person)(mail=ana@example.org))",
        "(uniqueIdentifier=rec-1)",
        f"(|(uid={ANA.barcode})(uid=nobody))",
    ):
        got = await ask(session, oracle.search(2, BASE, filt))
        assert [r["protocolOp"] for r in got] == [4, 5], filt
        assert got[0]["payload"][0][3] == dn_of(ANA).encode()


async def test_enumeration_is_refused_without_patron_data(auth: FakeAuth) -> None:
    session = make(auth)
    await bind(session, SVC, "svc-secret")
    for filt in ("(uid=*)", "(uid=2123*)", "(objectClass=*)", f"(|(uid={ANA.barcode})(uid=*))"):
        got = await ask(session, oracle.search(2, f"ou=patrons,{BASE}", filt))
        assert code(got[-1]) == rc.SIZE_LIMIT_EXCEEDED, filt
        entries = [r["payload"][0][3] for r in got[:-1]]
        assert entries in ([], [f"ou=patrons,{BASE}".encode()]), filt  # the container at most


async def test_store_down_is_unavailable(auth: FakeAuth) -> None:
    session = make(auth)
    await bind(session, SVC, "svc-secret")
    auth.down = True
    got = await ask(session, oracle.search(2, BASE, f"(uid={ANA.barcode})"))
    assert code(got[-1]) == rc.UNAVAILABLE


async def test_restricted_account_sees_only_its_attributes_and_subtree(auth: FakeAuth) -> None:
    session = make(auth)
    await bind(session, NARROW, "narrow-secret")
    got = await ask(session, oracle.search(2, f"ou=patrons,{BASE}", f"(uid={ANA.barcode})"))
    assert code(got[-1]) == rc.INSUFFICIENT_ACCESS  # outside its search_base
    assert code((await ask(session, oracle.search(3, f"ou=groups,{BASE}", "(cn=ADULT)")))[-1]) == 0


async def test_attribute_allow_list(auth: FakeAuth) -> None:
    config = loads(CONFIG.replace(f'search_base = "ou=groups,{BASE}"', ""))
    assert config.ldap is not None
    services = Services(config, cast(Any, auth), Audit())
    session = Session(
        Shared(services, Directory(config.ldap), starttls=False), "x", tls=False, require_tls=False
    )
    await bind(session, NARROW, "narrow-secret")
    got = await ask(session, oracle.search(2, BASE, f"(uid={ANA.barcode})"))
    names = {a[3][0][3] for a in got[0]["payload"][1][3]}
    assert names == {b"objectClass", b"uid", b"cn"}
    # filtering on an attribute it may not read cannot probe it, and mail is no lookup key
    probe = await ask(session, oracle.search(3, BASE, f"(&(uid={ANA.barcode})(mail=ana*))"))
    assert [r["protocolOp"] for r in probe] == [5]
    assert code((await ask(session, oracle.search(4, BASE, "(mail=ana@example.org)")))[-1]) == 4


async def test_patron_sees_only_own_entry(auth: FakeAuth) -> None:
    session = make(auth)
    await bind(session, ANA.barcode, DEMO_PIN)
    own = await ask(session, oracle.search(2, dn_of(ANA), "(objectClass=*)", scope=0))
    assert [r["protocolOp"] for r in own] == [4, 5]
    other = await ask(session, oracle.search(3, BASE, f"(uid={BAO.barcode})"))
    assert [r["protocolOp"] for r in other] == [5]
    # another card's DN: noSuchObject whether or not the card exists
    for barcode in (BAO.barcode, "21234999999999"):
        read = await ask(session, oracle.search(4, f"uid={barcode},ou=patrons,{BASE}", "(uid=*)"))
        assert code(read[-1]) == rc.NO_SUCH_OBJECT


async def test_compare_group_membership_and_attributes(auth: FakeAuth) -> None:
    session = make(auth)
    await bind(session, SVC, "svc-secret")
    group = f"cn=ADULT,ou=groups,{BASE}"
    assert code((await ask(session, oracle.compare(2, group, "member", dn_of(ANA))))[0]) == 6
    assert code((await ask(session, oracle.compare(3, group, "member", dn_of(BAO))))[0]) == 5
    assert (
        code((await ask(session, oracle.compare(4, dn_of(ANA), "employeeType", "adult")))[0]) == 6
    )
    assert code((await ask(session, oracle.compare(5, dn_of(ANA), "givenName", "Bob")))[0]) == 5
    assert code((await ask(session, oracle.compare(6, dn_of(BAO), "mail", "x")))[0]) == 16
    missing = f"uid=21234999999999,ou=patrons,{BASE}"
    assert code((await ask(session, oracle.compare(7, missing, "uid", "x")))[0]) == 32


async def test_writes_unknown_extended_and_critical_controls(auth: FakeAuth) -> None:
    session = make(auth)
    for request, response in m.UNSUPPORTED.items():
        body = ber.octets(b"uid=1,dc=x") if request != m.DEL_REQUEST else b"uid=1"
        got = await ask(session, ber.sequence(ber.integer(9), ber.tlv(request, body)))
        assert got[0]["protocolOp"] == response & 0x1F and code(got[0]) == 53
    unknown = (await ask(session, oracle.extended(3, "1.2.3.4")))[0]
    assert code(unknown) == 2 and len(unknown["payload"]) == 3  # no responseName
    critical = oracle.search(4, "", "(objectClass=*)", scope=0, controls=[("1.2.3.9", True, None)])
    got = await ask(session, critical)
    assert got[0]["protocolOp"] == 5 and code(got[0]) == 12
    ignored = oracle.search(5, "", "(objectClass=*)", scope=0, controls=[("1.2.3.9", False, None)])
    assert [r["protocolOp"] for r in await ask(session, ignored)] == [4, 5]


async def test_whoami_and_starttls_answers(auth: FakeAuth) -> None:
    session = make(auth)
    anon = (await ask(session, oracle.extended(2, m.OID_WHOAMI)))[0]
    assert anon["payload"][-1][3] == b""
    await bind(session, ANA.barcode, DEMO_PIN)
    me = (await ask(session, oracle.extended(3, m.OID_WHOAMI)))[0]
    assert me["payload"][-1][3] == b"dn:" + dn_of(ANA).encode()
    reply = await session.handle(m.decode(oracle.extended(4, m.OID_STARTTLS)))
    assert reply.after == "starttls"


def passwd(user: str | None, old: str | None, new: str | None) -> bytes:
    parts = b""
    for tag, value in ((0x80, user), (0x81, old), (0x82, new)):
        if value is not None:
            parts += ber.octets(value, tag)
    return oracle.extended(7, m.OID_PASSWD_MODIFY, ber.sequence(parts))


async def test_password_modify(auth: FakeAuth) -> None:
    session = make(auth)
    await bind(session, ANA.barcode, DEMO_PIN)
    assert code((await ask(session, passwd(None, DEMO_PIN, NEW_PIN)))[0]) == 0
    assert code((await ask(session, passwd(None, WRONG_PIN, NEW_PIN)))[0]) == 49
    assert code((await ask(session, passwd(None, None, NEW_PIN)))[0]) == 53  # old PIN required
    weak = (await ask(session, passwd(None, DEMO_PIN, "1111")))[0]
    assert code(weak) == rc.CONSTRAINT_VIOLATION and b"repeating" in weak["payload"][2][3]
    assert code((await ask(session, passwd(None, DEMO_PIN, None)))[0]) == 53  # no generation
    service = make(auth)
    await bind(service, SVC, "svc-secret")
    assert code((await ask(service, passwd(dn_of(BAO), None, NEW_PIN)))[0]) == 0
    assert auth.sets == [(BAO.barcode, "ldap:ezproxy")]
    assert code((await ask(make(auth, req=True), passwd(dn_of(BAO), DEMO_PIN, NEW_PIN)))[0]) == 13


async def test_size_limit_and_paging(auth: FakeAuth) -> None:
    session = make(auth)
    await bind(session, SVC, "svc-secret")
    both = f"(|(uid={ANA.barcode})(uid={BAO.barcode}))"
    limited = await ask(session, oracle.search(2, BASE, both, size=1))
    assert [r["protocolOp"] for r in limited] == [4, 5] and code(limited[-1]) == 4
    pages: list[bytes] = []
    cookie = b""
    for msgid in (3, 4):
        value = m.paged_response(1, cookie).value
        got = await ask(
            session, oracle.search(msgid, BASE, both, controls=[(m.OID_PAGED_RESULTS, True, value)])
        )
        assert [r["protocolOp"] for r in got] == [4, 5] and code(got[-1]) == 0
        pages.append(got[0]["payload"][0][3])
        control = got[-1]["controls"][0][3]
        cookie = m.decode_paged(control[1][3]).cookie
    assert sorted(pages) == sorted([dn_of(ANA).encode(), dn_of(BAO).encode()])
    assert cookie == b""  # the last page says so


async def test_time_limit(auth: FakeAuth) -> None:
    import asyncio

    async def never(barcode: str) -> Patron | None:
        await asyncio.get_running_loop().create_future()  # a store that never answers
        return None

    auth.lookup = never  # type: ignore[method-assign]
    session = make(auth)
    session.shared.deadline = asyncio.timeout  # what the server adapter passes
    await bind(session, SVC, "svc-secret")
    got = await ask(session, oracle.search(2, BASE, f"(uid={ANA.barcode})", time=1))
    assert code(got[-1]) == rc.TIME_LIMIT_EXCEEDED


async def test_guessing_service_secrets_blocks_the_source(auth: FakeAuth) -> None:
    session = make(auth)
    for _ in range(3):
        assert code(await bind(session, SVC, "guess")) == 49
    assert code(await bind(session, SVC, "svc-secret")) == 49  # blocked, even the right one
    other = Session(session.shared, "10.0.0.9", tls=False, require_tls=False)
    assert code(await bind(other, SVC, "svc-secret")) == 0  # another address is not


async def test_handle_now_answers_what_needs_no_waiting(auth: FakeAuth) -> None:
    """The server asks `handle_now` first: it answers a service bind and a refused bind at
    once, a patron bind only when the core settles it without the store, and leaves every
    other request (and any bind with controls) to `handle`."""
    session = make(auth)
    service = session.handle_now(m.decode(oracle.bind(1, SVC, b"svc-secret")))
    assert service is not None and code(oracle.decode(service.pdus[0])) == 0
    refused = session.handle_now(m.decode(oracle.bind(2, "cn=nobody,dc=elsewhere", b"x")))
    assert refused is not None
    assert code(oracle.decode(refused.pdus[0])) == rc.INVALID_CREDENTIALS
    patron = m.decode(oracle.bind(3, dn_of(ANA), DEMO_PIN.encode()))
    assert session.handle_now(patron) is None  # FakeAuth settles nothing: the store decides
    assert auth.calls == []
    assert code(oracle.decode((await session.handle(patron)).pdus[0])) == 0

    settled = Decision(Outcome.ACCEPTED, ANA, pin_ok=True)
    auth.settle = lambda barcode, pin, ctx: settled  # type: ignore[method-assign]
    quick = session.handle_now(m.decode(oracle.bind(4, dn_of(ANA), DEMO_PIN.encode())))
    assert quick is not None and code(oracle.decode(quick.pdus[0])) == 0
    assert isinstance(session.identity, AsPatron) and session.identity.barcode == ANA.barcode
    with_control = oracle.bind(5, dn_of(ANA), DEMO_PIN.encode(), [(m.OID_PPOLICY, False, None)])
    assert session.handle_now(m.decode(with_control)) is None
    assert session.handle_now(m.decode(oracle.search(6, BASE, "(uid=x)"))) is None


async def test_search_now_answers_as_search_does(auth: FakeAuth) -> None:
    """A search by uid for a card verified lately is answered at once (`handle_now`), with
    exactly the bytes `handle` sends for it; every other search is left to `handle`."""
    auth.recent = auth.patrons.get  # type: ignore[method-assign]
    ana, bao = ANA.barcode, BAO.barcode
    filters = [
        f"(uid={ana})",
        f"(&(objectClass=inetOrgPerson)(uid={ana}))",
        f"(&(objectClass=person)(UID={bao})(objectclass=TOP))",
        f"(&(objectClass=posixAccount)(uid={ana}))",
        f"(&(objectClass=groupOfNames)(uid={ana}))",
        f"(&(uid={ana})(uid={bao}))",
        f"(&(uid={ana})(cn=Rivera, Ana))",
        "(&(objectClass=inetOrgPerson)(uid=21234000009999))",
        f"(|(uid={ana}))",
    ]
    bases = [BASE, f"ou=patrons,{BASE}", f"ou=groups,{BASE}", dn_of(ANA), "dc=elsewhere"]
    answered = 0
    for account, secret in ((SVC, "svc-secret"), (NARROW, "narrow-secret"), (None, "")):
        session = make(auth)
        if account is not None:
            assert code(await bind(session, account, secret)) == 0
        for f in filters:
            for base in bases:
                for scope in (0, 1, 2):
                    for attrs in ([], ["cn", "mail"], ["1.1"], ["*", "+"]):
                        for size in (0, 1):
                            pdu = oracle.search(9, base, f, scope=scope, attrs=attrs, size=size)
                            now = session.handle_now(m.decode(pdu))
                            if now is None:
                                continue
                            answered += 1
                            full = await session.handle(m.decode(pdu))
                            assert b"".join(now.pdus) == b"".join(full.pdus), (account, f, base)
    # the unrestricted account's searches by uid alone and with patron classes (3 filters),
    # from the base (subtree) or the patrons container (one level, subtree), any attributes
    assert answered == 3 * (1 + 2) * 4 * 2
    assert auth.calls == []
