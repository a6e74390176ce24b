"""Accounting-Request → the fields of one audit line (session start/stop per patron).

Pure. Libraries use these lines for Wi-Fi usage statistics: who (barcode, masked by the audit),
which session, how long and how much. Octet counts include the RFC 2869 Gigawords so sessions
over 4 GiB are counted right. Device identifiers (MAC addresses) are not kept.
"""

from __future__ import annotations

from typing import Any

from bridge.radius.attributes import value_name
from bridge.radius.packet import USER_NAME, Packet

ACCT_STATUS_TYPE = 40
ACCT_INPUT_OCTETS = 42
ACCT_OUTPUT_OCTETS = 43
ACCT_SESSION_ID = 44
ACCT_SESSION_TIME = 46
ACCT_TERMINATE_CAUSE = 49
ACCT_INPUT_GIGAWORDS = 52
ACCT_OUTPUT_GIGAWORDS = 53
NAS_IDENTIFIER = 32
EVENT_TIMESTAMP = 55


def _int(packet: Packet, kind: int) -> int | None:
    raw = packet.get(kind)
    if raw is None or len(raw) != 4:
        return None
    return int.from_bytes(raw, "big")


def _text(packet: Packet, kind: int, limit: int = 64) -> str | None:
    raw = packet.get(kind)
    if raw is None:
        return None
    return raw[:limit].decode("utf-8", "replace")


def _octets(packet: Packet, low: int, high: int) -> int | None:
    value = _int(packet, low)
    if value is None:
        return None
    return ((_int(packet, high) or 0) << 32) + value


def user_name(packet: Packet) -> str | None:
    raw = packet.get(USER_NAME)
    return None if raw is None else raw[:64].decode("utf-8", "replace")


def summary(packet: Packet) -> dict[str, Any]:
    """Audit fields; absent attributes are left out rather than logged as null."""
    status_raw = packet.get(ACCT_STATUS_TYPE)
    status = None
    if status_raw is not None:
        status = value_name("Acct-Status-Type", status_raw) or str(_int(packet, ACCT_STATUS_TYPE))
    cause_raw = packet.get(ACCT_TERMINATE_CAUSE)
    fields: dict[str, Any] = {
        "status": status or "missing",
        "session_id": _text(packet, ACCT_SESSION_ID),
        "session_time": _int(packet, ACCT_SESSION_TIME),
        "input_octets": _octets(packet, ACCT_INPUT_OCTETS, ACCT_INPUT_GIGAWORDS),
        "output_octets": _octets(packet, ACCT_OUTPUT_OCTETS, ACCT_OUTPUT_GIGAWORDS),
        "terminate_cause": (
            value_name("Acct-Terminate-Cause", cause_raw) if cause_raw is not None else None
        ),
        "nas": _text(packet, NAS_IDENTIFIER),
        "event_time": _int(packet, EVENT_TIMESTAMP),
    }
    return {k: v for k, v in fields.items() if v is not None}
