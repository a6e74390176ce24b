"""Which claims a client gets, by the scopes it asked for and is allowed.

Never PIN or hash material: the Patron record has none. `library_patron` is the standing a
vendor needs (active or expired); the client's policy already decided whether it may sign in.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from bridge.core.patron import Patron


def claims_for(patron: Patron, scopes: frozenset[str], today: dt.date) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "profile" in scopes:
        out["name"] = patron.name
        if patron.given_name:
            out["given_name"] = patron.given_name
        out["family_name"] = patron.surname
    if "email" in scopes and patron.email:
        out["email"] = patron.email
        out["email_verified"] = False  # the ILS keeps it; nobody here proved it
    if "library" in scopes:
        out["library_patron"] = "expired" if patron.is_expired(today) else "active"
        out["patron_category"] = patron.category
        if patron.home_library:
            out["home_library"] = patron.home_library
    return out
