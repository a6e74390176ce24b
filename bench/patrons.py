"""The generated patron set every benchmark draws from: a library's load is many cards, not one.

`generate(n)` makes n patrons with distinct barcodes and PINs that pass the default PIN policy
(four digits, no repeats), deterministic so every server in a run gets the same people. The set
is written as the bridge's demo CSV (loaded into its SQLite store), as slapd LDIF, and as a
FreeRADIUS users file, so the bridge and the reference servers hold the same entries.

Loads spread over the set with `spread(patrons, count)`: a seeded shuffle repeated, so every
patron is asked about about equally often and consecutive requests are different cards.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PATRONS = int(os.environ.get("BENCH_PATRONS", "1000"))
SEED = 15


@dataclass(frozen=True)
class BenchPatron:
    barcode: str
    pin: str  # a generated benchmark PIN; never printed
    name: str
    email: str


def _pin(rng: random.Random) -> str:
    """A four-digit PIN the default policy accepts (not 2222, not 1212)."""
    while True:
        text = f"{rng.randrange(10000):04d}"
        if len(set(text)) > 1 and text[:2] != text[2:]:
            return text


def generate(n: int = PATRONS) -> list[BenchPatron]:
    """n patrons, barcodes 2900000000000..., the same for every call with the same n."""
    rng = random.Random(SEED)
    return [
        BenchPatron(
            barcode=f"29{i:012d}",
            pin=_pin(rng),
            name=f"Patron, Number{i}",
            email=f"patron{i}@example.org",
        )
        for i in range(n)
    ]


def spread(patrons: Sequence[BenchPatron], count: int, seed: int = 0) -> list[BenchPatron]:
    """count picks over the whole set, each patron about count/len(patrons) times."""
    rng = random.Random(SEED * 1000 + seed)
    out: list[BenchPatron] = []
    while len(out) < count:
        batch = list(patrons)
        rng.shuffle(batch)
        out.extend(batch)
    return out[:count]


def write_csv(patrons: Sequence[BenchPatron], path: Path) -> Path:
    """The bridge's demo CSV format (barcode,pin,name,email,expires,category,blocked,fines)."""
    lines = ["barcode,pin,name,email,expires,category,blocked,fines"]
    lines += [f'{p.barcode},{p.pin},"{p.name}",{p.email},2099-12-31,ADULT,,0.00' for p in patrons]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ssha(secret: bytes) -> str:
    salt = os.urandom(8)
    digest = hashlib.sha1(secret + salt, usedforsecurity=False).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def ldif_entries(patrons: Sequence[BenchPatron], parent_dn: str) -> list[str]:
    """inetOrgPerson entries under parent_dn with an {SSHA} userPassword (slapd checks it)."""
    return [
        f"dn: uid={p.barcode},{parent_dn}\n"
        "objectClass: inetOrgPerson\n"
        f"uid: {p.barcode}\ncn: {p.name}\nsn: {p.name.split(',')[0]}\nmail: {p.email}\n"
        "employeeType: ADULT\n"
        f"userPassword: {ssha(p.pin.encode())}\n"
        for p in patrons
    ]


def freeradius_users(patrons: Sequence[BenchPatron]) -> str:
    """FreeRADIUS `files` module authorize file: one Cleartext-Password per patron."""
    return "".join(f'{p.barcode} Cleartext-Password := "{p.pin}"\n' for p in patrons)


def store_section(csv_path: Path) -> str:
    """The bridge's [store] section: SQLite, loaded from the generated CSV on first start."""
    return f"""
[store]
plugin = "sqlite"
path = "patrons.db"
demo = true
demo_file = "{csv_path}"
"""
