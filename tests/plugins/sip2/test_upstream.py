"""Circulation pass-through (`bridge.sip2.upstream`) and the whole chain through the daemon:
self-check → bridge daemon (`[store] plugin = "sip2"`, `[sip2] upstream = "sip2"`) → ILS.

The ILS is pysip2's server (not ours) for circulation, and the bridge's own daemon for a
stacked PIN check. The self-check side is a raw socket speaking exact bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.core.store import StoreUnavailable
from bridge.sip2.circulation import CirculationContext
from bridge.sip2.codec import Message, build, decode
from bridge.sip2.upstream import (
    UNAVAILABLE,
    UpstreamCirculation,
    UpstreamMisconfigured,
    circulation_for_upstream,
    to_client,
)
from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.plugins.sip2 import ils, pysip2_ils
from tests.plugins.sip2.ils import Pysip2Ils
from tests.sip2.wire import DATE, Wire, login_msg, patron_msg, trailer

CTX = CirculationContext(login="selfcheck", institution="MAIN", source="127.0.0.1", date=DATE)
CHECKOUT = f"11NN{DATE}{DATE}AOMAIN|AA{DEMO['active']}|ABitem-1|AC|"
CHECKIN = f"09N{DATE}{DATE}APdesk|AOMAIN|ABitem-1|AC|"


# -- the forwarder alone ----------------------------------------------------------------------


class FakeUpstream:
    upstream_institution = "ILS"

    def __init__(self, reply: Message | None = None, supported: frozenset[str] = frozenset()):
        self.reply = reply
        self.supported = supported or frozenset({"11", "09"})
        self.sent: list[Message] = []

    def supported_circulation(self) -> frozenset[str]:
        return self.supported | {"99"}  # non-circulation codes are ignored

    async def circulate(self, request: Message) -> Message:
        self.sent.append(request)
        if self.reply is None:
            raise StoreUnavailable("ILS: down")
        return self.reply


def checkout_reply(ao: str = "ILS") -> Message:
    fixed = {"ok": "1", "renewal_ok": "N", "magnetic_media": "N", "desensitize": "Y"}
    return build("12", fixed, [("AO", ao), ("AA", "x"), ("AB", "item-1"), ("AJ", "T")])


async def test_forwarder_rewrites_institution_and_terminal_password() -> None:
    upstream = FakeUpstream(checkout_reply())
    forward = UpstreamCirculation(upstream)
    assert forward.supported == frozenset({"11", "09"})
    request = decode(trailer((CHECKOUT[:-3] + "ACterminal-pw|").encode(), 7))
    reply = await forward.handle(request, CTX)
    sent = upstream.sent[0]
    assert sent.get("AO") == "ILS" and sent.get("AC") == "" and sent.get("AB") == "item-1"
    assert sent.sequence is None  # the pool's session numbers it for the ILS
    assert reply.code == "12" and reply.get("AO") == "MAIN" and reply.sequence is None


async def test_forwarder_refuses_what_the_ils_does_not_support() -> None:
    upstream = FakeUpstream(checkout_reply(), supported=frozenset({"11"}))
    reply = await UpstreamCirculation(upstream).handle(decode(CHECKIN.encode()), CTX)
    assert reply.code == "10" and reply.fixed["ok"] == "0"
    assert not upstream.sent


async def test_forwarder_answers_a_refusal_when_the_ils_is_down() -> None:
    reply = await UpstreamCirculation(FakeUpstream(None)).handle(decode(CHECKOUT.encode()), CTX)
    assert reply.code == "12" and reply.fixed["ok"] == "0" and reply.get("AF") == UNAVAILABLE


async def test_forwarder_refuses_a_reply_of_the_wrong_type() -> None:
    wrong = build("10", {"ok": "1"}, [("AO", "ILS")])
    reply = await UpstreamCirculation(FakeUpstream(wrong)).handle(decode(CHECKOUT.encode()), CTX)
    assert reply.code == "12" and reply.fixed["ok"] == "0"


def test_to_client_keeps_the_ils_institution_when_the_account_has_none() -> None:
    assert to_client(checkout_reply(), "").get("AO") == "ILS"


def test_upstream_must_name_the_configured_store() -> None:
    with pytest.raises(UpstreamMisconfigured, match="not the configured store"):
        circulation_for_upstream("sip2", "sqlite", FakeUpstream())
    with pytest.raises(UpstreamMisconfigured, match="cannot forward"):
        circulation_for_upstream("sqlite", "sqlite", object())
    assert isinstance(circulation_for_upstream("sip2", "sip2", FakeUpstream()), UpstreamCirculation)


# -- the daemon in front of a real ILS ------------------------------------------------------------

FRONT_ACCOUNT = """
[sip2]
listen = ["127.0.0.1:0"]
upstream = "{upstream}"
[[sip2.accounts]]
login = "selfcheck"
password = "sc-secret-1"
institution = "MAIN"
"""


def front_daemon(tmp: Path, host: str, port: int, upstream: str = "sip2", **store: str) -> Daemon:
    keys = {
        "login": pysip2_ils.ILS_LOGIN,
        "password": pysip2_ils.ILS_PASSWORD,
        "institution": pysip2_ils.INSTITUTION,
        **store,
    }
    lines = "\n".join(f'{k} = "{v}"' for k, v in keys.items())
    tmp.mkdir(parents=True, exist_ok=True)
    return Daemon(
        tmp,
        FRONT_ACCOUNT.format(upstream=upstream),
        store=f'[store]\nplugin = "sip2"\nhost = "{host}"\nport = {port}\n{lines}\n'
        "request_timeout = 5.0\nbreaker_failures = 1\nbreaker_reset = 60.0\n",
    )


@pytest.fixture
def pysip2(tmp_path: Path) -> Iterator[Pysip2Ils]:
    server = Pysip2Ils(tmp_path).start()
    try:
        yield server
    finally:
        server.kill()


def logged_in(daemon: Daemon) -> Wire:
    wire = Wire(daemon.address("sip2"))
    assert decode(wire.ask(login_msg())[:-1]).fixed["ok"] == "1"
    return wire


def test_checkout_and_checkin_pass_through_with_the_clients_sequence_numbers(
    pysip2: Pysip2Ils, tmp_path: Path
) -> None:
    with front_daemon(tmp_path / "front", "127.0.0.1", pysip2.port) as front:
        wire = logged_in(front)
        status = decode(wire.ask(trailer(b"9900802.00", 2))[:-1])
        # pysip2 answers 11 and 09 (its BX says so); the bridge's BX follows.
        assert status.get("BX") == "YYYNYYYYYNNNNNNN"
        assert status.fixed["checkout_ok"] == "Y" and status.fixed["checkin_ok"] == "Y"
        assert status.sequence == 2
        # The patron check is the bridge's own (its throttle and audit), the ILS verifies.
        ok = decode(wire.ask(trailer(patron_msg("63", DEMO["active"], DEMO_PIN), 3))[:-1])
        assert ok.get("BL") == "Y" and ok.get("CQ") == "Y" and ok.sequence == 3
        bad = decode(wire.ask(trailer(patron_msg("63", DEMO["active"], WRONG_PIN), 4))[:-1])
        assert bad.get("CQ") == "N"
        # Checkout and checkin go to the ILS; AY/AZ are the client's, checksums verified.
        out = decode(wire.ask(trailer(CHECKOUT.encode(), 5))[:-1])
        assert out.code == "12" and out.fixed["ok"] == "1"
        assert out.sequence == 5 and out.checksummed
        assert out.get("AO") == "MAIN" and out.get("AB") == "item-1"
        assert out.get("AF") == "Checked out by the ILS"
        back = decode(wire.ask(trailer(CHECKIN.encode(), 6))[:-1])
        assert back.code == "10" and back.fixed["ok"] == "1"
        assert back.sequence == 6 and back.get("AF") == "Checked in by the ILS"
        # Unchecksummed requests get unchecksummed answers.
        plain = wire.ask(CHECKOUT.encode())
        assert b"AY" not in plain and b"AZ" not in plain and plain.startswith(b"121")
        # What the ILS does not support is refused by the bridge without asking it.
        renew = decode(wire.ask(trailer(f"29NN{DATE}{' ' * 18}AOMAIN|AA1|ABi|".encode(), 7))[:-1])
        assert renew.code == "30" and renew.fixed["ok"] == "0" and renew.sequence == 7
        wire.sock.close()
    # The bridge's audit saw both patron checks (its throttle counted the wrong PIN).
    outcomes = [e.get("outcome") for e in front.audit_events() if e.get("event") == "auth"]
    assert outcomes == ["accepted", "bad_pin"]
    # Neither the ILS's SIP password nor the vendor's ever reaches a log line.
    logs = front.logs()
    assert pysip2_ils.ILS_PASSWORD not in logs and "sc-secret-1" not in logs


def test_ils_down_means_store_unavailable_answers(pysip2: Pysip2Ils, tmp_path: Path) -> None:
    with front_daemon(tmp_path / "front", "127.0.0.1", pysip2.port) as front:
        wire = logged_in(front)
        assert decode(wire.ask(patron_msg("63", DEMO["active"], DEMO_PIN))[:-1]).get("CQ") == "Y"
        pysip2.kill()
        m = decode(wire.ask(patron_msg("63", DEMO["fines"], DEMO_PIN))[:-1])
        assert m.get("BL") == "N" and m.get("CQ") == "N" and "not available" in m.get("AF")
        out = decode(wire.ask(CHECKOUT.encode())[:-1])
        assert out.code == "12" and out.fixed["ok"] == "0"


def test_stacked_bridge_the_daemon_as_the_ils(tmp_path: Path) -> None:
    with ils.daemon_ils(tmp_path / "ils") as backend:
        host, port = backend.address("sip2")
        front = front_daemon(
            tmp_path / "front",
            host,
            port,
            login=ils.ILS_ACCOUNT,
            password=ils.ILS_ACCOUNT_PASSWORD,
            institution="MAIN",
        )
        with front:
            wire = logged_in(front)
            ok = decode(wire.ask(patron_msg("63", DEMO["active"], DEMO_PIN))[:-1])
            assert ok.get("BL") == "Y" and ok.get("CQ") == "Y" and ok.get("AE")
            blocked = decode(wire.ask(patron_msg("63", DEMO["blocked"], DEMO_PIN))[:-1])
            assert blocked.get("CQ") == "Y" and blocked.fixed["patron_status"][0] == "Y"
            # The backend refuses circulation and says so in its BX; so does the front.
            status = decode(wire.ask(b"9900802.00")[:-1])
            assert status.get("BX")[1:3] == "NN"
            out = decode(wire.ask(CHECKOUT.encode())[:-1])
            assert out.code == "12" and out.fixed["ok"] == "0"
            # "PIN accepted" is not "in good standing": the front's own policy refuses.
            expired = decode(wire.ask(patron_msg("63", DEMO["expired"], DEMO_PIN))[:-1])
            assert expired.get("CQ") == "Y" and expired.get("AF")
    outcomes = [e.get("outcome") for e in front.audit_events() if e.get("event") == "auth"]
    # The backend marks the expired card "charge privileges denied" in its 64, so the front
    # sees a blocked card (blocks are checked before expiry).
    assert outcomes == ["accepted", "card_blocked", "card_blocked"]


def test_upstream_naming_another_store_is_a_config_error(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, FRONT_ACCOUNT.format(upstream="koha"))
    checked = daemon.cli("check-config")
    assert checked.returncode != 0
    assert "sip2.upstream: 'koha' is not the configured store" in checked.stderr
    with pytest.raises(RuntimeError, match="not the configured store"):
        daemon.start()
