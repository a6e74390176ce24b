"""RFC 5080 section 2.2.2 duplicate detection, pure (`now` passed in).

A NAS that hears nothing within a few seconds retransmits the same packet (same source address
and port, Identifier and Request Authenticator). Without this cache every retransmission during
a slow ILS lookup would be a second PIN check and, on a wrong PIN, a second failure counted
against the patron. So:

- a request whose key (client address, port, Identifier) is new is processed (`NEW`);
- the same key and authenticator while the first is still being verified, or while its reply
  waits out the reject delay, is silently absorbed (`IN_FLIGHT`);
- the same key and authenticator after the reply was sent gets that reply again (`REPLAY`);
- the same key with a different authenticator is a new request: the old entry is purged.

Replies are kept `window` seconds (RFC 5080: 5 to 30); the table holds at most `max_entries`,
oldest evicted first, so a flood cannot grow memory. Packets that fail authentication must never
reach this cache (the server verifies first).
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass

Key = tuple[str, int, int]  # (source address, source port, Identifier)


class Verdict(enum.Enum):
    NEW = "new"
    IN_FLIGHT = "in_flight"
    REPLAY = "replay"


@dataclass(slots=True)
class _Entry:
    authenticator: bytes
    reply: bytes | None  # None while in flight
    expires: float  # for an entry in flight: when to stop waiting for its reply


@dataclass(slots=True)
class Seen:
    verdict: Verdict
    reply: bytes | None = None


_NEW = Seen(Verdict.NEW)
_IN_FLIGHT = Seen(Verdict.IN_FLIGHT)


class DuplicateCache:
    def __init__(
        self, window: float = 10.0, max_entries: int = 65536, in_flight_limit: float = 30.0
    ) -> None:
        self.window = window
        self.max_entries = max_entries
        # An entry in flight longer than this (a lost task) stops absorbing retransmissions.
        self.in_flight_limit = in_flight_limit
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, key: Key, authenticator: bytes, now: float) -> Seen:
        """Classify a verified request; a `NEW` one is recorded as in flight."""
        entry = self._entries.get(key)
        if entry is not None and entry.expires > now and entry.authenticator == authenticator:
            if entry.reply is None:
                return _IN_FLIGHT
            return Seen(Verdict.REPLAY, entry.reply)
        if entry is not None:
            del self._entries[key]
        self._expire(now)
        self._entries[key] = _Entry(authenticator, None, now + self.in_flight_limit)
        return _NEW

    def complete(self, key: Key, authenticator: bytes, reply: bytes, now: float) -> None:
        """Record the reply just sent, so a retransmission gets it again."""
        entry = self._entries.get(key)
        if entry is None or entry.authenticator != authenticator:
            return  # purged by a newer request with the same Identifier
        entry.reply = reply
        entry.expires = now + self.window
        self._entries.move_to_end(key)

    def forget(self, key: Key, authenticator: bytes) -> None:
        """No reply will be sent (silence by policy): let a retransmission be tried anew."""
        entry = self._entries.get(key)
        if entry is not None and entry.authenticator == authenticator:
            del self._entries[key]

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            first = next(iter(entries.values()))
            if first.expires > now and len(entries) < self.max_entries:
                break
            entries.popitem(last=False)
