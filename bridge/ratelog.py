"""Log lines that a flood cannot multiply: at most one line per key per interval.

Every refusal the daemon makes under load (a RADIUS packet dropped, a connection over a cap, a
deadline passed, a TLS handshake slot full) is something an operator must see, but one line per
event would let the attacker choose how fast the log grows. `LogLimiter` is the pure counter
(`now` passed in); `RefusalLog` is the one logger every TCP listener reports refused or cut
connections to, keyed on (listener, reason kind, source), never on text with numbers in it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog

#: Seconds between two lines for the same (listener, reason kind, source).
REFUSAL_LOG_INTERVAL = 10.0

log = structlog.get_logger("bridge.connections")


class LogLimiter:
    """At most one log line per key per `interval` seconds, counting what it held back.

    A flood of packets from an unknown address (or of one kind of garbage) must not become a
    flood of log lines. The key table is bounded: when it is full of keys logged within the
    interval, new keys stay quiet until old ones age out."""

    def __init__(self, interval: float, max_keys: int = 4096) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._last: dict[object, tuple[float, int]] = {}

    def allow(self, key: object, now: float) -> int | None:
        """None: stay quiet. Otherwise log, reporting the returned number of suppressed lines."""
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval:
            self._last[key] = (last[0], last[1] + 1)
            return None
        if len(self._last) >= self.max_keys:
            self._last = {k: v for k, v in self._last.items() if now - v[0] < self.interval}
            if len(self._last) >= self.max_keys:
                return None
        self._last[key] = (now, 0)
        return last[1] if last is not None else 0


class RefusalLog:
    """One warning per (listener, reason kind, source) per interval: `<listener>_connection_refused`
    with `reason` (a fixed word such as `per_source_cap`, `pdu_deadline`), the source address
    and how many like it were held back since the last line."""

    def __init__(
        self,
        interval: float = REFUSAL_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 4096,
        logger: Any = None,
    ) -> None:
        self.limiter = LogLimiter(interval, max_keys)
        self.clock = clock
        self.log = log if logger is None else logger

    def refused(self, listener: str, kind: str, source: str, **fields: Any) -> bool:
        """Log the refusal unless a line for the same key went out within the interval; True
        when a line was written."""
        suppressed = self.limiter.allow((listener, kind, source), self.clock())
        if suppressed is None:
            return False
        self.log.warning(
            f"{listener}_connection_refused",
            reason=kind,
            source=source,
            suppressed=suppressed,
            **fields,
        )
        return True
