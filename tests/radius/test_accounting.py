"""Accounting-Request → audit fields."""

from __future__ import annotations

from bridge.radius import accounting
from bridge.radius.packet import ACCOUNTING_REQUEST, decode, encode_request


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def test_stop_summary_with_gigawords() -> None:
    attrs = [
        (1, b"21234000000001"),
        (40, u32(2)),
        (44, b"sess-1"),
        (46, u32(3600)),
        (42, u32(5)),
        (52, u32(1)),
        (43, u32(7)),
        (49, u32(1)),
        (32, b"ap-1"),
    ]
    packet = decode(encode_request(ACCOUNTING_REQUEST, 1, b"", attrs, b"s"))
    assert accounting.user_name(packet) == "21234000000001"
    assert accounting.summary(packet) == {
        "status": "Stop",
        "session_id": "sess-1",
        "session_time": 3600,
        "input_octets": (1 << 32) + 5,
        "output_octets": 7,
        "terminate_cause": "User-Request",
        "nas": "ap-1",
    }


def test_missing_and_unknown_values() -> None:
    packet = decode(encode_request(ACCOUNTING_REQUEST, 1, b"", [(40, u32(99))], b"s"))
    assert accounting.summary(packet) == {"status": "99"}
    assert accounting.user_name(packet) is None
    empty = decode(encode_request(ACCOUNTING_REQUEST, 1, b"", [], b"s"))
    assert accounting.summary(empty) == {"status": "missing"}
