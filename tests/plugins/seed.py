"""The patrons every store test starts from, whatever the backend stores them in.

Each backend's fixture writes these rows its own way (the bridge's tables, Koha's `borrowers`,
Evergreen's `actor.usr`/`actor.card`/`actor.passwd`), so one contract suite can ask every store
the same questions and expect the same answers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from tests.pins import DEMO_PIN

TODAY = dt.date.today()
FUTURE = TODAY + dt.timedelta(days=365)
PAST = TODAY - dt.timedelta(days=30)


@dataclass(frozen=True)
class SeedPatron:
    barcode: str
    surname: str
    given: str
    email: str | None = None
    category: str = "ADULT"
    expires: dt.date | None = FUTURE
    blocked: str | None = None  # the reason, when blocked
    fines: Decimal = Decimal("0.00")
    pin: str | None = DEMO_PIN
    home_library: str = "MAIN"

    @property
    def name(self) -> str:
        return f"{self.surname}, {self.given}"


ACTIVE = SeedPatron("29000000000011", "Reader", "Ada", email="ada@example.org")
EXPIRED = SeedPatron("29000000000012", "Expired", "Eve", email="family@example.org", expires=PAST)
BLOCKED = SeedPatron(
    "29000000000013", "Blocked", "Bob", email="Family@Example.org", blocked="card reported lost"
)
FINES = SeedPatron("29000000000014", "Fines", "Fay", fines=Decimal("25.00"))
NO_PIN = SeedPatron("29000000000015", "Nopin", "Ned", pin=None)

SEED = (ACTIVE, EXPIRED, BLOCKED, FINES, NO_PIN)
UNKNOWN = "29000000009999"
