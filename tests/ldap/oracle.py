"""ldap3 as the oracle: build requests with ldap3's own encoder, decode responses with its schema.

What ldap3 encodes we must decode to the same values; what we encode ldap3 must decode."""

from __future__ import annotations

from typing import Any

from ldap3 import BASE, LEVEL, SUBTREE
from ldap3.operation.bind import bind_operation
from ldap3.operation.compare import compare_operation
from ldap3.operation.extended import extended_operation
from ldap3.operation.search import search_operation
from ldap3.protocol.convert import build_controls_list
from ldap3.protocol.rfc4511 import LDAPMessage, MessageID, ProtocolOp
from ldap3.utils.asn1 import decode_message_fast, encode

SCOPES = {0: BASE, 1: LEVEL, 2: SUBTREE}


def message(msgid: int, kind: str, request: Any, controls: list[Any] | None = None) -> bytes:
    msg = LDAPMessage()
    msg["messageID"] = MessageID(msgid)
    msg["protocolOp"] = ProtocolOp().setComponentByName(kind, request)
    built = build_controls_list(controls)
    if built is not None:
        msg["controls"] = built
    return bytes(encode(msg))


def bind(msgid: int, name: str, password: bytes, controls: list[Any] | None = None) -> bytes:
    return message(msgid, "bindRequest", bind_operation(3, "SIMPLE", name, password), controls)


def search(
    msgid: int,
    base: str,
    filt: str,
    *,
    scope: int = 2,
    attrs: list[str] | None = None,
    size: int = 0,
    time: int = 0,
    controls: list[Any] | None = None,
) -> bytes:
    request = search_operation(
        base, filt, SCOPES[scope], 0, attrs or [], size, time, False, True, False
    )
    return message(msgid, "searchRequest", request, controls)


def compare(msgid: int, dn: str, attr: str, value: str) -> bytes:
    return message(msgid, "compareRequest", compare_operation(dn, attr, value, False))


def extended(msgid: int, oid: str, value: bytes | None = None) -> bytes:
    return message(msgid, "extendedReq", extended_operation(oid, value))


def decode(data: bytes) -> dict[str, Any]:
    """ldap3's own fast decoder, as its client uses on every response."""
    return dict(decode_message_fast(data))
