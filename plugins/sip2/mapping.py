"""64 (or 24) reply → the bridge's `Verification`, pure.

The rules, and why:
- A PIN counts as right only when CQ is exactly `Y`. A missing or blank CQ is a wrong PIN:
  some ILSes leave CQ out for unknown barcodes or when no PIN was checked, and reading silence
  as yes once let made-up barcodes "authenticate" (NYPL-Simplified PR #756).
- BL `N` is an unknown card. BL absent (old servers) counts as known only when CQ is `Y`
  (a right PIN proves the card exists); otherwise as unknown.
- The 14-character patron status gives blocked reasons: charge privileges denied, card
  reported lost, excessive fines / fees. "PIN accepted" is not "in good standing": the
  authenticator's per-client policy decides what a blocked, expired or owing patron may do.
- AE name, BE email, PC category, PA expiry (YYYYMMDD, extra characters ignored), BV fees
  (lenient: a currency sign, spaces or a decimal comma are tolerated; unreadable is 0, and a
  credit, written negative by some ILSes, is kept negative), XI or AA as the record id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

from bridge.core.patron import Patron
from bridge.core.store import Verification

#: Patron-status positions that block the card, and the reason each gives.
BLOCKING_FLAGS = (
    (0, "charge privileges denied"),
    (4, "card reported lost"),
    (10, "excessive fines"),
    (11, "excessive fees"),
)


def first_fields(fields: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The first value of every tag (repeated tags such as AF keep their first)."""
    out: dict[str, str] = {}
    for tag, value in fields:
        out.setdefault(tag, value)
    return out


def parse_fees(text: str) -> Decimal:
    """BV as a Decimal: `1.50`, `$1.50`, ` 1,50 `, `-2.00`; anything unreadable is 0."""
    cleaned = "".join(c for c in text if c.isascii() and (c.isdigit() or c in "-.,"))
    if "," in cleaned and "." not in cleaned:
        cleaned = cleaned.replace(",", ".")
    cleaned = cleaned.replace(",", "")
    if not cleaned:
        return Decimal("0.00")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return Decimal("0.00")
    if not value.is_finite():
        return Decimal("0.00")
    return value.quantize(Decimal("0.01"))


def parse_expiry(text: str) -> dt.date | None:
    """PA: the first 8 characters as YYYYMMDD; anything else is no expiry."""
    head = text.strip()[:8]
    if len(head) != 8 or not head.isascii() or not head.isdigit():
        return None
    try:
        return dt.date(int(head[:4]), int(head[4:6]), int(head[6:8]))
    except ValueError:
        return None


def blocked_reasons(patron_status: str) -> list[str]:
    return [why for pos, why in BLOCKING_FLAGS if patron_status[pos : pos + 1] == "Y"]


def known_card(bl: str | None, cq: str | None) -> bool:
    if bl is None:
        return cq == "Y"
    return bl == "Y"


def verification(
    barcode: str, patron_status: str, fields: Iterable[tuple[str, str]]
) -> Verification:
    """Map a 64/24 reply (its patron-status fixed field and its variable fields)."""
    first = first_fields(fields)
    cq = first.get("CQ")
    if not known_card(first.get("BL"), cq):
        return Verification(None, False)
    reasons = blocked_reasons(patron_status)
    email = first.get("BE", "").strip()
    patron = Patron(
        barcode=barcode,
        record_id=first.get("XI", "").strip() or barcode,
        name=first.get("AE", "").strip(),
        email=email or None,
        category=first.get("PC", "").strip(),
        expires=parse_expiry(first.get("PA", "")),
        blocked=bool(reasons),
        blocked_reason="; ".join(reasons) or None,
        fines=parse_fees(first.get("BV", "")),
    )
    return Verification(patron, cq == "Y")
