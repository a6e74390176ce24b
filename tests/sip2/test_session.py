"""The pure session state machine: logins, error detection, resends, replays."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.patron import ClientPolicy
from bridge.sip2.codec import RESEND, Prepared, build, checksum, decode
from bridge.sip2.session import (
    Account,
    Accounts,
    Close,
    Dispatch,
    Reply,
    Session,
    SessionOptions,
)
from bridge.sip2.settings import Sip2Account
from tests.pins import DEMO_PIN
from tests.sip2.wire import login_msg, patron_msg, trailer


def accounts(**options: object) -> Accounts:
    settings = [
        Sip2Account(login="selfcheck", password="sc-secret-1", **options),  # type: ignore[arg-type]
        Sip2Account(login="lan", password="lan-secret-1", networks=["192.168.0.0/16"]),
    ]
    return Accounts([Account.from_settings(s, ClientPolicy()) for s in settings])


def session(before_login: bool = False, **options: object) -> Session:
    return Session(accounts(**options), "127.0.0.1", SessionOptions(before_login, 3))


def reply(action: object) -> bytes:
    assert isinstance(action, Reply), action
    return action.data


def test_login_and_dispatch() -> None:
    s = session()
    assert reply(s.receive(login_msg())) == b"941\r"
    assert s.account is not None and s.account.login == "selfcheck"
    action = s.receive(patron_msg("63", "1", DEMO_PIN))
    assert isinstance(action, Dispatch) and action.message.code == "63"


def test_three_strikes_and_algorithms() -> None:
    s = session()
    first = s.receive(login_msg(password="nope"))
    assert isinstance(first, Reply) and first.data == b"940\r" and not first.close
    assert first.login == "selfcheck" and first.event == "login_failed"
    assert reply(s.receive(login_msg(alg=b"01"))) == b"940\r"
    third = s.receive(login_msg("lan", "lan-secret-1"))  # right password, wrong network
    assert isinstance(third, Reply) and third.close
    assert s.account is None


def test_failed_relogin_logs_out() -> None:
    s = session()
    s.receive(login_msg())
    assert reply(s.receive(login_msg(password="nope"))) == b"940\r"
    assert s.account is None
    assert isinstance(s.receive(patron_msg("23", "1", DEMO_PIN)), Close)


def test_messages_before_login() -> None:
    assert isinstance(session().receive(b"9900802.00"), Close)
    assert isinstance(session().receive(patron_msg("23", "1", DEMO_PIN)), Close)
    assert isinstance(session(before_login=True).receive(b"9900802.00"), Dispatch)
    assert isinstance(session(before_login=True).receive(patron_msg("23", "1", "")), Close)


def test_answer_mirrors_error_detection_and_account_dialect() -> None:
    s = session(terminator="CRLF", charset="utf-8")
    assert reply(s.receive(trailer(login_msg(), 4), b"\r")).endswith(b"\r\n")
    request = trailer(b"9900802.00", 5)
    action = s.receive(request)
    assert isinstance(action, Dispatch)
    response = build("98", {"online_status": "Y"}, [("AO", "Bücherei")])
    data = s.answer(action.message, response)
    assert data.endswith(b"\r\n") and "Bücherei".encode() in data
    again = decode(data[:-2], charset="utf-8")
    assert again.sequence == 5 and again.checksummed
    # A duplicate (same bytes, with a checksum) replays without dispatching.
    assert reply(s.receive(request)) == data
    # 97 replays the last answer; 96 from a client too.
    assert reply(s.receive(b"97AZFEF5")) == data
    assert reply(s.receive(b"96AZFEF6")) == data
    # Without a checksum, a repeat is a new request.
    plain = s.receive(b"9900802.00")
    assert isinstance(plain, Dispatch)
    assert s.answer(plain.message, response).count(b"AZ") == 0


def test_bad_input_gets_96() -> None:
    s = session()
    s.receive(login_msg())
    for frame in (b"9900802.00AY1AZ0000", b"XX", b"6", b"63\x00", b"24" + b" " * 40):
        action = s.receive(frame)
        assert isinstance(action, Reply) and action.data == RESEND + b"\r"


def test_required_error_detection() -> None:
    s = session(error_detection="required")
    s.receive(login_msg())
    assert reply(s.receive(b"9900802.00")) == RESEND + b"\r"
    assert isinstance(s.receive(trailer(b"9900802.00", 1)), Dispatch)
    assert isinstance(s.receive(trailer(b"9900802.00")), Dispatch)  # the resend form


def test_97_before_anything_is_96() -> None:
    assert reply(session().receive(b"97AZFEF5")) == RESEND + b"\r"


@pytest.mark.parametrize("login", ["selfcheck", "lan"])
def test_accounts_check(login: str) -> None:
    table = accounts()
    from bridge.core.secret import Secret

    found = table.check(
        login, Secret(f"{'sc' if login == 'selfcheck' else 'lan'}-secret-1"), "127.0.0.1"
    )
    assert (found is not None) is (login == "selfcheck")
    assert table.check("selfcheck", Secret("sc-secret-1"), "::ffff:127.0.0.1") is not None
    assert table.check("selfcheck", Secret("sc-secret-1"), "not-an-ip") is None


@given(st.lists(st.binary(max_size=80), max_size=12), st.booleans())
def test_property_receive_never_raises(frames: list[bytes], before_login: bool) -> None:
    s = session(before_login)
    if before_login:
        s.receive(login_msg())
    for frame in frames:
        action = s.receive(frame)
        assert action is None or isinstance(action, Reply | Dispatch | Close)
        if isinstance(action, Dispatch):
            s.answer(action.message, build("96"))


# -- issue 21: login failures say why; malformed sequence numbers -----------------------------


def test_login_failures_say_why_and_never_echo_the_login_as_sent() -> None:
    s = session()
    wrong = s.receive(login_msg(password="nope"))
    assert isinstance(wrong, Reply) and wrong.reason == "wrong password"
    assert wrong.login == "selfcheck"
    s = session()
    unknown = s.receive(login_msg("somebody-else"))
    assert isinstance(unknown, Reply) and unknown.reason == "unknown login"
    assert unknown.login == ""  # an unknown CN is not logged as sent
    network = session().receive(login_msg("lan", "lan-secret-1"))
    assert isinstance(network, Reply) and network.reason == "source not in the account's networks"
    assert network.login == "lan"
    algorithm = session().receive(login_msg(alg=b"01"))
    assert isinstance(algorithm, Reply) and "algorithm" in algorithm.reason
    # a mangled 93 (the `|` lost): the password is glued to the login
    mangled = session().receive(b"9300CNselfcheckCOsc-secret-1|CPdesk|")
    assert isinstance(mangled, Reply) and mangled.event == "login_failed"
    assert mangled.reason == "unknown login" and mangled.login == ""
    assert "sc-secret-1" not in repr(mangled)


@pytest.mark.parametrize("ay", [b"12", b"", b"x", b"07"])
def test_sequence_that_is_not_one_digit_gets_96(ay: bytes) -> None:
    s = session()
    s.receive(login_msg())
    body = patron_msg("63", "1", DEMO_PIN) + b"AY" + ay + b"AZ"
    action = s.receive(body + checksum(body).encode())
    assert isinstance(action, Reply) and action.data == RESEND + b"\r"
    assert s.account is not None  # still logged in: a resend request, not a close


@given(st.binary(max_size=4))
def test_property_any_sequence_field_answers_96_or_one_digit(ay: bytes) -> None:
    s = session()
    s.receive(login_msg())
    action = s.receive(patron_msg("63", "1", DEMO_PIN) + b"AY" + ay)
    if isinstance(action, Dispatch):
        assert action.message.sequence is None or 0 <= action.message.sequence <= 9
        assert all(tag != "AY" for tag, _ in action.message.fields) or ay[:1].isdigit()
    else:
        assert isinstance(action, Reply) and action.data == RESEND + b"\r"


def test_network_answers_are_remembered_per_account_networks() -> None:
    """`allows` is remembered by (networks, source): the same source asked of two accounts
    gets each account's own answer, however often and in whichever order it is asked."""
    lan = Account.from_settings(
        Sip2Account(login="lan", password="lan-secret-1", networks=["192.168.0.0/16"]),
        ClientPolicy(),
    )
    anywhere = Account.from_settings(
        Sip2Account(login="sc", password="sc-secret-1"), ClientPolicy()
    )
    for _ in range(3):
        assert not lan.allows("10.1.2.3")
        assert anywhere.allows("10.1.2.3")
        assert lan.allows("192.168.4.5")
        assert lan.allows("::ffff:192.168.4.5")  # IPv4-mapped
        assert lan.allows("192.168.4.5%eth0") is lan.allows("192.168.4.5")
        assert not lan.allows("not an address")
        assert not anywhere.allows("unknown")


@given(
    st.sampled_from(
        [
            patron_msg("63", "1234", DEMO_PIN),
            patron_msg("23", "1234", DEMO_PIN),
            patron_msg("63", "1234", None),
            b"3520240101    101010AOMAIN|AA1234|",
        ]
    ),
    st.lists(st.tuples(st.integers(0, 80), st.binary(max_size=2)), max_size=3),
    st.none() | st.integers(0, 9),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.sampled_from([{}, {"terminator": "CRLF"}, {"charset": "utf-8", "terminator": "CRLF"}]),
    st.sampled_from(["", "é"]),
)
def test_request_is_read_only_when_receive_would_dispatch_it(
    body: bytes,
    mutations: list[tuple[int, bytes]],
    sequence: int | None,
    az: bool,
    required: bool,
    repeat: bool,
    dialect: dict[str, str],
    accent: str,
) -> None:
    """`Session.request` (the fast way) reads a frame only when `receive` (the general way)
    would dispatch it, with the same AY, AZ, card, institution and PIN; and answering either
    way writes the same bytes and leaves the same state for a 97 or a duplicate."""
    for at, data in mutations:
        body = body[:at] + data + body[at + len(data) :]
    frame = trailer(body, sequence, az=az)
    options: dict[str, Any] = {"error_detection": "required"} if required else {}
    options.update(dialect)
    fast, general = session(**options), session(**options)
    for s in (fast, general):
        assert reply(s.receive(trailer(login_msg(), 0))).startswith(b"941")
    response = Prepared(f"64              00120240101    101010AOMAIN|AA1234|AEJos{accent}|CQY|")
    if repeat:  # the frame was answered once already: a checksummed resend is replayed
        for s in (fast, general):
            action = s.receive(frame)
            if isinstance(action, Dispatch):
                s.answer(action.message, response)
    read = fast.request(frame)
    action = general.receive(frame)
    if read is None:
        return
    assert isinstance(action, Dispatch)
    m = action.message
    first = dict(reversed(m.fields))
    pin = read[5]
    assert (*read[:5], None if pin is None else pin.reveal().decode()) == (
        m.code,
        m.sequence,
        m.checksummed,
        first.get("AO", ""),
        first.get("AA", ""),
        first.get("AD"),
    )
    assert fast.answer_request(read, frame, response) == general.answer(m, response)
    assert fast.receive(b"97") == general.receive(b"97")
    assert fast.receive(frame) == general.receive(frame)


def _conversation(frames: list[bytes], required: bool) -> list[object]:
    s = session(error_detection="required") if required else session()
    out: list[object] = []
    for frame in frames:
        out.append(s.receive(frame))
        out.append((s.account, s.login_failures, s.receive(b"97")))
    return out


@given(
    st.lists(
        st.sampled_from(
            [login_msg(), login_msg(password="nope"), login_msg(alg=b"01"), login_msg("")]
        ),
        min_size=1,
        max_size=4,
    ),
    st.lists(st.tuples(st.integers(0, 40), st.binary(max_size=2)), max_size=3),
    st.none() | st.integers(0, 9),
    st.booleans(),
    st.booleans(),
)
def test_a_login_read_off_the_frame_is_answered_as_decoded(
    bodies: list[bytes],
    mutations: list[tuple[int, bytes]],
    sequence: int | None,
    az: bool,
    required: bool,
) -> None:
    """`receive` answers a 93 of the usual shape without a `Message` (`read_login`): the same
    replies, events and state (account, failures, what a 97 replays) as when it decodes."""
    frames = []
    for body in bodies:
        for at, data in mutations:
            body = body[:at] + data + body[at + len(data) :]
        frames.append(trailer(body, sequence, az=az))
    frames.append(frames[-1])  # a resend: replayed when checksummed and answered
    fast = _conversation(frames, required)
    with mock.patch("bridge.sip2.session.read_login", return_value=None):
        general = _conversation(frames, required)
    assert fast == general


@pytest.mark.parametrize("terminator", ["CR", "CRLF"])
def test_the_kept_login_answers_are_the_encoded_ones(terminator: str) -> None:
    """Every 941 comes from a table of sent bytes per trailer and terminator: each is what
    encoding the 94 for that login gives, and it is remembered for a 97 and for replaying a
    duplicate exactly as before."""
    from bridge.sip2.codec import encode
    from bridge.sip2.messages import LoginResponse

    end = b"\r\n" if terminator == "CRLF" else b"\r"
    for sequence in (None, *range(10)):
        for az in (False, True):
            for _ in range(2):  # the second time from the table
                s = session(terminator=terminator)
                frame = trailer(login_msg(), sequence, az=az)
                sent = reply(s.receive(frame))
                expected = encode(
                    LoginResponse(True).to_message(), sequence=sequence, checksum=az, terminator=end
                )
                assert sent == expected
                assert reply(s.receive(b"97AZFEF5")) == sent  # a 97 replays it
                if az:  # a checksummed duplicate is replayed, not logged in again
                    again = s.receive(frame)
                    assert isinstance(again, Reply) and again.event == "duplicate_replayed"
                    assert again.data == sent
