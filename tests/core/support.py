"""Shared pieces for the core tests: a fast hasher, a SQLite store with the demo patrons, and an
Authenticator over them with a hand-driven clock."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from bridge.core.audit import Audit
from bridge.core.auth import Authenticator
from bridge.core.cache import VerifiedCache
from bridge.core.patron import ClientPolicy, Context, Patron
from bridge.core.pin import KdfParams, PinHasher
from bridge.core.secret import Secret
from bridge.core.store import NewPatron
from bridge.core.throttle import Throttle, ThrottleRules
from plugins.sqlite import SqliteStore

FAST = KdfParams(argon2_memory_kib=8192, argon2_iterations=1)
FAST_SCRYPT = KdfParams(algorithm="scrypt", scrypt_log2_n=10, scrypt_r=8, scrypt_p=1)
TODAY = dt.date(2026, 6, 1)

ACTIVE = "21234000000001"
EXPIRED = "21234000000002"
BLOCKED = "21234000000003"
MINOR = "21234000000004"
FINES = "21234000000005"
UNKNOWN = "21234999999999"


def fast_hasher(params: KdfParams = FAST, pepper: bytes | None = None) -> PinHasher:
    return PinHasher(pepper or os.urandom(32), params, workers=2)


def demo_patrons() -> list[Patron]:
    return [
        Patron(
            ACTIVE, "r1", "Rivera, Ana", "ana.rivera@example.org", "ADULT", dt.date(2030, 12, 31)
        ),
        Patron(EXPIRED, "r2", "Okafor, Chidi", None, "ADULT", dt.date(2020, 1, 31)),
        Patron(
            BLOCKED, "r3", "Lindqvist, Maja", None, "ADULT", dt.date(2030, 12, 31), True, "Lost"
        ),
        Patron(MINOR, "r4", "Nguyen, Bao", None, "JUVENILE", dt.date(2030, 12, 31)),
        Patron(
            FINES,
            "r5",
            "Kowalski, Piotr",
            None,
            "ADULT",
            dt.date(2030, 12, 31),
            fines=Decimal("25.00"),
        ),
    ]


async def sqlite_store(path: Path, hasher: PinHasher, pin: str) -> SqliteStore:
    store = SqliteStore(path, hasher)
    await store._run(store.open_sync)
    await store.add_patrons(NewPatron(p, pin=Secret(pin)) for p in demo_patrons())
    return store


@dataclass
class Clock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    auth: Authenticator
    clock: Clock
    hasher: PinHasher
    throttle: Throttle
    cache: VerifiedCache
    ctx: Context = field(default_factory=lambda: Context("test", "unit", "192.0.2.1"))


def make_auth(
    store: object,
    hasher: PinHasher,
    *,
    rules: ThrottleRules | None = None,
    ttl: float = 30.0,
) -> Rig:
    clock = Clock()
    throttle = Throttle(rules or ThrottleRules())
    cache = VerifiedCache(ttl)
    auth = Authenticator(
        store,  # type: ignore[arg-type]
        throttle=throttle,
        cache=cache,
        audit=Audit("masked"),
        clock=clock,
        today=lambda: TODAY,
    )
    return Rig(auth, clock, hasher, throttle, cache)


def ctx(policy: ClientPolicy | None = None, source: str = "192.0.2.1") -> Context:
    return Context("test", "unit", source, policy or ClientPolicy())
