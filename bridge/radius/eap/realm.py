"""The realm of an EAP outer identity, for the audit line: "anonymous@library.example" gives
"library.example".

Pure. The outer identity travels in the clear and is typed by the patron, who may put anything
there, their card number or PIN included. Only the part after the last "@" is kept, and only
when it is shaped like a domain name (letters, digits, hyphens, at least one dot, a last label of
letters, at most 64 octets), lowercased: "2123400000@5961" or "card@1234" give nothing, so a card
number or PIN typed as the realm never reaches a log. The user part is never kept.
"""

from __future__ import annotations

import re
from typing import Final

MAX_REALM: Final = 64
NOT_A_DOMAIN: Final = "(not a domain name)"

_DOMAIN = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")


def realm_of(identity: bytes) -> str:
    """The identity's realm, "" when it has none, NOT_A_DOMAIN when what follows "@" is not
    a domain name (then nothing of it is shown)."""
    at = identity.rfind(b"@")
    if at < 0:
        return ""
    realm = identity[at + 1 :]
    if not 0 < len(realm) <= MAX_REALM or not realm.isascii():
        return NOT_A_DOMAIN
    text = realm.decode("ascii").lower()
    return text if _DOMAIN.fullmatch(text) else NOT_A_DOMAIN
