"""A short-lived cache of patron records read from the ILS after a good PIN, per record id.

A self-check or a Wi-Fi controller checks the same patron several times in a minute; after
the first good PIN the status (expiry, blocks, fines) is reused for `ttl` seconds, so a
repeated login costs the ILS one PIN check, not three calls. The PIN check itself is never
cached here (the core's verified-credential cache decides that). Bounded: the oldest entries
go first. Generic in what it holds: FOLIO also keeps the user found by a typed barcode, so a
repeated login is one request (the PIN check), not a lookup and then the check.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class RecordCache(Generic[T]):
    def __init__(self, ttl: float, monotonic: Callable[[], float], size: int = 10_000) -> None:
        self.ttl = ttl
        self.monotonic = monotonic
        self.size = size
        self._entries: OrderedDict[str, tuple[float, T]] = OrderedDict()

    def get(self, record_id: str) -> T | None:
        entry = self._entries.get(record_id)
        if entry is None:
            return None
        if self.monotonic() >= entry[0]:
            del self._entries[record_id]
            return None
        return entry[1]

    def put(self, record_id: str, patron: T) -> None:
        if self.ttl <= 0:
            return
        self._entries[record_id] = (self.monotonic() + self.ttl, patron)
        self._entries.move_to_end(record_id)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def drop(self, record_id: str) -> None:
        self._entries.pop(record_id, None)
