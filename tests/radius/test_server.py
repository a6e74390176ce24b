"""The real daemon against real clients: FreeRADIUS's radtest/radclient, pyrad, raw packets."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyrad import packet as pp
from pyrad.client import Client as PyradClient
from pyrad.dictionary import Dictionary

from bridge.radius import packet as rp
from bridge.radius.attributes import DICTIONARY
from tests.conftest import require_tool
from tests.harness import DEMO, UNKNOWN, Daemon
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.radius.udp import Nas

SECRET = "testing123"
LAX_SECRET = "lax-secret-0123456789"
CAMPUS_SECRET = "campus-secret-0123456789"

SECTIONS = f"""
[radius]
listen = ["127.0.0.1:0"]
reject_delay = 0

[[radius.clients]]
name = "loopback"
network = "127.0.0.1/32"
secret = "{SECRET}"
reply = {{ Session-Timeout = 3600, Class = "library-wifi" }}
[radius.clients.categories.JUVENILE]
Session-Timeout = 600

[[radius.clients]]
name = "lax"
network = "127.0.0.2/32"
secret = "{LAX_SECRET}"
require_message_authenticator = false

[[radius.clients]]
name = "campus"
network = "127.0.0.0/24"
secret = "{CAMPUS_SECRET}"
"""
THROTTLE = "card_free_failures = 3\ncard_delay_base = 60\nsource_max_failures = 1000"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("radius"), sections=SECTIONS, throttle=THROTTLE).start()
    yield d
    d.stop()


@pytest.fixture
def nas(daemon: Daemon) -> Iterator[Nas]:
    client = Nas(daemon.address("radius"), SECRET.encode())
    yield client
    client.close()


def pyrad_client(daemon: Daemon) -> PyradClient:
    host, port = daemon.address("radius")
    return PyradClient(
        server=host,
        authport=port,
        acctport=port,
        secret=SECRET.encode(),
        dict=Dictionary(str(DICTIONARY)),
        retries=1,
        timeout=10,
        enforce_ma=True,  # our replies must carry a valid Message-Authenticator
    )


def pyrad_auth(daemon: Daemon, barcode: str, pin: str) -> pp.Packet:
    client = pyrad_client(daemon)
    request = client.CreateAuthPacket(code=pp.AccessRequest, User_Name=barcode)
    request["User-Password"] = request.PwCrypt(pin)
    request["NAS-Identifier"] = "test-ap"
    request.add_message_authenticator()
    return client.SendPacket(request)


# --- PAP through pyrad, one case per authenticator outcome ----------------------------------

CASES = [
    ("accepted", DEMO["active"], DEMO_PIN, pp.AccessAccept, "Welcome."),
    ("bad_pin", DEMO["active"], WRONG_PIN, pp.AccessReject, "not recognised"),
    ("unknown_card", UNKNOWN, DEMO_PIN, pp.AccessReject, "not recognised"),
    ("card_expired", DEMO["expired"], DEMO_PIN, pp.AccessReject, "expired"),
    ("card_blocked", DEMO["blocked"], DEMO_PIN, pp.AccessReject, "blocked"),
    ("fines_over_limit", DEMO["fines"], DEMO_PIN, pp.AccessReject, "fines"),
    ("bad_input", "not a barcode", DEMO_PIN, pp.AccessReject, "not recognised"),
]


@pytest.mark.parametrize(("name", "barcode", "pin", "code", "message"), CASES)
def test_pyrad_pap_outcomes(
    daemon: Daemon, name: str, barcode: str, pin: str, code: int, message: str
) -> None:
    reply = pyrad_auth(daemon, barcode, pin)
    assert reply.code == code, name
    assert message in reply["Reply-Message"][0]
    if code == pp.AccessAccept:
        assert reply["Session-Timeout"] == [3600]
        assert reply["Class"] == [b"library-wifi"]
    else:
        assert "Session-Timeout" not in reply


def test_category_attributes_override_client_attributes(daemon: Daemon) -> None:
    reply = pyrad_auth(daemon, DEMO["minor"], DEMO_PIN)
    assert reply.code == pp.AccessAccept
    assert reply["Session-Timeout"] == [600]
    assert reply["Class"] == [b"library-wifi"]


def test_card_locked_after_repeated_failures(daemon: Daemon) -> None:
    barcode = "21234999999990"
    for _ in range(4):  # three free failures, the fourth starts a 60 s delay
        assert pyrad_auth(daemon, barcode, WRONG_PIN).code == pp.AccessReject
    reply = pyrad_auth(daemon, barcode, WRONG_PIN)
    assert reply.code == pp.AccessReject
    assert "Too many attempts" in reply["Reply-Message"][0]


def test_invalid_utf8_pin_is_not_repaired(daemon: Daemon, nas: Nas) -> None:
    """pyrad's PwDecrypt would turn 59 e9 61 into the right PIN; we must not."""
    odd = DEMO_PIN[:2].encode() + b"\xe9" + DEMO_PIN[2:].encode()
    reply = nas.ask(nas.access(DEMO["active"].encode(), odd))
    assert reply.code == rp.ACCESS_REJECT
    right = nas.ask(nas.access(DEMO["active"].encode(), DEMO_PIN.encode()))
    assert right.code == rp.ACCESS_ACCEPT


def test_proxy_state_is_copied_in_order(daemon: Daemon, nas: Nas) -> None:
    extra = [(rp.PROXY_STATE, b"first"), (rp.PROXY_STATE, b"second")]
    reply = nas.ask(nas.access(DEMO["active"].encode(), DEMO_PIN.encode(), extra=extra))
    assert reply.code == rp.ACCESS_ACCEPT
    assert reply.all(rp.PROXY_STATE) == [b"first", b"second"]
    assert reply.attributes[0][0] == rp.MESSAGE_AUTHENTICATOR


# --- FreeRADIUS's own clients -----------------------------------------------------------------


def radtest(daemon: Daemon, user: str, pin: str, *options: str) -> subprocess.CompletedProcess[str]:
    require_tool("radtest")
    host, port = daemon.address("radius")
    return subprocess.run(
        ["radtest", *options, user, pin, f"{host}:{port}", "0", SECRET],
        capture_output=True,
        text=True,
        timeout=60,
    )


def radclient(
    daemon: Daemon, command: str, attributes: str, secret: str = SECRET
) -> subprocess.CompletedProcess[str]:
    require_tool("radclient")
    host, port = daemon.address("radius")
    return subprocess.run(
        ["radclient", "-x", "-r", "1", "-t", "2", f"{host}:{port}", command, secret],
        input=attributes,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_radtest_pap_accept(daemon: Daemon) -> None:
    result = radtest(daemon, DEMO["active"], DEMO_PIN)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Received Access-Accept" in result.stdout
    assert "Session-Timeout = 3600" in result.stdout


@pytest.mark.parametrize(
    ("barcode", "pin", "message"),
    [
        (DEMO["active"], WRONG_PIN, "not recognised"),
        (UNKNOWN, DEMO_PIN, "not recognised"),
        (DEMO["expired"], DEMO_PIN, "expired"),
        (DEMO["blocked"], DEMO_PIN, "blocked"),
        (DEMO["fines"], DEMO_PIN, "fines"),
    ],
)
def test_radtest_pap_reject(daemon: Daemon, barcode: str, pin: str, message: str) -> None:
    result = radtest(daemon, barcode, pin)
    assert result.returncode != 0
    assert "Received Access-Reject" in result.stdout
    assert message in result.stdout


@pytest.mark.parametrize("method", ["chap", "mschap"])
def test_radtest_chap_and_mschap_are_rejected(daemon: Daemon, method: str) -> None:
    result = radtest(daemon, DEMO["active"], DEMO_PIN, "-t", method)
    assert "Received Access-Reject" in result.stdout, result.stdout + result.stderr
    assert "card number and PIN only" in result.stdout


def test_radclient_status_server(daemon: Daemon) -> None:
    result = radclient(daemon, "status", "Message-Authenticator = 0x00\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Received Access-Accept" in result.stdout


def test_radclient_wrong_secret_gets_no_answer(daemon: Daemon) -> None:
    attrs = f'User-Name = "{DEMO["active"]}"\nUser-Password = "{DEMO_PIN}"\n'
    attrs += "Message-Authenticator = 0x00\n"
    result = radclient(daemon, "auth", attrs, secret="not-the-secret")
    assert result.returncode != 0
    assert "Received" not in result.stdout


def test_radclient_without_message_authenticator_gets_no_answer(daemon: Daemon) -> None:
    attrs = f'User-Name = "{DEMO["active"]}"\nUser-Password = "{DEMO_PIN}"\n'
    result = radclient(daemon, "auth", attrs)
    assert result.returncode != 0
    assert "Received" not in result.stdout


def test_radclient_accounting(daemon: Daemon) -> None:
    start = (
        f'User-Name = "{DEMO["active"]}"\nAcct-Status-Type = Start\n'
        'Acct-Session-Id = "radclient-1"\nNAS-Identifier = "ap-7"\n'
    )
    result = radclient(daemon, "acct", start)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Received Accounting-Response" in result.stdout


# --- raw packets: BlastRADIUS rules, subnets, duplicates, malformed ---------------------------


def test_lax_client_answers_without_message_authenticator(daemon: Daemon) -> None:
    lax = Nas(daemon.address("radius"), LAX_SECRET.encode(), source="127.0.0.2")
    try:
        reply = lax.ask(lax.access(DEMO["active"].encode(), DEMO_PIN.encode(), ma=False))
        assert reply.code == rp.ACCESS_ACCEPT
        # ...but not with Proxy-State and no Message-Authenticator (limit_proxy_state).
        lax.send(
            lax.access(
                DEMO["active"].encode(),
                DEMO_PIN.encode(),
                ma=False,
                extra=[(rp.PROXY_STATE, b"x")],
            )[0]
        )
        lax.nothing_but_probe()
    finally:
        lax.close()


def test_subnet_client_matching(daemon: Daemon) -> None:
    campus = Nas(daemon.address("radius"), CAMPUS_SECRET.encode(), source="127.0.0.5")
    wrong = Nas(daemon.address("radius"), SECRET.encode(), source="127.0.0.6")
    probe = Nas(daemon.address("radius"), CAMPUS_SECRET.encode(), source="127.0.0.6")
    try:
        reply = campus.ask(campus.access(DEMO["active"].encode(), DEMO_PIN.encode()))
        assert reply.code == rp.ACCESS_ACCEPT
        # 127.0.0.6 is in the campus /24: the loopback client's secret does not apply there.
        wrong.send(wrong.access(DEMO["active"].encode(), DEMO_PIN.encode())[0])
        probe.nothing_but_probe()
    finally:
        campus.close()
        wrong.close()
        probe.close()


def test_duplicates_replayed_and_in_flight_absorbed(daemon: Daemon, nas: Nas) -> None:
    raw, auth = nas.access(DEMO["active"].encode(), WRONG_PIN.encode())
    nas.send(raw)
    nas.send(raw)  # arrives while the first is being verified (KDF in the pool)
    first = nas.receive_raw()
    assert rp.reply_ok(first, auth, SECRET.encode())
    nas.send(raw)  # after the reply: the cached reply, byte for byte
    assert nas.receive_raw() == first
    nas.nothing_but_probe()  # the absorbed copy got no second answer


def test_bad_message_authenticator_dropped(daemon: Daemon, nas: Nas) -> None:
    raw, _ = nas.access(DEMO["active"].encode(), DEMO_PIN.encode())
    at = raw.index(b"\x50\x12") + 2
    bad = raw[:at] + bytes(16) + raw[at + 16 :]
    nas.send(bad)
    nas.nothing_but_probe()


@settings(
    max_examples=100,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    deadline=None,
)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.binary(min_size=16, max_size=16).flatmap(
            lambda auth: st.lists(
                st.tuples(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=20)),
                max_size=8,
            ).map(lambda attrs: _frame(auth, b"".join(bytes([t, n]) + v for t, n, v in attrs)))
        ),
    )
)
def test_property_malformed_packets_never_break_the_server(nas: Nas, data: bytes) -> None:
    nas.send(data)
    nas.nothing_but_probe()


def _frame(auth: bytes, body: bytes) -> bytes:
    return b"\x01\x42" + (20 + len(body)).to_bytes(2, "big") + auth + body


def test_oversized_datagram_dropped(nas: Nas) -> None:
    nas.send(b"\x01\x01\x13\x88" + bytes(4996))
    nas.nothing_but_probe()


# --- pyrad for the other request kinds ---------------------------------------------------------


def test_pyrad_chap_is_rejected(daemon: Daemon) -> None:
    import hashlib

    client = pyrad_client(daemon)
    request = client.CreateAuthPacket(code=pp.AccessRequest, User_Name=DEMO["active"])
    chap_id = b"\x07"
    challenge = os.urandom(16)
    request["CHAP-Challenge"] = challenge
    digest = hashlib.md5(chap_id + DEMO_PIN.encode() + challenge).digest()
    request["CHAP-Password"] = chap_id + digest
    request.add_message_authenticator()
    reply = client.SendPacket(request)
    assert reply.code == pp.AccessReject
    assert "card number and PIN only" in reply["Reply-Message"][0]


def test_pyrad_status_server(daemon: Daemon) -> None:
    client = pyrad_client(daemon)
    request = client.CreateAuthPacket(code=pp.StatusServer)
    request.add_message_authenticator()
    reply = client.SendPacket(request)
    assert reply.code == pp.AccessAccept


def test_pyrad_accounting(daemon: Daemon) -> None:
    client = pyrad_client(daemon)
    request = client.CreateAcctPacket(User_Name=DEMO["active"])
    request["Acct-Status-Type"] = "Start"
    request["Acct-Session-Id"] = "pyrad-1"
    reply = client.SendPacket(request)
    assert reply.code == pp.AccountingResponse
