"""Evergreen's OpenSRF HTTP gateway, sans I/O: the request form, the answer envelope, events,
and fieldmapper objects read through the IDL.

What the sources say (evergreen-library-system/OpenSRF `src/gateway/osrf_json_gateway.c` @
d8dbf0c4e44cf45f00ffe2785d0778658029b825; Evergreen `Open-ILS/src/c-apps/oils_auth.c`):
- a call is `POST /osrf-gateway-v1` with form fields `service`, `method` and one `param` per
  method argument, each a JSON text; the answer is `{"payload": [...], "status": 200}` (plus
  `"debug"` when OpenSRF itself failed, e.g. status 404 for an unknown method) with HTTP 200
  whatever happened, so the envelope's `status` is what tells;
- an application-level outcome is an *event*: `{"ilsevent": <code>, "textcode": "...",
  "desc": ..., "payload": ...}` (`SUCCESS` is 0, `LOGIN_FAILED` 1000, `NO_SESSION` 1001);
- records are fieldmapper objects `{"__c": "<class>", "__p": [<positional fields>]}` whose
  positions are the order of the class's `<field>`s in the IDL (`fm_IDL.xml`, served by every
  Evergreen at `/reports/fm_IDL.xml`). Positions change between releases, so they are read from
  the server's own IDL at start, never written into this code.

Everything here is pure: `plugins.evergreen_http` does the HTTP.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

IDL_NS = "{http://opensrf.org/spec/IDL/base/v1}"
IDL_MAX_BYTES = 16 * 1024 * 1024  # the whole stock IDL is about 1 MB
MAX_DEPTH = 16  # fleshed objects nest a few levels; deeper is not an answer we asked for


class GatewayError(ValueError):
    """The gateway's answer is not what OpenSRF sends (or names a class the IDL lacks)."""


class Envelope(msgspec.Struct, frozen=True):
    payload: list[Any]
    status: int
    debug: str | None = None


class Event(msgspec.Struct, frozen=True):
    """An Evergreen event (oils_event.c / OpenILS::Event)."""

    textcode: str
    ilsevent: int | str = ""
    desc: str | None = None
    payload: Any = None


def request_form(service: str, method: str, params: Iterable[Any]) -> dict[str, str | list[str]]:
    """The gateway's form: each argument a JSON text in its own `param` field, in order."""
    return {
        "service": service,
        "method": method,
        "param": [msgspec.json.encode(p).decode() for p in params],
    }


def envelope(body: bytes) -> list[Any]:
    """The payload list of a gateway answer; an OpenSRF-level failure raises."""
    try:
        answer = msgspec.json.decode(body, type=Envelope)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise GatewayError("unreadable gateway answer") from None
    if answer.status != 200:
        raise GatewayError(f"OpenSRF status {answer.status}")
    return answer.payload


def event(value: Any) -> Event | None:
    """`value` as an event, or None when it is something else (a record, a list, null)."""
    if not isinstance(value, dict) or "textcode" not in value or "__c" in value:
        return None
    try:
        return msgspec.convert(value, Event)
    except msgspec.ValidationError:
        raise GatewayError("malformed event") from None


class Idl:
    """Field names per class, in position order, for the classes the connector reads."""

    def __init__(self, classes: Mapping[str, tuple[str, ...]]) -> None:
        self.classes = dict(classes)

    @classmethod
    def parse(cls, xml: bytes, wanted: Iterable[str]) -> Idl:
        """Read `wanted` classes out of fm_IDL.xml (the whole file or a mod_idlchunk part, as
        XML or flattened).

        No DTD is accepted: the IDL has none, and refusing it rules out entity expansion.
        """
        if len(xml) > IDL_MAX_BYTES:
            raise GatewayError("IDL too large")
        if b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
            raise GatewayError("IDL with a DTD refused")
        want = set(wanted)
        try:
            root = ET.fromstring(xml)  # noqa: S314 - no DTD (checked above), from the configured ILS
        except ET.ParseError:
            raise GatewayError("unreadable IDL") from None
        # Document order, not nesting: mod_idlchunk (which serves /reports/fm_IDL.xml) writes
        # every element as an empty tag when its content type is left at text/html, so a
        # class's <field>s may follow it as siblings instead of sitting inside it.
        fields: dict[str, list[str]] = {}
        current: str | None = None
        for element in root.iter():
            if element.tag == f"{IDL_NS}class":
                current = element.get("id")
                if current in want:
                    fields[current] = []
            elif element.tag == f"{IDL_NS}field" and current in fields:
                fields[current].append(element.get("name") or "")
        classes: dict[str, tuple[str, ...]] = {}
        for name, names in fields.items():
            if not names or "" in names or len(set(names)) != len(names):
                raise GatewayError(f"IDL class {name} has unusable fields")
            classes[name] = tuple(names)
        missing = want - set(classes)
        if missing:
            raise GatewayError(f"IDL lacks {', '.join(sorted(missing))}")
        return cls(classes)

    def unpack(self, value: Any, depth: int = 0) -> Any:
        """Fieldmapper objects (nested too) as dicts keyed by field name; the rest unchanged."""
        if depth > MAX_DEPTH:
            raise GatewayError("answer nested too deep")
        if isinstance(value, list):
            return [self.unpack(v, depth + 1) for v in value]
        if not isinstance(value, dict):
            return value
        if "__c" not in value:
            return {k: self.unpack(v, depth + 1) for k, v in value.items()}
        names = self.classes.get(value["__c"])
        positions = value.get("__p")
        if names is None or not isinstance(positions, list) or len(positions) > len(names):
            raise GatewayError(f"unexpected object of class {value['__c']!r}")
        out = {n: self.unpack(v, depth + 1) for n, v in zip(names, positions, strict=False)}
        out["__c"] = value["__c"]
        return out
