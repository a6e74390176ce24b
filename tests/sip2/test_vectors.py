"""Frames from public fixtures and the spec, and typed-message round trips."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.secret import Secret
from bridge.sip2.codec import ChecksumError, decode, encode
from bridge.sip2.messages import (
    AcsStatus,
    BlockPatron,
    EndSession,
    EndSessionResponse,
    LoginRequest,
    LoginResponse,
    PatronRequest,
    PatronResponse,
    ScStatus,
)

VECTORS = json.loads(
    (Path(__file__).resolve().parent.parent / "vectors" / "sip2_messages.json").read_text()
)


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: v["source"][:40])
def test_valid_vectors(vector: dict[str, Any]) -> None:
    m = decode(vector["frame"].encode("cp850"))
    assert m.code == vector["code"]
    assert m.sequence == vector["sequence"]
    assert m.checksummed == vector["checksummed"]
    for tag, value in vector["fields"].items():
        assert m.get(tag) == value


@pytest.mark.parametrize("frame", VECTORS["bad_checksum"])
def test_bad_checksum_vectors(frame: str) -> None:
    with pytest.raises(ChecksumError):
        decode(frame.encode("cp850"))


text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126, exclude_characters="|"), max_size=20
)
date = st.just("20240101    101010")
yn = st.booleans()


def round_trip(value: Any, cls: Any) -> Any:
    return cls.from_message(decode(encode(value.to_message(), sequence=1, checksum=True)[:-1]))


@given(text, text, text)
def test_property_login_round_trip(login: str, password: str, location: str) -> None:
    back = round_trip(LoginRequest(login, Secret(password), location), LoginRequest)
    assert back.login == login and back.password.matches(password)
    assert back.location == location
    assert round_trip(LoginResponse(True), LoginResponse).ok


@given(yn, text, text, st.text(alphabet="YN", min_size=16, max_size=16))
def test_property_status_round_trip(online: bool, inst: str, name: str, bx: str) -> None:
    acs = AcsStatus(online, "20240101    101010", inst, bx, library_name=name)
    back = round_trip(acs, AcsStatus)
    assert back.online == online and back.institution == inst and back.supported == bx
    assert back.library_name == name
    assert round_trip(ScStatus(), ScStatus) == ScStatus()


@given(st.sampled_from(["23", "63"]), text, st.none() | text, text)
def test_property_patron_request_round_trip(
    code: str, barcode: str, pin: str | None, inst: str
) -> None:
    request = PatronRequest(
        code, barcode, None if pin is None else Secret(pin), inst, date="20240101    101010"
    )
    back = round_trip(request, PatronRequest)
    assert back.barcode == barcode and back.institution == inst and back.code == code
    assert (back.pin is None) == (pin is None)
    if pin is not None and back.pin is not None:
        assert back.pin.matches(pin)


@given(
    st.sampled_from(["24", "64"]),
    st.text(alphabet="Y ", min_size=14, max_size=14),
    text,
    text,
    st.none() | yn,
    yn,
    st.lists(text.filter(bool), max_size=3),
)
def test_property_patron_response_round_trip(
    code: str,
    status: str,
    barcode: str,
    name: str,
    bl: bool | None,
    cq: bool,
    screens: list[str],
) -> None:
    response = PatronResponse(
        code,
        status,
        "20240101    101010",
        "MAIN",
        barcode,
        name=name,
        valid_patron=bl,
        valid_pin=cq,
        screen_messages=tuple(screens),
    )
    assert round_trip(response, PatronResponse) == response


@given(text, text)
def test_property_session_and_block_round_trip(barcode: str, why: str) -> None:
    end = EndSession(barcode, "MAIN", "20240101    101010")
    assert round_trip(end, EndSession) == end
    ended = EndSessionResponse(True, "20240101    101010", "MAIN", barcode)
    assert round_trip(ended, EndSessionResponse) == ended
    block = BlockPatron(barcode, why, True, "MAIN", "20240101    101010")
    assert round_trip(block, BlockPatron) == block
