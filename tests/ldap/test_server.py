"""The real daemon answering real clients: ldap3 and OpenLDAP's own command-line tools.

Each vendor's request sequence from the reference note runs end to end (EZproxy, Apache
mod_authnz_ldap, Libki, SSSD), plus every authenticator outcome, filter injection, malformed and
half-sent PDUs, and many connections at once. No test sleeps: a half-sent PDU is proven harmless
by waiting for the server's own disconnect (an event), while another connection is served.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from ldap3 import ALL, BASE, SUBTREE, Connection, Server, Tls

from bridge.ldap import ber
from bridge.ldap import messages as m
from tests.conftest import require_tool
from tests.harness import DEMO, UNKNOWN, Daemon
from tests.ldap import oracle
from tests.pins import DEMO_PIN, NEW_PIN, OTHER_PIN, WRONG_PIN

BASE_DN = "dc=library,dc=example"
PATRONS = f"ou=patrons,{BASE_DN}"
EZPROXY = f"cn=ezproxy,ou=services,{BASE_DN}"
EZPROXY_SECRET = "ezproxy-token-8e1f0c"
DESK = f"cn=desk,ou=services,{BASE_DN}"
DESK_SECRET = "desk-token-77a2b9"

SECTIONS = f"""
[ldap]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
base_dn = "{BASE_DN}"
bind_domain = "library.example"
tls_certificate = "ldap.crt"
tls_key = "ldap.key"
tls_generate = true
groups = ["ADULT", "JUVENILE"]
idle_timeout = 2.0
locked_message = "data 775"

[[ldap.service_accounts]]
dn = "{EZPROXY}"
password = "{EZPROXY_SECRET}"
attributes = ["uid", "cn", "mail", "memberOf", "employeeType", "uniqueIdentifier", "patronStatus"]

[[ldap.service_accounts]]
dn = "{DESK}"
password_env = "DESK_SECRET"
can_set_pin = true
"""
THROTTLE = """
card_free_failures = 2
card_lock_after = 3
source_max_failures = 1000
"""


def dn(barcode: str) -> str:
    return f"uid={barcode},{PATRONS}"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(
        tmp_path_factory.mktemp("ldap"),
        SECTIONS,
        throttle=THROTTLE,
        env={"DESK_SECRET": DESK_SECRET},
    )
    d.start()
    yield d
    assert d.stop() == 0


def url(d: Daemon, *, tls: bool = False) -> str:
    host, port = d.address("ldap", 1 if tls else 0)
    return f"{'ldaps' if tls else 'ldap'}://{host}:{port}"


def server(d: Daemon, *, tls: bool = False, get_info: Any = None) -> Server:
    host, port = d.address("ldap", 1 if tls else 0)
    ca = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(d.dir / "ldap.crt"))
    return Server(host, port, use_ssl=tls, tls=ca, get_info=get_info or "NO_INFO")


def connect(
    d: Daemon, user: str | None = None, password: str | None = None, **kw: Any
) -> Connection:
    conn = Connection(server(d, **kw), user=user, password=password, raise_exceptions=False)
    conn.open()
    return conn


def wait_audit(
    d: Daemon, keep: Callable[[dict[str, Any]], bool], count: int
) -> list[dict[str, Any]]:
    """Audit lines reach the file through the daemon's writer thread, a moment after the reply:
    wait (bounded) until `count` matching events are there."""
    deadline = time.monotonic() + 20
    while True:
        events = [e for e in d.audit_events() if keep(e)]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.02)


def tool(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    require_tool(args[0])
    env = {**os.environ, "LDAPTLS_CACERT": str(d.dir / "ldap.crt")}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)


# --- OpenLDAP's tools ----------------------------------------------------------------------


def test_ldapwhoami_with_dn_barcode_and_upn(daemon: Daemon) -> None:
    active = DEMO["active"]
    for name in (dn(active), active, f"{active}@library.example"):
        out = tool(daemon, "ldapwhoami", "-x", "-H", url(daemon), "-D", name, "-w", DEMO_PIN)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"dn:{dn(active)}"
    bad = tool(daemon, "ldapwhoami", "-x", "-H", url(daemon), "-D", dn(active), "-w", WRONG_PIN)
    assert bad.returncode == 49 and "Invalid credentials" in bad.stderr
    anon = tool(daemon, "ldapwhoami", "-x", "-H", url(daemon))
    assert anon.returncode == 0 and anon.stdout.strip() == "anonymous"


def test_ldapsearch_plain_starttls_ldaps_and_paged(daemon: Daemon) -> None:
    active = DEMO["active"]
    common = ("-x", "-D", EZPROXY, "-w", EZPROXY_SECRET, "-b", BASE_DN, f"(uid={active})")
    for extra in (
        ("-H", url(daemon)),
        ("-H", url(daemon), "-ZZ"),
        ("-H", url(daemon, tls=True)),
        ("-H", url(daemon), "-E", "pr=100/noprompt"),
    ):
        out = tool(daemon, "ldapsearch", *extra, *common, "cn", "mail", "uniqueIdentifier")
        assert out.returncode == 0, (extra, out.stderr)
        assert f"dn: {dn(active)}" in out.stdout
        assert "cn: Rivera, Ana" in out.stdout and "mail: ana.rivera@example.org" in out.stdout
        assert "uniqueIdentifier: " in out.stdout
        assert "userPassword" not in out.stdout
    paged = tool(daemon, "ldapsearch", "-H", url(daemon), "-E", "pr=100/noprompt", *common, "1.1")
    assert "pagedresults: cookie=" in paged.stdout


def test_ldapsearch_root_dse_anonymously(daemon: Daemon) -> None:
    out = tool(daemon, "ldapsearch", "-x", "-H", url(daemon), "-b", "", "-s", "base", "+", "*")
    assert out.returncode == 0, out.stderr
    for line in (
        f"namingContexts: {BASE_DN}",
        "supportedLDAPVersion: 3",
        f"supportedExtension: {m.OID_STARTTLS}",
        f"supportedExtension: {m.OID_WHOAMI}",
        f"supportedExtension: {m.OID_PASSWD_MODIFY}",
        f"supportedControl: {m.OID_PAGED_RESULTS}",
        f"supportedControl: {m.OID_PPOLICY}",
    ):
        assert line in out.stdout
    # ...but nothing else
    refused = tool(daemon, "ldapsearch", "-x", "-H", url(daemon), "-b", BASE_DN, "(uid=*)")
    assert refused.returncode == 50


def test_ldapcompare_group_membership(daemon: Daemon) -> None:
    group = f"cn=ADULT,ou=groups,{BASE_DN}"
    auth = ("-x", "-H", url(daemon), "-D", EZPROXY, "-w", EZPROXY_SECRET)
    yes = tool(daemon, "ldapcompare", *auth, group, f"member:{dn(DEMO['active'])}")
    assert yes.returncode == 6 and "TRUE" in yes.stdout
    no = tool(daemon, "ldapcompare", *auth, group, f"member:{dn(DEMO['minor'])}")
    assert no.returncode == 5 and "FALSE" in no.stdout


def test_ldappasswd_changes_a_pin_under_the_policy(daemon: Daemon) -> None:
    card = DEMO["active"]
    h = ("-x", "-H", url(daemon), "-D", dn(card))
    weak = tool(daemon, "ldappasswd", *h, "-w", DEMO_PIN, "-a", DEMO_PIN, "-s", "1212")
    assert weak.returncode != 0 and "Constraint violation (19)" in weak.stdout
    assert "repeating number" in weak.stdout  # the policy's own words reach the patron
    changed = tool(daemon, "ldappasswd", *h, "-w", DEMO_PIN, "-a", DEMO_PIN, "-s", NEW_PIN)
    assert changed.returncode == 0, changed.stderr
    assert tool(daemon, "ldapwhoami", *h, "-w", DEMO_PIN).returncode == 49  # cache dropped
    assert tool(daemon, "ldapwhoami", *h, "-w", NEW_PIN).returncode == 0
    back = tool(daemon, "ldappasswd", *h, "-w", NEW_PIN, "-a", NEW_PIN, "-s", DEMO_PIN)
    assert back.returncode == 0, back.stderr
    # without the old PIN only a service account with `can_set_pin` may set one
    anon = tool(daemon, "ldappasswd", "-x", "-H", url(daemon), "-s", NEW_PIN, dn(card))
    assert "unwilling to perform (53)" in anon.stdout
    ezproxy = ("-x", "-H", url(daemon), "-D", EZPROXY, "-w", EZPROXY_SECRET)
    refused = tool(daemon, "ldappasswd", *ezproxy, "-s", NEW_PIN, dn(card))
    assert "unwilling to perform (53)" in refused.stdout
    desk = connect(daemon, DESK, DESK_SECRET)
    assert desk.bind()
    assert desk.extend.standard.modify_password(dn(DEMO["fines"]), None, OTHER_PIN)
    desk.unbind()
    events = wait_audit(daemon, lambda e: e.get("event") in ("pin_changed", "pin_reset"), 3)
    assert [e["event"] for e in events][-3:] == ["pin_changed", "pin_changed", "pin_reset"]
    assert events[-1]["actor"] == "ldap:desk"


# --- the vendors' sequences (ldap3) ----------------------------------------------------------


def test_ezproxy_search_then_bind(daemon: Daemon) -> None:
    active = DEMO["active"]
    conn = connect(daemon, EZPROXY, EZPROXY_SECRET)
    assert conn.bind()
    assert conn.search(
        BASE_DN,
        f"(&(objectClass=inetOrgPerson)(uid={active}))",
        SUBTREE,
        attributes=["cn", "mail", "memberOf", "patronStatus", "givenName"],
    )
    assert len(conn.entries) == 1
    entry = conn.response[0]
    assert entry["dn"] == dn(active)
    attrs = entry["attributes"]
    assert attrs["memberOf"] == [f"cn=ADULT,ou=groups,{BASE_DN}"]
    assert attrs["patronStatus"] == ["active"]
    assert "givenName" not in attrs or attrs["givenName"] == []  # not in its allow-list
    assert conn.rebind(entry["dn"], DEMO_PIN)
    assert conn.rebind(EZPROXY, EZPROXY_SECRET)
    assert conn.compare(f"cn=ADULT,ou=groups,{BASE_DN}", "member", entry["dn"])  # IfMember
    conn.unbind()
    audit = wait_audit(daemon, lambda e: e.get("event") == "auth" and e["client"] == "ezproxy", 1)
    assert audit[-1]["outcome"] == "accepted"


def test_apache_rebinds_on_a_pooled_connection(daemon: Daemon) -> None:
    conn = connect(daemon, EZPROXY, EZPROXY_SECRET)
    for barcode, pin, ok in (
        (DEMO["active"], DEMO_PIN, True),
        (DEMO["active"], WRONG_PIN, False),
        (UNKNOWN, DEMO_PIN, None),
    ):
        assert conn.rebind(EZPROXY, EZPROXY_SECRET)
        conn.search(PATRONS, f"(&(objectClass=*)(uid={barcode}))", SUBTREE, attributes=["uid"])
        if ok is None:
            assert conn.entries == []
            continue
        found = conn.response[0]["dn"]
        assert conn.rebind(found, pin) is ok
    conn.unbind()


def test_libki_two_connections_and_a_typed_star(daemon: Daemon) -> None:
    minor = DEMO["minor"]
    first = connect(daemon, EZPROXY, EZPROXY_SECRET)
    assert first.bind()
    first.search(BASE_DN, f"(uid={minor})", SUBTREE, attributes=["*"])
    found = first.response[0]["dn"]
    # Libki puts the username into the filter unescaped: `*` must not return a patron.
    first.search(BASE_DN, "(uid=*)", SUBTREE, attributes=["*"])
    assert first.entries == [] and first.result["result"] == 4
    first.unbind()
    second = connect(daemon, found, DEMO_PIN)
    assert second.bind()
    second.unbind()


def test_sssd_starttls_rootdse_paged_and_ppolicy(daemon: Daemon) -> None:
    conn = connect(daemon, get_info=ALL)
    assert conn.start_tls()
    assert conn.server.info is not None or conn.search(
        "", "(objectClass=*)", BASE, attributes=["*", "+"]
    )
    conn.search("", "(objectClass=*)", BASE, attributes=["namingContexts", "supportedControl"])
    assert conn.response[0]["attributes"]["namingContexts"] == [BASE_DN]
    assert conn.rebind(EZPROXY, EZPROXY_SECRET)
    conn.search(BASE_DN, f"(&(uid={DEMO['active']})(objectClass=person))", SUBTREE, paged_size=1000)
    assert len(conn.entries) == 1
    cookie = conn.result["controls"][m.OID_PAGED_RESULTS]["value"]["cookie"]
    assert cookie == b""
    ppolicy = [(m.OID_PPOLICY, False, None)]
    assert conn.rebind(dn(DEMO["minor"]), DEMO_PIN, controls=ppolicy)
    assert m.OID_PPOLICY in conn.result["controls"]  # no error in it: the login is fine
    # SSSD's password change: the exop, as the patron, with the old PIN
    assert conn.extend.standard.modify_password(None, DEMO_PIN, OTHER_PIN)
    assert conn.rebind(dn(DEMO["minor"]), OTHER_PIN)
    assert conn.extend.standard.modify_password(None, OTHER_PIN, DEMO_PIN)
    conn.unbind()


def test_locked_card_gets_the_ppolicy_control(daemon: Daemon) -> None:
    minor = DEMO["minor"]
    ppolicy = [(m.OID_PPOLICY, False, None)]
    for _ in range(3):  # card_lock_after = 3
        c = Connection(server(daemon), dn(minor), WRONG_PIN, raise_exceptions=False)
        assert not c.bind(controls=ppolicy)
        c.unbind()
    c = Connection(server(daemon), dn(minor), DEMO_PIN, raise_exceptions=False)
    assert not c.bind(controls=ppolicy)
    assert c.result["result"] == 49 and c.result["message"] == "data 775"
    value = c.result["controls"][m.OID_PPOLICY]["value"]
    assert value == b"\x30\x03\x81\x01\x01"  # error: accountLocked
    cleared = daemon.cli("lockout", "clear", minor)
    assert cleared.returncode == 0, cleared.stderr
    again = Connection(server(daemon), dn(minor), DEMO_PIN, raise_exceptions=False)
    assert again.bind()
    again.unbind()


def test_every_outcome(daemon: Daemon) -> None:
    cases = [
        (DEMO["active"], DEMO_PIN, 0, "accepted"),
        (DEMO["expired"], DEMO_PIN, 49, "card_expired"),
        (DEMO["blocked"], DEMO_PIN, 49, "card_blocked"),
        (UNKNOWN, DEMO_PIN, 49, "unknown_card"),
        (DEMO["expired"], OTHER_PIN, 49, "bad_pin"),
    ]
    for barcode, pin, code, _outcome in cases:
        c = Connection(server(daemon), dn(barcode), pin, raise_exceptions=False)
        c.bind()
        assert c.result["result"] == code, barcode
        if _outcome in ("bad_pin", "unknown_card"):
            assert c.result["message"] == ""  # nothing more said to a guesser
        c.unbind()
    odd = Connection(server(daemon), f"uid=a\\20b,{PATRONS}", DEMO_PIN, raise_exceptions=False)
    assert not odd.bind() and odd.result["result"] == 49
    # the bad-input bind is the last one and the only one of its kind in this daemon: once its
    # line is there, every earlier line is too (one queue, written in order)
    wait_audit(daemon, lambda e: e.get("outcome") == "bad_input", 1)
    events = [e for e in daemon.audit_events() if e.get("event") == "auth"]
    got = [e["outcome"] for e in events[-len(cases) - 1 :]]
    assert got == [c[3] for c in cases] + ["bad_input"]


def test_writes_are_refused_with_their_own_response_type(daemon: Daemon) -> None:
    conn = connect(daemon, EZPROXY, EZPROXY_SECRET)
    conn.bind()
    assert not conn.add(f"uid=x,{PATRONS}", "inetOrgPerson", {"sn": "x", "cn": "x"})
    assert conn.result["type"] == "addResponse" and conn.result["result"] == 53
    assert not conn.delete(dn(DEMO["active"]))
    assert conn.result["type"] == "delResponse" and conn.result["result"] == 53
    assert not conn.modify(dn(DEMO["active"]), {"cn": [("MODIFY_REPLACE", ["y"])]})
    assert conn.result["type"] == "modifyResponse" and conn.result["result"] == 53
    conn.unbind()


@pytest.mark.parametrize(
    "filt",
    [
        "(uid=*)",
        "(uid=2123*)",
        "(|(uid=21234000000001)(uid=*))",
        "(objectClass=*)",
        "(!(uid=21234000000001))",
        "(uid=21234000000001\\29\\28uid=*)",  # `)(` typed into a login box, escaped
        "(uid=\\2a)",  # a literal star
        "(mail=*@example.org)",
    ],
)
def test_filter_injection_leaks_no_patron(daemon: Daemon, filt: str) -> None:
    conn = connect(daemon, EZPROXY, EZPROXY_SECRET)
    conn.bind()
    conn.search(PATRONS, filt, SUBTREE, attributes=["*"])
    assert [
        e for e in conn.response if e.get("type") == "searchResEntry" and "uid=" in e["dn"]
    ] == []
    assert conn.result["result"] in (0, 4)
    conn.unbind()


# --- hostile bytes ---------------------------------------------------------------------------


def raw(daemon: Daemon) -> socket.socket:
    sock = socket.create_connection(daemon.address("ldap"), timeout=30)
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x30\x80\x02\x01\x01\x42\x00\x00\x00",  # indefinite length
        b"\x30\x84\x7f\xff\xff\xff",  # 2 GiB announced
        ber.sequence(ber.integer(1), ber.tlv(0x63, b"\x04\x00")),  # truncated search
        ber.sequence(ber.integer(1), ber.tlv(0x61, b"")),  # a response sent to the server
    ],
)
def test_malformed_pdus_get_a_notice_of_disconnection(daemon: Daemon, garbage: bytes) -> None:
    with raw(daemon) as sock:
        sock.sendall(garbage)
        reply = read_all(sock)
    notice = oracle.decode(reply)
    assert notice["messageID"] == 0 and notice["protocolOp"] == 24
    assert notice["payload"][0][3] == 2
    assert notice["payload"][3][3] == m.OID_NOTICE_OF_DISCONNECTION.encode()


def test_half_a_pdu_then_silence_harms_nobody(daemon: Daemon) -> None:
    pdu = oracle.bind(1, dn(DEMO["active"]), DEMO_PIN.encode())
    with raw(daemon) as stalled:
        stalled.sendall(pdu[: len(pdu) // 2])
        other = Connection(server(daemon), dn(DEMO["active"]), DEMO_PIN, raise_exceptions=False)
        assert other.bind()
        other.unbind()
        reply = read_all(stalled)  # the server's idle timeout ends it
    assert oracle.decode(reply)["protocolOp"] == 24


def test_pipelined_requests_and_abandon(daemon: Daemon) -> None:
    stream = (
        oracle.bind(1, EZPROXY, EZPROXY_SECRET.encode())
        + oracle.search(2, PATRONS, f"(uid={DEMO['active']})", attrs=["1.1"])
        + ber.sequence(ber.integer(3), ber.tlv(m.ABANDON_REQUEST, ber.int_content(2)))
        + oracle.extended(4, m.OID_WHOAMI)
        + ber.sequence(ber.integer(5), ber.tlv(m.UNBIND_REQUEST, b""))
    )
    with raw(daemon) as sock:
        sock.sendall(stream)
        data = read_all(sock)
    ids = []
    pos = 0
    while pos < len(data):
        size = ber.frame_length(data[pos:], 1 << 20)
        assert size is not None
        ids.append(oracle.decode(data[pos : pos + size])["messageID"])
        pos += size
    assert ids[0] == 1 and ids[-1] == 4 and 3 not in ids and 5 not in ids


def test_many_connections_at_once(daemon: Daemon) -> None:
    def login(i: int) -> bool:
        c = Connection(server(daemon), dn(DEMO["active"]), DEMO_PIN, raise_exceptions=False)
        ok = bool(c.bind()) and c.extend.standard.who_am_i() == f"dn:{dn(DEMO['active'])}"
        c.unbind()
        return ok

    with ThreadPoolExecutor(32) as pool:
        assert all(pool.map(login, range(64)))


# --- listeners that insist on TLS ------------------------------------------------------------


def test_require_tls_for_bind(tmp_path: Path) -> None:
    sections = SECTIONS.replace("idle_timeout = 2.0", "require_tls_for_bind = true")
    with Daemon(tmp_path, sections, env={"DESK_SECRET": DESK_SECRET}) as d:
        plain = Connection(server(d), dn(DEMO["active"]), DEMO_PIN, raise_exceptions=False)
        plain.open()
        assert not plain.bind() and plain.result["result"] == 13
        assert plain.start_tls() and plain.bind()
        plain.unbind()
        out = tool(
            d, "ldapwhoami", "-x", "-ZZ", "-H", url(d), "-D", dn(DEMO["active"]), "-w", DEMO_PIN
        )
        assert out.returncode == 0, out.stderr


def test_unknown_key_is_a_config_error(tmp_path: Path) -> None:
    d = Daemon(tmp_path, '[ldap]\nlisten = ["127.0.0.1:0"]\nbogus = 1\n')
    out = d.cli("check-config")
    assert out.returncode != 0 and "ldap.bogus: unknown key" in out.stderr


def test_service_secret_never_logged(daemon: Daemon) -> None:
    text = daemon.logs()
    assert EZPROXY_SECRET not in text and DESK_SECRET not in text


def test_connection_limit(tmp_path: Path) -> None:
    sections = SECTIONS.replace("idle_timeout = 2.0", "max_connections = 2")
    with Daemon(tmp_path, sections, env={"DESK_SECRET": DESK_SECRET}) as d:
        held = [raw(d), raw(d)]  # accepted in order: these two fill the listener
        for sock in held:  # and bind, so neither is the oldest not-yet-bound one to evict
            sock.sendall(oracle.bind(1, EZPROXY, EZPROXY_SECRET.encode()))
            assert oracle.decode(sock.recv(65536))["payload"][0][3] == 0
        with raw(d) as third:
            notice = oracle.decode(read_all(third))
        assert notice["protocolOp"] == 24 and notice["payload"][0][3] == 51  # busy
        for sock in held:
            sock.close()


def test_starttls_then_garbage_closes_cleanly(daemon: Daemon) -> None:
    with raw(daemon) as sock:
        sock.sendall(oracle.extended(1, m.OID_STARTTLS))
        data = b""
        while ber.frame_length(data, 1 << 16) is None:
            data += sock.recv(1)  # one octet at a time: nothing of the handshake is read
        answer = oracle.decode(data)
        assert answer["payload"][0][3] == 0
        sock.sendall(b"\x16\x03\x01\x00\x05hello, not a ClientHello")
        read_all(sock)  # the server gives up on the handshake and closes
    # and keeps serving everyone else
    c = Connection(server(daemon), dn(DEMO["active"]), DEMO_PIN, raise_exceptions=False)
    assert c.bind()
    c.unbind()


# --- issue 21: what service accounts see of the directory's own entries ----------------------


def test_root_dse_is_served_whole_to_a_restricted_service_account(daemon: Daemon) -> None:
    """ldap3 `get_info=ALL`, bound as the ezproxy account (whose allow-list is patron
    attributes): the RootDSE is configuration, not patron data."""
    from importlib.metadata import version

    conn = Connection(server(daemon, get_info=ALL), EZPROXY, EZPROXY_SECRET, raise_exceptions=False)
    assert conn.bind()
    info = conn.server.info
    assert info is not None
    assert info.naming_contexts == [BASE_DN]
    assert "3" in [str(v) for v in info.supported_ldap_versions]
    assert m.OID_PAGED_RESULTS in [c[0] for c in info.supported_controls]
    assert info.vendor_version == [f"patron-bridge {version('patron-bridge')}"]
    conn.search("", "(objectClass=*)", BASE, attributes=["*", "+"])
    assert conn.response[0]["attributes"]["defaultNamingContext"] in (BASE_DN, [BASE_DN])
    conn.unbind()


def test_group_entries_are_comparable_and_readable_by_every_service_account(
    daemon: Daemon,
) -> None:
    group = f"cn=ADULT,ou=groups,{BASE_DN}"
    conn = connect(daemon, EZPROXY, EZPROXY_SECRET)
    assert conn.bind()
    # what Apache's `Require ldap-group` compares before the membership itself
    assert conn.compare(group, "objectClass", "groupOfNames") is True
    assert conn.result["result"] == 6
    assert conn.compare(group, "objectClass", "groupOfUniqueNames") is False
    assert conn.compare(group, "cn", "ADULT") is True
    assert conn.compare(group, "member", dn(DEMO["active"])) is True
    conn.search(group, "(objectClass=*)", BASE, attributes=["cn", "objectClass"])
    assert conn.response[0]["attributes"]["cn"] == ["ADULT"]
    # patron entries still honour the allow-list (givenName is not on it)
    assert conn.compare(dn(DEMO["active"]), "givenName", "Ana") is False
    assert conn.result["result"] == 50
    conn.unbind()
