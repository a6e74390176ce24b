"""The real daemon, real clients: the PyPI `sip2` client and raw sockets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from Sip2.wrapper import Sip2Wrapper

from bridge.sip2.codec import RESEND, decode
from tests.harness import DEMO, UNKNOWN, Daemon
from tests.pins import DEMO_PIN, WRONG_PIN, WRONG_PIN_2
from tests.sip2.wire import DATE, Wire, fields, login_msg, patron_msg, quiet_logger, trailer

SECTIONS = """
[sip2]
listen = ["127.0.0.1:0"]
login_timeout = 3
max_connections_per_source = 8
sc_status_before_login = true

[[sip2.accounts]]
login = "selfcheck"
password = "sc-secret-1"
institution = "MAIN"
library_name = "Main Library"

[[sip2.accounts]]
login = "kiosk"
password = "kiosk-secret-1"
charset = "utf-8"
terminator = "CRLF"

[[sip2.accounts]]
login = "strict"
password = "strict-secret-1"
error_detection = "required"
wrong_pin_as_unknown = true
policy_refusal_cqn = true

[[sip2.accounts]]
login = "sleepy"
password = "sleepy-secret-1"
idle_timeout = 0.5

[[sip2.accounts]]
login = "remote"
password = "remote-secret-1"
networks = ["10.0.0.0/8"]
"""

BLOCK_ME = "21234000000077"
ACCENTED = "21234000000078"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(
        tmp_path_factory.mktemp("sip2"), SECTIONS, throttle="card_free_failures = 50"
    ).start()
    added = d.cli("patron", "add", BLOCK_ME, "--pin-stdin", "--name", "Block, Me", input=DEMO_PIN)
    assert added.returncode == 0, added.stderr
    added = d.cli(
        "patron", "add", ACCENTED, "--pin-stdin", "--name", "Müller, Jürgen", input=DEMO_PIN
    )
    assert added.returncode == 0, added.stderr
    try:
        yield d
    finally:
        d.stop()


def flushed(d: Daemon) -> Daemon:
    """Restart the daemon so its log writer has written every line (an event, not a sleep:
    shutdown drains the log queue before the process exits)."""
    d.stop()
    return d.start()


def wire(d: Daemon) -> Wire:
    return Wire(d.address("sip2"))


def logged_in(d: Daemon, login: str = "selfcheck", password: str = "sc-secret-1") -> Wire:
    w = wire(d)
    assert w.login(login, password) == b"941\r"
    return w


# --- the PyPI client, a full session per outcome ---------------------------------------------


def pypi(d: Daemon) -> Sip2Wrapper:
    host, port = d.address("sip2")
    params = {"hostName": host, "hostPort": port, "log": quiet_logger(), "institutionId": "MAIN"}
    # tlsEnable stays at its default (True): the client opens with a ClientHello, the bridge
    # closes, and the client falls back to plain text, as it does against any SIP2 server.
    return Sip2Wrapper(params, True)


@pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLS is deprecated:DeprecationWarning")
@pytest.mark.parametrize(
    ("card", "pin", "valid", "bl", "cq", "status"),
    [
        ("active", DEMO_PIN, True, "Y", "Y", " " * 14),
        ("active", WRONG_PIN, False, "Y", "N", " " * 14),
        ("unknown", DEMO_PIN, False, "N", "N", "YYYY" + " " * 10),
        ("expired", DEMO_PIN, True, "Y", "Y", "YYYY" + " " * 10),
        ("blocked", DEMO_PIN, True, "Y", "Y", "YYYYY" + " " * 9),  # "Lost card reported"
        ("fines", DEMO_PIN, True, "Y", "Y", "Y         Y   "),
    ],
)
def test_pypi_client_full_session(
    daemon: Daemon, card: str, pin: str, valid: bool, bl: str, cq: str, status: str
) -> None:
    barcode = UNKNOWN if card == "unknown" else DEMO[card]
    client = pypi(daemon)
    try:
        client.login_device("selfcheck", "sc-secret-1", True)
        acs = client.return_sc_status()
        assert acs["fixed"]["OnlineStatus"] == "Y"
        assert acs["fixed"]["ProtocolVersion"] == "2.00"
        assert acs["variable"]["BX"][0] == "YNNYYYYYYNNNNNNN"
        assert acs["variable"]["AO"][0] == "MAIN"
        assert client.login_patron(barcode, pin) is valid  # 63, read by the client itself
        raw = client.return_sip2()  # the client class, for the fields the wrapper hides
        info = raw.sip_patron_information_response(
            raw.get_response(raw.sip_patron_information_request("none"))
        )
        assert info["variable"]["BL"][0] == bl
        assert info["variable"]["CQ"][0] == cq
        assert info["fixed"]["PatronStatus"] == status
        assert info["variable"]["AA"][0] == barcode
        status23 = raw.sip_patron_status_response(raw.get_response(raw.sip_patron_status_request()))
        assert status23["variable"]["CQ"][0] == cq
        assert status23["variable"]["BL"][0] == bl
        ended = raw.sip_end_patron_session_response(
            raw.get_response(raw.sip_end_patron_session_request())
        )
        assert ended["fixed"]["EndSession"] == "Y"
    finally:
        client.disconnect()


# --- raw sockets -------------------------------------------------------------------------------


def test_raw_session_with_error_detection(daemon: Daemon) -> None:
    with wire(daemon) as w:
        reply = w.ask(trailer(login_msg(), 0))
        assert reply.startswith(b"941AY0AZ")
        assert decode(reply[:-1]).checksummed
        reply = w.ask(trailer(b"9900802.00", 1))
        m = decode(reply[:-1])
        assert m.code == "98" and m.sequence == 1 and m.fixed["online_status"] == "Y"
        assert m.get("AM") == "Main Library"
        for seq, pin, cq in ((2, DEMO_PIN, "Y"), (3, WRONG_PIN, "N")):
            reply = w.ask(trailer(patron_msg("63", DEMO["active"], pin), seq))
            m = decode(reply[:-1])
            assert m.code == "64" and m.sequence == seq and m.get("CQ") == cq
            assert m.get("AE") == "Rivera, Ana" and m.get("BE") == "ana.rivera@example.org"
            assert m.get("PA") == "20301231" and m.get("PC") == "ADULT"
            assert m.get("BH") == "USD" and m.get("BV") == "0.00"
        reply = w.ask(trailer(patron_msg("23", DEMO["active"], DEMO_PIN), 4))
        assert decode(reply[:-1]).get("CQ") == "Y"
        reply = w.ask(trailer(b"35" + DATE.encode() + b"AOMAIN|AA" + DEMO["active"].encode(), 5))
        assert reply.startswith(b"36Y") and decode(reply[:-1]).sequence == 5


def test_no_checksum_answers_without_trailer(daemon: Daemon) -> None:
    with logged_in(daemon) as w:
        reply = w.ask(patron_msg("63", DEMO["active"], DEMO_PIN))
        assert b"AY" not in reply and b"AZ" not in reply
        assert fields(reply, 61)["CQ"] == "Y"


def test_terminators_leading_lf_and_pipelining(daemon: Daemon) -> None:
    with wire(daemon) as w:
        w.send(b"\n" + login_msg() + b"\r\n")
        assert w.recv() == b"941\r"
        batch = b"".join(
            [
                patron_msg("63", DEMO["active"], DEMO_PIN) + b"\n",
                patron_msg("23", UNKNOWN, DEMO_PIN) + b"\r\n",
                b"\n" + b"9900802.00\r",
            ]
        )
        w.send(batch)
        first, second, third = w.recv(), w.recv(), w.recv()
        assert first.startswith(b"64") and fields(first, 61)["CQ"] == "Y"
        assert second.startswith(b"24YYYY") and fields(second, 37)["BL"] == "N"
        assert third.startswith(b"98Y")


def test_answers_keep_request_order_behind_a_slow_check(daemon: Daemon) -> None:
    """A request that waits for the core (an unknown card runs the dummy KDF) holds back the
    answers the server could give at once (a cached PIN, a 35, a 99): one answer per request,
    in request order."""
    with logged_in(daemon) as w:
        assert fields(w.ask(patron_msg("63", DEMO["active"], DEMO_PIN)), 61)["CQ"] == "Y"
        end = f"35{DATE}AOMAIN|AA{DEMO['active']}|".encode()
        batch = [
            patron_msg("23", UNKNOWN, DEMO_PIN),
            patron_msg("63", DEMO["active"], DEMO_PIN),
            end,
            b"9900802.00",
            patron_msg("63", DEMO["active"], DEMO_PIN),
        ]
        w.send(b"".join(message + b"\r" for message in batch))
        replies = [w.recv() for _ in batch]
        assert [reply[:2] for reply in replies] == [b"24", b"64", b"36", b"98", b"64"]
        assert fields(replies[0], 37)["BL"] == "N" and fields(replies[1], 61)["CQ"] == "Y"


def test_lenient_fields(daemon: Daemon) -> None:
    with logged_in(daemon) as w:
        # Fields out of order, an unknown field, empty fields, `Z` zone, no final pipe.
        body = f"63001{DATE[:8]}   Z{DATE[12:]}          XIfoo|AD{DEMO_PIN}||AC|AA{DEMO['active']}"
        reply = w.ask(body.encode())
        got = fields(reply, 61)
        assert got["CQ"] == "Y" and got["AA"] == DEMO["active"]
        body = f"23001{DATE[:8]}0000{DATE[12:]}AA{DEMO['active']}|AD{DEMO_PIN}|"  # 0000 zone
        assert fields(w.ask(body.encode()), 37)["CQ"] == "Y"


def test_crlf_utf8_account(daemon: Daemon) -> None:
    with wire(daemon) as w:
        w.send(login_msg("kiosk", "kiosk-secret-1") + b"\r")
        assert w.recv(b"\r\n") == b"941\r\n"  # the account's terminator from the 94 on
        w.send(patron_msg("63", DEMO["active"], DEMO_PIN) + b"\r")
        reply = w.recv(b"\r\n")
        assert reply.endswith(b"|\r\n") and fields(reply, 61)["CQ"] == "Y"
        # Invalid UTF-8 for a UTF-8 account: 96, and the session carries on.
        w.send(b"63001" + DATE.encode() + b" " * 10 + b"AA\xff\xfe|AD1|\r")
        assert w.recv(b"\r\n") == RESEND + b"\r\n"
        w.send(patron_msg("23", DEMO["active"], DEMO_PIN) + b"\r")
        assert fields(w.recv(b"\r\n"), 37)["CQ"] == "Y"


def test_charset_per_account_and_checksum_over_sent_bytes(daemon: Daemon) -> None:
    request = trailer(patron_msg("63", ACCENTED, DEMO_PIN), 1)
    with logged_in(daemon) as w:  # cp850, the spec's default
        reply = w.ask(request)
        assert "Müller, Jürgen".encode("cp850") in reply
        assert decode(reply[:-1], charset="cp850").get("AE") == "Müller, Jürgen"  # AZ verified
    with wire(daemon) as w:
        w.send(trailer(login_msg("kiosk", "kiosk-secret-1")) + b"\r")
        w.recv(b"\r\n")
        w.send(request + b"\r")
        reply = w.recv(b"\r\n")
        assert "Müller, Jürgen".encode() in reply
        assert decode(reply[:-2], charset="utf-8").get("AE") == "Müller, Jürgen"


def test_secrets_never_logged(daemon: Daemon) -> None:
    with logged_in(daemon) as w:
        w.ask(patron_msg("63", DEMO["active"], DEMO_PIN).replace(b"AC|", b"ACterm-secret-9|"))
    with wire(daemon) as w:
        w.login("selfcheck", "typo-secret-7")
    logs = flushed(daemon).logs()
    for secret in ("sc-secret-1", "term-secret-9", "typo-secret-7", "kiosk-secret-1"):
        assert secret not in logs


def test_missing_and_empty_pin_is_cqn(daemon: Daemon) -> None:
    with logged_in(daemon) as w:
        for pin in (None, ""):
            for code, fixed in (("63", 61), ("23", 37)):
                got = fields(w.ask(patron_msg(code, DEMO["active"], pin)), fixed)
                assert got["CQ"] == "N" and got["BL"] == "Y"
        got = fields(w.ask(patron_msg("63", UNKNOWN, None)), 61)
        assert got["CQ"] == "N" and got["BL"] == "N"


def test_required_error_detection(daemon: Daemon) -> None:
    with wire(daemon) as w:
        assert w.ask(trailer(login_msg("strict", "strict-secret-1"), 0)).startswith(b"941")
        assert w.ask(patron_msg("63", DEMO["active"], DEMO_PIN)) == RESEND + b"\r"
        reply = w.ask(trailer(patron_msg("63", DEMO["active"], DEMO_PIN), 1))
        assert decode(reply[:-1]).get("CQ") == "Y"


def test_wrong_pin_as_unknown_and_policy_refusal_cqn(daemon: Daemon) -> None:
    with wire(daemon) as w:
        assert w.ask(trailer(login_msg("strict", "strict-secret-1"))).startswith(b"941")
        wrong = decode(w.ask(trailer(patron_msg("63", DEMO["active"], WRONG_PIN)))[:-1])
        unknown = decode(w.ask(trailer(patron_msg("63", UNKNOWN, WRONG_PIN)))[:-1])
        assert wrong.fixed["patron_status"] == unknown.fixed["patron_status"]
        strip = {"AA"}
        assert [f for f in wrong.fields if f[0] not in strip] == [
            f for f in unknown.fields if f[0] not in strip
        ]
        expired = decode(w.ask(trailer(patron_msg("63", DEMO["expired"], DEMO_PIN)))[:-1])
        assert expired.get("CQ") == "N" and expired.get("BL") == "Y"
        assert "expired" in expired.get("AF")


def test_bad_checksum_then_resend_without_sequence(daemon: Daemon) -> None:
    with logged_in(daemon) as w:
        good = trailer(patron_msg("63", DEMO["active"], DEMO_PIN), 2)
        bad = good[:-1] + (b"0" if good[-1:] != b"0" else b"1")
        assert w.ask(bad) == RESEND + b"\r"
        # The spec's resend form: the same request with AZ but no AY.
        resent = trailer(patron_msg("63", DEMO["active"], DEMO_PIN))
        reply = w.ask(resent)
        m = decode(reply[:-1])
        assert m.get("CQ") == "Y" and m.checksummed and m.sequence is None
    assert any(e.get("event") == "sip2_bad_checksum" for e in flushed(daemon).audit_events())


def test_duplicate_request_replays_without_second_failure(daemon: Daemon) -> None:
    barcode = DEMO["minor"]

    def failures() -> int:
        return sum(
            1
            for e in daemon.audit_events()
            if e.get("event") == "auth"
            and e.get("outcome") == "bad_pin"
            and e.get("barcode", "").endswith(barcode[-4:])
        )

    flushed(daemon)
    before = failures()
    with logged_in(daemon) as w:
        request = trailer(patron_msg("63", barcode, WRONG_PIN_2), 7)
        first = w.ask(request)
        second = w.ask(request)
        assert first == second and fields(first, 61)["CQ"] == "N"
        assert w.ask(b"97AZFEF5") == first  # 97 replays the last response too
        # The same request with the next sequence number is a new attempt.
        w.ask(trailer(patron_msg("63", barcode, DEMO_PIN), 8))
    flushed(daemon)
    assert failures() == before + 1


def test_97_with_nothing_sent_is_96(daemon: Daemon) -> None:
    with logged_in(daemon) as w:
        assert w.ask(b"97AZFEF5") != RESEND + b"\r"  # the 941 is the last response
    with wire(daemon) as w:
        assert w.ask(b"97AZFEF5") == RESEND + b"\r"


def test_logins(daemon: Daemon) -> None:
    with wire(daemon) as w:
        assert w.login("selfcheck", "wrong-secret") == b"940\r"
        assert w.ask(login_msg(alg=b"11")) == b"940\r"  # right password, non-zero algorithm
        assert w.login("remote", "remote-secret-1") == b"940\r"  # not from 127.0.0.1
        assert w.closed()  # three strikes
    with wire(daemon) as w:
        assert w.ask(b"9900802.00").startswith(b"98")  # sc_status_before_login = true
        w.send(patron_msg("63", DEMO["active"], DEMO_PIN) + b"\r")
        assert w.closed()  # PIN checks need a login
    events = [e.get("event") for e in flushed(daemon).audit_events()]
    assert "sip2_login_failed" in events


def test_block_patron(daemon: Daemon) -> None:
    with logged_in(daemon) as w:
        body = f"01N{DATE}AOMAIN|ALcard retained|AA{BLOCK_ME}|AC|".encode()
        reply = w.ask(trailer(body, 3))
        m = decode(reply[:-1])
        assert m.code == "24" and m.fixed["patron_status"].startswith("YYYY")
        assert m.get("BL") == "Y" and m.get("CQ") == "N"
        unknown = decode(w.ask(trailer(f"01N{DATE}AOMAIN|AA{UNKNOWN}|AC|".encode(), 4))[:-1])
        assert unknown.get("BL") == "N"
    shown = daemon.cli("patron", "show", BLOCK_ME)
    assert '"blocked": true' in shown.stdout
    blocked = [e for e in flushed(daemon).audit_events() if e.get("event") == "patron_blocked"]
    assert blocked and blocked[-1]["actor"] == "sip2:selfcheck"


def test_circulation_refused_and_bx_says_no(daemon: Daemon) -> None:
    requests = {
        "11": f"11NN{DATE}{' ' * 18}AOMAIN|AA{DEMO['active']}|ABitem1|AC|",
        "09": f"09N{DATE}{DATE}APdesk|AOMAIN|ABitem1|AC|",
        "17": f"17{DATE}AOMAIN|ABitem1|",
        "19": f"19{DATE}AOMAIN|ABitem1|CHx|",
        "25": f"25{DATE}AOMAIN|AA{DEMO['active']}|",
        "15": f"15+{DATE}AOMAIN|AA{DEMO['active']}|ABitem1|",
        "29": f"29NN{DATE}{' ' * 18}AOMAIN|AA{DEMO['active']}|ABitem1|",
        "37": f"37{DATE}0100USDBV1.00|AOMAIN|AA{DEMO['active']}|",
        "65": f"65{DATE}AOMAIN|AA{DEMO['active']}|",
    }
    expected = {"11": "12", "09": "10", "17": "18", "19": "20", "25": "26"}
    expected |= {"15": "16", "29": "30", "37": "38", "65": "66"}
    with logged_in(daemon) as w:
        for i, (code, body) in enumerate(requests.items()):
            m = decode(w.ask(trailer(body.encode(), i % 10))[:-1])
            assert m.code == expected[code]
            assert m.get("AF")
            first = next(iter(m.fixed.values()))
            assert first in ("0", "N", "01", "YYYY" + " " * 10)


# --- hostile input ------------------------------------------------------------------------------


def test_hostile_input_is_answered_or_closed(daemon: Daemon) -> None:
    with logged_in(daemon) as bystander:
        with logged_in(daemon) as w:
            assert w.ask(b"9300CN\x00|CO\x00|") == RESEND + b"\r"  # NUL bytes
            assert w.ask(b"XY") == RESEND + b"\r"  # unknown command
            assert w.ask(b"64" + b" " * 59) == RESEND + b"\r"  # a response code from a client
            w.send(b"\r\r\n\n")  # empty lines: ignored
            assert fields(w.ask(patron_msg("23", DEMO["active"], DEMO_PIN)), 37)["CQ"] == "Y"
            w.send(patron_msg("63", DEMO["active"], DEMO_PIN) + b"XX|" * 10_000 + b"\r")
            assert w.closed()  # 10,000 fields: over the length limit, closed
        with logged_in(daemon) as w:
            w.send(b"x" * 100_000)
            assert w.closed()  # oversized line without a terminator
        with logged_in(daemon) as w:
            many = patron_msg("23", DEMO["active"], DEMO_PIN) + b"XX|" * 1000
            assert fields(w.ask(many), 37)["CQ"] == "Y"  # 1,000 unknown fields: answered
        assert fields(bystander.ask(patron_msg("63", DEMO["active"], DEMO_PIN)), 61)["CQ"] == "Y"


def test_half_a_message_then_silence(daemon: Daemon) -> None:
    with logged_in(daemon, "sleepy", "sleepy-secret-1") as w:
        w.send(patron_msg("63", DEMO["active"], DEMO_PIN)[:20])
        assert w.closed()  # idle timeout
    with wire(daemon) as w:
        w.send(b"9300CNself")
        assert w.closed()  # login timeout
    assert "sip2_timeout" in flushed(daemon).logs()


def test_tls_client_hello_on_plain_port(daemon: Daemon) -> None:
    import socket
    import ssl

    raw = socket.create_connection(daemon.address("sip2"), timeout=15)
    ctx = ssl.create_default_context()
    with pytest.raises((ssl.SSLError, OSError)):
        ctx.wrap_socket(raw, server_hostname="localhost")
    raw.close()
    assert "sip2_tls_on_plain_port" in flushed(daemon).logs()


def test_connection_limit_per_source(daemon: Daemon) -> None:
    flushed(daemon)  # a fresh process: no connection from an earlier test is still counted
    held = [logged_in(daemon) for _ in range(8)]
    try:
        with wire(daemon) as extra:
            assert extra.closed()
    finally:
        for w in held:
            w.close()
    assert "sip2_connection_refused" in flushed(daemon).logs()


# --- separate daemons ---------------------------------------------------------------------------


def test_locked_card(tmp_path: Path) -> None:
    sections = """
[sip2]
listen = ["127.0.0.1:0"]
[[sip2.accounts]]
login = "selfcheck"
password = "sc-secret-1"
"""
    throttle = "card_free_failures = 1\ncard_delay_base = 600"
    with Daemon(tmp_path, sections, throttle=throttle) as d, logged_in(d) as w:
        for _ in range(2):
            w.ask(patron_msg("63", DEMO["active"], WRONG_PIN))
        got = fields(w.ask(patron_msg("63", DEMO["active"], DEMO_PIN)), 61)
        assert got["CQ"] == "N" and "temporarily locked" in got["AF"]


@pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLS is deprecated:DeprecationWarning")
def test_tls_listener_with_pypi_client(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    sections = f"""
[sip2]
listen = ["127.0.0.1:0"]
tls_listen = ["127.0.0.1:0"]
tls_cert = "{cert}"
tls_key = "{key}"
[[sip2.accounts]]
login = "selfcheck"
password = "sc-secret-1"
"""
    d = Daemon(tmp_path, sections)
    made = d.cli("cert", "generate", "--cert", str(cert), "--key", str(key), "--host", "127.0.0.1")
    assert made.returncode == 0, made.stderr
    with d:
        host, port = d.address("sip2", 1)
        params = {"hostName": host, "hostPort": port, "log": quiet_logger()}
        client = Sip2Wrapper(params, True)
        try:
            assert client.return_sip2()._socket.version() is not None  # really TLS
            client.login_device("selfcheck", "sc-secret-1", True)
            assert client.login_patron(DEMO["active"], DEMO_PIN) is True
        finally:
            client.disconnect()
