"""Conversations in flight, keyed by the RADIUS State attribute, bounded in count and age.

Pure: `now` comes from the caller. An `OrderedDict` in order of last activity, so expiry pops
from the front and each call costs only what it expires. Per-client counts make one noisy NAS
unable to take every slot.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from bridge.radius.eap.conversation import Conversation


@dataclass(slots=True)
class ConversationTable:
    max_total: int
    max_per_client: int
    timeout: float
    _items: OrderedDict[bytes, Conversation] = field(default_factory=OrderedDict)
    _per_client: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._items)

    def count(self, client: str) -> int:
        return self._per_client.get(client, 0)

    def room_for(self, client: str, now: float) -> str | None:
        """None when a new conversation for `client` fits, else why not."""
        self.expire(now)
        if len(self._items) >= self.max_total:
            return "too many EAP conversations in flight"
        if self._per_client.get(client, 0) >= self.max_per_client:
            return "too many EAP conversations in flight for this client"
        return None

    def add(self, conversation: Conversation, now: float) -> None:
        conversation.touched = now
        self._items[conversation.state] = conversation
        self._per_client[conversation.client] = self._per_client.get(conversation.client, 0) + 1

    def get(self, state: bytes, client: str, now: float) -> Conversation | None:
        """The live conversation with this State for this client (another client's State, or
        an expired one, is not found); marks it active."""
        self.expire(now)
        conversation = self._items.get(state)
        if conversation is None or conversation.client != client:
            return None
        conversation.touched = now
        self._items.move_to_end(state)
        return conversation

    def remove(self, state: bytes) -> None:
        conversation = self._items.pop(state, None)
        if conversation is not None:
            left = self._per_client[conversation.client] - 1
            if left:
                self._per_client[conversation.client] = left
            else:
                del self._per_client[conversation.client]

    def expire(self, now: float) -> int:
        """Forget conversations idle for longer than `timeout`; how many went."""
        gone = 0
        while self._items:
            state, oldest = next(iter(self._items.items()))
            if now - oldest.touched <= self.timeout:
                break
            self.remove(state)
            gone += 1
        return gone

    def clear(self) -> None:
        self._items.clear()
        self._per_client.clear()
