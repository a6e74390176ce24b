"""A card's standing at a glance, as the desk shows it: pure, from the patron record, the
throttle's counter and the configured limits."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from decimal import Decimal

from bridge.core.patron import Patron
from bridge.core.throttle import Counter


def mask_email(email: str | None) -> str | None:
    """`a•••@example.org`: enough to ask "is this still your address?", not to copy it."""
    if not email:
        return None
    local, at, domain = email.partition("@")
    if not at:
        return "•••"
    return (local[:1] or "") + "•••@" + domain


@dataclass(frozen=True, slots=True)
class Standing:
    expired: bool
    blocked: bool
    blocked_reason: str | None
    locked: bool
    delayed: bool
    locked_until: dt.datetime | None  # None with locked: until staff clear it
    failures: int
    fines_over: bool
    email: str | None
    minor: bool

    @property
    def active(self) -> bool:
        return not (self.expired or self.blocked or self.locked or self.fines_over)


def standing_of(
    patron: Patron,
    card: Counter | None,
    *,
    now: float,
    today: dt.date,
    fines_limit: Decimal | None,
    minor: bool,
) -> Standing:
    locked = delayed = False
    until: dt.datetime | None = None
    failures = 0 if card is None else card.failures
    if card is not None and card.blocked_until > now:
        locked, delayed = card.locked, not card.locked
        if not math.isinf(card.blocked_until):
            until = dt.datetime.fromtimestamp(card.blocked_until).astimezone()
    return Standing(
        expired=patron.is_expired(today),
        blocked=patron.blocked,
        blocked_reason=patron.blocked_reason,
        locked=locked,
        delayed=delayed,
        locked_until=until,
        failures=failures,
        fines_over=fines_limit is not None and patron.fines > fines_limit,
        email=mask_email(patron.email),
        minor=minor,
    )
