"""What a resumable EAP-TTLS session authorised: the card behind it, for a bounded time.

A resumed TTLS tunnel carries no inner PAP (the supplicant skips phase 2, as RFC 5281 section
7.1 allows), so, as FreeRADIUS does with its session cache, the bridge remembers with each TLS
session that ended in an Access-Accept the inner identity it accepted and the client it was for.
On resumption the card is asked again for its standing now (`Authenticator.settle_resumed`
from the verified cache, else `Authenticator.resumed` from the store), never its PIN; a session
that is not remembered here (its first authentication failed, it expired, it was evicted, it
was another client's) is refused.

Pure: `now` comes from the caller. Keys are `Tunnel.session_key()` values (a hash of the session's
master secret), so nothing here names a session to anyone who did not take part in it. Bounded
in count (oldest evicted) and in age (`lifetime`, the same as OpenSSL's session cache timeout).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

#: OpenSSL's default server session cache size: beyond it OpenSSL forgets sessions too.
MAX_REMEMBERED: Final = 20480


@dataclass(frozen=True, slots=True)
class Remembered:
    barcode: str  # the inner PAP User-Name that was accepted
    client: str  # the RADIUS client (NAS) it was accepted for
    expires: float


@dataclass(slots=True)
class ResumptionCache:
    lifetime: float
    limit: int = MAX_REMEMBERED
    _items: OrderedDict[bytes, Remembered] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._items)

    def remember(self, key: bytes, barcode: str, client: str, now: float) -> None:
        self.expire(now)
        self._items.pop(key, None)
        while len(self._items) >= self.limit:
            self._items.popitem(last=False)
        self._items[key] = Remembered(barcode, client, now + self.lifetime)

    def recall(self, key: bytes | None, client: str, now: float) -> Remembered | None:
        """The authorisation behind a resumed session, if it is remembered, unexpired and was
        made for this same client."""
        self.expire(now)
        if key is None:
            return None
        remembered = self._items.get(key)
        if remembered is None or remembered.client != client:
            return None
        return remembered

    def forget(self, key: bytes | None) -> None:
        if key is not None:
            self._items.pop(key, None)

    def expire(self, now: float) -> None:
        """Entries are added in time order with one lifetime, so the oldest expire first."""
        while self._items:
            oldest = next(iter(self._items.values()))
            if oldest.expires > now:
                break
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()
