"""RFC 5080 section 2.2.2 duplicate detection, pure (`now` passed in).

A NAS that hears nothing within a few seconds retransmits the same packet (same source address
and port, Identifier and Request Authenticator). Without this cache every retransmission during
a slow ILS lookup would be a second PIN check and, on a wrong PIN, a second failure counted
against the patron. So:

- a request whose key (client address, port, Identifier) is new is processed (`NEW`);
- the same key and authenticator while the first is still being verified, or while its reply
  waits out the reject delay, is silently absorbed (`IN_FLIGHT`);
- the same key and authenticator after the reply was sent gets that reply again (`REPLAY`);
- the same key with a different authenticator is a new request: the old entry is purged
  (unless it is a copy of a request seen from another port, below).

Replies are kept `window` seconds (RFC 5080: 5 to 30); the table holds at most `max_entries`,
oldest evicted first, so a flood cannot grow memory. Packets that fail authentication must never
reach this cache (the server verifies first).

A retransmission can also arrive from another source port of the same address: a UDP balancer
such as nginx's stream module forwards every datagram from a new port of its own. So a request
whose key is unknown is looked up once more by (address, Identifier, Request Authenticator):
the same 16 random bytes with the same Identifier from the same address are the same request.
Requests from different ports with different authenticators (NASes behind one NAT address)
stay apart, as before.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

Key = tuple[str, int, int]  # (source address, source port, Identifier)
_Request = tuple[str, int, bytes]  # (source address, Identifier, Request Authenticator)


class Verdict(enum.Enum):
    NEW = "new"
    IN_FLIGHT = "in_flight"
    REPLAY = "replay"


# One entry: (Request Authenticator, reply or None while in flight, expires); for an entry in
# flight `expires` is when to stop waiting for its reply. A plain tuple, replaced (in place in
# the table's order) when the reply is recorded: one is made per request, and a dataclass's
# `__init__` is a Python call (about 600 instructions); and a tuple of bytes and a float is
# untracked by the garbage collector, which otherwise walked every live entry of the table
# in each of its older-generation passes.
_Entry = tuple[bytes, bytes | None, float]
_AUTHENTICATOR: Final = 0
_REPLY: Final = 1
_EXPIRES: Final = 2


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
        self._by_request: dict[_Request, Key] = {}  # the same request from another port

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, key: Key, authenticator: bytes, now: float) -> Seen:
        """Classify a verified request; a `NEW` one is recorded as in flight."""
        entries = self._entries
        entry = entries.get(key)
        if entry is not None and entry[_EXPIRES] > now and entry[_AUTHENTICATOR] == authenticator:
            reply = entry[_REPLY]
            return _IN_FLIGHT if reply is None else Seen(Verdict.REPLAY, reply)
        # Looked up by request even when the key holds another one: a balancer's port may have
        # carried an earlier request with the same Identifier (that entry is kept).
        request = (key[0], key[2], authenticator)
        first = self._by_request.get(request)
        if first is not None and first != key:
            seen = entries.get(first)
            if seen is not None and seen[_EXPIRES] > now and seen[_AUTHENTICATOR] == authenticator:
                reply = seen[_REPLY]
                return _IN_FLIGHT if reply is None else Seen(Verdict.REPLAY, reply)
        if entry is not None:
            self._drop(key)
        if entries and (  # the oldest entry is still live: nothing to expire, skip the call
            len(entries) >= self.max_entries or next(iter(entries.values()))[_EXPIRES] <= now
        ):
            self._expire(now)
        entries[key] = (authenticator, None, now + self.in_flight_limit)
        self._by_request[request] = key
        return _NEW

    def complete(self, key: Key, authenticator: bytes, reply: bytes, now: float) -> None:
        """Record the reply just sent, so a retransmission gets it again."""
        entries = self._entries
        entry = entries.get(key)
        if entry is None or entry[_AUTHENTICATOR] != authenticator:
            return  # purged by a newer request with the same Identifier
        entries[key] = (authenticator, reply, now + self.window)
        entries.move_to_end(key)

    def forget(self, key: Key, authenticator: bytes) -> None:
        """No reply will be sent (silence by policy): let a retransmission be tried anew."""
        entry = self._entries.get(key)
        if entry is not None and entry[_AUTHENTICATOR] == authenticator:
            self._drop(key)

    def _drop(self, key: Key) -> None:
        entry = self._entries.pop(key)
        request = (key[0], key[2], entry[_AUTHENTICATOR])
        if self._by_request.get(request) == key:
            del self._by_request[request]

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, first = next(iter(entries.items()))
            if first[_EXPIRES] > now and len(entries) < self.max_entries:
                break
            self._drop(key)
