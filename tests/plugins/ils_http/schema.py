"""A tiny checker for the response schemas we wrote from each vendor's contract.

A schema is a plain dict in the JSON-Schema subset the specs use: `type` (a name or a list of
names), `properties`, `required`, `additionalProperties` (bool), `items`, `format: date`.
`check` returns the list of problems (empty when the value fits), so a test can report all of
them at once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

Schema = dict[str, Any]

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _is(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[name])


def check(value: Any, schema: Schema, where: str = "$") -> list[str]:
    problems: list[str] = []
    if "anyOf" in schema:
        tries = [check(value, option, where) for option in schema["anyOf"]]
        if not any(not t for t in tries):
            return [f"{where}: fits none of {len(tries)} shapes: {tries}"]
    if "const" in schema and value != schema["const"]:
        return [f"{where}: {value!r} is not {schema['const']!r}"]
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_is(value, n) for n in names):
            return [f"{where}: {type(value).__name__} is not {'/'.join(names)}"]
    if schema.get("format") == "date" and isinstance(value, str):
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            problems.append(f"{where}: {value!r} is not a date")
    if isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                problems.append(f"{where}: missing {name}")
        for name, item in value.items():
            if name in props:
                problems.extend(check(item, props[name], f"{where}.{name}"))
            elif schema.get("additionalProperties", True) is False:
                problems.append(f"{where}: unexpected field {name}")
    if isinstance(value, list) and not (
        schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value))
    ):
        problems.append(f"{where}: {len(value)} items")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problems.extend(check(item, schema["items"], f"{where}[{i}]"))
    return problems
