"""The pure client session against the pure server session: a whole conversation, resends."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.patron import ClientPolicy
from bridge.core.secret import Secret
from bridge.sip2.client import ClientSession, Resend
from bridge.sip2.codec import RESEND, ProtocolError, build, decode
from bridge.sip2.messages import (
    AcsStatus,
    LoginRequest,
    LoginResponse,
    PatronRequest,
    ScStatus,
)
from bridge.sip2.session import Account, Accounts, Dispatch, Reply, Session, SessionOptions
from bridge.sip2.settings import Sip2Account
from tests.pins import DEMO_PIN


def server() -> Session:
    account = Account.from_settings(
        Sip2Account(login="bridge", password="ils-secret-1"), ClientPolicy()
    )
    return Session(Accounts([account]), "127.0.0.1", SessionOptions())


def exchange(server_session: Session, data: bytes) -> bytes:
    """What the server writes back for one request (a 98 for any dispatched request)."""
    action = server_session.receive(data.rstrip(b"\r"))
    if isinstance(action, Reply):
        return action.data
    assert isinstance(action, Dispatch)
    response = AcsStatus(True, "20240101    101010", "MAIN", "Y" * 16).to_message()
    return server_session.answer(action.message, response)


def test_conversation_with_sequence_numbers() -> None:
    client, srv = ClientSession(), server()
    login = client.request(LoginRequest("bridge", Secret("ils-secret-1")).to_message())
    answer = client.receive(exchange(srv, login).rstrip(b"\r"))
    assert not isinstance(answer, Resend)
    assert LoginResponse.from_message(answer).ok
    for expected in range(1, 13):
        data = client.request(ScStatus().to_message())
        assert decode(data[:-1]).sequence == expected % 10
        reply = client.receive(exchange(srv, data).rstrip(b"\r"))
        assert not isinstance(reply, Resend) and reply.code == "98"


def test_bad_checksum_asks_for_97_and_server_replays() -> None:
    client, srv = ClientSession(), server()
    login = client.request(LoginRequest("bridge", Secret("ils-secret-1")).to_message())
    good = exchange(srv, login).rstrip(b"\r")
    corrupted = good[:-1] + (b"0" if good[-1:] != b"0" else b"1")
    resend = client.receive(corrupted)
    assert isinstance(resend, Resend) and resend.data == b"97AZFEF5\r"
    again = client.receive(exchange(srv, resend.data).rstrip(b"\r"))
    assert not isinstance(again, Resend) and again.fixed["ok"] == "1"


def test_server_96_resends_without_sequence() -> None:
    client = ClientSession()
    data = client.request(PatronRequest("63", "1", Secret(DEMO_PIN), "MAIN").to_message())
    resend = client.receive(RESEND)
    assert isinstance(resend, Resend)
    m = decode(resend.data[:-1])
    assert m.code == "63" and m.sequence is None and m.checksummed
    assert decode(data[:-1]).sequence == 0


def test_gives_up_and_checks_answers() -> None:
    client = ClientSession(max_retries=2)
    client.request(ScStatus().to_message())
    client.receive(RESEND)
    client.receive(RESEND)
    with pytest.raises(ProtocolError):
        client.receive(RESEND)
    assert not client.waiting
    client.request(ScStatus().to_message())
    with pytest.raises(ProtocolError):
        client.receive(b"941")  # not the answer to a 99
    with pytest.raises(ProtocolError):
        ClientSession().receive(b"941")
    with pytest.raises(ProtocolError):
        ClientSession().request(build("94", {"ok": "1"}))
    plain = ClientSession(error_detection=False)
    assert plain.request(ScStatus().to_message()) == b"9900802.00\r"


@given(st.binary(max_size=120))
def test_property_receive_raises_only_protocol_error(frame: bytes) -> None:
    client = ClientSession()
    client.request(ScStatus().to_message())
    with contextlib.suppress(ProtocolError):
        client.receive(frame)
