"""The one circuit breaker every ILS connector uses (SIP2 and HTTP), pure: the caller passes
`now` (monotonic seconds).

Why: when the ILS is down every PIN check would otherwise wait the full connect or request
timeout, tying up self-checks and piling connection attempts on an ILS that is trying to come
back. After `failures` failures in a row the breaker opens: requests fail at once (the
authenticator answers "store unavailable") until `reset` seconds have passed; then one probe
is let through (half-open). A successful probe closes the breaker; a failed one reopens it for
twice as long, up to `reset_max`. A probe that never reports (its caller was cancelled) is
given up on after `probe_timeout`, so the breaker cannot stay half-open for ever.

An ILS that says how long to stay away (HTTP 429 or 503 with Retry-After) is obeyed with
`hold`: the breaker opens for that long at once, whatever the failure count, so the bridge does
not spend the ILS's rate limit (or its own deadline) on requests it knows will be refused.
"""

from __future__ import annotations

import enum


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Breaker:
    __slots__ = (
        "_failures",
        "_pause",
        "_probe_until",
        "_until",
        "failures",
        "probe_timeout",
        "reset",
        "reset_max",
        "state",
    )

    def __init__(
        self,
        *,
        failures: int = 5,
        reset: float = 1.0,
        reset_max: float = 60.0,
        probe_timeout: float = 10.0,
    ) -> None:
        if failures < 1 or reset <= 0 or reset_max < reset or probe_timeout <= 0:
            raise ValueError("bad breaker parameters")
        self.failures = failures
        self.reset = reset
        self.reset_max = reset_max
        self.probe_timeout = probe_timeout
        self.state = State.CLOSED
        self._failures = 0
        self._pause = reset
        self._until = 0.0
        self._probe_until = 0.0

    def allow(self, now: float) -> bool:
        """May a request go to the ILS now? In the open state, True once per pause (the probe)."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN:
            if now < self._until:
                return False
            self.state = State.HALF_OPEN
            self._probe_until = now + self.probe_timeout
            return True
        if now >= self._probe_until:  # the last probe never reported back
            self._probe_until = now + self.probe_timeout
            return True
        return False

    def success(self, now: float) -> None:
        self.state = State.CLOSED
        self._failures = 0
        self._pause = self.reset

    def failure(self, now: float) -> None:
        if self.state is State.HALF_OPEN:
            self._pause = min(self._pause * 2, self.reset_max)
            self._open(now)
            return
        if self.state is State.OPEN:
            return
        self._failures += 1
        if self._failures >= self.failures:
            self._open(now)

    def hold(self, now: float, seconds: float) -> None:
        """Stay away for `seconds` (capped at `reset_max`): the ILS asked for it."""
        pause = min(max(seconds, 0.0), self.reset_max)
        if pause <= 0:
            self.failure(now)
            return
        until = now + pause
        self._until = max(self._until, until) if self.state is State.OPEN else until
        self.state = State.OPEN

    def _open(self, now: float) -> None:
        self.state = State.OPEN
        self._until = now + self._pause

    def retry_after(self, now: float) -> float:
        """Seconds until the next probe may go (0 when requests flow)."""
        if self.state is State.OPEN:
            return max(0.0, self._until - now)
        return 0.0

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def describe(self, now: float) -> str:
        if self.state is State.CLOSED:
            return f"closed ({self._failures} recent failures)"
        if self.state is State.OPEN:
            return f"open, next probe in {self.retry_after(now):.1f}s"
        return "half-open, probing"
