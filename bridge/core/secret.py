"""A wrapper for PINs and passwords that never shows its value.

PINs travel from the codec to the store as `Secret` so that no log line, exception message,
traceback or repr can carry one by accident: `str()`, `repr()` and formatting all print `***`.
The value is held as the exact bytes that arrived on the wire (RADIUS can carry any octets, and
`12 e9 34` must never be "repaired" into `1234`); `text()` decodes strictly.
"""

from __future__ import annotations

import hmac
from typing import Final

_MASK: Final = "***"


class Secret:
    """A secret value; compare with `matches`, read with `reveal`/`text` only where needed."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes | str) -> None:
        # surrogatepass: a lone surrogate (which no front end should let through, but a str
        # can hold) becomes bytes that `text()` refuses as malformed, rather than a
        # UnicodeEncodeError, whose `object` would carry the whole value into a traceback.
        self._value = (
            value.encode("utf-8", "surrogatepass") if isinstance(value, str) else bytes(value)
        )

    def reveal(self) -> bytes:
        """The raw bytes; call only at the point of hashing or sending."""
        return self._value

    def text(self) -> str | None:
        """The value as strict UTF-8, or None when the bytes are not valid UTF-8."""
        try:
            return self._value.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def matches(self, other: Secret | bytes | str) -> bool:
        """Constant-time equality."""
        if isinstance(other, Secret):
            raw = other._value
        elif isinstance(other, str):
            raw = other.encode("utf-8", "surrogatepass")
        else:
            raw = other
        return hmac.compare_digest(self._value, raw)

    def __len__(self) -> int:
        return len(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret({_MASK})"

    def __str__(self) -> str:
        return _MASK

    def __format__(self, spec: str) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        # Equality by value would invite `==` (not constant-time); force `matches`.
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def __reduce__(self) -> tuple[type[Secret], tuple[bytes]]:
        raise TypeError("Secret values are not picklable")
