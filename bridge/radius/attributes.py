"""Reply attributes named in the config, encoded once at start from the shipped dictionary.

`pyrad.dictionary` reads the FreeRADIUS-format file (`bridge/radius/dictionary`) and
`pyrad.tools.EncodeAttr` encodes a value by its type, so `Session-Timeout = 3600`,
`Tunnel-Type = "VLAN"` or `Class = "wifi-adult"` in TOML become the octets a NAS expects. This
runs while the config is loaded, so a misspelt attribute is a config error naming the key, and
the hot path only concatenates pre-encoded bytes.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyrad import tools
from pyrad.dictionary import Dictionary

from bridge.radius.packet import (
    CHAP_PASSWORD,
    EAP_MESSAGE,
    MESSAGE_AUTHENTICATOR,
    PROXY_STATE,
    REPLY_MESSAGE,
    USER_PASSWORD,
    VENDOR_SPECIFIC,
)

DICTIONARY = Path(__file__).with_name("dictionary")

AttrValue = str | int
ConfigValue = AttrValue | list[AttrValue]

# The server owns these: a configured value would break or forge the exchange.
RESERVED = frozenset(
    {USER_PASSWORD, CHAP_PASSWORD, REPLY_MESSAGE, PROXY_STATE, EAP_MESSAGE, MESSAGE_AUTHENTICATOR}
)


@functools.cache
def dictionary() -> Dictionary:
    return Dictionary(str(DICTIONARY))


def encode_one(name: str, value: AttrValue) -> tuple[int, bytes]:
    """(type, value octets) for one configured attribute; ValueError names the problem."""
    d = dictionary()
    if name not in d:
        raise ValueError(f"unknown RADIUS attribute {name!r} (not in bridge/radius/dictionary)")
    attr: Any = d[name]
    if isinstance(value, str) and attr.values.HasForward(value):
        raw = bytes(attr.values.GetForward(value))
    else:
        try:
            raw = bytes(tools.EncodeAttr(attr.type, value))
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"{name}: cannot encode {value!r} as {attr.type}: {exc}") from None
    if attr.vendor:
        vendor_id = int(d.vendors.GetForward(attr.vendor))
        if len(raw) > 247:
            raise ValueError(f"{name}: value too long")
        sub = bytes([attr.code, len(raw) + 2]) + raw
        return VENDOR_SPECIFIC, vendor_id.to_bytes(4, "big") + sub
    if attr.code in RESERVED:
        raise ValueError(f"{name} is set by the server, not by configuration")
    if len(raw) > 253:
        raise ValueError(f"{name}: value longer than 253 octets")
    return int(attr.code), raw


def encode_table(table: Mapping[str, ConfigValue]) -> tuple[tuple[int, bytes], ...]:
    """Every attribute of a `reply` table, in file order; a list value gives several."""
    out: list[tuple[int, bytes]] = []
    for name, value in table.items():
        for item in value if isinstance(value, list) else [value]:
            out.append(encode_one(name, item))
    return tuple(out)


def merge(
    base: Mapping[str, ConfigValue], override: Mapping[str, ConfigValue]
) -> tuple[tuple[int, bytes], ...]:
    """A category's attributes replace the client's attributes of the same name."""
    return encode_table({**base, **override})


def name_of(kind: int) -> str:
    try:
        return str(dictionary().attrindex.GetBackward(kind))
    except KeyError:
        return str(kind)


def value_name(attribute: str, raw: bytes) -> str | None:
    """The dictionary's name for an enumerated integer value (Acct-Status-Type 1 → Start)."""
    attr: Any = dictionary()[attribute]
    try:
        return str(attr.values.GetBackward(raw))
    except KeyError:
        return None
