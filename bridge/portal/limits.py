"""Sliding-window request limits for the forgot-PIN form, per card and per source address.

The core's throttle counts failed PINs; asking for reset emails is not a failure, so it needs
its own cap, or the form becomes a way to flood a patron's inbox or the mail server. The clock
is passed in; counters for quiet keys are forgotten so memory stays bounded.
"""

from __future__ import annotations

from collections import deque


class WindowLimiter:
    def __init__(self, limit: int, window: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}

    def allow(self, key: str, now: float) -> bool:
        """Count one request for `key`; False when it is over the limit (and then not counted)."""
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self.max_keys:
                self.sweep(now)
            hits = self._hits[key] = deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        return True

    def full(self, key: str, now: float) -> bool:
        """Whether `key` is at its limit now (without counting a request)."""
        hits = self._hits.get(key)
        if hits is None:
            return False
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return len(hits) >= self.limit

    def sweep(self, now: float) -> None:
        horizon = now - self.window
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] <= horizon]:
            del self._hits[key]
        if len(self._hits) >= self.max_keys:  # still full: a flood of distinct keys
            self._hits.clear()

    def __len__(self) -> int:
        return len(self._hits)
